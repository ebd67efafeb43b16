#!/usr/bin/env python3
"""Local HTTP API over the daemon's state file: see volspike_funding.api.server and README.md."""

import sys

from volspike_funding.api.server import main

if __name__ == "__main__":
    sys.exit(main())
