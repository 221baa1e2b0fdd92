"""``parmap.ProcessExecutor``: the concurrent.futures contract, and no broken state, ever.

Scenarios follow CPython's ``test_concurrent_futures`` (executor, wait, as_completed, shutdown,
process pool, deadlock), with BrokenProcessPool replaced by "this future fails with a clear
error and the executor still works". Tasks that must stay running are held by FIFOs: a task
reports its pid on one (``Fifo``) and waits for a byte on another (``Gate``); nothing sleeps
to synchronise.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import itertools
import os
import re
import select
import signal
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import parmap
from parmap import (
    InitializerError,
    ProcessExecutor,
    TaskExitError,
    TaskPicklingError,
    TaskTimeoutError,
    WorkerCrashedError,
)

from . import faults
from .helpers import busy_program, run_script, wait_gone
from .test_faults import CATALOGUE

#: Seconds within which anything a test waits for must happen.
BOUND = 10.0


# -- tasks (module level: the workers import them by reference) ----------------------------------


def square(x: int) -> int:
    return x * x


def pid(_: object = None) -> int:
    return os.getpid()


def mul(x: int, *, by: int = 1) -> int:
    return x * by


def fail(message: str) -> None:
    raise ValueError(message)


def report_then_wait(report: str, gate: str, value: int = 0) -> int:
    """Say this worker's pid on the ``report`` FIFO, then wait for a byte on ``gate``."""
    fd = os.open(report, os.O_WRONLY)
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    fd = os.open(gate, os.O_RDONLY)
    try:
        os.read(fd, 1)
    finally:
        os.close(fd)
    return value


def report_then_block(report: str) -> None:
    fd = os.open(report, os.O_WRONLY)
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    threading.Event().wait()


def crash_with(payload: bytes) -> None:
    os._exit(len(payload) % 7 + 1)


def state(_: object = None) -> Any:
    return parmap.worker_state()


def bad_initializer() -> None:
    raise RuntimeError("no model")


# -- synchronisation -----------------------------------------------------------------------------


class Fifo:
    """Lines written by tasks (their pids); held open here so a writer never blocks or ends it."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = str(path)
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self._keep = os.open(path, os.O_WRONLY)
        self._buffer = b""

    def pids(self, count: int) -> list[int]:
        while self._buffer.count(b"\n") < count:
            ready, _, _ = select.select([self._fd], [], [], BOUND)
            assert ready, f"no word from the tasks within {BOUND}s"
            self._buffer += os.read(self._fd, 4096)
        lines = self._buffer.split(b"\n")
        self._buffer = b"\n".join(lines[count:])
        return [int(line) for line in lines[:count]]

    def close(self) -> None:
        os.close(self._fd)
        os.close(self._keep)


class Gate:
    """Tasks wait for a byte each; ``open(n)`` lets ``n`` of them go."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = str(path)
        self._fd = os.open(path, os.O_RDWR)  # both ends: a task's open never blocks

    def open(self, count: int = 1) -> None:
        os.write(self._fd, b"!" * count)

    def close(self) -> None:
        os.close(self._fd)


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Fifo]:
    f = Fifo(tmp_path / "report")
    yield f
    f.close()


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Gate]:
    g = Gate(tmp_path / "gate")
    yield g
    g.close()


@pytest.fixture
def executor() -> Iterator[ProcessExecutor]:
    with ProcessExecutor(2) as ex:
        yield ex


# -- ExecutorTest --------------------------------------------------------------------------------


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_submit_on_every_start_method(start_method: str) -> None:
    with ProcessExecutor(2, start_method=start_method) as ex:
        assert ex.submit(pow, 2, 8).result(BOUND) == 256
        assert ex.submit(lambda x: x + 1, 1).result(BOUND) == 2


def test_submit_keyword_and_closures(executor: ProcessExecutor) -> None:
    assert executor.submit(mul, 2, by=21).result(BOUND) == 42
    base = 10
    assert executor.submit(lambda x: x + base, 1).result(BOUND) == 11
    # A closure is sent as it is at submit time, as ProcessPoolExecutor pickles it.
    cell = [1]
    first = executor.submit(lambda: cell[0])
    assert first.result(BOUND) == 1
    cell[0] = 2
    assert executor.submit(lambda: cell[0]).result(BOUND) == 2


def test_map(executor: ProcessExecutor) -> None:
    assert list(executor.map(square, range(10))) == [x * x for x in range(10)]
    assert list(executor.map(pow, range(10), range(10))) == [pow(x, x) for x in range(10)]
    assert list(executor.map(square, range(50), chunksize=7)) == [x * x for x in range(50)]
    assert list(executor.map(square, [])) == []


def test_map_exception_is_raised_when_reached(executor: ProcessExecutor) -> None:
    results = executor.map(divmod, [1, 1, 1, 1], [2, 3, 0, 5], chunksize=4)
    assert next(results) == (0, 1)
    assert next(results) == (0, 1)
    with pytest.raises(ZeroDivisionError) as info:
        next(results)
    assert isinstance(info.value.__cause__, parmap.RemoteTraceback)


def test_map_deadline_timeout(executor: ProcessExecutor, fifo: Fifo) -> None:
    results = executor.map(report_then_block, [fifo.path] * 3, timeout=0.5)
    with pytest.raises(cf.TimeoutError):
        list(results)
    # The blocked chunks were cancelled, their workers killed and replaced.
    assert executor.submit(square, 3).result(BOUND) == 9


def test_map_reads_input_lazily(executor: ProcessExecutor) -> None:
    read = itertools.count()

    def endless() -> Iterator[int]:
        for i in itertools.count():
            next(read)
            yield i

    results = executor.map(square, endless())
    assert [next(results) for _ in range(100)] == [i * i for i in range(100)]
    results.close()  # type: ignore[attr-defined]
    assert next(read) < 100 + 2**17  # a window ahead, never the whole (endless) input


def test_map_buffersize_bounds_the_read_ahead(executor: ProcessExecutor) -> None:
    taken: list[int] = []

    def numbers() -> Iterator[int]:
        for i in range(1000):
            taken.append(i)
            yield i

    results = executor.map(square, numbers(), buffersize=5)
    assert len(taken) <= 5
    assert next(results) == 0
    assert len(taken) <= 6
    assert list(results) == [i * i for i in range(1, 1000)]


def test_map_argument_checks(executor: ProcessExecutor) -> None:
    with pytest.raises(ValueError, match="chunksize"):
        executor.map(square, [1], chunksize=0)
    with pytest.raises(ValueError, match="buffersize"):
        executor.map(square, [1], buffersize=0)


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="workers"):
        ProcessExecutor(0)
    with pytest.raises(ValueError, match="timeout"):
        ProcessExecutor(1, timeout=0)
    with pytest.raises(ValueError, match="max_tasks_per_worker"):
        ProcessExecutor(1, max_tasks_per_worker=0)
    with pytest.raises(ValueError, match="start_method"):
        ProcessExecutor(1, start_method="vfork")
    with pytest.raises(TypeError, match="initializer"):
        ProcessExecutor(1, initializer=3)  # type: ignore[arg-type]


def test_remote_traceback(executor: ProcessExecutor) -> None:
    with pytest.raises(ValueError, match="boom") as info:
        executor.submit(fail, "boom").result(BOUND)
    cause = info.value.__cause__
    assert isinstance(cause, parmap.RemoteTraceback)
    assert "in fail" in cause.tb


def test_unpicklable_function_fails_its_future(executor: ProcessExecutor) -> None:
    lock = threading.Lock()
    future = executor.submit(lambda: lock)
    with pytest.raises(TaskPicklingError, match="could not be pickled"):
        future.result(BOUND)
    assert executor.submit(square, 2).result(BOUND) == 4


def test_idle_worker_is_reused() -> None:
    with ProcessExecutor(2) as ex:
        pids = {ex.submit(pid).result(BOUND) for _ in range(5)}
    assert len(pids) == 1


# -- faults: one future each, nothing else --------------------------------------------------------


def test_fault_catalogue_through_submit(executor: ProcessExecutor, fifo: Fifo,
                                        gate: Gate) -> None:  # fmt: skip
    """Every fault of the catalogue fails its own future only; the rest complete, and the
    executor works after all of them, with as many workers as it started with."""
    for fault in CATALOGUE:
        items = list(fault.items)
        found = re.search(r"item (\d+)", fault.message)
        assert found is not None
        bad = int(found.group(1))
        futures = [executor.submit(fault.fn, item) for item in items]
        message = re.sub(r"item \d+", r"item \\d+", fault.message)
        for i, future in enumerate(futures):
            if i == bad:
                with pytest.raises(fault.error, match=message):
                    future.result(BOUND)
            else:
                assert future.result(BOUND) == fault.fn(items[i]), fault
    assert executor.submit(square, 7).result(BOUND) == 49
    assert list(executor.map(square, range(5))) == [0, 1, 4, 9, 16]
    assert len(busy_workers(executor, fifo, gate, 2)) == 2


def busy_workers(ex: ProcessExecutor, fifo: Fifo, gate: Gate, count: int) -> set[int]:
    """The pids of ``count`` workers each running a task at once (so that many are alive)."""
    futures = [ex.submit(report_then_wait, fifo.path, gate.path) for _ in range(count)]
    pids = set(fifo.pids(count))
    gate.open(count)
    assert [f.result(BOUND) for f in futures] == [0] * count
    return pids


def test_crash_names_pid_and_signal(executor: ProcessExecutor) -> None:
    future = executor.submit(faults.kill_self_at, 2)
    with pytest.raises(WorkerCrashedError) as info:
        future.result(BOUND)
    error = info.value
    assert error.exitcode == -signal.SIGKILL
    assert error.pid is not None
    assert f"pid {error.pid}" in str(error)
    assert "SIGKILL" in str(error)


def test_sys_exit_fails_its_future(executor: ProcessExecutor) -> None:
    with pytest.raises(TaskExitError, match=r"called sys.exit\(4\)"):
        executor.submit(faults.call_sys_exit, 2).result(BOUND)
    assert executor.submit(square, 3).result(BOUND) == 9


def test_crash_spares_the_running_futures(executor: ProcessExecutor, fifo: Fifo,
                                          gate: Gate) -> None:  # fmt: skip
    """test_deadlock's crash scenarios (and test_killed_child): not BrokenProcessPool, but the
    one future failing while the other, running beside it, completes."""
    running = executor.submit(report_then_wait, fifo.path, gate.path, 5)
    (running_pid,) = fifo.pids(1)
    crashed = executor.submit(crash_with, b"x" * (1 << 20))  # a big payload, as crash_big_data
    with pytest.raises(WorkerCrashedError, match="exit code"):
        crashed.result(BOUND)
    assert not running.done()
    gate.open()
    assert running.result(BOUND) == 5
    assert running_pid in busy_workers(executor, fifo, gate, 2)


def test_worker_killed_from_outside(executor: ProcessExecutor, fifo: Fifo) -> None:
    future = executor.submit(report_then_block, fifo.path)
    (worker,) = fifo.pids(1)
    os.kill(worker, signal.SIGKILL)
    with pytest.raises(WorkerCrashedError) as info:
        future.result(BOUND)
    assert info.value.pid == worker
    assert executor.submit(square, 4).result(BOUND) == 16


def test_many_crashes_never_break_it(executor: ProcessExecutor) -> None:
    """More deaths than the per-call respawn cap of a map: each fails its own future."""
    futures = [executor.submit(faults.call_os_exit, 2) for _ in range(10)]
    for future in futures:
        with pytest.raises(WorkerCrashedError):
            future.result(BOUND)
    assert executor.submit(square, 5).result(BOUND) == 25


# -- timeout and cancel ----------------------------------------------------------------------------


def test_timeout_kills_the_task_and_fails_its_future(fifo: Fifo) -> None:
    # Builtins beside the overrun: a worker's first task of a function from this module pays
    # for importing it (pytest and all), which counts against the timeout on a busy host.
    with ProcessExecutor(2, timeout=1.0) as ex:
        late = ex.submit(report_then_block, fifo.path)
        (worker,) = fifo.pids(1)
        quick = ex.submit(pow, 6, 2)
        with pytest.raises(TaskTimeoutError, match=r"ran longer than timeout=1.0s"):
            late.result(BOUND)
        assert wait_gone(worker, BOUND)
        assert quick.result(BOUND) == 36
        assert ex.submit(pow, 2, 2).result(BOUND) == 4


def test_cancel_running_future_kills_its_worker(executor: ProcessExecutor, fifo: Fifo) -> None:
    future = executor.submit(report_then_block, fifo.path)
    (worker,) = fifo.pids(1)
    assert future.running()
    called: list[bool] = []
    future.add_done_callback(lambda f: called.append(f.cancelled()))
    assert future.cancel()
    assert future.cancelled()
    assert called == [True]
    with pytest.raises(cf.CancelledError):
        future.result(BOUND)
    done, _ = cf.wait([future], timeout=BOUND)
    assert done == {future}
    assert wait_gone(worker, BOUND)
    assert executor.submit(square, 3).result(BOUND) == 9


def test_cancel_pending_and_finished(executor: ProcessExecutor, fifo: Fifo, gate: Gate) -> None:
    busy = [executor.submit(report_then_wait, fifo.path, gate.path) for _ in range(2)]
    fifo.pids(2)
    # Beyond the two chunks per worker handed to the backend, work stays PENDING.
    queued = [executor.submit(square, i) for i in range(6)]
    last = queued[-1]
    assert not last.running()
    assert last.cancel()
    assert last.cancelled()
    gate.open(2)
    for future in busy:
        assert future.result(BOUND) == 0
    assert [f.result(BOUND) for f in queued[:-1]] == [0, 1, 4, 9, 16]
    assert not busy[0].cancel()  # finished


# -- wait and as_completed -------------------------------------------------------------------------


def test_wait_first_completed(executor: ProcessExecutor, fifo: Fifo, gate: Gate) -> None:
    slow = executor.submit(report_then_wait, fifo.path, gate.path)
    fast = executor.submit(square, 2)
    done, not_done = cf.wait([slow, fast], timeout=BOUND, return_when=cf.FIRST_COMPLETED)
    assert done == {fast}
    assert not_done == {slow}
    fifo.pids(1)
    gate.open()
    assert slow.result(BOUND) == 0


def test_wait_first_exception(executor: ProcessExecutor, fifo: Fifo, gate: Gate) -> None:
    slow = executor.submit(report_then_wait, fifo.path, gate.path)
    ok = executor.submit(square, 2)
    ok.result(BOUND)
    bad = executor.submit(fail, "x")
    futures: list[cf.Future[Any]] = [slow, ok, bad]
    done, not_done = cf.wait(futures, timeout=BOUND, return_when=cf.FIRST_EXCEPTION)
    assert done == {ok, bad}
    assert not_done == {slow}
    fifo.pids(1)
    gate.open()
    slow.result(BOUND)


def test_wait_all_completed_and_timeout(executor: ProcessExecutor, fifo: Fifo,
                                        gate: Gate) -> None:  # fmt: skip
    futures: list[cf.Future[Any]] = [executor.submit(square, i) for i in range(4)]
    futures.append(executor.submit(fail, "y"))
    done, not_done = cf.wait(futures, timeout=BOUND, return_when=cf.ALL_COMPLETED)
    assert done == set(futures)
    assert not not_done
    slow: cf.Future[Any] = executor.submit(report_then_wait, fifo.path, gate.path)
    done, not_done = cf.wait([slow, futures[0]], 0.1)
    assert done == {futures[0]}
    assert not_done == {slow}
    fifo.pids(1)
    gate.open()
    slow.result(BOUND)


def test_as_completed(executor: ProcessExecutor, fifo: Fifo, gate: Gate) -> None:
    futures = [executor.submit(square, i) for i in range(5)]
    assert sorted(f.result() for f in cf.as_completed(futures + futures[:2], BOUND)) == [
        0, 1, 4, 9, 16,
    ]  # fmt: skip
    slow = executor.submit(report_then_wait, fifo.path, gate.path)
    seen: list[cf.Future[Any]] = []
    completed = cf.as_completed([futures[0], slow], timeout=0.1)
    seen.append(next(completed))
    with pytest.raises(cf.TimeoutError):
        next(completed)
    assert seen == [futures[0]]
    fifo.pids(1)
    gate.open()
    slow.result(BOUND)


def test_as_completed_sees_a_cancel_of_running_work(executor: ProcessExecutor,
                                                     fifo: Fifo) -> None:  # fmt: skip
    future = executor.submit(report_then_block, fifo.path)
    fifo.pids(1)
    canceller = threading.Thread(target=future.cancel)  # from another thread
    canceller.start()
    assert list(cf.as_completed([future], timeout=BOUND)) == [future]
    canceller.join(BOUND)
    assert future.cancelled()


# -- shutdown --------------------------------------------------------------------------------------


def test_submit_after_shutdown() -> None:
    ex = ProcessExecutor(1)
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(square, 1)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.map(square, [1])
    ex.shutdown()  # twice is fine


def test_shutdown_waits_for_the_work() -> None:
    ex = ProcessExecutor(2)
    futures = [ex.submit(square, i) for i in range(20)]
    ex.shutdown(wait=True)
    assert [f.result(0) for f in futures] == [i * i for i in range(20)]


def test_shutdown_no_wait_still_completes(fifo: Fifo, gate: Gate) -> None:
    ex = ProcessExecutor(2)
    running = ex.submit(report_then_wait, fifo.path, gate.path, 3)
    fifo.pids(1)
    queued = ex.submit(square, 3)
    ex.shutdown(wait=False)
    gate.open()
    assert running.result(BOUND) == 3
    assert queued.result(BOUND) == 9
    ex.shutdown(wait=True)  # joins the manager thread, for the leak check


def test_shutdown_cancel_futures(fifo: Fifo, gate: Gate) -> None:
    ex = ProcessExecutor(1)
    running = ex.submit(report_then_wait, fifo.path, gate.path, 1)
    fifo.pids(1)
    pending = [ex.submit(square, i) for i in range(10)]
    ex.shutdown(wait=False, cancel_futures=True)
    gate.open()
    assert running.result(BOUND) == 1
    ex.shutdown(wait=True)
    cancelled = [f for f in pending if f.cancelled()]
    assert len(cancelled) >= len(pending) - 2  # at most two were handed to the worker
    assert all(f.done() for f in pending)


def test_dropped_executor_finishes_its_work() -> None:
    ex = ProcessExecutor(1)
    thread = ex._manager.thread
    future = ex.submit(square, 9)
    del ex
    assert future.result(BOUND) == 81
    thread.join(BOUND)
    assert not thread.is_alive()


def test_map_of_a_dropped_executor() -> None:
    assert list(ProcessExecutor(1).map(square, range(30), chunksize=2)) == [
        i * i for i in range(30)
    ]
    for thread in threading.enumerate():
        if thread.name == "parmap-executor":
            thread.join(BOUND)


# -- the end of the caller -----------------------------------------------------------------------

EXIT_SOURCE = """
import concurrent.futures as cf, os, sys, threading
sys.path.insert(0, {root!r})
import parmap

def block(x):
    os.write(1, f"started {{os.getpid()}}\\n".encode())
    threading.Event().wait()

if __name__ == "__main__":
    ex = parmap.ProcessExecutor(2)
    futures = [ex.submit(block, i) for i in range(3)]
    {ending}
"""


def _exit_script(ending: str) -> str:
    root = str(Path(__file__).parent.parent / "src")
    return textwrap.dedent(EXIT_SOURCE).format(root=root, ending=ending)


@pytest.mark.parametrize(
    "ending",
    [
        "pass  # exit with the executor running",
        "ex.shutdown(wait=False)",
        "ex.shutdown(wait=False, cancel_futures=True)",
        "threading.Thread(target=cf.wait, args=(futures,), daemon=True).start()",
    ],
)
def test_exit_never_hangs_and_leaves_no_process(ending: str, tmp_path: Path) -> None:
    script = tmp_path / "main.py"
    script.write_text(_exit_script(ending))
    done = run_script([str(script)], timeout=30)  # also fails on a process left behind
    assert done.returncode == 0, done.err
    assert done.err == ""


def test_killed_caller_leaves_no_worker(tmp_path: Path) -> None:
    script = tmp_path / "main.py"
    script.write_text(_exit_script("threading.Event().wait()"))
    with busy_program(str(script)) as (proc, workers):
        proc.kill()
        for worker in workers:
            assert wait_gone(worker, BOUND), f"worker {worker} outlived its killed caller"


# -- asyncio, initializer, recycling ---------------------------------------------------------------


def test_run_in_executor() -> None:
    async def main(ex: ProcessExecutor) -> list[int]:
        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*(loop.run_in_executor(ex, square, i) for i in range(5))))

    with ProcessExecutor(2) as ex:
        assert asyncio.run(main(ex)) == [0, 1, 4, 9, 16]


def test_asyncio_cancel_kills_running_work(fifo: Fifo) -> None:
    async def main(ex: ProcessExecutor) -> int:
        loop = asyncio.get_running_loop()
        task = loop.run_in_executor(ex, report_then_block, fifo.path)
        await loop.run_in_executor(None, fifo.pids, 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await loop.run_in_executor(ex, square, 3)

    with ProcessExecutor(1) as ex:
        assert asyncio.run(main(ex)) == 9


def test_initializer_and_worker_state() -> None:
    with ProcessExecutor(2, initializer=dict, initargs=({"k": 1},)) as ex:
        assert ex.submit(state).result(BOUND) == {"k": 1}
        assert list(ex.map(state, range(3))) == [{"k": 1}] * 3


def test_initializer_that_raises_fails_each_future() -> None:
    with ProcessExecutor(1, initializer=bad_initializer) as ex:
        for _ in range(3):
            with pytest.raises(InitializerError, match="no model"):
                ex.submit(square, 1).result(BOUND)


def test_max_tasks_per_worker() -> None:
    with ProcessExecutor(1, max_tasks_per_worker=2) as ex:
        pids = [ex.submit(pid).result(BOUND) for _ in range(6)]
        mapped = list(ex.map(pid, range(6)))
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4] == pids[5]
    assert len(set(pids)) == 3
    assert [len(list(group)) for _, group in itertools.groupby(mapped)] == [2, 2, 2]


def test_max_tasks_per_worker_with_more_workers() -> None:
    with ProcessExecutor(2, max_tasks_per_worker=3) as ex:
        pids = [f.result(BOUND) for f in [ex.submit(pid) for _ in range(30)]]
    counts = [pids.count(p) for p in set(pids)]
    assert max(counts) <= 3
    assert sum(counts) == 30


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_workers_are_children_of_the_fork_server() -> None:
    """The default start method is forkserver: the executor's thread never forks this process
    (a fork beside running threads can copy a lock one of them holds)."""
    with ProcessExecutor(1) as ex:
        worker = ex.submit(pid).result(BOUND)
        stat = Path(f"/proc/{worker}/stat").read_text()
    parent = int(stat.rsplit(")", 1)[1].split()[1])
    assert parent != os.getpid()
