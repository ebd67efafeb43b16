#!/usr/bin/env python3
"""Hourly volume-spike alerts (Telegram + VolSpike PROD/DEV): see volspike_funding.consumers.volume_alerts and README.md."""

import sys

from volspike_funding.consumers.volume_alerts import main

if __name__ == "__main__":
    sys.exit(main())
