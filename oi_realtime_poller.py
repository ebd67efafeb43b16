#!/usr/bin/env python3
"""Open-interest poller priced with local mark prices: see volspike_funding.consumers.oi_poller and README.md."""

import sys

from volspike_funding.consumers.oi_poller import main

if __name__ == "__main__":
    sys.exit(main())
