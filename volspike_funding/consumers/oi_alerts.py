"""Open-interest spike/dump alerts: sample history, baselines, edge triggering and cooldowns per backend.

Three timeframes (5 min, 15 min, 1 hour). A timeframe's baseline is the sample closest to ``now - lookback``
within ``±clamp(lookback / 10, 30, 120)`` s; without one, nothing is judged. The original scripts' rule: a symbol
is *outside* while ``|pct| >= threshold``; an alert fires when it goes from inside to outside with
``|abs| >= OI_MIN_DELTA_CONTRACTS`` and the cooldown of that (symbol, **direction**, timeframe) has passed — so a
+4 % pump, back to flat, then −4 % alerts UP and then DOWN, and a move that stays beyond the percentage but dips
under the minimum delta does not re-arm. Per backend, the "outside" state and the cooldown are recorded, and
persisted atomically, **before** the POST is sent (the intent): a crash or ``kill -9`` between sending and the
answer never sends it again after a restart. Only a POST that surely did not arrive (refused, dropped unsent)
undoes the intent, so it is tried again at the next loop. A cooldown file that cannot be read or was deleted
(:mod:`.state_guard`) holds back every alert its cooldown could have blocked, counted from the start.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from volspike_funding.consumers.state_guard import load_guarded
from volspike_funding.core.persist import save_json
from volspike_funding.core.settings import Settings
from volspike_funding.core.timefmt import iso_z

#: Samples kept beyond the longest lookback: its largest baseline tolerance.
HISTORY_MARGIN_S = 120.0


@dataclass(frozen=True)
class Timeframe:
    label: str  # as the backend expects it
    lookback_s: float
    threshold: float
    cooldown_s: float

    @property
    def tolerance_s(self) -> float:
        return min(max(self.lookback_s / 10, 30.0), 120.0)


def timeframes(settings: Settings) -> list[Timeframe]:
    # The labels are what the backend expects; the lookbacks are the original's OI_LOOKBACK_WINDOW_* settings.
    s = settings
    return [Timeframe("5 min", s.oi_lookback_window_5min, s.oi_spike_threshold_pct_5min, s.oi_alert_cooldown_5min),
            Timeframe("15 min", s.oi_lookback_window_15min, s.oi_spike_threshold_pct_15min,
                      s.oi_alert_cooldown_15min),
            Timeframe("1 hour", s.oi_lookback_window_60min, s.oi_spike_threshold_pct_60min,
                      s.oi_alert_cooldown_60min)]


def alert_key(backend: str, symbol: str, timeframe: Timeframe) -> str:
    """The key of one (backend, symbol, timeframe) in the persisted edge states."""
    return f"{backend}|{symbol}|{timeframe.label}"


def cooldown_key(backend: str, symbol: str, direction: str, timeframe: Timeframe) -> str:
    """The key of one (backend, symbol, direction, timeframe) in the persisted cooldowns."""
    return f"{backend}|{symbol}|{direction}|{timeframe.label}"


@dataclass(frozen=True)
class Sample:
    t: float
    oi: float
    mark: float | None


def _sample_time(sample: Sample) -> float:
    return sample.t


@dataclass(frozen=True)
class OiAlert:
    backend: str
    symbol: str
    timeframe: Timeframe
    direction: str
    payload: dict[str, Any]

    @property
    def key(self) -> str:
        return alert_key(self.backend, self.symbol, self.timeframe)

    @property
    def cooldown_key(self) -> str:
        return cooldown_key(self.backend, self.symbol, self.direction, self.timeframe)


class OiAlertEngine:
    def __init__(self, settings: Settings, backends: list[str], clock: Callable[[], float] = time.time, *,
                 persist: bool = True) -> None:
        self.timeframes = timeframes(settings)
        self.history_s = max(tf.lookback_s for tf in self.timeframes) + HISTORY_MARGIN_S
        self.min_delta = settings.oi_min_delta_contracts
        self.backends = backends
        self.path = settings.oi_state_file
        #: A dry run never writes the file (it may be the production one, and a recorded intent would hold an alert).
        self._persist = persist
        self._history: dict[str, deque[Sample]] = {}
        self._lock = threading.Lock()
        saved, suspect = load_guarded(self.path, "oi_poller", _valid_state)
        self._outside: dict[str, str] = dict(saved.get("outside", {}))
        self._cooldown_until: dict[str, float] = dict(saved.get("cooldownUntil", {}))
        #: Alerts recorded but not yet answered: key -> (cooldown key, the cooldown it replaced), to undo.
        self._intents: dict[str, tuple[str, float | None]] = {}
        #: With a suspect file, nothing alerts before this + the timeframe's cooldown (it may have been sent).
        self._held_from: float | None = clock() if suspect else None

    def _baseline(self, history: deque[Sample], at: float, tolerance: float) -> Sample | None:
        i = bisect.bisect_left(history, at, key=_sample_time)  # no per-call copy: this runs 3× per symbol per loop
        near = [history[j] for j in (i - 1, i) if 0 <= j < len(history)]
        best = min(near, key=lambda s: abs(s.t - at), default=None)
        return best if best is not None and abs(best.t - at) <= tolerance else None

    def observe(self, symbol: str, sample: Sample, funding_rate: float | None) -> list[OiAlert]:
        """Add a sample; return the alerts now due (not yet recorded: see :meth:`confirm`)."""
        history = self._history.setdefault(symbol, deque())
        history.append(sample)
        while history and history[0].t < sample.t - self.history_s:
            history.popleft()
        due = []
        with self._lock:
            if self._held_from is not None and sample.t >= self._held_from + max(t.cooldown_s for t in self.timeframes):
                self._held_from = None
                self._save()  # the hold is over: a restart from now on is not suspect
            for tf in self.timeframes:
                held = self._held_from is not None and sample.t < self._held_from + tf.cooldown_s
                base = self._baseline(history, sample.t - tf.lookback_s, tf.tolerance_s)
                if base is None or base.oi <= 0:
                    continue
                delta = sample.oi - base.oi
                pct = delta / base.oi
                direction = "UP" if delta > 0 else "DOWN"
                for backend in self.backends:
                    key = alert_key(backend, symbol, tf)
                    if abs(pct) < tf.threshold:
                        self._set_inside(key)  # only a return inside the percentage re-arms
                        continue
                    ckey = cooldown_key(backend, symbol, direction, tf)
                    if (abs(delta) < self.min_delta or key in self._outside or held
                            or sample.t < self._cooldown_until.get(ckey, 0.0)):
                        continue
                    # The intent, recorded before anything is sent (saved below): never sent twice across a crash.
                    self._intents[key] = (ckey, self._cooldown_until.get(ckey))
                    self._outside[key] = direction
                    self._cooldown_until[ckey] = sample.t + tf.cooldown_s
                    due.append(OiAlert(backend, symbol, tf, direction,
                                       self._payload(symbol, tf, direction, base, sample, pct, delta, funding_rate)))
            if due:
                self._save()
        return due

    @staticmethod
    def _payload(symbol: str, tf: Timeframe, direction: str, base: Sample, now: Sample, pct: float, delta: float,
                 funding_rate: float | None) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "symbol": symbol, "direction": direction, "baseline": base.oi, "current": now.oi,
            "pctChange": round(pct, 6), "absChange": round(delta, 6),
            "timestamp": iso_z(datetime.fromtimestamp(now.t, timezone.utc)), "source": "oi_realtime_poller",
            "timeframe": tf.label}
        if base.mark and now.mark:
            payload["priceChange"] = round(now.mark / base.mark - 1, 6)
        if funding_rate is not None:
            payload["fundingRate"] = funding_rate
        return payload  # unknown optional values are omitted, never null

    def _set_inside(self, key: str) -> None:
        if self._outside.pop(key, None) is not None:
            self._save()

    def confirm(self, alert: OiAlert, accepted: bool) -> None:
        """Called once the backend answered: an alert accepted (or maybe stored) keeps its recorded intent; one
        that surely did not arrive (or was dropped unsent) has it undone, so it is due again at the next loop."""
        with self._lock:
            intent = self._intents.pop(alert.key, None)
            if accepted or intent is None:
                return
            ckey, previous = intent
            if self._outside.get(alert.key) == alert.direction:
                del self._outside[alert.key]
            if previous is None:
                self._cooldown_until.pop(ckey, None)
            else:
                self._cooldown_until[ckey] = previous
            self._save()

    def _save(self) -> None:
        if not self._persist:
            return
        save_json(self.path, {"outside": self._outside, "cooldownUntil": self._cooldown_until})


def _valid_state(doc: dict[str, Any]) -> bool:
    outside, cooldowns = doc.get("outside", {}), doc.get("cooldownUntil", {})
    return (isinstance(outside, dict) and all(isinstance(v, str) for v in outside.values())
            and isinstance(cooldowns, dict)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in cooldowns.values()))
