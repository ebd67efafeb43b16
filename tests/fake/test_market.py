"""The fake market's drift: configurable, and held still where two reads a moment apart must agree."""

from __future__ import annotations

from volspike_funding.fake.market import Market


def snapshot(market: Market) -> dict[str, tuple[float, float | None]]:
    return {c.symbol: (c.mark, c.funding) for c in market.contracts.values()}


def test_still_market_moves_neither_price_nor_funding_and_drifts_again_after() -> None:
    market = Market(30, funding_drift=0.001)
    with market.still():
        before = snapshot(market)
        for _ in range(200):
            market.step()
        assert snapshot(market) == before
    assert (market.price_drift, market.funding_drift) == (0.0004, 0.001)
    for _ in range(200):
        market.step()
    after = snapshot(market)
    assert all(after[s][0] != before[s][0] for s in before)  # every price walks
    assert sum(after[s][1] != before[s][1] for s in before if before[s][1] is not None) >= 20  # funding jumps


def test_drift_free_market_from_the_start() -> None:
    market = Market(30, price_drift=0.0, funding_drift=0.0)
    before = snapshot(market)
    market.step()
    assert snapshot(market) == before
