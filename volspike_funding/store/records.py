"""The state file's per-symbol records as the daemon keeps them in memory (the format: :mod:`.statefile`).

A frame refreshes ~700 records a second, and that refresh is the largest cost of a frame after parsing: so a
record the daemon made is overwritten in place (eight stores) rather than rebuilt as a new dict, which saves the
allocation and the freeing of 700 dicts a frame (0.42 → 0.29 ms per 700-symbol frame, bench/bench_frame_cost.py).
In-place is safe because every record in the daemon's table is one it owns: restored records are copied
(:func:`own_record`), and the writers encode the table synchronously, between frames.
"""

from __future__ import annotations

from typing import Any, Collection, Iterable, NamedTuple

from volspike_funding.binance.wire import MarkPrice

#: The keys of a record, in the order the daemon writes them.
RECORD_KEYS = ("symbol", "markPrice", "indexPrice", "estimatedSettlePrice", "fundingRate", "nextFundingTime",
               "eventTime", "updatedAt", "binance")


def symbol_record(update: MarkPrice, received_at: float) -> dict[str, Any]:
    """The state file's entry for one symbol; ``updatedAt`` is when the frame carrying it arrived."""
    return {
        "symbol": update.symbol,
        "markPrice": update.mark_price,
        "indexPrice": update.index_price,
        "estimatedSettlePrice": update.settle_price,
        "fundingRate": update.funding_rate,
        "nextFundingTime": update.next_funding_time,
        "eventTime": update.event_time,
        "updatedAt": received_at,
        "binance": f"{update.mark_price_str}|{update.index_price_str or ''}|{update.settle_price_str or ''}|"
                   f"{update.funding_rate_str or ''}|{update.mark_average_str or ''}|"
                   f"{'' if update.symbol_type is None else update.symbol_type}",
    }


def own_record(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of a record read from a file (checked already), with exactly :data:`RECORD_KEYS`: it is then the
    daemon's own, which :func:`refresh` may overwrite in place, and a key an older writer added does not linger."""
    copy = {key: record.get(key) for key in RECORD_KEYS}
    if copy["binance"] is None:
        copy["binance"] = ""  # what readers make of a record without one (statefile.binance_strings)
    return copy


class Refreshed(NamedTuple):
    applied: int
    stale: int
    overridden: int
    unlisted: int


def refresh(symbols: dict[str, dict[str, Any]], updates: Iterable[MarkPrice], received_at: float,
            future_after_ms: int | None, listed: Collection[str] | None, unlisted_seen: set[str]) -> Refreshed:
    """Store updates into ``symbols`` (the rules: :meth:`.feed.state.FundingStore.apply`, which owns them; one
    loop here because it runs for every symbol of every frame). ``listed``: the symbols that may be stored, or
    ``None`` for all; a few of the others are added to ``unlisted_seen``."""
    applied = stale = overridden = unlisted = 0
    for update in updates:
        symbol = update.symbol
        if listed is not None and symbol not in listed:
            unlisted += 1
            if len(unlisted_seen) < 20:
                unlisted_seen.add(symbol)
            continue
        old = symbols.get(symbol)
        if old is None:
            symbols[symbol] = symbol_record(update, received_at)
            applied += 1
            continue
        if old["eventTime"] > update.event_time:
            if future_after_ms is None or old["eventTime"] <= future_after_ms:
                stale += 1
                continue
            overridden += 1
        kind = update.symbol_type
        old["markPrice"] = update.mark_price
        old["indexPrice"] = update.index_price
        old["estimatedSettlePrice"] = update.settle_price
        old["fundingRate"] = update.funding_rate
        old["nextFundingTime"] = update.next_funding_time
        old["eventTime"] = update.event_time
        old["updatedAt"] = received_at
        old["binance"] = (f"{update.mark_price_str}|{update.index_price_str or ''}|{update.settle_price_str or ''}|"
                          f"{update.funding_rate_str or ''}|{update.mark_average_str or ''}|"
                          f"{'' if kind is None else kind}")
        applied += 1
    return Refreshed(applied, stale, overridden, unlisted)
