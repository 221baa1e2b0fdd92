"""The contract, over every engine: the same results and the same first exception as a loop."""

from __future__ import annotations

import functools
import itertools
import operator
import os
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import parmap
from parmap import imap, pmap, pstarmap


def square(x: int) -> int:
    return x * x


def fail_at(bad: set[int]) -> Any:
    def fn(x: int) -> int:
        if x in bad:
            raise KeyError(x)
        return x

    return fn


class Scaler:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    def scale(self, x: int) -> int:
        return x * self.factor


def test_pmap_equals_map(engine: dict[str, Any]) -> None:
    assert pmap(square, range(50), **engine) == list(map(square, range(50)))


def test_several_iterables_like_builtin_map(engine: dict[str, Any]) -> None:
    bases, exps = [2, 3, 4, 5], [3, 2, 1]
    assert pmap(pow, bases, exps, **engine) == list(map(pow, bases, exps))


def test_pstarmap_unpacks_like_starmap(engine: dict[str, Any]) -> None:
    pairs = [(2, 5), (3, 2), (10, 3)]
    assert pstarmap(pow, pairs, **engine) == list(itertools.starmap(pow, pairs))


@pytest.mark.parametrize(
    "fn",
    [
        pytest.param(lambda x: x + 1, id="lambda"),
        pytest.param(functools.partial(operator.add, 1), id="partial"),
        pytest.param(Scaler(1).scale, id="bound-method"),
    ],
)
def test_unpicklable_by_pickle_callables_work(engine: dict[str, Any], fn: Any) -> None:
    offset = 1 if getattr(fn, "__name__", "") != "scale" else 0
    assert pmap(fn, range(10), **engine) == [x + offset for x in range(10)]


def test_closure_works(engine: dict[str, Any]) -> None:
    table = {n: str(n) for n in range(10)}
    assert pmap(lambda x: table[x], range(10), **engine) == [str(n) for n in range(10)]


def test_lambdas_as_items_work(engine: dict[str, Any]) -> None:
    makers: list[Callable[[], int]] = [lambda: 1, lambda: 2]
    assert pmap(lambda f: f(), makers, **engine) == [1, 2]


def test_empty_input(engine: dict[str, Any]) -> None:
    assert pmap(square, [], **engine) == []
    assert list(imap(square, iter([]), **engine)) == []


def test_generator_input(engine: dict[str, Any]) -> None:
    assert pmap(square, (x for x in range(30)), chunksize=4, **engine) == [x * x for x in range(30)]


def test_first_exception_is_the_loops(engine: dict[str, Any]) -> None:
    with pytest.raises(KeyError) as info:
        pmap(fail_at({5, 50}), range(100), chunksize=7, **engine)
    assert info.value.args == (5,)


def test_remote_traceback_is_the_cause(engine: dict[str, Any]) -> None:
    with pytest.raises(KeyError) as info:
        pmap(fail_at({3}), range(10), **engine)
    text = "".join(traceback.format_exception(info.value))
    assert "in fn" in text  # the frame of the function that raised, from the worker
    assert "raise KeyError(x)" in text or "KeyError: 3" in text


def test_exception_from_the_input_iterator(engine: dict[str, Any]) -> None:
    def items() -> Iterator[int]:
        yield from range(5)
        raise RuntimeError("input broke")

    with pytest.raises(RuntimeError, match="input broke"):
        pmap(square, items(), **engine)


def test_imap_ordered_yields_up_to_the_failure(engine: dict[str, Any]) -> None:
    it = imap(fail_at({6}), range(20), chunksize=4, **engine)
    got = [next(it) for _ in range(6)]
    with pytest.raises(KeyError):
        next(it)
    assert got == list(range(6))


def test_imap_unordered_yields_every_result(engine: dict[str, Any]) -> None:
    got = list(imap(square, range(40), ordered=False, chunksize=3, **engine))
    assert sorted(got) == [x * x for x in range(40)]


def test_imap_reads_input_lazily(engine: dict[str, Any]) -> None:
    consumed = itertools.count()

    def endless() -> Iterator[int]:
        for x in itertools.count():
            next(consumed)
            yield x

    with imap(square, endless(), chunksize=2, **engine) as it:
        first = list(itertools.islice(it, 5))
    assert first == [0, 1, 4, 9, 16]
    read = next(consumed)
    workers = engine.get("workers", 2)
    assert read <= 5 + 4 * max(workers, 2) * 2 + 2, f"read {read} items ahead"


def test_imap_close_stops_workers_and_next_raises_stop(engine: dict[str, Any]) -> None:
    it = imap(square, itertools.count(), chunksize=1, **engine)
    assert next(it) == 0
    it.close()
    with pytest.raises(StopIteration):
        next(it)


def test_next_call_works_after_an_error(engine: dict[str, Any]) -> None:
    with pytest.raises(KeyError):
        pmap(fail_at({0}), range(10), **engine)
    assert pmap(square, range(10), **engine) == [x * x for x in range(10)]


def test_workers_and_chunksize_options(engine: dict[str, Any]) -> None:
    if not isinstance(engine["backend"], str):
        pytest.skip("an executor brings its own workers")
    out = pmap(square, range(25), workers=1, chunksize=25, **engine)
    assert out == [x * x for x in range(25)]


def test_sys_exit_in_a_task_is_a_clear_error(engine: dict[str, Any]) -> None:
    import sys

    def leave(x: int) -> int:
        if x == 3:
            sys.exit(9)
        return x

    with pytest.raises(parmap.TaskExitError, match=r"item 3 called sys.exit\(9\)") as info:
        pmap(leave, range(6), **engine)
    assert info.value.code == 9
    assert pmap(square, [2], **engine) == [4]


def test_numpy_arrays_round_trip_writable(engine: dict[str, Any]) -> None:
    """Large arrays travel out of band on the process backend: values intact, and writable."""
    import numpy as np

    arrays = [np.full(300_000, float(i)) for i in range(4)]

    def bump(a: Any) -> Any:
        a += 1  # the worker may write to what it received
        return a * 2

    out = pmap(bump, arrays, chunksize=2, **engine)
    assert [float(a[0]) for a in out] == [2.0, 4.0, 6.0, 8.0]
    out[0][0] = -1.0  # and the caller to what came back


#: How many times this process has unpickled a Payload (in a worker: since it started).
_PAYLOAD_LOADS = 0


def _load_payload(data: bytes) -> Payload:
    global _PAYLOAD_LOADS
    _PAYLOAD_LOADS += 1
    return Payload(data)


class Payload:
    """Large data a function closes over; counts its unpickling in each process."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> Any:
        return _load_payload, (self.data,)


def _loads_so_far(payload: Payload, x: int) -> tuple[int, int]:
    return os.getpid(), _PAYLOAD_LOADS


def test_a_large_closure_reaches_each_worker_once_per_call(process_engine: dict[str, Any]) -> None:
    fn = functools.partial(_loads_so_far, Payload(bytes(8 << 20)))
    out = pmap(fn, range(20), chunksize=1, workers=2, **process_engine)
    assert {loads for _, loads in out} == {1}  # not once per chunk: 20 chunks ran
