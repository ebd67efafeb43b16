"""The daemon process: the Binance connection, per-symbol streams, the in-memory state, the reference fetcher and
sd_notify. Entry point: ``daemon.main`` (``binance_funding_ws_daemon.py``)."""

__all__ = ["connection", "daemon", "reference_fetch", "sdnotify", "state", "streams", "timers"]
