"""The monitoring that ships with the service: Prometheus rules checked and unit-tested by Prometheus's own promtool,
and every metric a rule or a dashboard panel uses really exported by ``/metrics`` (a renamed metric fails here)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from volspike_funding.store import consumer_status
from volspike_funding.api.server import ServerThread
from volspike_funding.fake.market import Market
from volspike_funding.fake.rest_server import FakeBinanceRest
from volspike_funding.fake.ws_server import FakeBinanceWS
from volspike_funding.core.settings import load_settings

from ..conftest import FAST, ROOT, DaemonThread, wait_until

MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "volspike-funding.rules.yml"
PROMTOOL = shutil.which("promtool")
NEEDS_PROMTOOL = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian's 'prometheus' "
                                                             "package; scripts/test.sh installs it as root)")


@NEEDS_PROMTOOL
def test_promtool_checks_the_rules() -> None:
    proc = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@NEEDS_PROMTOOL
def test_promtool_unit_tests_the_rules() -> None:
    proc = subprocess.run([PROMTOOL, "test", "rules", "volspike-funding.rules.test.yml"], cwd=MONITORING,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def used_metrics() -> set[str]:
    texts = [RULES.read_text()]
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    texts += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    return set(re.findall(r"\bfunding_[a-z0-9_]+", "\n".join(texts)))


def test_every_rule_and_runbook_is_documented() -> None:
    rules = RULES.read_text()
    assert rules.count("runbook:") == rules.count("- alert:") == rules.count("summary:")
    docs = (ROOT / "DEPLOYMENT.md").read_text().replace("`", "").replace("*", "")  # the text a reader sees
    for quoted in re.findall(r"'([^']+)'", "\n".join(re.findall(r"runbook: \"(.*)\"", rules))):
        assert quoted in docs, f"runbook names {quoted!r}, which DEPLOYMENT.md does not have"


def test_every_metric_used_is_exported(tmp_path: Path) -> None:
    market = Market(120)
    with FakeBinanceWS(market, cadence_s=0.05) as ws, FakeBinanceRest(market) as rest:
        consumers = tmp_path / "consumers"
        env = {"VOLSPIKE_ENV_FILE": str(tmp_path / "none"), "FUNDING_STATE_FILE": str(tmp_path / "s" / "state.json"),
               **FAST, "FUNDING_REFERENCE_ENABLED": "true", "BINANCE_WS_URL": ws.url, "BINANCE_REST_URL": rest.url,
               "FUNDING_CONSUMER_STATUS_DIR": str(consumers)}
        settings = load_settings(env)
        consumer_status.write(consumers / "oi_poller.status.json", "oi_poller",
                              {"requests": 10, "rateLimited": 1, "banned": 0},
                              {"accepted": 5, "rejected": 0, "uncertain": 1, "dropped": 0})
        daemon = DaemonThread(settings)
        daemon.thread.start()
        try:
            wait_until(lambda: settings.reference_path.exists() and settings.state_file.exists(), 15)
            ws.send_garbage("not json")  # a malformed frame, so the malformed counter has a sample
            with ServerThread(settings, poll_s=0.05) as api:
                requests.get(api.url + "/funding/BTCUSDT", timeout=5)
                wait_until(lambda: "funding_daemon_malformed_total" in requests.get(api.url + "/metrics",
                                                                                    timeout=5).text, 10)
                time.sleep(0.2)
                text = requests.get(api.url + "/metrics", timeout=5).text
        finally:
            daemon.stop()
    exported = set(re.findall(r"^(funding_[a-z0-9_]+)", text, re.M))
    missing = used_metrics() - exported
    assert not missing, f"rules or dashboard use metrics /metrics does not export: {sorted(missing)}"
    assert len(used_metrics()) >= 15
