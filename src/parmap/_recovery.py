"""Long maps that go on: retries, ``errors="return"``, and the summary of what happened.

The dispatch loop hands every outcome to ``Recovery.settle`` before the reorder buffer sees
it. An outcome that ran whole passes through. One that stopped early is cut into pieces::

    chunk  s ........................ e ........................ t
           [ results that arrived ][ lost ][ e ][ not run yet        ]
             kept, handed on         again   ▲    again (not attempts)
                                             │
              a crash or overrun (or a retry_on type), attempts left ─► run e again, alone
              errors="return"                                         ─► e's slot holds the error
              otherwise                                               ─► the loop's failure

Only item ``e`` counts an attempt: the items around it run again as they were never run (a
poisoned item among 1,000 costs one retry, not 1,000). Pieces keep their indices, so results
stay in input order, and with ``seed=`` an item run again draws the same numbers (its index
travels with it). An outcome whose worker stopped early on its own (recycled for memory) has
no failure: the rest of its chunk runs again elsewhere. An outcome a backend reports ``lost``
(its worker was stopped for another chunk's crash) runs again whole.

Failures that are not an item's own are raised whatever the options: the input raising, an
initializer that fails, workers that cannot start.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ._errors import (
    InitializerError,
    ParmapError,
    ResultUnpicklingError,
    TaskTimeoutError,
    TaskUnpicklingError,
    WorkerCrashedError,
    note_item,
)
from .backends._base import Chunk, Outcome

__all__ = ["ErrorsOption", "LongRun", "Recovery", "Summary", "parse_bytes"]

ErrorsOption = Literal["raise", "return"]

#: Failures retried with ``retries=`` alone: the item's worker died, or it overran ``timeout=``.
ALWAYS_RETRIED: tuple[type[BaseException], ...] = (WorkerCrashedError, TaskTimeoutError)


@dataclass
class Summary:
    """What a map went through; see `summary` of a [`MapIterator`][parmap.MapIterator].

    - ``attempts``: runs of items that failed and ran again, or failed for good;
    - ``retried``: items that ran more than once;
    - ``failed``: items whose slot holds their exception (``errors="return"``), or the one
      raised;
    - ``recycled``: worker processes replaced by ``max_tasks_per_worker`` or
      ``max_memory_per_worker``;
    - ``from_checkpoint``: results read from ``checkpoint=`` instead of computed.
    """

    attempts: int = 0
    retried: int = 0
    failed: int = 0
    recycled: int = 0
    from_checkpoint: int = 0

    def postfix(self) -> dict[str, int]:
        """The counts worth showing on a progress bar (the ones that are not zero)."""
        shown = {"retried": self.retried, "failed": self.failed, "recycled": self.recycled}
        return {name: count for name, count in shown.items() if count}


@dataclass(frozen=True)
class LongRun:
    """The options of a call that let it go on past a failure."""

    retries: int = 0
    retry_on: tuple[type[BaseException], ...] = ()
    errors: ErrorsOption = "raise"

    @property
    def keep_going(self) -> bool:
        """Whether a failure may be followed by more work on the same engine."""
        return self.retries > 0 or self.errors == "return"

    def retryable(self, error: BaseException) -> bool:
        return isinstance(error, ALWAYS_RETRIED) or (
            bool(self.retry_on) and isinstance(error, self.retry_on)
        )


@dataclass
class Recovery:
    """Turns each outcome into outcomes for the reorder buffer and chunks to run again."""

    policy: LongRun
    summary: Summary = field(default_factory=Summary)
    #: Failed runs so far, by item index.
    failures: dict[int, int] = field(default_factory=dict)
    #: Items whose slot holds their exception (``errors="return"``).
    returned: set[int] = field(default_factory=set)

    def settle(
        self, outcome: Outcome, again: Callable[[Chunk], None]
    ) -> list[Outcome]:  # fmt: skip
        """The outcomes to hand on; chunks to run again go to ``again``."""
        chunk, results = outcome.chunk, outcome.results
        if outcome.lost:
            again(chunk)
            return []
        if outcome.failure is None:
            if len(results) == len(chunk.items):
                return [outcome]
            # Its worker stopped early (recycled): the rest runs elsewhere.
            _again(again, chunk, len(results), len(chunk.items))
            return [_piece(chunk, 0, len(results), results)] if results else []
        index, error = outcome.failure
        if index not in chunk or not self._owned(error):
            return [outcome]
        if self.policy.keep_going and _whole_chunk(outcome):
            for offset in range(len(chunk.items)):  # which item it was: one at a time
                _again(again, chunk, offset, offset + 1)
            return []
        return self._failed_at(outcome, index, error, again)

    def _failed_at(
        self, outcome: Outcome, index: int, error: BaseException, again: Callable[[Chunk], None]
    ) -> list[Outcome]:
        """An outcome that failed at item ``index`` with its own failure: the results before
        it, that item run again, its error in its slot, or the loop's failure; the rest again."""
        chunk, results = outcome.chunk, outcome.results
        at = index - chunk.start
        kept = min(len(results), at)
        pieces = [_piece(chunk, 0, kept, results[:kept])] if kept else []
        _again(again, chunk, kept, at)  # ran before it, but their results were lost
        item = _piece(chunk, at, at + 1, [])
        runs = self.failures[index] = self.failures.get(index, 0) + 1
        self.summary.attempts += 1
        if runs <= self.policy.retries and self.policy.retryable(error):
            if runs == 1:
                self.summary.retried += 1
            again(item.chunk)  # its outcome comes with that run
        else:
            if runs > 1:
                _say_attempts(error, index, runs)
            if self.policy.errors == "return":
                note_item(error, index)
                item.results = [error]
                self.returned.add(index)
                self.summary.failed += 1
            else:
                item.failure = (index, error)
                return [*pieces, item]  # the loop stops here: the rest is never needed
            pieces.append(item)
        _again(again, chunk, at + 1, len(chunk.items))
        return pieces

    @staticmethod
    def _owned(error: BaseException) -> bool:
        """Whether a failure is its item's own (not the engine's, which ends the call; nor a
        ``KeyboardInterrupt`` or another ``BaseException`` that is not an ``Exception``, which
        always propagates)."""
        if isinstance(error, InitializerError) or not isinstance(error, Exception):
            return False
        # parmap's own errors name their item; one that names none is about the workers (they
        # cannot start, or die one after another) or the initializer's overrun.
        return not isinstance(error, ParmapError) or getattr(error, "index", None) is not None


def _whole_chunk(outcome: Outcome) -> bool:
    """Whether the failure is the whole chunk's, put at its first item: its items would not
    unpickle in the worker, or its results in the caller (one of them, but which is unknown)."""
    index, error = outcome.failure or (-1, None)
    return (
        len(outcome.chunk.items) > 1
        and index == outcome.chunk.start
        and not outcome.results
        and isinstance(error, (TaskUnpicklingError, ResultUnpicklingError))
    )


def _say_attempts(error: BaseException, index: int, runs: int) -> None:
    """Say how many times the item ran: in the message of parmap's own errors (which name their
    item there already), in a note on your function's own (whose message is left alone)."""
    said = f"item {index} failed on each of {runs} attempts"
    if isinstance(error, ParmapError) and error.args and isinstance(error.args[0], str):
        error.args = (f"{error.args[0]}; {said}", *error.args[1:])
    elif hasattr(error, "add_note"):  # Python 3.11+
        error.add_note(f"parmap: {said}")


def _piece(chunk: Chunk, begin: int, end: int, results: list[Any]) -> Outcome:
    """Items ``begin:end`` of a chunk (offsets), as an outcome with these results."""
    items: Sequence[Any] = chunk.items[begin:end]
    return Outcome(Chunk(chunk.start + begin, items), results)


def _again(again: Callable[[Chunk], None], chunk: Chunk, begin: int, end: int) -> None:
    if begin < end:
        again(Chunk(chunk.start + begin, chunk.items[begin:end]))


_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
    "t": 10**12, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_bytes(api: str, name: str, value: object) -> int:
    """A size in bytes: an int, or a string such as ``"512MiB"`` or ``"2GB"``."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"{api}(): {name} must be at least 1 byte, got {value}")
        return value
    if not isinstance(value, str):
        raise TypeError(
            f"{api}(): {name} must be an int (bytes) or a string such as '512MiB', "
            f"got {type(value).__name__}"
        )
    match = _SIZE.fullmatch(value)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(
            f"{api}(): {name}={value!r} is not a size: a number and a unit, such as '512MiB', "
            f"'1.5GiB' or '2GB' (units: {', '.join(u for u in _UNITS if u)})"
        )
    size = int(float(match.group(1)) * _UNITS[unit])
    if size < 1:
        raise ValueError(f"{api}(): {name} must be at least 1 byte, got {value!r}")
    return size
