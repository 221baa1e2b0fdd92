"""A service-style caller: a SIGTERM handler of its own, which forked workers inherit.

``service_map.py BACKEND START_METHOD HANDLER MODE``: HANDLER ``exit`` installs
``sys.exit(1)`` on SIGTERM (what a service does to shut down cleanly), ``ignore`` ignores
SIGTERM (kept across ``exec``, so spawned workers have it too), ``asyncio`` makes the call from
an event loop's executor with ``loop.add_signal_handler(SIGTERM, ...)`` (a Python handler that
does nothing, and the loop's wakeup fd). MODE ``raise``: item 0 raises
while the other worker is busy; the script prints how long the call took, then makes another
call. MODE ``busy``: every item is slow; each worker says which pid started an item, and the
test signals the caller.
"""

import asyncio
import os
import signal
import sys
import time
from typing import Any

from parmap import pmap


def work(x: int) -> int:
    if x < 0:
        time.sleep(0.3)  # the other worker is inside its item by now
        raise ValueError(f"item {x} failed")
    os.write(1, f"started {os.getpid()}\n".encode())  # one write: lines cannot interleave
    time.sleep(60)  # the work: long enough to be interrupted
    return x


def calls(options: Any) -> None:
    began = time.monotonic()
    try:
        pmap(work, [-1, 1, 2, 3], chunksize=1, **options)
    except ValueError as error:
        print(f"raised {error} after {time.monotonic() - began:.2f}s", flush=True)
    print("next call:", pmap(abs, [-1, -2], **options), flush=True)


async def from_a_loop(options: Any) -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: print("SIGTERM handled", flush=True))
    await loop.run_in_executor(None, calls, options)


if __name__ == "__main__":
    backend: Any = sys.argv[1]
    start_method, handler, mode = sys.argv[2:5]
    # As a program started from a terminal (a test runner may hand its children SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if handler == "exit":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    elif handler == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    options: Any = {"backend": backend, "start_method": start_method, "workers": 2}
    if mode == "busy":
        pmap(work, range(8), chunksize=1, **options)
    elif handler == "asyncio":
        asyncio.run(from_a_loop(options))
    else:
        calls(options)
