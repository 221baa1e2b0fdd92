"""Properties: every API equals its sequential counterpart, failures included.

The broad property runs in-process backends at Hypothesis's full ``max_examples``; a narrower
one goes through real processes, every backend and start method.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parmap import imap, pmap, pstarmap, queue_collect, run_processes

from .strategies import Boom, Case, cases, compute, compute_star


def run_pmap(case: Case, options: dict[str, Any]) -> tuple[list[int], BaseException | None]:
    try:
        return pmap(
            functools.partial(compute, case.failing),
            case.pairs,
            chunksize=case.chunksize,
            **options,
        ), None
    except Boom as exc:
        return [], exc


def run_imap(case: Case, options: dict[str, Any], ordered: bool) -> tuple[list[int], Any]:
    got: list[int] = []
    try:
        for value in imap(
            functools.partial(compute, case.failing),
            case.pairs,
            chunksize=case.chunksize,
            ordered=ordered,
            **options,
        ):
            got.append(value)
    except Boom as exc:
        return got, exc
    return got, None


def check(case: Case, options: dict[str, Any]) -> None:
    expected, error = case.loop()
    results, raised = run_pmap(case, options)
    assert raised == error
    if error is None:
        assert results == expected
    # imap, in order: exactly the loop's results before the failure, then the failure
    got, raised = run_imap(case, options, ordered=True)
    assert (got, raised) == (expected, error)
    # imap, as finished: the same failure; the results are a sub-multiset of the loop's
    got, raised = run_imap(case, options, ordered=False)
    assert raised == error
    everything = [compute(frozenset(), p) for p in case.pairs]
    if error is None:
        assert sorted(got) == sorted(expected)
    else:
        assert not (Counter(got) - Counter(everything))
    # pstarmap
    try:
        starred = pstarmap(
            functools.partial(compute_star, case.failing),
            case.pairs,
            chunksize=case.chunksize,
            **options,
        )
    except Boom as exc:
        assert exc == error
    else:
        assert error is None
        assert starred == expected


IN_PROCESS = ["serial", "thread", "thread-executor"]


@pytest.mark.parametrize("backend", IN_PROCESS)
@given(case=cases())
@settings(max_examples=100)
def test_in_process_backends_equal_the_loop(backend: str, case: Case) -> None:
    if backend == "thread-executor":
        with cf.ThreadPoolExecutor(case.workers) as executor:
            check(case, {"backend": executor})
    else:
        check(case, {"backend": backend, "workers": case.workers})


PROCESS_ENGINES = [
    ("process", "fork"),
    ("pool", "fork"),
    ("futures", "fork"),
    ("process", "forkserver"),
    ("process", "spawn"),
    ("auto", None),
]


@given(case=cases(max_size=40), engine=st.sampled_from(PROCESS_ENGINES))
@settings(max_examples=30)
def test_process_backends_equal_the_loop(case: Case, engine: tuple[str, str | None]) -> None:
    backend, start_method = engine
    options: dict[str, Any] = {"backend": backend, "workers": min(case.workers, 2)}
    if start_method is not None:
        options["start_method"] = start_method
    expected, error = case.loop()
    assert run_pmap(case, options) == ((expected, None) if error is None else ([], error))
    assert run_imap(case, options, ordered=True) == (expected, error)


def _child(failing: frozenset[int], index: int, value: int) -> int:
    return compute(failing, (index, value))


def _producer(failing: frozenset[int], index: int, count: int, q: Any) -> None:
    for n in range(count):
        q.put((index, n))
    if index in failing:
        raise Boom(index)


@given(values=st.lists(st.integers(0, 100), max_size=4), failing=st.frozensets(st.integers(0, 3)))
@settings(max_examples=10)
def test_run_processes_equals_the_loop(values: list[int], failing: frozenset[int]) -> None:
    case = Case(values, frozenset(i for i in failing if i < len(values)), None, 1)
    expected, error = case.loop()
    try:
        got = run_processes(functools.partial(_child, case.failing), case.pairs)
    except Boom as exc:
        assert exc == error
    else:
        assert error is None
        assert got == expected


@given(
    counts=st.lists(st.integers(0, 5), max_size=4),
    failing=st.frozensets(st.integers(0, 3)),
    channel=st.sampled_from(["queue", "pipe", "manager"]),
)
@settings(max_examples=10)
def test_queue_collect_equals_running_producers_in_turn(
    counts: list[int], failing: frozenset[int], channel: str
) -> None:
    expected: list[tuple[int, int]] = []
    error = None
    for index, count in enumerate(counts):
        expected += [(index, n) for n in range(count)]
        if index in failing:
            error = Boom(index)
            break
    try:
        got = queue_collect(
            functools.partial(_producer, failing), list(enumerate(counts)), channel=channel
        )
    except Boom as exc:
        assert exc == error
    else:
        assert error is None
        assert got == expected


def _at_most(limit: int, x: int) -> int:
    if x > limit:
        raise Boom(x)
    return x * 3 - 1


@given(
    bounds=st.tuples(st.integers(-50, 50), st.integers(-50, 50), st.integers(-7, 7)),
    limit=st.integers(-60, 60),
    chunksize=st.none() | st.integers(1, 9),
    engine=st.sampled_from([("serial", None), ("thread", None), ("process", "fork")]),
)
@settings(max_examples=60)
def test_a_range_is_sliced_into_chunks_that_equal_the_loop(
    bounds: tuple[int, int, int],
    limit: int,
    chunksize: int | None,
    engine: tuple[str, str | None],
) -> None:
    """Chunks of a range are ranges (see _api._Reader): any start, stop and step."""
    start, stop, step = bounds
    whole = range(start, stop, step or 1)
    expected: list[int] = []
    error: BaseException | None = None
    for x in whole:
        if x > limit:
            error = Boom(x)
            break
        expected.append(x * 3 - 1)
    fn = functools.partial(_at_most, limit)
    backend, start_method = engine
    options: dict[str, Any] = {"backend": backend, "chunksize": chunksize, "workers": 2}
    if start_method is not None:
        options["start_method"] = start_method
    try:
        assert pmap(fn, whole, **options) == expected
    except Boom as exc:
        assert exc == error
    else:
        assert error is None
    got: list[int] = []
    raised = None
    try:
        got.extend(imap(fn, whole, **options))
    except Boom as exc:
        raised = exc
    assert (got, raised) == (expected, error)
