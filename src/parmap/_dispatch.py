"""The dispatch loop: fill the window, wait for outcomes, drain the results.

::

    input ──► Window.fill(): read a chunk (sized by the sizer), submit it ──► backend
                  (while fewer than ``limit`` chunks are out and nothing has failed)
                                                                             │
    caller ◄── Reorder.drain(): results in order   ◄── Reorder.add() ◄── backend.wait()
               (or as they finish), none past the      the lowest failure    outcomes
               lowest failure                          is kept

``dispatch`` is those three steps in a loop. Errors follow the sequential loop: when item
``e`` fails, nothing past it is read or submitted; chunks that started before ``e`` are waited
for (one of them may fail earlier, and that earlier failure is what the loop would have
raised); then the lowest failure is raised and the backend is stopped with ``abort=True`` (its
busy workers killed). Every exit path, a ``KeyboardInterrupt`` or ``imap(...).close()``
included, stops the backend in the ``finally``.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from itertools import islice
from typing import Any

from ._chunking import ChunkSizer
from ._errors import note_item
from ._progress import Progress
from ._recovery import Recovery
from ._reorder import Reorder
from ._resume import Resume
from ._wire import Failure
from .backends import Backend, Call, Chunk, Outcome

__all__ = ["IN_FLIGHT_PER_WORKER", "WINDOW_PER_WORKER", "Reader", "dispatch", "noted"]

#: Chunks ``pmap`` keeps out per worker: one running, one queued, so that a worker never waits
#: for the caller between two chunks.
IN_FLIGHT_PER_WORKER = 2
#: Chunks ``imap`` keeps out per worker, running or finished but not yet consumed: a slow
#: consumer stops the reading of input, and an endless generator is fine.
WINDOW_PER_WORKER = 4


class Reader:
    """The input, read a chunk at a time; ``position`` is the index of the next item.

    A ``range`` is sliced rather than read: its chunks are ranges, which pickle in a few bytes
    where a list of ints costs bytes per item, and which a worker iterates with no unpickling.
    """

    def __init__(self, items: Iterator[Any], whole: range | None = None) -> None:
        self._items = items
        self._range = whole
        self.position = 0

    def take(self, count: int) -> Sequence[Any]:
        if self._range is None:
            part: Sequence[Any] = list(islice(self._items, count))
        else:
            part = self._range[self.position : self.position + count]
        self.position += len(part)
        return part

    def rest(self) -> Iterator[Any]:
        """Everything not yet taken (after which ``position`` no longer counts)."""
        if self._range is None:
            return self._items
        return iter(self._range[self.position :])


def noted(failure: Failure, noun: str = "item") -> BaseException:
    """The failure's exception, naming its item (see ``_errors.note_item``)."""
    note_item(failure[1], failure[0], noun)
    return failure[1]


class Window:
    """The input side of the loop: reads, sizes and submits chunks while there is room.

    ``limit``: how many chunks may be out at once, counting finished ones the reorder buffer
    still holds. A backend that runs chunks in the caller, one at a time as they are waited
    for, gets one: each chunk is then sized knowing how the one before it went.
    """

    def __init__(
        self,
        backend: Backend,
        call: Call,
        reader: Reader,
        sizer: ChunkSizer,
        per_worker: int,
        resume: Resume | None = None,
    ) -> None:
        self.backend, self.call, self.reader, self.sizer = backend, call, reader, sizer
        self.resume = resume
        here = backend.runs_in_caller
        self.limit = 1 if here else per_worker * backend.workers
        self.spread = not here  # one thread running the chunks in turn has no tail to balance
        #: Starts of the chunks with the backend.
        self.running: set[int] = set()
        self.exhausted = False
        self.started = False

    def fill(self, order: Reorder) -> list[Outcome]:
        """Read and submit while there is room; the outcomes known without running anything
        (results stored by ``checkpoint=``), if any, as soon as there are some."""
        while order.failure is None and not self.exhausted:
            if len(self.running) + order.held >= self.limit:
                return []
            position = self.reader.position
            try:
                items = self.reader.take(self.sizer.next_size(position, spread=self.spread))
            except Exception as exc:  # the input raised: the loop would raise it here
                order.fail(position, exc)
                self.exhausted = True
                return []
            if not items:
                self.exhausted = True
                return []
            chunk = Chunk(position, items)
            if self.resume is None:
                self._submit(chunk)
                continue
            stored, todo = self.resume.split(chunk)
            for part in todo:
                self._submit(part)
            if stored:
                return stored
        return []

    def _submit(self, chunk: Chunk) -> None:
        if not self.started:  # only once there is work: an empty input starts nothing
            self.backend.start(self.call)
            self.started = True
        self.running.add(chunk.start)
        self.backend.submit(chunk)

    def again(self, chunk: Chunk) -> None:
        """Submit part of a finished chunk once more (see ``_recovery``), room or not."""
        self._submit(chunk)

    def finished(self, outcome: Outcome) -> None:
        if outcome.chunk.start not in self.running:
            return  # read from the checkpoint: nothing ran
        self.running.discard(outcome.chunk.start)
        if outcome.failure is None and len(outcome.results) == len(outcome.chunk.items):
            self.sizer.observe(len(outcome.chunk.items), outcome.seconds)


def dispatch(
    backend: Backend,
    call: Call,
    reader: Reader,
    sizer: ChunkSizer,
    progress: Progress | None,
    recovery: Recovery,
    resume: Resume | None = None,
    *,
    ordered: bool,
    bounded: bool,
    noun: str = "item",
) -> Generator[list[Any], None, None]:
    """Yield lists of results (in input order if ``ordered``); raise the loop's first error.

    ``bounded``: finished chunks waiting to be consumed count against a larger window
    (``imap``), so that a slow consumer stops the reading of input. ``recovery``: what a
    failure leads to (see ``_recovery``: by default, the loop's error). ``resume``: the call's
    ``checkpoint=`` (see ``_resume``): stored results are handed on unrun, new ones stored.
    ``noun``: what an item is called in the note on the error (``run_processes``: a child).
    """
    per_worker = WINDOW_PER_WORKER if bounded else IN_FLIGHT_PER_WORKER
    recycled = recovery.summary.recycled
    window = Window(backend, call, reader, sizer, per_worker, resume)
    order = Reorder(ordered=ordered, start=reader.position)

    def again(chunk: Chunk) -> None:
        if chunk.start < order.cutoff:  # past the loop's failure: never needed
            window.again(chunk)

    finished = False
    try:
        while True:
            outcomes = window.fill(order)
            if not outcomes:
                if not window.running:
                    break
                outcomes = backend.wait()
                recovery.summary.recycled = recycled + backend.recycled
            for outcome in outcomes:
                window.finished(outcome)
                for piece in recovery.settle(outcome, again):
                    if progress is not None and piece.failure is None:
                        progress.advance(len(piece.results), recovery.summary)
                    if resume is not None:
                        resume.keep(piece, recovery.returned)
                    order.add(piece)
            yield from order.drain()
            if order.settled(window.running):
                break
        if order.failure is not None:
            recovery.summary.failed += 1
            raise noted(order.failure, noun)
        finished = True
    finally:
        if window.started:
            backend.stop(abort=not finished)
