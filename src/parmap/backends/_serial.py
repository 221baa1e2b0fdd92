"""``"serial"``: every item in the calling thread, one chunk at a time, for debugging.

Chunks run when the caller waits for them, not when they are submitted, so ``imap`` stays lazy.
Nothing is pickled; breakpoints and print statements work as in a loop. With ``timeout=`` an
item cannot be interrupted here: the overrun is reported when the item returns.
"""

from __future__ import annotations

from collections import deque

from ._base import Backend, Call, Chunk, Outcome

__all__ = ["SerialBackend"]


class SerialBackend(Backend):
    name = "serial"
    runs_in_caller = True

    def __init__(self, workers: int | None = None) -> None:
        self.workers = 1
        self.pickles = False
        self._queue: deque[Chunk] = deque()
        self._call: Call | None = None

    def start(self, call: Call) -> None:
        self._call = call

    def submit(self, chunk: Chunk) -> None:
        self._queue.append(chunk)

    def wait(self) -> list[Outcome]:
        assert self._call is not None
        chunk = self._queue.popleft()
        return [run_in_caller(self._call, chunk)]

    def stop(self, *, abort: bool) -> None:
        self._queue.clear()
        self._call = None


def run_in_caller(call: Call, chunk: Chunk) -> Outcome:
    """Run a chunk right here (see ``Call.run_here``)."""
    return call.run_here(chunk)
