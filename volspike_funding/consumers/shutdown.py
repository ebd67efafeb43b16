"""Prompt stops for the consumers: SIGTERM ends a process within :data:`STOP_BUDGET_S` whatever it is doing.

systemd stops a unit with SIGTERM and kills it after its stop timeout (30 s); a consumer that waited out a rate
pacer's sleep (up to 60 s) or a hung receiver was killed mid-write. So the work runs on daemon threads and the main
thread only waits for a signal; at a stop the work gets a moment to finish its step, the outboxes get the rest of
the budget to deliver what is queued, and what is still queued then is dropped unsent (its ``on_drop`` runs, so an
OI alert's recorded intent is undone). A POST in flight is abandoned with the process: it may have arrived, and
its intent stays recorded, so nothing is ever sent twice.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable, Sequence, TypeVar

from volspike_funding.consumers.sinks import Outbox

log = logging.getLogger("funding.shutdown")

#: The whole stop after SIGTERM: the work's current step, then the outboxes' drain (the issue's bound is 2 s).
STOP_BUDGET_S = 1.0
#: Of that, what the work itself gets to end its step.
WORK_SHARE_S = 0.3

T = TypeVar("T")
R = TypeVar("R")


def interruptible_sleep(stop: threading.Event) -> Callable[[float], None]:
    """A sleep for the REST client's pacer and backoff that ends at once when ``stop`` is set (the pacer can wait
    up to a minute for the next weight window)."""
    def sleep(seconds: float) -> None:
        stop.wait(seconds)
    return sleep


def map_daemon(fn: Callable[[T], R], items: Sequence[T], workers: int, stop: threading.Event) -> list[R | None]:
    """``fn`` over ``items`` on ``workers`` daemon threads; ``None`` for items not started before ``stop``.

    Unlike a ThreadPoolExecutor, whose threads the interpreter joins at exit, a request hung in one of these
    threads never holds the process up after a stop."""
    results: list[R | None] = [None] * len(items)
    todo = iter(range(len(items)))
    lock = threading.Lock()

    def work() -> None:
        while not stop.is_set():
            with lock:
                i = next(todo, None)
            if i is None:
                return
            results[i] = fn(items[i])

    threads = [threading.Thread(target=work, name="fetch", daemon=True) for _ in range(min(workers, len(items)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def run_until_stopped(work: Callable[[], None], stop: threading.Event, outboxes: Iterable[Outbox], *,
                      drain_s: float) -> bool:
    """Run ``work`` on a daemon thread until it returns or ``stop`` is set (by a signal handler: this thread stays
    free to run it). Returns ``True`` when stopped; what ``work`` raised is raised here, after the drain. Work
    that ended by itself (``--once``) gets ``drain_s`` for its deliveries; a stop gets :data:`STOP_BUDGET_S` for
    all of it."""
    failure: list[BaseException] = []

    def guarded() -> None:
        try:
            work()
        except BaseException as exc:  # re-raised below, in the main thread: a crash must still exit non-zero
            failure.append(exc)

    worker = threading.Thread(target=guarded, name="consumer", daemon=True)
    worker.start()
    while worker.is_alive() and not stop.wait(0.5):
        pass
    stopped = stop.is_set()
    started = time.monotonic()
    deadline = started + (STOP_BUDGET_S if stopped else drain_s)
    if stopped:
        worker.join(WORK_SHARE_S)
    for outbox in outboxes:
        left = outbox.close_by(deadline)
        if left:
            log.warning("%s: %d queued deliveries dropped unsent at the stop", outbox.name, left)
    if stopped:
        log.info("stopped %.2f s after the signal", time.monotonic() - started)
    if failure:
        raise failure[0]
    return stopped
