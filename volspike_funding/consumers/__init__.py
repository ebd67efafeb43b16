"""The consumer processes: the funding source (local API + REST validation), the volume alerts and the OI
poller with their rules, and the receivers' outboxes. Entry points: ``volume_alerts.main``
(``hourly_volume_alert_dual_env.py``) and ``oi_poller.main`` (``oi_realtime_poller.py``)."""

__all__ = ["funding_source", "oi_alerts", "oi_poller", "oi_universe", "sinks", "volume_alerts", "volume_rules"]
