"""Long maps that go on: ``retries``, ``retry_on``, ``errors="return"``, worker recycling.

Attempts are counted in files (one line per run of an item), never by timing. Items that kill
their worker run only on the engines whose workers are processes parmap starts (``RECOVERING``).
"""

from __future__ import annotations

import errno
import functools
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import parmap
from parmap import (
    RemoteTraceback,
    TaskTimeoutError,
    WorkerCrashedError,
    imap,
    pmap,
    pstarmap,
)
from parmap._recovery import parse_bytes
from parmap.backends import BackendName

from .conftest import (
    ENGINES,
    RECOVERING,
    RECYCLING,
    each_backend_and_method_once,
    with_engines,
)

MiB = 1 << 20


def _mark(log: Path, x: int) -> int:
    """Record a run of item ``x``; how many runs it has had, this one included."""
    with open(log / f"item-{x}", "a") as f:
        f.write("run\n")
    return len((log / f"item-{x}").read_text().splitlines())


def _runs(log: Path, x: int) -> int:
    path = log / f"item-{x}"
    return len(path.read_text().splitlines()) if path.exists() else 0


def crash_first_time(log: Path, bad: int, x: int) -> int:
    if _mark(log, x) == 1 and x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
    return x * 10


def always_crash(log: Path, bad: int, x: int) -> int:
    _mark(log, x)
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
    return x * 10


def flaky(log: Path, x: int) -> int:
    runs = _mark(log, x)
    if x == 3 and runs == 1:
        raise ConnectionError("reset by peer")
    if x == 5:
        raise ValueError("never retried")
    return x


def mixed_faults(x: int) -> int:
    if x == 2:
        raise ValueError("two")
    if x == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    if x == 6:
        time.sleep(60)  # overruns timeout= and is killed there
    return x * 10


def draw_then_crash(log: Path, x: int) -> float:
    value = random.random()
    if _mark(log, x) == 1 and x == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return value


def draw(x: int) -> float:
    return random.random()


# -- retries -------------------------------------------------------------------------------------


@with_engines(RECOVERING)
def test_an_item_whose_worker_dies_once_completes_with_one_retry(
    engine: dict[str, Any], tmp_path: Path
) -> None:
    it = imap(functools.partial(crash_first_time, tmp_path, 7), range(12), retries=1, **engine)
    assert list(it) == [x * 10 for x in range(12)]
    assert _runs(tmp_path, 7) == 2
    assert it.summary.retried == 1
    assert it.summary.failed == 0


@with_engines(each_backend_and_method_once(RECOVERING))
def test_an_item_that_always_kills_its_worker_fails_after_retries_plus_one_attempts(
    engine: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(WorkerCrashedError, match="3 attempts") as caught:
        pmap(functools.partial(always_crash, tmp_path, 3), range(8), retries=2, **engine)
    assert caught.value.index == 3
    assert _runs(tmp_path, 3) == 3


@with_engines(each_backend_and_method_once(RECOVERING))
def test_one_poisoned_item_in_a_big_chunk_costs_one_retry_not_the_chunk(
    engine: dict[str, Any], tmp_path: Path
) -> None:
    fn = functools.partial(crash_first_time, tmp_path, 50)
    assert pmap(fn, range(100), retries=1, chunksize=100, **engine) == [x * 10 for x in range(100)]
    assert _runs(tmp_path, 50) == 2
    # The items around it ran again (their results died with the worker), without attempts.
    assert all(_runs(tmp_path, x) <= 2 for x in range(100))


@with_engines(each_backend_and_method_once(ENGINES))
def test_retry_on_retries_the_named_types_only(engine: dict[str, Any], tmp_path: Path) -> None:
    fn = functools.partial(flaky, tmp_path)
    with pytest.raises(ValueError, match="never retried"):
        pmap(fn, range(8), retries=2, retry_on=(ConnectionError,), **engine)
    assert _runs(tmp_path, 3) == 2  # failed once with ConnectionError, then succeeded
    assert _runs(tmp_path, 5) == 1  # ValueError: not in retry_on


@with_engines(each_backend_and_method_once(ENGINES))
def test_the_functions_own_errors_are_not_retried_without_retry_on(
    engine: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(ConnectionError):
        pmap(functools.partial(flaky, tmp_path), range(5), retries=3, **engine)
    assert _runs(tmp_path, 3) == 1


@with_engines(each_backend_and_method_once(RECOVERING))
def test_a_retried_item_draws_the_same_random_numbers(
    engine: dict[str, Any], tmp_path: Path
) -> None:
    expected = pmap(draw, range(10), seed=7, **engine)
    fn = functools.partial(draw_then_crash, tmp_path)
    assert pmap(fn, range(10), seed=7, retries=1, **engine) == expected
    assert _runs(tmp_path, 5) == 2


# -- keep going ----------------------------------------------------------------------------------


@with_engines(each_backend_and_method_once([e for e in RECOVERING if e.kills_on_timeout]))
def test_errors_return_holds_each_failure_in_its_slot(engine: dict[str, Any]) -> None:
    results = pmap(mixed_faults, range(9), errors="return", timeout=1.5, **engine)
    assert [r for i, r in enumerate(results) if i not in (2, 4, 6)] == [
        x * 10 for x in (0, 1, 3, 5, 7, 8)
    ]
    raised, crashed, overran = results[2], results[4], results[6]
    assert isinstance(raised, ValueError)
    assert str(raised) == "two"
    assert isinstance(raised.__cause__, RemoteTraceback)
    assert isinstance(crashed, WorkerCrashedError)
    assert crashed.index == 4
    assert crashed.exitcode == -signal.SIGKILL
    assert isinstance(overran, TaskTimeoutError)
    assert overran.index == 6


@with_engines(each_backend_and_method_once(ENGINES))
def test_errors_return_on_every_engine_for_the_functions_own_errors(
    engine: dict[str, Any],
) -> None:
    results = pmap(_fails_on_odd, range(7), errors="return", **engine)
    assert [r for r in results if not isinstance(r, Exception)] == [0, 2, 4, 6]
    assert [str(r) for r in results if isinstance(r, Exception)] == ["1", "3", "5"]


def _fails_on_odd(x: int) -> int:
    if x % 2:
        raise KeyError(x)
    return x


@with_engines(each_backend_and_method_once(RECOVERING))
@pytest.mark.parametrize("ordered", [True, False])
def test_imap_errors_return_yields_failures_in_place(engine: dict[str, Any], ordered: bool) -> None:
    with imap(_fails_on_odd, range(9), errors="return", ordered=ordered, **engine) as it:
        results = list(it)
    assert it.summary.failed == 4
    got = {r if not isinstance(r, Exception) else ("failed", r.args[0]) for r in results}
    assert got == {0, 2, 4, 6, 8} | {("failed", x) for x in (1, 3, 5, 7)}
    if ordered:
        assert [r for r in results if isinstance(r, int)] == [0, 2, 4, 6, 8]


def test_pstarmap_errors_return() -> None:
    results = pstarmap(divmod, [(7, 2), (1, 0), (9, 3)], errors="return", backend="thread")
    assert results[0] == (3, 1)
    assert isinstance(results[1], ZeroDivisionError)
    assert results[2] == (3, 0)


@with_engines(each_backend_and_method_once(RECOVERING))
def test_several_deaths_in_one_map_with_errors_return(engine: dict[str, Any]) -> None:
    results = pmap(_dies_on_multiples_of_three, range(12), errors="return", **engine)
    for x, r in enumerate(results):
        if x % 3 == 0:
            assert isinstance(r, WorkerCrashedError), (x, r)
            assert r.index == x
        else:
            assert r == x


def _dies_on_multiples_of_three(x: int) -> int:
    if x % 3 == 0:
        os._exit(7)
    return x


def test_the_input_raising_still_raises_with_errors_return() -> None:
    def items() -> Any:
        yield 1
        raise OSError("the disk went away")

    with pytest.raises(OSError, match="disk"):
        pmap(abs, items(), errors="return", backend="thread")


# -- recycling -----------------------------------------------------------------------------------


@with_engines(RECYCLING)
def test_max_tasks_per_worker_replaces_workers(engine: dict[str, Any]) -> None:
    it = imap(_pid, range(40), max_tasks_per_worker=5, **engine)
    pids = Counter(list(it))
    assert len(pids) >= 8
    assert max(pids.values()) <= 5
    assert it.summary.recycled >= 6


def _pid(x: int) -> int:
    return os.getpid()


_HOARD: list[bytearray] = []


def _leak(x: int) -> int:
    """Grow by 20 MiB (touched, so resident) and report the resident size afterwards."""
    _HOARD.append(bytearray(b"x" * (20 * MiB)))
    from parmap._worker import resident_bytes

    return resident_bytes()


@with_engines(each_backend_and_method_once(RECYCLING))
def test_max_memory_per_worker_replaces_a_growing_worker(engine: dict[str, Any]) -> None:
    limit = parse_bytes("test", "limit", "150MiB")
    from parmap._worker import resident_bytes

    # A forked worker starts with its parent's resident pages: the limit is above this caller.
    limit = max(limit, resident_bytes() + 60 * MiB)
    it = imap(_leak, range(30), max_memory_per_worker=limit, workers=2, **engine)
    sizes = list(it)
    assert len(sizes) == 30
    assert max(sizes) <= limit + 20 * MiB + 4 * MiB  # the limit, one item's growth, some slack
    assert it.summary.recycled >= 2


# Many more workers than the board has slots (2 x workers + 8), each retiring after one item:
# a crash among them is still named by its item, and no process is left. On the default start
# method only: a process per item under spawn costs 0.2-0.4 s here.
@with_engines([e for e in RECYCLING if e.default_method])
def test_a_worker_per_item_for_many_items_still_attributes_a_crash(
    engine: dict[str, Any], tmp_path: Path
) -> None:
    work = functools.partial(crash_first_time, tmp_path, 37)
    it = imap(work, range(60), max_tasks_per_worker=1, retries=1, workers=2, **engine)
    assert list(it) == [x * 10 for x in range(60)]
    assert _runs(tmp_path, 37) == 2
    # The crash's other chunks out run again on "pool" and "futures", whose engine is replaced
    # after a death (see _base.FutureBackend._restart); never more than that.
    assert all(1 <= _runs(tmp_path, x) <= 2 for x in range(60))
    assert it.summary.attempts == 1
    assert it.summary.recycled >= 50


@with_engines(each_backend_and_method_once(RECYCLING))
def test_recycling_with_a_backlog_does_not_deadlock(engine: dict[str, Any]) -> None:
    # The shape of CPython gh-115634 (one worker, several tasks each, a backlog), fixed chunks
    # of one item so that the backlog is real ("pool" and "futures" give a worker two chunks
    # here: see _watched.tasks_per_worker); within the test's timeout.
    pids = pmap(_pid, range(12), workers=1, chunksize=1, max_tasks_per_worker=4, **engine)
    counts = Counter(pids)
    assert sum(counts.values()) == 12
    assert max(counts.values()) <= 4
    assert len(counts) >= 3


@pytest.mark.parametrize("backend", sorted({e.name for e in RECYCLING} & {"pool", "futures"}))
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_replacement_that_cannot_start_fails_the_call(
    backend: BackendName, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine starts replacements on a thread of its own, which the error ends: the call
    fails with it rather than waiting for workers that never come."""
    import parmap.backends._watched as watched

    starts = [0]
    reserve = watched.reserve_descriptors

    def run_out() -> None:  # the check before each fork: the third one fails
        starts[0] += 1
        if starts[0] > 2:
            raise OSError(errno.EMFILE, "Too many open files")
        reserve()

    monkeypatch.setattr(watched, "reserve_descriptors", run_out)
    with pytest.raises(parmap.ParmapError, match=r"could not start a worker.*Too many") as info:
        pmap(abs, range(20), backend=backend, start_method="fork", workers=2, chunksize=1,
             max_tasks_per_worker=1)  # fmt: skip
    assert isinstance(info.value.__cause__, OSError)


@pytest.mark.parametrize("name", ["max_tasks_per_worker", "max_memory_per_worker"])
@pytest.mark.parametrize("backend", ["thread", "serial"])
def test_recycling_is_refused_where_it_cannot_be_honoured(name: str, backend: str) -> None:
    with pytest.raises(ValueError, match=f"{name}=.*backend='{backend}'.*worker processes"):
        pmap(abs, [1, 2], backend=backend, **{name: 100})  # type: ignore[call-overload]


@pytest.mark.skipif(sys.version_info >= (3, 11), reason="ProcessPoolExecutor recycles from 3.11")
def test_recycling_on_futures_needs_python_3_11() -> None:
    with pytest.raises(ValueError, match=r"max_tasks_per_worker=.*'futures'.*3\.11"):
        pmap(abs, [1, 2], backend="futures", max_tasks_per_worker=2)


# -- the options checked at call time ------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"retries": -1}, ValueError, "retries must be 0 or more"),
        ({"retries": "2"}, TypeError, "retries must be an int"),
        ({"retries": True}, TypeError, "retries must be an int"),
        ({"retries": 1, "retry_on": (int,)}, TypeError, "retry_on must be an exception type"),
        ({"retries": 1, "retry_on": [ValueError]}, TypeError, "retry_on must be"),
        ({"retry_on": ValueError}, ValueError, "retry_on= needs retries="),
        ({"errors": "skip"}, ValueError, 'errors must be "raise" or "return"'),
        ({"max_tasks_per_worker": 0}, ValueError, "max_tasks_per_worker must be at least 1"),
        ({"max_memory_per_worker": "lots"}, ValueError, "is not a size"),
        (
            {"max_memory_per_worker": 1.5},
            TypeError,
            r"max_memory_per_worker must be an int \(bytes\)",
        ),
        ({"checkpoint": 3}, TypeError, "checkpoint must be a path"),
    ],
)
def test_bad_long_map_options_are_refused_before_any_work(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    def items() -> Any:
        raise AssertionError("the input was read")
        yield

    with pytest.raises(error, match=match):
        pmap(abs, items(), **options)


@pytest.mark.parametrize(
    ("text", "size"),
    [("512MiB", 512 * MiB), ("2GB", 2 * 10**9), ("1.5GiB", 3 * 2**29), ("100", 100), (4096, 4096)],
)
def test_sizes(text: str | int, size: int) -> None:
    assert parse_bytes("pmap", "max_memory_per_worker", text) == size


def test_summary_is_public_and_starts_empty() -> None:
    it = imap(abs, [1, -2])
    assert it.summary == parmap.Summary()
    assert list(it) == [1, 2]
    assert it.summary.failed == 0


def test_the_progress_bar_shows_retries_and_failures() -> None:
    from parmap._progress import Progress
    from parmap._recovery import Summary

    class Bar:
        def __init__(self) -> None:
            self.postfix: dict[str, int] = {}

        def set_postfix(self, shown: dict[str, int], refresh: bool) -> None:
            self.postfix = shown

    bar, seen = Bar(), []
    progress = Progress(lambda done, total: seen.append(done), 10, bar)
    progress.advance(3, Summary())
    assert bar.postfix == {}
    progress.advance(2, Summary(retried=1, failed=2))
    assert bar.postfix == {"retried": 1, "failed": 2}
    assert seen == [3, 5]


# -- failures of a whole chunk, and what must never be kept ---------------------------------------


class _Unloadable:
    """Pickles in the worker, fails to unpickle in the caller."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse, ())


def _refuse() -> None:
    raise ValueError("will not load")


def _unloadable_at_five(log: Path, x: int) -> Any:
    _mark(log, x)
    return _Unloadable() if x == 5 else x


def _unpicklable_at_five(log: Path, x: int) -> Any:
    import threading

    _mark(log, x)
    return threading.Lock() if x == 5 else x


@with_engines(each_backend_and_method_once(RECOVERING))
def test_a_result_that_will_not_unpickle_fails_its_own_slot_only(
    engine: dict[str, Any], tmp_path: Path
) -> None:
    fn = functools.partial(_unloadable_at_five, tmp_path)
    results = pmap(fn, range(8), errors="return", chunksize=8, **engine)
    assert isinstance(results[5], parmap.ResultUnpicklingError)
    assert [r for i, r in enumerate(results) if i != 5] == [0, 1, 2, 3, 4, 6, 7]


@with_engines(each_backend_and_method_once(RECOVERING))
def test_a_result_that_will_not_pickle_keeps_the_results_before_it(
    engine: dict[str, Any], tmp_path: Path
) -> None:
    fn = functools.partial(_unpicklable_at_five, tmp_path)
    results = pmap(fn, range(8), errors="return", chunksize=8, **engine)
    assert isinstance(results[5], parmap.ResultPicklingError)
    assert [r for i, r in enumerate(results) if i != 5] == [0, 1, 2, 3, 4, 6, 7]
    assert [_runs(tmp_path, x) for x in range(5)] == [1] * 5  # kept, not run again


def _interrupt_at_two(x: int) -> int:
    if x == 2:
        raise KeyboardInterrupt
    return x


def test_a_keyboard_interrupt_is_never_kept_in_a_slot() -> None:
    with pytest.raises(KeyboardInterrupt):
        pmap(_interrupt_at_two, range(5), errors="return", backend="serial")


def test_a_process_executor_you_pass_that_breaks_ends_the_map_cleanly(tmp_path: Path) -> None:
    """It cannot be reopened: with errors="return" the death ends the map anyway, with
    WorkerCrashedError, never a raw BrokenProcessPool."""
    import concurrent.futures as cf

    fn = functools.partial(always_crash, tmp_path, 7)
    with cf.ProcessPoolExecutor(2) as executor, pytest.raises(WorkerCrashedError):
        list(imap(fn, range(20), backend=executor, errors="return", chunksize=2))


def test_a_checkpoint_tells_pmap_from_pstarmap_under_a_seed(tmp_path: Path) -> None:
    store = tmp_path / "run.sqlite"
    pairs = [(1, 2), (3, 4)]
    assert pmap(_args, pairs, seed=3, checkpoint=store, backend="serial") == [((1, 2),), ((3, 4),)]
    assert pstarmap(_args, pairs, seed=3, checkpoint=store, backend="serial") == pairs


def _args(*args: Any) -> tuple[Any, ...]:
    return args
