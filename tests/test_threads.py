"""Many threads calling maps at once: each call gets its own result or its own item's error.

multiprocessing reaps children from any thread (``Process.start`` polls every child), so one
call's clean-up could find its workers already reaped by another thread and fail with
multiprocessing's ``ValueError("Cannot close a process while it is still running...")``.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest

from parmap import BackendName, pmap

THREADS = 8
CALLS = 3


def _boom_at_five(x: int) -> int:
    if x == 5:
        raise ValueError("boom")
    return x


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["process", "pool", "futures", "auto"])
def test_many_threads_each_get_their_own_error(backend: BackendName) -> None:
    seen: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def caller(n: int) -> None:
        for call in range(CALLS):
            start.wait(30)
            fn: Any = _boom_at_five if (n + call) % 2 else abs
            try:
                out = pmap(fn, range(40), backend=backend, workers=2)
                what = "ok" if out == list(range(40)) else f"wrong results {out}"
            except ValueError as exc:
                what = repr(exc)
            except BaseException as exc:  # anything else is the bug this test is about
                what = f"{type(exc).__name__}: {exc}"
            with lock:
                seen[what] += 1

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(100)
    assert not any(t.is_alive() for t in threads)
    half = THREADS * CALLS // 2
    assert seen == {"ok": half, "ValueError('boom')": half}, seen
