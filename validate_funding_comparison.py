#!/usr/bin/env python3
"""Go / no-go report for switching the consumers to WebSocket-only: see volspike_funding.report.funding_report."""

import sys

from volspike_funding.report.funding_report import main

if __name__ == "__main__":
    sys.exit(main())
