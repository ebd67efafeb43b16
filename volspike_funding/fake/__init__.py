"""Loopback fakes that speak the real wire formats (Binance WebSocket and REST, the VolSpike backend,
Telegram), shipped for tests, benchmarks and the offline demo."""

__all__ = ["backend", "clock", "http_fake", "market", "rest_server", "ws_server"]
