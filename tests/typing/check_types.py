"""Static checks, run by mypy --strict in CI (not collected by pytest).

Each ``assert_type`` fails mypy if parmap's signatures infer the wrong type; each
``# type: ignore[...]`` marks a call that must be a type error: with ``warn_unused_ignores``
(part of --strict), mypy fails if such a call stops being an error.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Iterator
from typing import Any

from typing_extensions import assert_type

import parmap
from parmap import (
    Channel,
    MapIterator,
    imap,
    pmap,
    pstarmap,
    queue_collect,
    run_processes,
    worker_state,
)


def to_str(x: int) -> str:
    return str(x)


def add(a: int, b: float) -> float:
    return a + b


def join3(a: str, b: int, c: bytes) -> str:
    return a


def produce(n: int, label: str, q: Channel[bytes]) -> None:
    q.put(bytes(n))


def check() -> None:
    assert_type(pmap(to_str, [1, 2]), list[str])
    assert_type(pmap(add, [1, 2], [0.5, 1.5]), list[float])
    assert_type(pmap(join3, ["a"], [1], [b"x"]), list[str])
    assert_type(pmap(lambda x: x * 2.0, [1, 2]), list[float])
    assert_type(imap(to_str, range(3)), MapIterator[str])
    assert_type(imap(to_str, range(3), ordered=False, workers=2), MapIterator[str])
    assert_type(pstarmap(add, [(1, 2.0), (3, 4.0)]), list[float])
    assert_type(run_processes(add, [(1, 2.0)]), list[float])
    assert_type(queue_collect(produce, [(1, "a")]), list[bytes])
    with cf.ThreadPoolExecutor() as executor:
        assert_type(pmap(to_str, [1], backend=executor, chunksize=4), list[str])
    for value in imap(to_str, [1]):
        assert_type(value, str)
    assert_type(pmap(to_str, [1], progress=True, initializer=print, initargs=("x",)), list[str])
    assert_type(pmap(to_str, [1], progress=lambda done, total: None), list[str])
    assert_type(worker_state(), Any)

    pmap(to_str, ["a", "b"])  # type: ignore[arg-type]
    pmap(add, [1], ["x"])  # type: ignore[arg-type]
    pmap(to_str, [1], workers="2")  # type: ignore[call-overload]
    pmap(to_str, [1], colour="red")  # type: ignore[call-overload]
    pstarmap(add, [("1", 2.0)])  # type: ignore[arg-type]
    run_processes(add, [(1,)])  # type: ignore[arg-type]
    queue_collect(produce, [(1, 2)])  # type: ignore[arg-type]
    pmap(to_str, [1], progress="yes")  # type: ignore[call-overload]
    pmap(to_str, [1], initargs=["x"])  # type: ignore[call-overload]


def check_backend_names() -> None:
    pmap(to_str, [1], backend="process")
    pmap(to_str, [1], backend="proces")  # type: ignore[call-overload]
    name: parmap.BackendName = "thread"
    assert_type(pmap(to_str, [1], backend=name), list[str])


def check_long_maps() -> None:
    assert_type(pmap(to_str, [1], errors="return"), list[str | Exception])
    assert_type(pmap(to_str, [1], errors="raise"), list[str])
    assert_type(pmap(add, [1], [2.0], errors="return", retries=2), list[float | Exception])
    assert_type(imap(to_str, [1], errors="return"), MapIterator[str | Exception])
    assert_type(imap(to_str, [1], ordered=False, errors="return"), MapIterator[str | Exception])
    assert_type(pstarmap(add, [(1, 2.0)], errors="return"), list[float | Exception])
    assert_type(
        pmap(
            to_str,
            [1],
            retries=3,
            retry_on=(ConnectionError,),
            max_tasks_per_worker=100,
            max_memory_per_worker="1GiB",
            checkpoint="run.sqlite",
        ),
        list[str],
    )
    assert_type(imap(to_str, [1]).summary, parmap.Summary)
    assert_type(imap(to_str, [1]).summary.retried, int)
    pmap(to_str, [1], errors="skip")  # type: ignore[call-overload]
    pmap(to_str, [1], retries="2")  # type: ignore[call-overload]
    pmap(to_str, [1], retry_on=[ValueError])  # type: ignore[call-overload]


def check_process_executor() -> None:
    with parmap.ProcessExecutor(2, timeout=1.0) as executor:
        assert_type(executor, parmap.ProcessExecutor)
        assert_type(executor.submit(to_str, 1), cf.Future[str])
        assert_type(executor.submit(add, 1, b=2.0), cf.Future[float])
        assert_type(executor.submit(lambda: b"x"), cf.Future[bytes])
        assert_type(executor.map(to_str, [1, 2]), Iterator[str])
        assert_type(executor.map(add, [1], [2.0], timeout=1, chunksize=4), Iterator[float])
        assert_type(executor.map(to_str, [1], buffersize=8), Iterator[str])
        executor.submit(to_str, "1")  # type: ignore[arg-type]
        executor.submit(add, 1)  # type: ignore[call-arg]
        executor.submit(to_str, 1, colour="red")  # type: ignore[call-arg]
    parmap.ProcessExecutor(max_tasks_per_worker="2")  # type: ignore[arg-type]
