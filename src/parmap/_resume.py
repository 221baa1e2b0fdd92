"""``checkpoint=``: the dispatch loop's side of a stored map (the store is ``_checkpoint``).

As the input window reads a chunk, ``Resume.split`` takes each item's fingerprint (before any
function sees the item: on threads it could change it) and looks it up. Items stored under this
call's function come back as outcomes at once, never submitted; the runs of items between them
are the chunks to submit. As outcomes come back, ``Resume.keep`` stores each result of an item
it had fingerprinted, in the store's batches; failed items are not stored, so a rerun tries
them again (their slot under ``errors="return"`` holds an exception, not a result).

The function's fingerprint covers what the call runs: the function, ``seed=``, and whether items
are argument tuples (``pstarmap``), so that none of those changed answers from the store.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ._checkpoint import Checkpoint
from ._errors import CheckpointError
from ._fingerprint import function_fingerprint, item_fingerprint
from ._recovery import Summary
from .backends._base import Chunk, Outcome

__all__ = ["Resume", "Shape"]

#: What shapes a call's results: its function, ``star``, ``seed``, initializer and initargs.
Shape = tuple[Callable[..., Any], bool, "int | None", "Callable[..., object] | None", Any]


class Resume:
    """A call's checkpoint: what is stored answers at once; what arrives is stored."""

    def __init__(self, store: Checkpoint, summary: Summary) -> None:
        self.store = store
        self.summary = summary
        #: Fingerprints of the items submitted and not yet back, by index.
        self._pending: dict[int, bytes] = {}

    @classmethod
    def open(cls, api: str, path: str | os.PathLike[str], shape: Shape, summary: Summary) -> Resume:
        """Open the store for the call's ``shape``: ``(fn, star, seed, initializer,
        initargs)``, what shapes its results; ``CheckpointError`` at call time when it cannot
        be (held by another process, not a checkpoint, a function that cannot be
        fingerprinted)."""
        fn, star, seed, initializer, initargs = shape
        try:
            init = "-" if initializer is None else function_fingerprint(initializer)
            rest = f"star={star}:seed={seed}:init={init}:{item_fingerprint(initargs).hex()}"
            function = f"{function_fingerprint(fn)}:{rest}"
        except TypeError as exc:
            raise CheckpointError(
                os.fspath(path), f"{api}(): the function cannot be fingerprinted: {exc}"
            ) from exc
        return cls(Checkpoint.open(path, function), summary)

    def split(self, chunk: Chunk) -> tuple[list[Outcome], list[Chunk]]:
        """The chunk's stored results as outcomes, and the runs of items still to compute."""
        done: list[Outcome] = []
        todo: list[Chunk] = []
        begin, computing = 0, False
        results: list[Any] = []
        for offset, item in enumerate(chunk.items):
            index = chunk.start + offset
            fingerprint = item_fingerprint(item)
            stored, result = self.store.stored(index, fingerprint)
            if stored == computing:  # a run ends here
                _close_run(chunk, begin, offset, results, computing, done, todo)
                begin, results, computing = offset, [], not stored
            if stored:
                results.append(result)
            else:
                self._pending[index] = fingerprint
        _close_run(chunk, begin, len(chunk.items), results, computing, done, todo)
        self.summary.from_checkpoint += sum(len(o.results) for o in done)
        return done, todo

    def keep(self, outcome: Outcome, returned: set[int]) -> None:
        """Store the results of a finished piece (none of ``returned``: failures in place)."""
        if outcome.failure is not None:
            return
        for offset, result in enumerate(outcome.results):
            index = outcome.chunk.start + offset
            fingerprint = self._pending.pop(index, None)
            if fingerprint is not None and index not in returned:
                self.store.add(index, fingerprint, result)

    def close(self) -> None:
        self.store.close()


def _close_run(
    chunk: Chunk,
    begin: int,
    end: int,
    results: list[Any],
    computing: bool,
    done: list[Outcome],
    todo: list[Chunk],
) -> None:
    if begin >= end:
        return
    part = Chunk(chunk.start + begin, chunk.items[begin:end])
    if computing:
        todo.append(part)
    else:
        done.append(Outcome(part, results))
