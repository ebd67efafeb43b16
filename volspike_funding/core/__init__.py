"""The lowest layer: errors, settings and their table, value parsers, the command line, logging, atomic files,
time formatting, the retry policy. It imports nothing else of the package."""

__all__ = ["cli", "errors", "logs", "persist", "retry", "settings", "settings_table", "timefmt", "value_parsers",
           "version"]
