"""Instructions per 700-symbol frame (callgrind), for ``ours`` and the orjson floor of ``bench_frame_cost``.

Wall-clock CPU on a shared 2-CPU VM moved the ratio between 1.15x and 1.72x in three runs of one build; instruction
counts move by well under 1 %, so they decide whether a change to the frame path helps. Each function runs ``N``
and ``N + 40`` times in two processes under valgrind; the difference over 40 is the cost of one call, setup
(the fake market's frames, imports) cancelling out. Kernel time (the file writes) is not counted: it is the same
for both, so the ratio here is the stricter one. Needs valgrind.
Run: ``python -m bench.callgrind_frame_cost [ours floor_orjson parse loads]`` (about a minute per function).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SMALL, EXTRA = 10, 40
FUNCTIONS = ("ours", "floor_orjson", "parse", "loads")


def child(which: str, n: int) -> None:
    """Set up as ``bench_frame_cost`` does (its :class:`~bench.bench_frame_cost.Workload`), then call one of its
    functions ``n`` times."""
    from bench.bench_frame_cost import Workload

    work = Workload(60, prefix="callgrind-frame-")
    fn = getattr(work, which)
    for i in range(n):
        fn(1 + i % 59)  # never frame 0 again: its updates are stored already
    work.close()


def instructions(which: str, n: int) -> int:
    # A fixed hash seed: set and dict layouts (and so the counts) then repeat from run to run.
    result = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                             "-m", "bench.callgrind_frame_cost", "--child", which, str(n)],
                            capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"},
                            cwd=Path(__file__).resolve().parent.parent, check=True)
    found = re.search(r"Collected : (\d+)", result.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from callgrind: {result.stderr[-500:]}")
    return int(found.group(1))


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        child(argv[1], int(argv[2]))
        return 0
    counts = {}
    for which in argv or FUNCTIONS:
        counts[which] = (instructions(which, SMALL + EXTRA) - instructions(which, SMALL)) / EXTRA
        print(f"{which}: {counts[which] / 1e6:.2f}M instructions per call", flush=True)
    if "ours" in counts and "floor_orjson" in counts:
        print(f"ratio ours / orjson floor: {counts['ours'] / counts['floor_orjson']:.2f}x (instructions; "
              "target <= 1.5x, issue 21)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
