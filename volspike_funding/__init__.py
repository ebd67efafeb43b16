"""Binance USDⓈ-M funding rates and mark prices over one WebSocket stream, for VolSpike.

The top-level scripts in the repository root are thin entry points over this package.
"""

from volspike_funding.core.version import __version__

__all__ = ["__version__"]
