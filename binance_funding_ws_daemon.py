#!/usr/bin/env python3
"""Binance mark-price WebSocket daemon: see volspike_funding.feed.daemon and README.md."""

import sys

from volspike_funding.feed.daemon import main

if __name__ == "__main__":
    sys.exit(main())
