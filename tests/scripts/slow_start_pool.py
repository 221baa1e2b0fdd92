"""A call on "pool" that ends while a worker is still starting, in a caller that ignores
SIGTERM or handles it through asyncio: Pool.terminate()'s SIGTERM must not be what stops it.

``slow_start_pool.py START_METHOD HANDLER FLAG``: every pool worker but the first to create
the file FLAG sleeps before it is set up, keeping the caller's signal dispositions meanwhile.
"""

import asyncio
import os
import signal
import sys
import time
from typing import Any

import parmap.backends._pool
from parmap import pmap
from parmap._worker import pool_initializer


def slow_start(*args: Any) -> None:
    try:
        os.close(os.open(sys.argv[3], os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        time.sleep(20)  # not yet a worker: the caller's signal dispositions still apply
    pool_initializer(*args)


def call() -> None:
    began = time.monotonic()
    out = pmap(abs, [-1, -2, -3], backend="pool", workers=2, start_method=sys.argv[1])
    print(out, f"{time.monotonic() - began:.2f}", flush=True)


async def from_a_loop() -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: print("SIGTERM handled", flush=True))
    await loop.run_in_executor(None, call)


if __name__ == "__main__":
    parmap.backends._pool.pool_initializer = slow_start  # type: ignore[attr-defined, assignment]
    if sys.argv[2] == "asyncio":
        asyncio.run(from_a_loop())
    else:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        call()
