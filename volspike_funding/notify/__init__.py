"""The opt-in health notifier: Telegram messages when ``/funding/health`` stays unhealthy and when it recovers.
Entry point: ``notifier.main`` (``funding_health_notifier.py``). It reads the API over HTTP only, so it imports
no other process package."""

__all__ = ["notifier"]
