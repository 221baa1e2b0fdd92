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
