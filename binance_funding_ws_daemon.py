#!/usr/bin/env python3
"""Binance mark-price WebSocket daemon: see volspike_funding.daemon and README.md."""

import sys

from volspike_funding.daemon import main

if __name__ == "__main__":
    sys.exit(main())
