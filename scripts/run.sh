#!/usr/bin/env bash
# Install into ./.venv what running needs (requirements.txt only; the report's charts and the tests have files of
# their own) and run the service: the daemon and the HTTP API.
#   bash scripts/run.sh          live: Binance's stream, API on 127.0.0.1:8888
#   bash scripts/run.sh --demo   offline: the bundled fake exchange instead of Binance
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
if [ "${1:-}" = "--demo" ]; then
    shift
    exec .venv/bin/python -m volspike_funding.demo "$@"
fi
.venv/bin/python binance_funding_ws_daemon.py "$@" &
daemon=$!
trap 'kill -TERM "$daemon" 2>/dev/null; wait "$daemon"' EXIT INT TERM
.venv/bin/python funding_api_server.py
