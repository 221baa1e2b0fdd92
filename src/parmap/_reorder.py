"""The reorder buffer: chunk outcomes in, the caller's results out, and the loop's failure.

Chunks finish in any order. ``Reorder`` holds a finished chunk until every chunk before it
has finished too (``ordered``), or passes its results on as they come (unordered). It keeps the
lowest failure seen so far: the one the sequential loop would have raised. No result at or past
that item is handed out, and the failure is final once no chunk that starts before it is still
running (one of those could still fail earlier). Nothing here knows about processes or time:
the tests drive it with outcomes made by hand.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

from ._wire import Failure
from .backends._base import Outcome

__all__ = ["Reorder"]


class Reorder:
    def __init__(self, *, ordered: bool, start: int = 0) -> None:
        self.ordered = ordered
        #: Ordered: the index of the next result to hand out.
        self.next = start
        #: The lowest failure so far, as ``(index, exception)``.
        self.failure: Failure | None = None
        self._held: dict[int, Outcome] = {}  # finished chunks, by start, that cannot go out yet
        self._passing: list[Outcome] = []  # unordered: finished chunks to hand out

    @property
    def held(self) -> int:
        """Finished chunks waiting to be handed out (they count against the input window)."""
        return len(self._held)

    @property
    def cutoff(self) -> float:
        """The first index whose result may never be handed out."""
        return math.inf if self.failure is None else self.failure[0]

    def fail(self, index: int, error: BaseException) -> None:
        """Item ``index`` failed (a chunk's outcome, or the input raised while read there)."""
        if self.failure is None or index < self.failure[0]:
            self.failure = (index, error)

    def add(self, outcome: Outcome) -> None:
        if outcome.failure is not None:
            self.fail(*outcome.failure)
            if outcome.failure[0] >= outcome.chunk.stop:
                # It failed for a later item's sake (an engine broken by that item's crash):
                # its own items never ran. Held, it would be handed out empty, and the results
                # after it with a silent gap; not held, nothing from it on goes out.
                return
        if self.ordered:
            self._held[outcome.chunk.start] = outcome
        elif outcome.results:
            self._passing.append(outcome)

    def drain(self) -> Iterator[list[Any]]:
        """The results that can be handed out now, a chunk's list at a time."""
        if not self.ordered:
            passing, self._passing = self._passing, []
            for outcome in passing:
                if outcome.chunk.start < self.cutoff:
                    yield outcome.results
            return
        while self.next in self._held and self.next < self.cutoff:
            outcome = self._held.pop(self.next)
            self.next = outcome.chunk.stop
            if outcome.results:
                yield outcome.results

    def settled(self, running: Iterable[int]) -> bool:
        """Whether the failure is final: no chunk still running (by start) comes before it."""
        return self.failure is not None and all(start >= self.failure[0] for start in running)
