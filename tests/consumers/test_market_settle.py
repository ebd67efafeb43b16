"""The :00 scan in ws mode waits for the final candles of the hour that just closed (Binance sends them ~2 s after
the close) instead of asking REST for every symbol; a final that never comes costs only the wait."""

from __future__ import annotations

import threading
from typing import Callable

from volspike_funding.api.server import ServerThread
from volspike_funding.consumers.market_source import LocalMarketClient
from volspike_funding.core.settings import Settings
from volspike_funding.store import marketfile

from ..api.test_market_routes import document, just_closed
from ..conftest import scaled


def test_the_batch_is_asked_again_until_the_closed_hour_is_final(make_settings: Callable[..., Settings]) -> None:
    settings, path = just_closed(make_settings, 15)
    with ServerThread(settings) as api:
        client = LocalMarketClient(api.url + "/funding", timeout=2, breaker_s=1)
        assert client.klines(2) == {}  # without waiting: nobody is answered whole (then REST for each)
        calls = client.calls
        assert client.klines(2, settle_s=scaled(8), settle_min_s=scaled(1)) == {}  # it never came: no progress,
        # ... so it stopped asking after settle_min_s (a poll every 0.5 s), not at the end of settle_s (16 polls).
        assert calls + 2 <= client.calls <= calls + int(scaled(1) / 0.5) + 3
        late = threading.Timer(scaled(1), lambda: marketfile.write(path, document([True, True, False])))
        late.start()
        got = client.klines(2, settle_s=scaled(8), settle_min_s=scaled(4))
        late.join()
        assert list(got) == ["BTCUSDT"] and [r[4] for r in got["BTCUSDT"]] == ["100.7", "100.9"]
