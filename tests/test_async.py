"""``apmap`` and ``aimap``: pmap's results and errors under asyncio and Trio, a loop never
blocked, and cancellation that stops the workers.

Every test runs under both event loops (AnyIO's pytest plugin). Items that must be running when
the test acts say so on a FIFO and then block on another (``Gate``): no sleeps, and a test that
would wait forever fails by its timeout instead.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

import parmap
from parmap import aimap, apmap, pmap

from .conftest import ENGINES, SESSION_THREADS, with_engines
from .helpers import children

pytestmark = pytest.mark.anyio

#: The event loops every test runs under.
LOOPS = [
    pytest.param("asyncio"),
    pytest.param(
        "trio",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("trio") is None, reason="trio is not installed"
        ),
    ),
]

#: The backends whose results are compared with pmap's: worker processes, threads, the default.
SOME = [e for e in ENGINES if e.name in ("process", "thread", "auto") and e.default_method]


@pytest.fixture(params=LOOPS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(autouse=True)
def _loop_threads() -> Iterator[None]:
    """The event loop library's worker threads are its own pool, not a test's leftovers:
    AnyIO's asyncio workers end with their loop (joined here), Trio keeps idle ones for ten
    seconds for the next run (counted with the session's helpers, as ``no_leaks`` allows)."""
    before = set(threading.enumerate())
    yield
    for thread in set(threading.enumerate()) - before:
        if type(thread).__name__ == "WorkerThread" and thread.name == "AnyIO worker thread":
            thread.join(5)
        elif thread.name.startswith("Trio thread"):
            SESSION_THREADS.add(thread)


@dataclass(frozen=True)
class Gate:
    """Items that say they started (one byte on the ``started`` FIFO) and then block until
    released (a byte on the ``release`` FIFO); FIFOs by path, so that any worker can open them,
    whatever its start method and whenever it was started."""

    started: str
    release: str

    @classmethod
    def make(cls, where: Path) -> Gate:
        gate = cls(str(where / "started"), str(where / "release"))
        os.mkfifo(gate.started)
        os.mkfifo(gate.release)
        return gate

    def block(self, x: int) -> int:
        """Say so, then wait for the release."""
        try:
            with open(self.started, "w") as f:
                f.write("s")
        except BrokenPipeError:
            pass  # another item said so first, and the reader has gone: block all the same
        with open(self.release) as f:
            f.read(1)
        return x

    def block_from(self, first: int) -> Any:
        """A function that returns items below ``first`` at once and blocks on the others."""

        def fn(x: int) -> int:
            return x if x < first else self.block(x)

        return fn

    async def wait_started(self) -> None:
        def read() -> None:
            with open(self.started) as f:
                assert f.read(1) == "s"

        await anyio.to_thread.run_sync(read)

    async def open_release(self) -> None:
        def write() -> None:
            with open(self.release, "w") as f:
                f.write("r")

        await anyio.to_thread.run_sync(write)


@pytest.fixture
def gate(tmp_path: Path) -> Gate:
    return Gate.make(tmp_path)


def square(x: int) -> int:
    return x * x


def notes(exc: BaseException) -> list[str] | None:
    return getattr(exc, "__notes__", None)


def fail_at_3(x: int) -> int:
    if x == 3:
        raise KeyError(x)
    return x


# -- results and errors --------------------------------------------------------------------------


@with_engines(SOME)
async def test_apmap_equals_pmap(engine: dict[str, Any]) -> None:
    assert await apmap(square, range(50), **engine) == pmap(square, range(50), **engine)
    assert await apmap(pow, [2, 3, 4], [5, 2, 1], **engine) == [32, 9, 4]
    assert await apmap(square, [], **engine) == []


@with_engines(SOME)
async def test_aimap_ordered_and_unordered(engine: dict[str, Any]) -> None:
    async with aimap(square, range(50), chunksize=3, **engine) as ordered:
        assert [r async for r in ordered] == [x * x for x in range(50)]
    async with aimap(square, range(50), ordered=False, chunksize=3, **engine) as unordered:
        assert sorted([r async for r in unordered]) == [x * x for x in range(50)]


@with_engines(SOME)
async def test_the_long_map_options_hold(engine: dict[str, Any]) -> None:
    results = await apmap(fail_at_3, range(6), errors="return", retries=1, **engine)
    assert isinstance(results[3], KeyError)
    assert [r for i, r in enumerate(results) if i != 3] == [0, 1, 2, 4, 5]
    async with aimap(fail_at_3, range(6), errors="return", **engine) as it:
        assert len([r async for r in it]) == 6
    assert it.summary.failed == 1


@with_engines(SOME)
async def test_first_exception_as_pmap_raises_it(engine: dict[str, Any]) -> None:
    with pytest.raises(KeyError) as expected:
        pmap(fail_at_3, range(10), chunksize=2, **engine)
    with pytest.raises(KeyError) as got:
        await apmap(fail_at_3, range(10), chunksize=2, **engine)
    assert got.value.args == expected.value.args
    assert notes(got.value) == notes(expected.value)
    assert type(got.value.__cause__) is type(expected.value.__cause__)
    seen: list[int] = []

    async def consume() -> None:
        async with aimap(fail_at_3, range(10), chunksize=2, **engine) as results:
            async for r in results:
                seen.append(r)

    with pytest.raises(KeyError) as also:
        await consume()
    assert seen == [0, 1, 2]
    assert notes(also.value) == notes(expected.value)


async def test_bad_arguments_raise_at_call_time() -> None:
    read: list[int] = []

    def source() -> Iterator[int]:
        read.append(1)
        yield 1

    with pytest.raises(TypeError, match=r"apmap\(\): argument 2 must be iterable"):
        apmap(square, 5)  # type: ignore[call-overload]  # no await: raised at the call
    with pytest.raises(ValueError, match=r"aimap\(\): workers must be at least 1"):
        aimap(square, source(), workers=0)  # not at the first __anext__
    with pytest.raises(TypeError, match=r"aimap\(\): ordered must be True or False"):
        aimap(square, source(), ordered=1)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="unknown backend"):
        apmap(square, source(), backend="nope")  # type: ignore[call-overload]
    assert read == []


async def test_without_anyio_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "anyio", None)  # import anyio raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'parmap-typed\[async\]'"):
        await apmap(square, [1])
    with pytest.raises(ImportError, match=r"pip install 'parmap-typed\[async\]'"):
        aimap(square, [1])


async def test_results_cross_a_chunk_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """One thread hop per chunk of results, never one per item."""
    from parmap import _async

    hops = 0
    step = _async._Run.step

    def counted(run: _async._Run) -> list[Any] | None:
        nonlocal hops
        hops += 1
        return step(run)

    monkeypatch.setattr(_async._Run, "step", counted)
    async with aimap(square, range(10_000), chunksize=1000, backend="thread") as results:
        assert [r async for r in results] == [x * x for x in range(10_000)]
    assert hops <= 10 + 1  # ten chunks, and the hop that finds the end
    hops = 0
    assert len(await apmap(square, range(10_000), chunksize=1000, backend="thread")) == 10_000
    assert hops <= 10 + 1  # in one thread hop: these are the steps it took there


@pytest.mark.timeout(30)
async def test_slow_consumer_stops_the_reading_of_input() -> None:
    read = 0

    def endless() -> Iterator[int]:
        nonlocal read
        while True:
            read += 1
            yield read

    async with aimap(square, endless(), backend="process", workers=2, chunksize=1) as results:
        assert await results.__anext__() == 1
        # imap's window: four chunks per worker, consumed or not.
        assert read <= 4 * 2 + 1


# -- the loop runs on ----------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("backend", ["process", "serial"])
async def test_the_loop_runs_while_the_map_blocks(gate: Gate, backend: Any) -> None:
    """Another task counts while an item blocks; the item is released only once it has counted:
    a blocked loop would never get there (and the test would time out)."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        await gate.wait_started()
        for _ in range(3):
            ticks += 1
            await anyio.lowlevel.checkpoint()
        await gate.open_release()

    async with anyio.create_task_group() as group:
        group.start_soon(ticker)
        assert await apmap(gate.block, [7], backend=backend) == [7]
    assert ticks == 3


# -- cancellation --------------------------------------------------------------------------------


async def _cancel_while_blocked(gate: Gate, **options: Any) -> None:
    """Start a map whose items block, cancel it once one runs; assert the cancellation
    completed and no process is left."""
    before = children()

    async def run() -> None:
        await apmap(gate.block, range(4), **options)

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(run)
            await gate.wait_started()
            scope.cancel()
    assert scope.cancelled_caught
    assert children() - before == set()


@pytest.mark.timeout(20)
@pytest.mark.parametrize("backend", ["process", "pool", "futures", "auto"])
async def test_cancel_stops_workers_of_a_blocked_item(gate: Gate, backend: Any) -> None:
    await _cancel_while_blocked(gate, backend=backend, workers=2, timeout=600)
    assert await apmap(square, range(5), backend=backend, workers=2) == [0, 1, 4, 9, 16]


@pytest.mark.timeout(20)
async def test_cancel_while_workers_start(gate: Gate) -> None:
    """The workers are still in their initializer (which blocks) when the task is cancelled."""
    before = children()

    async def run() -> None:
        await apmap(square, range(4), backend="process", workers=2,
                    initializer=gate.block, initargs=(0,))  # fmt: skip

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(run)
            await gate.wait_started()
            scope.cancel()
    assert scope.cancelled_caught
    assert children() - before == set()
    assert await apmap(square, range(3), backend="process", workers=2) == [0, 1, 4]


@pytest.mark.timeout(20)
async def test_cancel_before_the_map_starts(gate: Gate) -> None:
    before = children()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await apmap(gate.block, range(4), backend="process")  # would block: never runs
    assert scope.cancelled_caught
    assert children() - before == set()
    assert await apmap(square, [3], backend="process") == [9]


@pytest.mark.timeout(20)
async def test_cancel_aimap_waiting_for_a_blocked_item(gate: Gate) -> None:
    before = children()
    seen: list[int] = []
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:

            async def consume() -> None:
                async with aimap(gate.block_from(2), range(10), backend="process",
                                 workers=1, chunksize=1) as results:  # fmt: skip
                    async for r in results:
                        seen.append(r)

            group.start_soon(consume)
            await gate.wait_started()
            scope.cancel()
    assert scope.cancelled_caught
    assert seen in ([], [0], [0, 1])  # what was consumed before the cancel
    assert children() - before == set()


@pytest.mark.timeout(20)
async def test_leaving_async_for_stops_the_workers(gate: Gate) -> None:
    before = children()
    fn = gate.block_from(1)
    async with aimap(fn, range(10), backend="process", workers=2, chunksize=1) as results:
        async for r in results:
            assert r == 0
            break
        await gate.wait_started()  # a worker is running a blocked item now
    assert children() - before == set()
    with pytest.raises(StopAsyncIteration):
        await results.__anext__()
    # aclose() on its own, and again: nothing left to stop.
    again = aimap(fn, range(10), backend="process", workers=2, chunksize=1)
    assert await again.__anext__() == 0
    await again.aclose()
    await again.aclose()
    assert children() - before == set()


@pytest.mark.timeout(20)
async def test_cancel_takes_effect_after_a_running_thread_item(gate: Gate) -> None:
    """In threads nothing can be interrupted: the cancellation completes once the item returns,
    and no further input is read."""
    ran: list[int] = []

    def fn(x: int) -> int:
        ran.append(x)
        return gate.block(x) if x == 0 else x

    async def run() -> None:
        await apmap(fn, range(100), backend="thread", workers=1, chunksize=1)

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(run)
            await gate.wait_started()
            scope.cancel()
            # Cancelled, the task waits for the item: release it (shielded from the cancel).
            with anyio.CancelScope(shield=True):
                await gate.open_release()
    assert scope.cancelled_caught
    assert ran[0] == 0
    assert len(ran) < 100


@pytest.mark.timeout(20)
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("how", ["wait_for", "task.cancel"])
async def test_asyncio_cancellation(gate: Gate, how: str) -> None:
    before = children()
    if how == "wait_for":
        # The timeout is the trigger, not what is tested: the items sleep a minute (the
        # test's timeout would fail it) whether or not they have started when it fires.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(apmap(time.sleep, [60] * 4, backend="process"), 0.5)
    else:
        task = asyncio.ensure_future(apmap(gate.block, range(4), backend="process"))
        await gate.wait_started()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert children() - before == set()
    assert await apmap(square, [4], backend="process") == [16]


def test_exported() -> None:
    assert {"apmap", "aimap", "AsyncMapIterator"} <= set(parmap.__all__)
