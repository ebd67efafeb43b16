"""Binance itself: the WebSocket frames (pure parsing, Binance decimals) and the one rate-limited REST client."""

__all__ = ["rest", "wire"]
