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


class Workload:
    """The frames and the functions measured, one frame index each: ``ours`` and the floors, the parsers alone,
    and ten kline messages (:mod:`bench.callgrind_frame_cost` counts the same functions' instructions)."""

    def __init__(self, n_frames: int, prefix: str = "bench-frame-") -> None:
        market = Market(700)
        self.frames = []
        for k in range(n_frames):
            market.step()
            self.frames.append(market.frame(1_790_000_000_000 + k * 1000).encode())
        self.tmp = Path(tempfile.mkdtemp(prefix=prefix))
        self.writer = statefile.StateWriter(self.tmp / "state.json")
        self.store = FundingStore("ws://bench", started_at=time.time(), heartbeat_s=5)
        self.store.apply(parse_frame(self.frames[0]).updates, time.time())
        self.reference = self.store.document(time.time())
        self.plain = self.tmp / "floor.json"
        # Open candles of many symbols, as the kline streams push them (the fake's messages are Binance's shape).
        hour = 1_790_000_000_000 // 3_600_000 * 3_600_000
        symbols = market.usdt_perpetuals()
        self.klines = [market.candles.message(symbols[k % len(symbols)], hour, hour + 1000 + k * 250,
                                              False).encode() for k in range(n_frames)]
        assert all(parse_market_message(m).candles for m in self.klines[:10]), "kline messages must parse"

    def ours(self, i: int) -> None:
        now = time.time()
        self.store.apply(parse_frame(self.frames[i]).updates, now)
        self.writer.write(self.store.document(now))

    def floor_json(self, i: int) -> None:
        json.loads(self.frames[i])
        data = json.dumps(self.reference, ensure_ascii=False, separators=(",", ":")).encode()
        with open(self.plain, "wb") as stream:
            stream.write(data)

    def floor_orjson(self, i: int) -> None:
        orjson.loads(self.frames[i])
        with open(self.plain, "wb") as stream:
            stream.write(orjson.dumps(self.reference))

    def parse(self, i: int) -> None:
        parse_frame(self.frames[i])

    def parse_generic(self, i: int) -> None:
        parse_frame_generic(self.frames[i])

    def loads(self, i: int) -> None:
        orjson.loads(self.frames[i])

    def ten_klines(self, i: int) -> None:  # one message is too short a unit for the process clock
        for _ in range(10):
            parse_market_message(self.klines[i])

    def close(self) -> None:
        self.writer.close()
        for f in self.tmp.iterdir():
            f.unlink()
        os.rmdir(self.tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    work = Workload(args.frames)
    frames, klines, reference = work.frames, work.klines, work.reference

    results: dict[str, list[float]] = {"ours": [], "floor_json": [], "floor_orjson": [], "parse": [],
                                       "parse_generic": [], "loads": [], "kline": []}
    for _ in range(args.rounds):  # interleaved, so machine noise hits all alike
        for name in ("ours", "floor_json", "floor_orjson", "parse", "parse_generic", "loads"):
            results[name].append(cpu_ms(getattr(work, name), args.frames))
        results["kline"].append(cpu_ms(work.ten_klines, args.frames) / 10)
    work.close()
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
