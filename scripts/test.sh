#!/usr/bin/env bash
# Install into ./.venv (runtime + test requirements) and run the whole test suite, on two workers (pytest-xdist).
# As root on Debian/Ubuntu it also installs the system packages some tests need: systemd-container (the deployment
# test boots a real systemd), chromium + chromium-driver (the status page in a real browser) and prometheus (its
# promtool checks and unit-tests the alerting rules), redis-server (the shared store's tests start their own on
# an ephemeral port), openssl (a certificate for the TLS store test) and a CJK font (the report's charts). Elsewhere those tests skip and say why.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v promtool >/dev/null || need+=(prometheus)
command -v redis-server >/dev/null || need+=(redis-server)
command -v openssl >/dev/null || need+=(openssl)
# a CJK font: the HTML report draws symbol names such as 币安人生USDT (without one it prints '?' for them)
fc-list 2>/dev/null | grep -qiE 'wqy|cjk|droid sans fallback' || need+=(fonts-wqy-microhei)
if [ "${#need[@]}" -gt 0 ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    # policy-rc.d: installing prometheus or redis-server must not start a server on this machine.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" \
        >/dev/null) || echo "test.sh: could not install ${need[*]}; the tests that need them will skip" >&2
    rm -f /usr/sbin/policy-rc.d
fi
# The npm `binance` client of the local WebSocket (tests/system/test_stream_clients.py skips, saying why, without it).
if command -v npm >/dev/null; then
    (cd tests/system/node && npm ci --no-audit --no-fund --silent >/dev/null 2>&1) \
        || echo "test.sh: npm could not install tests/system/node; the npm client test will skip" >&2
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
# Two workers, each test file whole on one of them (module fixtures, one container at a time per file).
exec .venv/bin/python -m pytest -q -rs -n 2 --dist loadfile "$@"
