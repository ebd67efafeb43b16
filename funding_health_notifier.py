#!/usr/bin/env python3
"""Telegram when the funding service stays unhealthy, and when it is healthy again: see
volspike_funding.notify.notifier and DEPLOYMENT.md."""

import sys

from volspike_funding.notify.notifier import main

if __name__ == "__main__":
    sys.exit(main())
