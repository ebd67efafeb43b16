"""CPU time per 700-symbol frame: parse + state update + state-file write, next to the floor, same run.

The floor is what any implementation must at least do: ``json.loads`` of the frame, serialising the state with
``json.dumps`` and one file write. A second floor does the same with orjson, the codec the daemon uses.
Beside it, the CPU of one ``<symbol>@kline_1h`` message through the kline parser (the market feed's unit of work,
~2,400 a second with 600 symbols at 4 pushes each; issue 21's goal: 20 µs).
Run: ``python -m bench.bench_frame_cost [--frames N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from volspike_funding.store import statefile  # noqa: E402
from volspike_funding.fake.market import Market  # noqa: E402
from volspike_funding.feed.state import FundingStore  # noqa: E402
from volspike_funding.binance.market_wire import parse_market_message  # noqa: E402
from volspike_funding.binance.wire import parse_frame, parse_frame_generic  # noqa: E402


def cpu_ms(fn: Callable[[int], None], n: int) -> float:
    start = time.process_time()
    for i in range(n):
        fn(i)
    return (time.process_time() - start) / n * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    market = Market(700)
    frames = []
    for k in range(args.frames):
        market.step()
        frames.append(market.frame(1_790_000_000_000 + k * 1000).encode())
    tmp = Path(tempfile.mkdtemp(prefix="bench-frame-"))
    writer = statefile.StateWriter(tmp / "state.json")
    store = FundingStore("ws://bench", started_at=time.time(), heartbeat_s=5)
    store.apply(parse_frame(frames[0]).updates, time.time())
    reference = store.document(time.time())
    plain = tmp / "floor.json"
    # Open candles of many symbols, as the kline streams push them (the fake's messages are Binance's shape).
    hour = 1_790_000_000_000 // 3_600_000 * 3_600_000
    symbols = market.usdt_perpetuals()
    klines = [market.candles.message(symbols[k % len(symbols)], hour, hour + 1000 + k * 250, False).encode()
              for k in range(args.frames)]
    assert all(parse_market_message(m).candles for m in klines[:10]), "kline messages must parse to candles"

    def ours(i: int) -> None:
        now = time.time()
        store.apply(parse_frame(frames[i]).updates, now)
        writer.write(store.document(now))

    def floor_json(i: int) -> None:
        json.loads(frames[i])
        data = json.dumps(reference, ensure_ascii=False, separators=(",", ":")).encode()
        with open(plain, "wb") as stream:
            stream.write(data)

    def floor_orjson(i: int) -> None:
        orjson.loads(frames[i])
        with open(plain, "wb") as stream:
            stream.write(orjson.dumps(reference))

    results: dict[str, list[float]] = {"ours": [], "floor_json": [], "floor_orjson": [], "parse": [],
                                       "parse_generic": [], "loads": [], "kline": []}
    for _ in range(args.rounds):  # interleaved, so machine noise hits all alike
        results["ours"].append(cpu_ms(ours, args.frames))
        results["floor_json"].append(cpu_ms(floor_json, args.frames))
        results["floor_orjson"].append(cpu_ms(floor_orjson, args.frames))
        results["parse"].append(cpu_ms(lambda i: parse_frame(frames[i]), args.frames))
        results["parse_generic"].append(cpu_ms(lambda i: parse_frame_generic(frames[i]), args.frames))
        results["loads"].append(cpu_ms(lambda i: orjson.loads(frames[i]), args.frames))
        results["kline"].append(cpu_ms(lambda i: [parse_market_message(klines[i]) for _ in range(10)] and None,
                                       args.frames) / 10)
    writer.close()
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"frame: 700 symbols, {len(frames[0]) / 1024:.0f} KiB; state file {len(statefile.encode(reference)) / 1024:.0f} KiB")
    print(f"ours (parse + update + atomic write):      {med['ours']:.3f} ms CPU/frame   (target <= 3 ms)")
    print(f"floor, json.loads + json.dumps + write:    {med['floor_json']:.3f} ms CPU/frame")
    print(f"floor, orjson.loads + orjson.dumps + write: {med['floor_orjson']:.3f} ms CPU/frame")
    print(f"ratio ours / json floor:   {med['ours'] / med['floor_json']:.2f}x")
    print(f"ratio ours / orjson floor: {med['ours'] / med['floor_orjson']:.2f}x   (target <= 1.5x, issue 21)")
    print(f"parse only: fast path (msgspec) {med['parse']:.3f} ms, generic (orjson + a dict per row) "
          f"{med['parse_generic']:.3f} ms, orjson.loads alone {med['loads']:.3f} ms")
    print(f"kline message (<symbol>@kline_1h, {len(klines[0])} B): {med['kline'] * 1000:.1f} µs CPU   "
          "(goal <= 20 µs, issue 21)")
    for f in tmp.iterdir():
        f.unlink()
    os.rmdir(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
