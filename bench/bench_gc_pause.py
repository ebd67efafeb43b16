"""The cyclic collector's full-collection pause in the API and the daemon, without and with
:func:`~volspike_funding.core.cli.freeze_startup_heap`, side by side in one run.

Each process is set up in a child of its own as its ``main()`` sets it up (settings, the state cache and the app
with its server configuration, as :class:`~volspike_funding.api.server.ServerThread` wires them; the daemon
object), then times ``gc.collect()``: a full collection holds the interpreter lock, so every answer, stream and
frame of that process waits for it. Python starts one whenever the objects that survived younger collections reach
a quarter of the old ones: at the 1 s state cadence, every few minutes. What the running process adds later is
walked either way (the local WebSocket's 1,000 connections of bench/bench_stream.py: 12 ms with the freeze, 47 ms
without, seen once each). Run: ``python -m bench.bench_gc_pause [--rounds 7]``.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def build(which: str, tmp: str) -> tuple[Any, Callable[[int], None]]:
    """What the entry point holds when it enters its long-running loop (nothing is started), and how its working
    set is renewed each second: the daemon's 700 records updated from a frame, the API's state read again."""
    from volspike_funding.binance.wire import parse_frame
    from volspike_funding.core.settings import load_settings
    from volspike_funding.fake.market import Market
    from volspike_funding.feed.state import FundingStore
    from volspike_funding.store.statefile import StateWriter

    state = Path(tmp) / "state.json"
    os.environ.update({"VOLSPIKE_ENV_FILE": os.devnull, "FUNDING_STATE_FILE": str(state)})
    market = Market(700)

    def frame(k: int) -> Any:
        market.step()
        return parse_frame(market.frame(1_790_000_000_000 + k * 1000)).updates

    if which == "daemon":
        from volspike_funding.core.settings import DAEMON
        from volspike_funding.feed.daemon import Daemon

        daemon = Daemon(load_settings(components=(DAEMON,)))

        def update(k: int) -> None:
            daemon.store.apply(frame(k), time.time())

        return daemon, update
    from volspike_funding.api.server import ServerThread
    from volspike_funding.core.settings import API

    api = ServerThread(load_settings(components=(API,)))  # wired, never started
    api.sock.close()  # its port is not needed: nothing connects
    store, writer = FundingStore("ws://bench", started_at=time.time(), heartbeat_s=5), StateWriter(state)

    def renew(k: int) -> None:
        store.apply(frame(k), time.time())
        writer.write(store.document(time.time()))
        api.cache.refresh()

    return api, renew


def child(which: str, rounds: int, pipe: Any) -> None:
    from volspike_funding.core.cli import freeze_startup_heap

    with tempfile.TemporaryDirectory(prefix="bench-gc-") as tmp:
        held, renew = build(which, tmp)  # referenced until the figures are sent: what the collector walks
        figures = {}
        for label in ("without", "with"):
            if label == "with":
                freeze_startup_heap()
            times = []
            for k in range(rounds):
                renew(k)  # after the freeze: the second's records are young, as in the running process
                start = time.perf_counter()
                gc.collect()
                times.append((time.perf_counter() - start) * 1000)
            figures[label] = (statistics.median(times), len(gc.get_objects()), gc.get_freeze_count())
        pipe.send(figures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    spawn = multiprocessing.get_context("spawn")
    for which in ("api", "daemon"):
        ours, theirs = spawn.Pipe()
        proc = spawn.Process(target=child, args=(which, args.rounds, theirs))
        proc.start()
        figures = ours.recv()
        proc.join(10)
        (without, objects, _), (with_, left, frozen) = figures["without"], figures["with"]
        print(f"{which:6s} full collection: without freeze {without:6.2f} ms ({objects} objects walked), with "
              f"{with_:6.2f} ms ({left} walked, {frozen} frozen)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
