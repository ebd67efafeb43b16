#!/usr/bin/env bash
# Install (idempotently), render-only or uninstall the VolSpike funding services on a Debian/Ubuntu host.
#
#   deploy/install.sh [--prefix DIR] [--user NAME] [--env-file PATH] [--with-consumers] [--with-notifier]
#                     [--no-start] [--python PY] [--pip-args "ARGS"] [--replace-legacy] [--wait SECONDS]
#   deploy/install.sh --render-only DIR [--prefix DIR] ...     write the rendered units to DIR, change nothing else
#   deploy/install.sh --uninstall [--purge]                     stop, disable and remove (--purge: state + env file)
#
# As root (no sudo needed; `sudo deploy/install.sh` works too). Defaults: prefix /opt/volspike-funding, user
# volspike, env file /etc/volspike/volspike.env; with no env file there yet, an existing /home/trader/.volspike.env
# (or ~/.volspike.env) is imported into it. Paths may contain spaces. --uninstall finds the prefix in the installed
# units. Exit codes: 0 installed and serving; 1 failure; 2 bad usage or refused; 3 installed and enabled, but the
# daemon has no data from Binance yet after --wait seconds (default 30; it keeps retrying by itself).
# The original scripts' units (volspike, oi-realtime-poller, oi-liquid-universe, funding-health-check, and
# binance-funding-* running from /home/trader/volume-spike-bot) must not run beside ours: if any is active or
# enabled, install refuses unless --replace-legacy (stop and disable them; their unit files are kept, and the ones
# ours overwrite are copied to /etc/volspike/legacy-units, for a rollback). See DEPLOYMENT.md.
set -euo pipefail

PREFIX=/opt/volspike-funding
SERVICE_USER=volspike
ENV_FILE=/etc/volspike/volspike.env
# The one place the shared state directory is named: both funding units get it from here.
STATE_NAME=volspike-funding
CONSUMER_STATE_NAME=volspike-consumers
UNIT_DIR=/etc/systemd/system
PYTHON_BIN=python3
PIP_ARGS=""
MODE=install
RENDER_DIR=""
START=yes
CONSUMERS=no
PURGE=no
REPLACE_LEGACY=no
PREFIX_GIVEN=no
WAIT_S=30
# Where the original scripts kept the operator's settings (their order); the units cannot read /home or /root.
LEGACY_ENV_FILES=(/home/trader/.volspike.env "${HOME:-/root}/.volspike.env")
LEGACY_UNITS=(volspike.service oi-realtime-poller.service oi-liquid-universe.timer oi-liquid-universe.service
              funding-health-check.timer funding-health-check.service)
LEGACY_PATH=/home/trader/volume-spike-bot
LEGACY_BACKUP=/etc/volspike/legacy-units
FUNDING_UNITS=(binance-funding-ws.service binance-funding-api.service)
CONSUMER_UNITS=(volspike-volume-alerts.service volspike-oi-poller.service)
NOTIFIER_UNITS=(volspike-health-notifier.service)  # opt-in: --with-notifier (needs HEALTH_NOTIFY_CHAT_ID)
NOTIFIER=no
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() { echo "install.sh: error: $*" >&2; exit 2; }
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX="${2:?--prefix needs a directory}"; PREFIX_GIVEN=yes; shift 2 ;;
        --wait) WAIT_S="${2:?--wait needs seconds}"; shift 2 ;;
        --user) SERVICE_USER="${2:?--user needs a name}"; shift 2 ;;
        --env-file) ENV_FILE="${2:?--env-file needs a path}"; shift 2 ;;
        --python) PYTHON_BIN="${2:?--python needs an interpreter}"; shift 2 ;;
        --pip-args) PIP_ARGS="${2-}"; shift 2 ;;
        --render-only) MODE=render; RENDER_DIR="${2:?--render-only needs a directory}"; shift 2 ;;
        --uninstall) MODE=uninstall; shift ;;
        --purge) PURGE=yes; shift ;;
        --no-start) START=no; shift ;;
        --with-consumers) CONSUMERS=yes; shift ;;
        --with-notifier) NOTIFIER=yes; shift ;;
        --replace-legacy) REPLACE_LEGACY=yes; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path" ;; esac
case "$ENV_FILE" in /*) ;; *) die "--env-file must be an absolute path" ;; esac
case "$WAIT_S" in ''|*[!0-9]*) die "--wait must be a whole number of seconds" ;; esac

# Render one unit template: every placeholder replaced literally, whatever characters the values contain
# ("%" is systemd's specifier character, so values carry it doubled).
render_unit() {
    local template="$1" out="$2" line prefix="${PREFIX//%/%%}" env_file="${ENV_FILE//%/%%}" doc_url
    doc_url="file://${prefix// /%%20}/DEPLOYMENT.md"
    : > "$out"
    while IFS= read -r line || [ -n "$line" ]; do
        line="${line//@DOC_URL@/$doc_url}"
        line="${line//@PREFIX@/$prefix}"
        line="${line//@PYTHON@/$prefix/.venv/bin/python}"
        line="${line//@USER@/$SERVICE_USER}"
        line="${line//@ENV_FILE@/$env_file}"
        line="${line//@STATE_NAME@/$STATE_NAME}"
        line="${line//@CONSUMER_STATE_NAME@/$CONSUMER_STATE_NAME}"
        printf '%s\n' "$line" >> "$out"
    done < "$template"
}

render_all() {
    local dir="$1" unit
    mkdir -p "$dir"
    for unit in "${FUNDING_UNITS[@]}" "${CONSUMER_UNITS[@]}" "${NOTIFIER_UNITS[@]}"; do
        render_unit "$SRC/systemd/$unit" "$dir/$unit"
        chmod 0644 "$dir/$unit"
    done
}

if [ "$MODE" = render ]; then
    render_all "$RENDER_DIR"
    say "rendered units into $RENDER_DIR"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "run as root (or use --render-only DIR)"
command -v systemctl >/dev/null || die "systemctl not found: this script installs systemd units"

if [ "$MODE" = uninstall ]; then
    # The prefix the units were installed with (WorkingDirectory=, "%" doubled by render_unit): an uninstall
    # without --prefix must not say "uninstalled" and leave a custom prefix behind.
    installed=""
    if [ -f "$UNIT_DIR/${FUNDING_UNITS[0]}" ]; then
        installed="$(sed -n 's/^WorkingDirectory=//p' "$UNIT_DIR/${FUNDING_UNITS[0]}" | head -n 1)"
        installed="${installed//%%/%}"
    fi
    if [ -n "$installed" ] && [ "$PREFIX_GIVEN" = yes ] && [ "$installed" != "$PREFIX" ]; then
        die "the units were installed with --prefix '$installed', not '$PREFIX'; re-run with --prefix '$installed'"
    fi
    [ -n "$installed" ] && PREFIX="$installed"
    if [ -e "$PREFIX" ] && [ ! -f "$PREFIX/binance_funding_ws_daemon.py" ]; then
        die "$PREFIX does not look like this service's install (no binance_funding_ws_daemon.py); not removing it"
    fi
    for unit in "${NOTIFIER_UNITS[@]}" "${CONSUMER_UNITS[@]}" "${FUNDING_UNITS[@]}"; do
        systemctl disable --now "$unit" 2>/dev/null || true
        rm -f "$UNIT_DIR/$unit"
    done
    systemctl daemon-reload
    rm -rf -- "$PREFIX"
    if [ "$PURGE" = yes ]; then
        rm -rf -- "/var/lib/$STATE_NAME" "/var/lib/$CONSUMER_STATE_NAME" "$ENV_FILE"
        userdel "$SERVICE_USER" 2>/dev/null || true
    fi
    say "uninstalled from $PREFIX$([ "$PURGE" = yes ] && echo ", state and env file purged" || echo "; kept $ENV_FILE and /var/lib/$STATE_NAME")"
    exit 0
fi

# The services run with ProtectHome=yes: an interpreter under /root or /home (pyenv, conda) is invisible to them.
python_real="$(readlink -f "$(command -v "$PYTHON_BIN" || true)")"
[ -x "$python_real" ] || die "interpreter $PYTHON_BIN not found (use --python /usr/bin/python3)"
case "$python_real" in
    /root/*|/home/*) die "$PYTHON_BIN is $python_real, hidden from the services by ProtectHome=; use --python /usr/bin/python3" ;;
esac
if [ -x "$PREFIX/.venv/bin/python" ]; then
    venv_real="$(readlink -f "$PREFIX/.venv/bin/python")"
    case "$venv_real" in /root/*|/home/*) rm -rf -- "$PREFIX/.venv" ;; esac
fi

# 0. The original scripts' units: never both generations at once (every alert would be sent twice, and the old
#    OI poller would read a state file nothing writes any more).
legacy_running=()
for unit in "${LEGACY_UNITS[@]}" "${FUNDING_UNITS[@]}"; do
    file="$UNIT_DIR/$unit"
    case " ${FUNDING_UNITS[*]} " in
        *" $unit "*) grep -qs "$LEGACY_PATH" "$file" || continue ;;  # same name as ours: legacy only if it runs from there
    esac
    if systemctl is-active --quiet "$unit" 2>/dev/null || systemctl is-enabled --quiet "$unit" 2>/dev/null; then
        legacy_running+=("$unit")
    fi
done
if [ "${#legacy_running[@]}" -gt 0 ]; then
    if [ "$REPLACE_LEGACY" != yes ]; then
        die "the original scripts' units are active or enabled: ${legacy_running[*]}. Running both generations sends
every alert twice. Re-run with --replace-legacy to stop and disable them (their unit files are kept for a rollback;
see DEPLOYMENT.md, 'Moving from the original scripts')"
    fi
    install -d -m 0755 "$LEGACY_BACKUP"
    for unit in "${legacy_running[@]}"; do
        systemctl disable --now "$unit" >/dev/null 2>&1 || true
        [ -f "$UNIT_DIR/$unit" ] && cp -p "$UNIT_DIR/$unit" "$LEGACY_BACKUP/$unit"
        say "stopped and disabled the original $unit (unit file copied to $LEGACY_BACKUP)"
    done
fi

# 1. The unprivileged service user.
if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
    useradd --system --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
    say "created system user $SERVICE_USER"
fi

# 2. The code, owned by root and readable by the service (it must not be able to change its own code).
install -d -m 0755 "$PREFIX"
tar -C "$SRC" --exclude=./.git --exclude=./.venv --exclude='./.funding_state.json*' --exclude='*/__pycache__' \
    -cf - . | tar -C "$PREFIX" --no-same-owner -xf -
chown -R root:root "$PREFIX"
chmod -R u=rwX,go=rX "$PREFIX"

# 3. The virtualenv.
[ -x "$PREFIX/.venv/bin/python" ] || "$PYTHON_BIN" -m venv "$PREFIX/.venv"
# shellcheck disable=SC2086 # PIP_ARGS is a list of options on purpose
"$PREFIX/.venv/bin/pip" install --quiet --disable-pip-version-check $PIP_ARGS -r "$PREFIX/requirements.txt" \
    -r "$PREFIX/requirements-report.txt"  # the report (and its --html charts) runs on the droplet too

# 4. The operator's env file: created once from the example, never overwritten.
install -d -m 0755 "$(dirname "$ENV_FILE")"
#    An operator's existing .volspike.env (keys, tokens, WS_FUNDING_ENABLED) is imported: the units run with
#    ProtectHome=yes and could never read it where it is.
legacy_env=""
for candidate in "${LEGACY_ENV_FILES[@]}"; do
    [ -f "$candidate" ] && { legacy_env="$candidate"; break; }
done
if [ ! -e "$ENV_FILE" ] && [ -n "$legacy_env" ]; then
    install -m 0640 -o root -g "$SERVICE_USER" "$legacy_env" "$ENV_FILE"
    say "imported $legacy_env into $ENV_FILE (the units cannot read /home or /root); edit $ENV_FILE from now on"
elif [ ! -e "$ENV_FILE" ]; then
    install -m 0640 -o root -g "$SERVICE_USER" "$SRC/deploy/volspike.env.example" "$ENV_FILE"
    say "created $ENV_FILE from the example: edit it, then: systemctl restart ${FUNDING_UNITS[*]}"
elif [ -n "$legacy_env" ] && ! cmp -s "$legacy_env" "$ENV_FILE"; then
    say "note: $legacy_env differs from $ENV_FILE; the units read only $ENV_FILE (not imported: it exists)"
fi

# 5. The units.
render_all "$UNIT_DIR"
systemctl daemon-reload
"$PREFIX/.venv/bin/python" "$PREFIX/binance_funding_ws_daemon.py" --help >/dev/null

# 6. Enable and (re)start.
units=("${FUNDING_UNITS[@]}")
[ "$CONSUMERS" = yes ] && units+=("${CONSUMER_UNITS[@]}")
[ "$NOTIFIER" = yes ] && units+=("${NOTIFIER_UNITS[@]}")
systemctl enable "${units[@]}" >/dev/null 2>&1
if [ "$START" != yes ]; then
    say "enabled, not started: ${units[*]}"
    say "installed into $PREFIX; state in /var/lib/$STATE_NAME; settings in $ENV_FILE"
    exit 0
fi
# --no-block: the daemon is Type=notify and becomes active only with its first frame; without Binance a blocking
# restart would wait out systemd's start timeout and fail with systemd's generic message.
systemctl restart --no-block "${units[@]}"
daemon_unit="${FUNDING_UNITS[0]}"
for _ in $(seq "$WAIT_S"); do
    [ "$(systemctl show -p ActiveState --value "$daemon_unit")" = active ] && break
    sleep 1
done
if [ "$(systemctl show -p ActiveState --value "$daemon_unit")" = active ]; then
    say "started: ${units[*]}"
    say "installed into $PREFIX; state in /var/lib/$STATE_NAME; settings in $ENV_FILE"
    exit 0
fi
# The daemon's last warning (its stderr reaches the journal at priority info, so grep rather than -p warning).
why="$(journalctl -u "$daemon_unit" -n 200 -o cat --no-pager 2>/dev/null | grep ' WARNING ' | tail -n 1 \
      | sed 's/^.*funding\.[a-z]*: //; s/; \(reconnecting\|retrying\) in .*//; s/ (check DNS.*)$//')"
ws_host="$(sed -n 's/^BINANCE_WS_URL=//p' "$ENV_FILE" 2>/dev/null | tail -n 1 | sed 's|^[a-z]*://||; s|/.*||')"
say "installed into $PREFIX and enabled (${units[*]}); settings in $ENV_FILE"
say "the daemon cannot reach Binance yet after ${WAIT_S} s: ${why:-no data received yet}"
say "check DNS and outbound connections to ${ws_host:-fstream.binance.com:443} (BINANCE_WS_URL); it keeps retrying by"
say "itself and serves as soon as data arrives: journalctl -u $daemon_unit -f"
exit 3
