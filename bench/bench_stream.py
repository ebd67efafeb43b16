"""The local WebSocket at scale, side by side in one run (issue 22).

``--all`` subscribers on ``!markPrice@arr@1s`` (combined endpoint) and ``--per-symbol`` on ``<symbol>@markPrice@1s``
(raw endpoint, one symbol each), against the real daemon and API processes fed by the fake Binance at its real
cadence (one all-market frame a second). Printed:

- delivery latency, frame on the host -> delivered to a subscriber: the kernel's receive time of the frame's
  last bytes at the subscriber minus the daemon's receipt of the frame (its ``updatedAt``; the whole path: daemon,
  state file, API, fan-out), p50 / p99 / max, per kind of subscriber (goal p99 <= 20 ms at 500 + 500); and the
  same from the event time the fake stamped before serialising and sending the frame;
- the floor beside each figure: the same subscribers fed frames of the same shape and size, stamped and sent by
  one Python thread doing nothing else (:func:`bench.stream_subscribers.floor_server`, after the service has
  stopped): what the fan-out alone costs on this host;
- the API's CPU % of one core with the subscribers alone, and under the HTTP load without and with them;
- HTTP freshness (``/funding/BTCUSDT`` first showing a new event time, minus that event time, p50) and req/s of
  the same route, without and with the subscribers (goal: within 10 %).

Phases, in order: HTTP alone; the subscribers alone (delivery measured); HTTP with the subscribers still
subscribed and reading (HTTP hammered at full speed would otherwise be measured as the delivery's latency);
HTTP alone again (the "without" figures are the mean of both); the floor.

The fake, the daemon, the API and the subscribers (``--procs`` processes) are separate processes on this machine's
cores. Run: ``python -m bench.bench_stream [--symbols 700] [--all 500] [--per-symbol 500] [--seconds 20]``.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_daemon_resources import cpu_seconds  # noqa: E402
from bench.stream_subscribers import floor_server, start_subscribers  # noqa: E402


def fake_exchange(symbols: int, pipe: Any) -> None:
    from volspike_funding.fake.market import Market
    from volspike_funding.fake.ws_server import FakeBinanceWS

    market = Market(symbols)
    with FakeBinanceWS(market, cadence_s=1.0) as ws:
        pipe.send((ws.url, market.usdt_perpetuals()))
        pipe.recv()


def watch_arrivals(state: Path, stop: threading.Event, out: dict[int, float]) -> None:
    """When the daemon received each frame (a record's ``updatedAt``), by the frame's event time: the fake stamps
    every row of a frame with one ``E``."""
    last = 0
    while not stop.is_set():
        try:
            mtime = state.stat().st_mtime_ns
            if mtime != last:
                last = mtime
                record = orjson.loads(state.read_bytes())["funding_state"]["BTCUSDT"]
                out[record["eventTime"]] = record["updatedAt"] * 1000
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_phase(port: int, pid: int, seconds: float) -> tuple[float, float, float]:
    """(API CPU %, freshness p50 ms, req/s) over ``seconds``: half polling for freshness, half for throughput."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    lags, last = [], 0
    while time.monotonic() - t0 < seconds / 2:
        conn.request("GET", "/funding/BTCUSDT")
        body = conn.getresponse().read()
        event = orjson.loads(body).get("eventTime") or 0
        if event != last:
            if last:
                lags.append(time.time() * 1000 - event)
            last = event
        time.sleep(0.002)
    n, t1 = 0, time.monotonic()
    while time.monotonic() - t1 < seconds / 2:
        conn.request("GET", "/funding/BTCUSDT")
        conn.getresponse().read()
        n += 1
    rate = n / (time.monotonic() - t1)
    cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100
    conn.close()
    return cpu, statistics.median(lags) if lags else float("nan"), rate


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def subscriber_phase(spawn: Any, port: int, api_pid: int, state: Path, streams: list[str], args: Any,
                     deflate: bool) -> dict[str, Any]:
    """Connect the subscribers, time their deliveries, then take the HTTP figures beside them."""
    procs: list[tuple[Any, Any]] = []
    try:
        procs = start_subscribers(spawn, port, streams, args.procs, args.seconds, deflate)
        arrivals: dict[int, float] = {}
        stop = threading.Event()
        watcher = threading.Thread(target=watch_arrivals, args=(state, stop, arrivals), daemon=True)
        watcher.start()
        cpu0, t0 = cpu_seconds(api_pid), time.monotonic()
        for _, pipe in procs:
            pipe.send("go")
        out: dict[str, Any] = {"stamped": {"all": [], "symbol": []}, "hosted": {"all": [], "symbol": []},
                               "frames": 0, "deflated": 0}
        for _, pipe in procs:
            values_by_kind, frames, deflated = pipe.recv()
            out["frames"] += frames
            out["deflated"] += deflated
            for kind, values in values_by_kind.items():
                out["stamped"][kind] += [at - event for event, at in values]
                out["hosted"][kind] += [at - arrivals[event] for event, at in values if event in arrivals]
        out["cpu"] = (cpu_seconds(api_pid) - cpu0) / (time.monotonic() - t0) * 100
        stop.set()
        out["http"] = http_phase(port, api_pid, args.seconds)
        for _, pipe in procs:
            pipe.send("stop")
    finally:
        for proc, _ in procs:
            proc.join(10)
    return out


def floor_phase(spawn: Any, symbols: int, streams: list[str], args: Any, deflate: bool) -> dict[str, list[float]]:
    """The same subscribers fed by :func:`~bench.stream_subscribers.floor_server` instead of the service: their
    delivery from the frame's stamp, by kind."""
    mine, child = spawn.Pipe()
    server = spawn.Process(target=floor_server, args=(symbols, child), daemon=True)
    server.start()
    port = mine.recv()
    mine.send(len(streams))
    procs: list[tuple[Any, Any]] = []
    out: dict[str, list[float]] = {"all": [], "symbol": []}
    try:
        procs = start_subscribers(spawn, port, streams, args.procs, args.seconds, deflate)
        assert mine.recv() == "accepted"
        for _, pipe in procs:
            pipe.send("go")
        for _, pipe in procs:
            for kind, values in pipe.recv()[0].items():
                out[kind] += [at - event for event, at in values]
    finally:
        mine.send("stop")  # before the subscribers go: it never writes to a socket they closed
        server.join(10)
        for proc, pipe in procs:
            pipe.send("stop")
            proc.join(10)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=700)
    parser.add_argument("--all", type=int, default=500, help="subscribers of !markPrice@arr@1s")
    parser.add_argument("--per-symbol", type=int, default=500, help="subscribers of one <symbol>@markPrice@1s each")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--procs", type=int, default=2, help="subscriber processes")
    parser.add_argument("--deflate", choices=("both", "on", "off"), default="both",
                        help="subscribers offering permessage-deflate (both: one phase each, side by side)")
    args = parser.parse_args(argv)
    spawn = multiprocessing.get_context("spawn")
    tmp = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    ours, theirs = spawn.Pipe()
    fake = spawn.Process(target=fake_exchange, args=(args.symbols, theirs), daemon=True)
    fake.start()
    ws_url, symbols = ours.recv()
    port = free_port()
    env = {**os.environ, "VOLSPIKE_ENV_FILE": os.devnull, "BINANCE_WS_URL": ws_url, "FUNDING_LOG_LEVEL": "WARNING",
           "FUNDING_STATE_FILE": str(tmp / "state.json"), "FUNDING_REFERENCE_ENABLED": "false",
           "FUNDING_API_PORT": str(port)}
    daemon = subprocess.Popen([sys.executable, str(ROOT / "binance_funding_ws_daemon.py")], env=env)
    api = subprocess.Popen([sys.executable, str(ROOT / "funding_api_server.py")], env=env)
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.deflate]
    phases: dict[bool, dict[str, Any]] = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/funding/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        time.sleep(2)
        cpu_without, fresh_without, rate_without = http_phase(port, api.pid, args.seconds)
        streams = ["!markPrice@arr@1s"] * args.all + [
            f"{symbols[i % len(symbols)].lower()}@markPrice@1s" for i in range(args.per_symbol)]
        for deflate in modes:
            phases[deflate] = subscriber_phase(spawn, port, api.pid, tmp / "state.json", streams, args, deflate)
            time.sleep(2)  # the closed connections gone before the next phase
        # HTTP alone once more: "without" is the mean of before and after, so a drift of the shared VM's speed
        # over the run is not read as the subscribers' effect (the two are printed).
        before, after = (cpu_without, fresh_without, rate_without), http_phase(port, api.pid, args.seconds)
        cpu_without, fresh_without, rate_without = ((a + b) / 2 for a, b in zip(before, after))
    finally:
        api.terminate()
        daemon.terminate()
        api.wait(10)
        daemon.wait(10)
        ours.send("stop")
        fake.join(10)
    floors = {deflate: floor_phase(spawn, args.symbols, streams, args, deflate) for deflate in phases}
    print(f"{args.all} subscribers of !markPrice@arr@1s + {args.per_symbol} of <symbol>@markPrice@1s, "
          f"{len(symbols)} symbols at 1 frame/s, {args.seconds:g} s per phase, {os.cpu_count()} cores shared by the "
          f"fake, daemon, API and {args.procs} subscriber processes")
    for deflate, out in phases.items():
        print(f"-- subscribers {'offering permessage-deflate' if deflate else 'without compression'}: "
              f"{out['deflated']} of {out['frames']} messages arrived compressed")
        for kind, label in (("all", "!markPrice@arr@1s"), ("symbol", "<symbol>@markPrice@1s")):
            for values, since in ((out["hosted"][kind], "on the host"), (out["stamped"][kind], "stamped E ")):
                print(f"delivery, frame {since} -> subscriber, {label:22s} {len(values):6d} frames: p50 "
                      f"{pct(values, 0.5):6.1f} ms, p99 {pct(values, 0.99):6.1f} ms, max "
                      f"{max(values, default=float('nan')):6.1f} ms")
            floor = floors[deflate][kind]
            print(f"  floor, {label:22s} (same readers, frames stamped and sent by floor_server) p50 "
                  f"{pct(floor, 0.5):6.1f} ms, p99 {pct(floor, 0.99):6.1f} ms; ours/floor p99 "
                  f"{pct(out['hosted'][kind], 0.99) / pct(floor, 0.99):.2f}x")
        cpu_with, fresh_with, rate_with = out["http"]
        print(f"API CPU, subscribers alone:             {out['cpu']:6.1f} % of one core")
        print(f"API CPU under the HTTP load, without / with subscribers: {cpu_without:6.1f} % / {cpu_with:6.1f} %")
        print(f"HTTP freshness p50, without / with:     {fresh_without:6.1f} ms / {fresh_with:6.1f} ms   "
              f"({fresh_with / fresh_without:.2f}x; goal within 1.10x)")
        print(f"HTTP req/s, without / with:             {rate_without:6.0f} / {rate_with:6.0f}   "
              f"({rate_with / rate_without:.2f}x; goal within 10 %)")
    print(f"(HTTP without the subscribers, before / after them: {before[2]:.0f} / {after[2]:.0f} req/s, freshness "
          f"{before[1]:.1f} / {after[1]:.1f} ms)")
    print("(on the host: from the daemon's receipt of the frame; stamped E: from the fake's event time, which adds "
          "the fake's own serialising and sending; goal p99 <= 20 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
