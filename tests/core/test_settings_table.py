"""The settings table itself (core/settings_table.py): every row parses its own default, flags and names are
unique, each component gets its rows, and the generated documentation table is what DEPLOYMENT.md holds."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from volspike_funding.core.settings_table import (ALERTS, API, CONSUMER, DAEMON, NOTIFY, OI, REPORT, SETTINGS,
                                                  Setting, markdown_table, settings_for)

from ..conftest import ROOT

COMPONENTS = (DAEMON, API, CONSUMER, ALERTS, OI, REPORT, NOTIFY)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env)
def test_every_default_parses_with_its_own_parser(setting: Setting) -> None:
    setting.parse(setting.default)  # a default its parser refuses would stop every program at start-up


def test_names_flags_and_aliases_are_unique_and_well_formed() -> None:
    names = [s.env for s in SETTINGS] + [a for s in SETTINGS for a in s.aliases]
    assert len(names) == len(set(names))
    flags = [s.flag for s in SETTINGS]
    assert len(flags) == len(set(flags)) and "--env-file" not in flags and "--version" not in flags
    for s in SETTINGS:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", s.env) and re.fullmatch(r"--[a-z0-9]+(-[a-z0-9]+)*", s.flag)
        assert s.flag == "--" + s.field.replace("_", "-") and s.help.strip() and s.used_by
        assert set(s.used_by) <= set(COMPONENTS), s.env


def test_each_component_gets_exactly_its_rows_in_table_order() -> None:
    for component in COMPONENTS:
        rows = settings_for(component)
        assert rows and rows == [s for s in SETTINGS if component in s.used_by]
    assert settings_for("no-such-component") == []
    assert {s.env for s in settings_for(DAEMON)} >= {"BINANCE_WS_URL", "FUNDING_STATE_FILE", "FUNDING_STORE_URL"}
    assert "BINANCE_WS_URL" not in {s.env for s in settings_for(API)}


def test_the_generated_table_has_one_row_per_setting_and_marks_secrets() -> None:
    lines = markdown_table().splitlines()
    assert lines[:2] == ["| Variable | CLI flag | Default | Read by | Meaning |", "|---|---|---|---|---|"]
    assert len(lines) == 2 + len(SETTINGS)
    for s, line in zip(SETTINGS, lines[2:]):
        assert line.startswith(f"| `{s.env}` | `{s.flag}` | `{s.default}` | {', '.join(s.used_by)} | ")
        assert line.endswith(" Secret: never logged. |") == s.secret
    assert sum(s.secret for s in SETTINGS) >= 4  # the store URL, the two API keys, the Telegram token


def test_deployment_md_holds_exactly_the_generated_table() -> None:
    docs = (ROOT / "DEPLOYMENT.md").read_text(encoding="utf-8")
    between = re.search(r"<!-- settings-table:[^\n]*-->\n(.*?)\n<!-- /settings-table -->", docs, re.S)
    assert between, "DEPLOYMENT.md lost its settings-table markers"
    assert between.group(1) == markdown_table(), "regenerate: python -m volspike_funding.core.settings"


def test_the_module_prints_the_table() -> None:
    proc = subprocess.run([sys.executable, "-m", "volspike_funding.core.settings"], capture_output=True, text=True,
                          timeout=30, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout == markdown_table() + "\n"
