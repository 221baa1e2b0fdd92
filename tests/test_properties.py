"""Properties: every API equals its sequential counterpart, failures included.

The broad property runs the in-process engines at Hypothesis's full ``max_examples``; a narrower
one goes through real processes, every backend and start method. The engines are filters of
``conftest.ENGINES``.
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from parmap import imap, pmap, pstarmap, queue_collect, run_processes

from .conftest import ENGINES, Engine, each_backend_and_method_once
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


#: The engines that run items in this process: cheap enough for the full ``max_examples``.
IN_PROCESS = [e for e in ENGINES if e.in_process]


@pytest.mark.parametrize("spec", [e.param() for e in IN_PROCESS])
@given(case=cases())
@settings(max_examples=100)
def test_in_process_backends_equal_the_loop(spec: Engine, case: Case) -> None:
    with spec.options(workers=case.workers) as options:
        check(case, options)


#: The engines whose items cross to other processes, each backend and start method once (one
#: is drawn per example). Not those on a service (the Dask cluster): a session fixture cannot be
#: requested per example; the contract tests of the ``engine`` fixture run there.
PROCESS_ENGINES = each_backend_and_method_once(
    [e for e in ENGINES if not e.in_process and e.service is None]
)


@given(case=cases(max_size=40), spec=st.sampled_from(PROCESS_ENGINES))
@settings(max_examples=30)
def test_process_backends_equal_the_loop(case: Case, spec: Engine) -> None:
    event(f"engine {spec}")  # --hypothesis-show-statistics: how often each was drawn
    expected, error = case.loop()
    with spec.options(workers=min(case.workers, 2)) as options:
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
    spec=st.sampled_from([e for e in ENGINES if e.default_method and e.service is None]),
)
@settings(max_examples=60)
def test_a_range_is_sliced_into_chunks_that_equal_the_loop(
    bounds: tuple[int, int, int],
    limit: int,
    chunksize: int | None,
    spec: Engine,
) -> None:
    """Chunks of a range are ranges (see _api._Reader): any start, stop and step."""
    event(f"engine {spec}")
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
    with spec.options(workers=2) as options:
        try:
            assert pmap(fn, whole, chunksize=chunksize, **options) == expected
        except Boom as exc:
            assert exc == error
        else:
            assert error is None
        got: list[int] = []
        raised = None
        try:
            got.extend(imap(fn, whole, chunksize=chunksize, **options))
        except Boom as exc:
            raised = exc
    assert (got, raised) == (expected, error)
