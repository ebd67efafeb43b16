"""The API process: FastAPI app, models, metrics, connection limits, status page and the Binance-compatible
routes. Entry point: ``server.main`` (``funding_api_server.py``)."""

__all__ = ["app", "binance_routes", "metrics", "models", "protocol", "server", "status_page"]
