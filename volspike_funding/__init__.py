"""Binance USDⓈ-M funding rates and mark prices over one WebSocket stream, for VolSpike.

The top-level scripts in the repository root are thin entry points over this package.
"""

__version__ = "0.1.0"
