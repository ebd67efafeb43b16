"""Per-symbol stream planning on its own (feed/streams.py), on made-up monotonic times: which symbols get a stream,
the 1024-stream cap, SUBSCRIBE pacing within Binance's 10 messages a second, listings and delistings, and a stall
of the all-market stream (issue 19)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from volspike_funding.feed.streams import (MAX_STREAMS_PER_CONNECTION, MESSAGES_PER_S, PARAMS_PER_MESSAGE, PLAN_EVERY_S,
                                           WINDOW_S, ExtraStreams, StreamManager, Subscriptions)

CARRIED = [f"C{i:03d}USDT" for i in range(50)]
TRADING = frozenset(CARRIED + ["TSLAUSDT", "NVDAUSDT"])


@dataclass
class Conn:
    """What the manager needs of a connection: an id, its subscriptions and a ``send`` (here: a record). With a
    ``manager``, Binance's reply comes back at once: acknowledged, or ``error`` (``SILENT``: no reply at all)."""

    id: int = 1
    subs: Subscriptions = field(default_factory=Subscriptions)
    sent: list[dict] = field(default_factory=list)
    ok: bool = True
    aborting: bool = False  # True: we closed it ourselves (the watchdog, a rotation)
    manager: StreamManager | None = None
    error: str | None = None

    def send(self, text: str) -> bool:
        message = json.loads(text)
        self.sent.append(message)
        if self.manager is not None and self.error != SILENT:
            self.manager.replied(self, message["id"], self.error, self.subs.last_subscribe or 0.0)
        return self.ok


SILENT = "no reply"


def flowing(coverage: ExtraStreams, start: float, seconds: int, symbols: list[str] = CARRIED) -> float:
    for t in range(seconds):
        coverage.note_all_market(symbols, start + t)
    return start + seconds - 1


def test_no_decision_before_three_all_market_frames_then_only_the_missing_symbols() -> None:
    coverage = ExtraStreams()
    coverage.note_all_market(CARRIED, 0.0)
    coverage.note_all_market(CARRIED, 1.0)
    assert coverage.wanted(TRADING, 1.0) is None  # one frame may be partial
    coverage.note_all_market(CARRIED, 2.0)
    assert coverage.wanted(TRADING, 2.0) == {"TSLAUSDT", "NVDAUSDT"}


def test_a_symbol_the_stream_stops_carrying_gets_a_stream_after_the_window() -> None:
    coverage = ExtraStreams()
    now = flowing(coverage, 0.0, 5)
    now = flowing(coverage, now + 1, int(WINDOW_S) - 1, CARRIED[1:])  # C000USDT last carried at 4 s
    assert "C000USDT" not in (coverage.wanted(TRADING, now) or ())
    now = flowing(coverage, now + 1, 2, CARRIED[1:])
    assert coverage.wanted(TRADING, now) == {"C000USDT", "TSLAUSDT", "NVDAUSDT"}


def test_a_stall_ages_nobody_and_changes_no_plan() -> None:
    """Issue 19: 30 s without any all-market frame once made every listed symbol 'missing'."""
    coverage = ExtraStreams()
    now = flowing(coverage, 0.0, 10)
    for later in (now + 3.5, now + 31, now + 600):
        assert coverage.wanted(TRADING, later) is None and not coverage.flowing(later)
    resumed = now + 600
    coverage.note_all_market(CARRIED, resumed)
    assert coverage.flowing(resumed) and coverage.wanted(TRADING, resumed) == {"TSLAUSDT", "NVDAUSDT"}


def test_the_manager_keeps_its_plan_through_a_stall() -> None:
    manager = StreamManager()
    conn = Conn(manager=manager)
    now = flowing(manager.coverage, 0.0, 5)
    manager.tick([conn], TRADING, now)
    assert conn.subs.symbols == {"TSLAUSDT", "NVDAUSDT"}
    t = now
    while t < now + 120:
        t += 0.5
        manager.tick([conn], TRADING, t)
    assert conn.subs.symbols == {"TSLAUSDT", "NVDAUSDT"} and len(conn.sent) == 1


def test_more_than_one_connection_carries_is_capped_with_one_warning(caplog) -> None:
    coverage = ExtraStreams()
    many = frozenset(f"T{i:04d}USDT" for i in range(1500))
    now = flowing(coverage, 0.0, 3)
    wanted = coverage.wanted(many, now)
    assert wanted is not None and len(wanted) == MAX_STREAMS_PER_CONNECTION - 1  # one is the all-market stream
    assert coverage.capped == 1500 - 1023
    coverage.wanted(many, now + 5)
    assert sum("are not served" in r.message for r in caplog.records) == 1  # once per change, not every plan
    assert coverage.left_out == sorted(many)[1023:1033]


def test_subscriptions_are_chunked_and_paced_under_binances_limit() -> None:
    subs = Subscriptions()
    wanted = {f"T{i:04d}USDT" for i in range(1023)}
    assert subs.plan(wanted) == (1023, 0)
    assert subs.pending == -(-1023 // PARAMS_PER_MESSAGE) == 6
    sent, t = [], 100.0
    while subs.pending:
        message = subs.next_message(t)
        if message is not None:
            sent.append((t, json.loads(message)))
        t = round(t + 0.01, 2)
    assert [m["method"] for _, m in sent] == ["SUBSCRIBE"] * 6 and [m["id"] for _, m in sent] == list(range(1, 7))
    assert sum(len(m["params"]) for _, m in sent) == 1023 and sent[0][1]["params"][0] == "t0000usdt@markPrice@1s"
    times = [at for at, _ in sent]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 1 / MESSAGES_PER_S - 1e-9  # never more than 5 a second: half of Binance's 10
    for start in times:  # and never more than 10 in any one-second window
        assert sum(start <= x < start + 1 for x in times) <= 10


def test_listing_and_delisting_change_the_plan_with_one_message_each() -> None:
    manager, conn = StreamManager(), Conn()
    now = flowing(manager.coverage, 0.0, 3)
    manager.tick([conn], TRADING, now)
    assert conn.sent[-1] == {"method": "SUBSCRIBE", "params": ["nvdausdt@markPrice@1s", "tslausdt@markPrice@1s"],
                             "id": 1}
    # A new stream-only listing: the reference data changes, the daemon replans at once.
    now = flowing(manager.coverage, now + 1, 1)
    manager.replan()
    manager.tick([conn], TRADING | {"MSFTUSDT"}, now)
    assert conn.sent[-1]["method"] == "SUBSCRIBE" and conn.sent[-1]["params"] == ["msftusdt@markPrice@1s"]
    # A delisting: the next plan (every PLAN_EVERY_S) unsubscribes it; nothing else is touched.
    now = flowing(manager.coverage, now + 1, int(PLAN_EVERY_S))
    manager.tick([conn], (TRADING | {"MSFTUSDT"}) - {"NVDAUSDT"}, now)
    assert conn.sent[-1] == {"method": "UNSUBSCRIBE", "params": ["nvdausdt@markPrice@1s"], "id": 3}
    assert conn.subs.symbols == {"TSLAUSDT", "MSFTUSDT"} and len(conn.sent) == 3


def test_unknown_reference_data_subscribes_nothing_and_a_new_connection_gets_the_plan() -> None:
    manager, first = StreamManager(), Conn()
    now = flowing(manager.coverage, 0.0, 3)
    manager.tick([first], None, now)
    assert first.sent == [] and manager.wanted is None
    manager.tick([first], TRADING, now)
    second = Conn(id=2)  # a reconnect or a rotation: the same streams on the new connection
    manager.tick([first, second], TRADING, now + 0.5)
    assert second.subs.symbols == {"TSLAUSDT", "NVDAUSDT"} and second.sent[0]["method"] == "SUBSCRIBE"


def test_a_connection_closed_right_after_a_subscribe_pauses_them_with_a_growing_backoff() -> None:
    """Issue 20.1: re-sending the refused SUBSCRIBE on every reconnect cost the all-market stream each time."""
    manager = StreamManager(pause_base_s=30.0)
    now = flowing(manager.coverage, 0.0, 3)
    first = Conn()
    manager.tick([first], TRADING, now)
    assert first.sent[0]["method"] == "SUBSCRIBE" and first.subs.last_subscribe == now
    manager.closed(first, now + 0.2, "code 1008: Too many requests")
    assert manager.paused_until == now + 0.2 + 30.0 and "paused for 30 s (refusal 1)" in (manager.refusal or "")
    assert manager.status(now + 1)["subscriptionsPaused"] == manager.refusal
    second = Conn(id=2)
    manager.tick([second], TRADING, now + 29)  # paused: the new connection carries the all-market stream alone
    assert second.sent == [] and second.subs.symbols == set()
    manager.tick([second], TRADING, now + 30.5)  # the pause is over: try again
    assert second.sent[0]["method"] == "SUBSCRIBE"
    manager.closed(second, now + 31, "refused again")
    assert manager.paused_until == now + 31 + 60.0 and manager.refusals == 2


def test_a_subscribe_that_outlives_the_window_ends_the_backoff_and_old_ones_prove_nothing() -> None:
    manager = StreamManager(pause_base_s=30.0)
    now = flowing(manager.coverage, 0.0, 3)
    old, refused = Conn(id=1, manager=manager), Conn(id=2)
    manager.tick([old], TRADING, now)  # an older connection, subscribed long ago and still open
    manager.tick([old, refused], TRADING, now + 100)
    manager.closed(refused, now + 100.5, "closed")
    manager.tick([old], TRADING, now + 110)  # ``old``'s SUBSCRIBE is older than the refusal: still paused
    assert manager.refusals == 1 and manager.status(now + 110)["subscriptionsPaused"]
    fresh = Conn(id=3)
    manager.tick([old, fresh], TRADING, now + 131)  # after the pause: a new SUBSCRIBE ...
    assert fresh.subs.last_subscribe == now + 131
    manager.tick([old, fresh], TRADING, now + 137)  # ... that outlived the window
    assert manager.refusals == 0 and manager.status(now + 137)["subscriptionsPaused"] is None


def test_a_close_long_after_the_subscribe_or_without_one_is_no_refusal() -> None:
    manager = StreamManager()
    now = flowing(manager.coverage, 0.0, 3)
    conn, never, ours = Conn(), Conn(id=2), Conn(id=3)
    manager.tick([conn, ours], TRADING, now)
    ours.aborting = True
    manager.closed(ours, now + 0.5, "no mark-price data for 10 s (watchdog)")  # our own abort refused nothing
    manager.closed(conn, now + 60, "the 24 h cut")
    manager.closed(never, now + 60, "watchdog")
    assert manager.refusals == 0 and manager.paused_until is None


# -- replies (issue 23.4) -----------------------------------------------------------------------------------------

def test_only_acknowledged_streams_count_and_a_refused_subscribe_is_asked_again_with_backoff() -> None:
    """Issue 23.4: a SUBSCRIBE answered with an error left its symbols "No data yet" until the next reconnect, while
    health counted them as subscribed."""
    manager = StreamManager(reply_timeout_s=10.0)
    conn = Conn(manager=manager, error="error 2: 'Invalid request: too many parameters'")
    now = flowing(manager.coverage, 0.0, 3)
    manager.tick([conn], TRADING, now)
    status = manager.status(now)
    assert status["perSymbolStreams"] == 0 and status["perSymbolStreamsWanted"] == 2 and status["heldStreams"] == 2
    assert status["subscriptionsFailing"] == ("Binance answered SUBSCRIBE 1 with error 2: 'Invalid request: too many "
                                              "parameters' (2 streams); asked again in 10 s (failure 1)")
    t, sent_at = now, []
    while t < now + 100:
        t = flowing(manager.coverage, t + 1, 1)
        before = len(conn.sent)
        manager.tick([conn], TRADING, t)
        if len(conn.sent) > before:
            sent_at.append(t - now)
    assert sent_at == [10, 30, 70]  # 10 s, then doubling: never a SUBSCRIBE a second
    conn.error = None  # Binance accepts them again
    while t < now + 300:
        t = flowing(manager.coverage, t + 1, 1)
        manager.tick([conn], TRADING, t)
    status = manager.status(t)
    assert status["perSymbolStreams"] == 2 and status["heldStreams"] == 0 and status["subscriptionsFailing"] is None
    assert len(conn.sent) == 5


def test_an_unanswered_subscribe_is_given_up_after_the_timeout_and_a_late_reply_changes_nothing() -> None:
    manager = StreamManager(reply_timeout_s=10.0)
    conn = Conn(manager=manager, error=SILENT)
    now = flowing(manager.coverage, 0.0, 3)
    manager.tick([conn], TRADING, now)
    manager.tick([conn], TRADING, flowing(manager.coverage, now + 1, 9))
    assert manager.status(now + 9)["subscriptionsFailing"] is None  # not yet: Binance may still answer
    t = flowing(manager.coverage, now + 10, 2)
    manager.tick([conn], TRADING, t)
    assert (manager.status(t)["subscriptionsFailing"] or "").startswith("no reply to SUBSCRIBE 1 within 10 s")
    manager.replied(conn, 1, None, t)  # too late: it was given up on, and asked for again later
    assert manager.status(t)["perSymbolStreams"] == 0 and manager.status(t)["heldStreams"] == 2


def test_replies_are_matched_by_id_and_an_error_naming_none_answers_the_oldest() -> None:
    subs = Subscriptions()
    subs.plan({f"T{i:04d}USDT" for i in range(300)})  # two SUBSCRIBEs: ids 1 and 2
    assert subs.next_message(0.0) and subs.next_message(1.0)
    assert subs.reply(2, None) is not None and len(subs.confirmed) == 100
    refused = subs.reply(None, "error 2: 'Invalid request: request ID must be an unsigned integer'")
    assert refused is not None and refused.id == 1 and len(subs.held) == 200
    assert subs.reply(7, None) is None  # an id we never sent
    subs.release()
    assert subs.plan({f"T{i:04d}USDT" for i in range(300)}) == (200, 0)
