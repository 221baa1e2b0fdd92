"""Shared by ``"pool"`` and ``"futures"``: a stdlib process pool, watched from outside.

Neither ``multiprocessing.Pool`` nor ``ProcessPoolExecutor`` says which worker died or what it
was doing (Pool does not even notice: bpo-22393). Here their workers start through
``_worker.pool_initializer``, which claims a slot on the progress board, installs the function
once and ignores SIGINT. While the caller waits, every worker process is checked: a death names
the item its slot held; an item older than ``timeout=`` gets its worker killed.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from abc import abstractmethod
from collections.abc import Iterable
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

from .._board import Board
from .._worker import Failure
from ._base import Call, FutureBackend, crash_failure, overdue, timeout_failure

__all__ = ["WatchedPool"]


class WatchedPool(FutureBackend):
    def __init__(self, workers: int, start_method: str | None) -> None:
        super().__init__()
        self.workers = workers
        self._ctx: BaseContext = multiprocessing.get_context(start_method)
        self._board = Board.local(1)
        self._procs: dict[int, BaseProcess] = {}

    @abstractmethod
    def _open(self, initargs: tuple[Any, ...]) -> None:
        """Start the engine with ``pool_initializer`` and these arguments."""

    @abstractmethod
    def _processes(self) -> Iterable[BaseProcess]:
        """The engine's worker processes right now."""

    def start(self, call: Call) -> None:
        super().start(call)
        # Slots for replacements too: Pool starts a new worker for each one that dies.
        self._board = Board.shared(self._ctx, 2 * self.workers + 8)
        counter = self._ctx.Value("i", 0)
        timed = call.timeout is not None
        self._procs = {}
        self._open((self._board, counter, call.fn_bytes, call.star, timed))

    def _check(self) -> Failure | None:
        for proc in self._processes():
            if proc.pid is not None:
                self._procs.setdefault(proc.pid, proc)
        dead = [p for p in self._procs.values() if p.exitcode not in (None, 0)]
        # The engine may have killed the others (SIGTERM) on noticing the first death.
        dead.sort(key=lambda p: p.exitcode == -signal.SIGTERM)
        for proc in dead:
            view = self._board.find_pid(proc.pid or 0)
            for chunk in self._pending.values():
                if view is not None and view.chunk == chunk.start:
                    return crash_failure(chunk, view, proc.exitcode, proc.pid)
        assert self._call is not None
        timeout = self._call.timeout
        if timeout is not None:
            for view in overdue(self._board, timeout):
                os.kill(view.pid, signal.SIGKILL)
                return timeout_failure(view, timeout)
        return None
