"""What every entry point shares: flags generated from the settings table, logging, and error-to-exit-code."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Callable, Iterable

from volspike_funding import __version__
from volspike_funding.core.errors import FundingError, SettingsError
from volspike_funding.core.settings import ENV_FILE_VAR, Settings, load_settings, masked, settings_for

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def build_parser(prog: str, description: str, *components: str) -> argparse.ArgumentParser:
    """An argument parser with one flag per setting the component reads (flags win over the environment)."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     epilog="Every flag mirrors an environment variable; see README.md.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--env-file", metavar="PATH",
                        help=f"operator env file (env {ENV_FILE_VAR}, default ~/.volspike.env)")
    for setting in {s.env: s for c in components for s in settings_for(c)}.values():
        parser.add_argument(setting.flag, dest=setting.field, metavar=setting.env,
                            help=f"{setting.help} (default {setting.default})")
    return parser


def settings_from_args(args: argparse.Namespace, component: str, *extra: str) -> Settings:
    """Settings from flags, environment and env file; ``extra`` names further components the program reads."""
    overrides = {s.field: getattr(args, s.field, None) for c in (component, *extra) for s in settings_for(c)}
    return load_settings(overrides=overrides, env_file=args.env_file, components=(component, *extra))


class RedactSecrets(logging.Filter):
    """Replace every secret (tokens, API keys) in a record's final text, exception included, whoever logs it:
    urllib3 at DEBUG logs request lines, and Telegram's URL carries the bot token (``/bot<TOKEN>/sendMessage``)."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, masked(secret))
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        redacted = self._redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        return True


def setup_logging(level: str, secrets: Iterable[str | None] = ()) -> None:
    """Log to stderr (the journal) at ``level``; ``secrets`` never appear, at any level, from any logger."""
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactSecrets(secrets))


def run(prog: str, body: Callable[[], int]) -> int:
    """Run an entry point's body, turning our own errors into one line on stderr and an exit code."""
    try:
        return body()
    except SettingsError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FundingError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK


class RateLimitedLog:
    """Log a recurring problem at most once per ``interval`` seconds per kind, with how often it happened."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger, self._interval, self._clock = logger, interval, clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, message: str) -> bool:
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return False
        self._last[kind] = now
        extra = self._suppressed.pop(kind, 0)
        suffix = f" ({extra} more since the last report)" if extra else ""
        self._logger.warning("%s: %s%s", kind, message, suffix)
        return True
