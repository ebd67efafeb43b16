#!/usr/bin/env bash
# Install into ./.venv (runtime + test requirements) and run the whole test suite.
# As root on Debian/Ubuntu it also installs systemd-container, so the deployment test can boot a real systemd;
# elsewhere that one test skips and says why.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null && ! command -v systemd-nspawn >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd-container >/dev/null) \
        || echo "test.sh: could not install systemd-container; the systemd test will skip" >&2
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
exec .venv/bin/python -m pytest -q -rs "$@"
