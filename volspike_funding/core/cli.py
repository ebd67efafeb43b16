"""What every entry point shares: flags generated from the settings table and error-to-exit-code."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from typing import Callable

from volspike_funding.core.version import __version__
from volspike_funding.core.errors import FundingError, SettingsError
from volspike_funding.core.settings import (DEFAULT_ENV_FILES, ENV_FILE_VAR, Settings, check_env_file,
                                            describe_env_file, load_settings, settings_for)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
SERVICE_EXIT_CODES = ("exit codes: 0 stopped on request (SIGTERM, SIGINT); 1 failed (the reason is logged); "
                      "2 bad settings or usage (one line on stderr).")


def build_parser(prog: str, description: str, *components: str,
                 exit_codes: str = SERVICE_EXIT_CODES) -> argparse.ArgumentParser:
    """An argument parser with one flag per setting the component reads (flags win over the environment).

    ``exit_codes`` is part of every ``--help``: scripts and units act on them."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     epilog=f"{exit_codes} Every flag mirrors an environment variable; "
                                            "see README.md.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--env-file", metavar="PATH",
                        help=f"operator env file, which must exist (env {ENV_FILE_VAR}; default: the first of "
                             f"{', '.join(DEFAULT_ENV_FILES)} that exists)")
    for setting in {s.env: s for c in components for s in settings_for(c)}.values():
        parser.add_argument(setting.flag, dest=setting.field, metavar=setting.env,
                            help=f"{setting.help} (default {setting.default})")
    return parser


def settings_from_args(args: argparse.Namespace, component: str, *extra: str) -> Settings:
    """Settings from flags, environment and env file; ``extra`` names further components the program reads."""
    overrides = {s.field: getattr(args, s.field, None) for c in (component, *extra) for s in settings_for(c)}
    check_env_file(os.environ, args.env_file)
    return load_settings(overrides=overrides, env_file=args.env_file, components=(component, *extra))


def env_file_line(args: argparse.Namespace) -> str:
    """What a program logs at start about its env file (the path only)."""
    return describe_env_file(os.environ, args.env_file)


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


def freeze_startup_heap() -> None:
    """Exempt what the process built at start (modules, the app, settings: ~63,000 objects in the API, ~33,000 in
    the daemon) from the cyclic collector: none of it becomes garbage, yet every full collection walked it all,
    16-40 ms in the API and 6-16 ms in the daemon on a 2-CPU VM, while every answer, stream and frame of the
    process waited (bench/bench_gc_pause.py). Called once, just before the long-running loop."""
    gc.collect()
    gc.freeze()
