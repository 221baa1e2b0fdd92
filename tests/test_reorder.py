"""The reorder buffer on its own, with outcomes made by hand: no process, no time."""

from __future__ import annotations

from typing import Any

from parmap._reorder import Reorder
from parmap.backends import Chunk, Outcome


def ok(start: int, *results: Any) -> Outcome:
    return Outcome(Chunk(start, list(results)), list(results))


def failed(start: int, count: int, at: int, error: BaseException, *before: Any) -> Outcome:
    return Outcome(Chunk(start, [None] * count), list(before), (at, error))


def drained(order: Reorder) -> list[Any]:
    return [r for results in order.drain() for r in results]


def test_ordered_holds_a_chunk_until_everything_before_it_is_out() -> None:
    order = Reorder(ordered=True)
    order.add(ok(2, "c", "d"))
    assert drained(order) == []
    assert order.held == 1
    order.add(ok(0, "a", "b"))
    assert drained(order) == ["a", "b", "c", "d"]
    assert order.held == 0
    assert order.next == 4


def test_unordered_passes_results_on_as_they_come() -> None:
    order = Reorder(ordered=False)
    order.add(ok(2, "c"))
    assert drained(order) == ["c"]
    order.add(ok(0, "a"))
    assert drained(order) == ["a"]


def test_the_lowest_failure_wins_and_nothing_past_it_goes_out() -> None:
    late: Exception = KeyError("late")
    early: Exception = ValueError("early")
    order = Reorder(ordered=True)
    order.add(failed(4, 2, 5, late, "e"))
    order.add(ok(0, "a", "b"))
    assert order.failure == (5, late)
    order.add(failed(2, 2, 3, early, "c"))
    assert order.failure == (3, early)
    # the results before the failing item, and none after it
    assert drained(order) == ["a", "b", "c"]


def test_a_failure_is_final_only_once_nothing_before_it_runs() -> None:
    order = Reorder(ordered=True)
    order.add(failed(4, 2, 4, KeyError(4)))
    assert not order.settled(running={0, 2})
    assert order.settled(running={6, 8})
    assert order.settled(running=set())
    assert not Reorder(ordered=True).settled(running=set())


def test_an_input_failure_cuts_off_like_an_item_failure() -> None:
    order = Reorder(ordered=False)
    order.fail(3, RuntimeError("the generator raised"))
    order.add(ok(0, "a", "b", "c"))
    order.add(ok(3, "d"))
    assert drained(order) == ["a", "b", "c"]


def test_ordered_output_can_start_past_zero() -> None:
    order = Reorder(ordered=True, start=10)  # after "auto" ran items 0..9 in the caller
    order.add(ok(10, "k"))
    assert drained(order) == ["k"]


def test_a_chunk_failed_for_a_later_items_sake_is_not_handed_out_empty() -> None:
    """An engine broken by item 7's crash fails the chunk of items 0..4 too: its items never
    ran, so nothing from item 0 on may go out (never an empty chunk and then later results)."""
    from parmap._errors import WorkerCrashedError
    from parmap.backends import Chunk, Outcome

    order = Reorder(ordered=True)
    crash = WorkerCrashedError("a worker", exitcode=-9, index=7)
    order.add(Outcome(Chunk(5, list(range(5, 10))), [], (7, crash)))
    order.add(Outcome(Chunk(0, list(range(5))), [], (7, crash)))
    assert list(order.drain()) == []
    assert order.failure is not None
    assert order.failure[0] == 7
