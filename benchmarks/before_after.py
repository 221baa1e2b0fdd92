"""Two versions of parmap side by side: ``python benchmarks/before_after.py OLD_SRC NEW_SRC``.

Each ``src`` folder (for instance a ``git worktree`` of an older commit, and this one) is put on
``PYTHONPATH`` of a child interpreter that times ``pmap`` on the ``trivial`` (``square`` over
1,000,000 ints) and ``coarse`` (16 items of ~0.2 s) workloads, on ``"auto"`` and ``"process"``,
a first call (nothing warm, no cost remembered) and a second one. Rounds alternate between the
two versions (interleaved: a noisy neighbour slows both alike); the table gives medians,
[min-max] and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

ONE_RUN = """
import json, sys, time
import parmap
from parmap._auto import forget_costs
from parmap._bench import spin, square
n, out = int(sys.argv[1]), {}
for backend in ("auto", "process"):
    for name, fn, items in (("trivial", square, range(1_000_000)), ("coarse", spin, [n] * 16)):
        parmap.shutdown()
        forget_costs()
        for call in ("first", "second"):
            began = time.perf_counter()
            parmap.pmap(fn, items, backend=backend, workers=2)
            out[f"{name} / {backend} / {call} call"] = time.perf_counter() - began
parmap.shutdown()
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="the older version's src folder")
    parser.add_argument("new", help="the newer version's src folder")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from parmap._bench import calibrate

    n = calibrate(0.2)
    runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for _ in range(args.rounds):
        for which in ("old", "new"):
            env = {**os.environ, "PYTHONPATH": getattr(args, which)}
            done = subprocess.run(
                [sys.executable, "-c", ONE_RUN, str(n)],
                env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            runs[which].append(json.loads(done.stdout))
    print(
        "| workload / backend / call | old: median s [min-max] | new: median s [min-max] |", end=""
    )
    print(" new/old |")
    print("|---|---|---|---|")
    for key in runs["new"][0]:
        old = [run[key] for run in runs["old"]]
        new = [run[key] for run in runs["new"]]
        print(
            f"| {key} | {statistics.median(old):.3f} [{min(old):.3f}-{max(old):.3f}] "
            f"| {statistics.median(new):.3f} [{min(new):.3f}-{max(new):.3f}] "
            f"| {statistics.median(new) / statistics.median(old):.2f} |"
        )


if __name__ == "__main__":
    main()
