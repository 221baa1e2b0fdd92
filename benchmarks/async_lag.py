"""How late a 10 ms ticker on the event loop runs while ``apmap`` maps, under asyncio and Trio.

Two maps: 1,000,000 trivial items (``"auto"`` keeps them in the caller: the map's thread holds
the GIL, and the loop gets it back at each switch interval) and 16 coarse items of about 0.2 s
of CPU each (``"auto"`` sends them to worker processes). Each row gives the map's wall time,
the same map's with ``pmap`` for comparison, how many ticks ran, and the ticker's lateness
(median and worst) while the map ran; ``idle`` is the ticker alone, for the floor. Run as
``python benchmarks/async_lag.py`` (needs the ``async`` extra; Trio is skipped when missing).
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from collections.abc import Callable
from typing import Any

import anyio

import parmap

TICK = 0.01


def trivial(x: int) -> int:
    return x + 1


def coarse(x: int) -> int:
    """About 0.2 s of CPU."""
    end = time.perf_counter() + 0.2
    n = 0
    while time.perf_counter() < end:
        n += 1
    return x


async def ticker(lateness: list[float], stop: anyio.Event) -> None:
    while not stop.is_set():
        due = time.perf_counter() + TICK
        await anyio.sleep(TICK)
        lateness.append(time.perf_counter() - due)


async def measure(label: str, run: Callable[[], Any], sync: Callable[[], Any] | None) -> None:
    lateness: list[float] = []
    stop = anyio.Event()
    async with anyio.create_task_group() as group:
        group.start_soon(ticker, lateness, stop)
        began = time.perf_counter()
        await run()
        wall = time.perf_counter() - began
        stop.set()
    plain = ""
    if sync is not None:
        began = time.perf_counter()
        sync()
        plain = f"(pmap {time.perf_counter() - began:5.2f} s)"
    late = [x * 1000 for x in lateness] or [0.0]
    print(
        f"  {label:24} wall {wall:5.2f} s {plain:16} ticks {len(lateness):4}  "
        f"lateness median {statistics.median(late):5.1f} ms, worst {max(late):6.1f} ms"
    )


async def main() -> None:
    await measure("idle (1 s)", lambda: anyio.sleep(1.0), None)
    items = range(1_000_000)
    await measure(
        "1,000,000 trivial items",
        lambda: parmap.apmap(trivial, items),
        lambda: parmap.pmap(trivial, items),
    )
    await measure(
        "16 items of 0.2 s CPU",
        lambda: parmap.apmap(coarse, range(16)),
        lambda: parmap.pmap(coarse, range(16)),
    )


if __name__ == "__main__":
    for loop in ["asyncio", "trio"]:
        if loop == "trio" and importlib.util.find_spec("trio") is None:
            print("trio: not installed, skipped")
            continue
        print(f"{loop}:")
        parmap.shutdown()
        anyio.run(main, backend=loop)
    parmap.shutdown()
