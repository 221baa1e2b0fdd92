"""What starting one worker by fork costs the caller, by how much memory the caller holds:
``python benchmarks/fork_cost.py``.

``"auto"`` could start a worker before its probe knows whether the function is worth one (the
worker would compute while the caller probes); every first call of every function would then
pay this, the small ones included. The median of 15 ``Process.start()`` calls (fork), with the
caller as it is, then holding 500 MB and 2,000 MB more, resident.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import statistics
import time


def nothing() -> None:
    pass


def start_ms() -> float:
    ctx = multiprocessing.get_context("fork")
    times = []
    for _ in range(15):
        began = time.perf_counter()
        proc = ctx.Process(target=nothing)
        proc.start()
        times.append(time.perf_counter() - began)
        proc.join()
    return statistics.median(times) * 1e3


def main() -> None:
    print(f"# {platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"caller as it is: Process.start() {start_ms():.2f} ms")
    for mb in (500, 2000):
        held = bytearray(b"x" * (mb << 20))  # touched: resident
        print(f"caller holding {mb} MB more: Process.start() {start_ms():.2f} ms")
        del held


if __name__ == "__main__":
    main()
