"""The go/no-go report over the comparison logs: statistics, text and HTML. Entry point:
``funding_report.main`` (``validate_funding_comparison.py``)."""

__all__ = ["funding_report", "html", "stats", "text"]
