"""The package version, in the lowest layer so every process can name itself (User-Agent, --version)."""

__version__ = "0.1.0"
