"""Any ``concurrent.futures.Executor`` you pass as ``backend=``.

parmap chunks the items and hands each chunk to ``executor.submit``; it never calls the
executor's ``map`` and never shuts down an executor it did not create. A ``ThreadPoolExecutor``
runs the function directly (nothing is pickled). Any other executor gets the cloudpickled
function with each chunk, installed once per worker process per call, so lambdas work there too.

``timeout=`` needs to know when an item started, which parmap can see in threads but not inside
processes it did not start: with a foreign process executor, asking for a timeout is an error.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import threading
import uuid
from typing import Any

from .._board import CHUNK, Board
from .._wire import Failure
from .._worker import run_chunk_with
from ._base import Call, Chunk, FutureBackend, Outcome, overdue, timeout_failure

__all__ = ["ExecutorBackend"]


class ExecutorBackend(FutureBackend):
    name = "executor"

    def __init__(self, executor: cf.Executor | None, workers: int | None = None) -> None:
        super().__init__()
        self.executor = executor
        self.local = executor is None or isinstance(executor, cf.ThreadPoolExecutor)
        known = getattr(executor, "_max_workers", None)
        self.workers = workers or (known if isinstance(known, int) else None) or os.cpu_count() or 1
        self.timeouts = self.local
        self.pickles = not self.local
        self.threaded = self.local and self.workers > 1
        self._key = ""
        self._board = Board.local(1)
        self._slots: dict[int, int] = {}
        self._lock = threading.Lock()

    def start(self, call: Call) -> None:
        super().start(call)
        self._key = uuid.uuid4().hex
        self._board = Board.local(self.workers + 8)
        self._slots = {}

    def _submit(self, chunk: Chunk) -> cf.Future[Any]:
        assert self.executor is not None
        assert self._call is not None
        if self.local:
            return self.executor.submit(self._run_here, chunk)
        call = self._call
        payload = chunk.payload()
        return self.executor.submit(
            run_chunk_with, self._key, call.fn_bytes, call.star, chunk.start, payload
        )

    def _outcome(self, chunk: Chunk, value: Any) -> Outcome:
        if self.local:
            assert isinstance(value, Outcome)
            return value
        return super()._outcome(chunk, value)

    def _run_here(self, chunk: Chunk) -> Outcome:
        """Run a chunk in this (executor) thread, keeping this thread's board slot current."""
        assert self._call is not None
        slot = self._slot()
        cells = None if slot is None else self._board.cells
        base = Board.base(slot or 0)
        if cells is not None:
            cells[base + CHUNK] = chunk.start
        return self._call.run_here(chunk, cells, base)

    def _slot(self) -> int | None:
        ident = threading.get_ident()
        slot = self._slots.get(ident)
        if slot is None:
            with self._lock:
                slot = len(self._slots)
                if slot >= self._board.slots:
                    return None
                self._slots[ident] = slot
                self._board.claim(slot, ident)
        return slot

    def _check(self, *, broken: bool = False) -> Failure | None:
        assert self._call is not None
        timeout = self._call.timeout
        if timeout is None or not self.local:
            return None
        for view in overdue(self._board, timeout):
            return timeout_failure(view, timeout)
        return None
