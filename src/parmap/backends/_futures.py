"""``"futures"``: ``concurrent.futures.ProcessPoolExecutor``, started per call.

When a worker dies the executor fails every pending future with ``BrokenProcessPool`` and says
neither which worker nor its exit code; ``_watched`` finds both and the item, and the pool is
shut down (its processes killed and joined) rather than left broken.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import sys
import threading
from collections.abc import Iterable
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.process import BaseProcess
from typing import Any

from .._children import join_exit, reap
from .._worker import pool_initializer, run_chunk
from ._base import Chunk
from ._watched import Receiver, WatchedPool, guarded_context

__all__ = ["FuturesBackend"]

#: How long exiting waits for the executor's manager thread once its workers are killed.
LET_GO_JOIN = 5.0


class _Executor(cf.ProcessPoolExecutor):
    """A ``ProcessPoolExecutor`` that always replaces a worker that ends at its task limit.

    Its own replacement first takes an "idle worker" token, released by each of a worker's
    tasks but its last and consumed only by ``submit``: with a backlog, a stale token outlives
    the worker it was for, the replacement is skipped, and once every worker is gone the backlog
    waits forever (gh-115634, Python 3.11 to 3.13.0). Here it never looks at the tokens (as
    CPython's fix does, GH-140900): below its size, the executor starts a worker.
    """

    _max_tasks_per_child: int | None = None  # its own from 3.11 (typeshed checks as 3.10)
    _max_workers: int

    def _adjust_process_count(self) -> None:
        if self._max_tasks_per_child is None:
            super()._adjust_process_count()
        elif len(self._processes) < self._max_workers:
            self._spawn_process()  # type: ignore[attr-defined]


class FuturesBackend(WatchedPool):
    name = "futures"
    broken = (BrokenProcessPool,)
    #: ``ProcessPoolExecutor`` replaces a worker after its tasks from Python 3.11 on.
    recycles = sys.version_info >= (3, 11)
    no_recycling = "ProcessPoolExecutor replaces its workers from Python 3.11 on"

    _executor: cf.ProcessPoolExecutor | None = None

    def _open(self, initargs: tuple[Any, ...]) -> None:
        self._executor = _Executor(
            self.size,
            # See there: no descriptor lost at the limit, and a worker that cannot start is said.
            mp_context=guarded_context(self._ctx, self._start_failed),
            initializer=pool_initializer,
            initargs=initargs,
        )
        if self.tasks is not None:
            # Chunks per worker (see ``WatchedPool._open_for``), set here: the constructor
            # refuses ``max_tasks_per_child`` under fork, as the executor forks each replacement
            # from its manager thread (gh-90622); ``Pool`` forks its replacements from a thread
            # too, and parmap's workers start as ``Pool``'s do.
            self._executor._max_tasks_per_child = self.tasks
        # Its manager thread reads results through this, which keeps what stopped it: the
        # executor would call a MemoryError receiving a large result a worker's abrupt death.
        reader = self._executor._result_queue._reader  # type: ignore[attr-defined]
        self._receiver = reader.recv = Receiver(reader.recv, quietly=False)

    def _processes(self) -> Iterable[BaseProcess]:
        return self._processes_of(self._executor)

    def _submit(self, chunk: Chunk) -> cf.Future[Any]:
        assert self._executor is not None
        return self._executor.submit(run_chunk, chunk.start, chunk.payload())

    def let_go(self) -> None:
        # The executor's exit hook would wait for every chunk it was given: end them now.
        for proc in self._processes():
            with contextlib.suppress(ValueError):  # closed meanwhile: already joined
                proc.kill()
        # Then wait for its manager thread to see them gone and close its wake-up pipe: that
        # exit hook, which runs right after this one, writes to the pipe unless it is closed,
        # and on 3.11 nothing orders the two (EBADF, "Exception ignored in: threading", about
        # once in six runs of a daemon thread's map at exit).
        thread = getattr(self._executor, "_executor_manager_thread", None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(LET_GO_JOIN)

    def _close(self, abort: bool) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        workers = {*self._processes_of(executor), *self._procs.values()}
        if abort:
            _kill(workers)
            # A worker killed while writing a large result leaves half a message in the result
            # pipe, and the executor's manager thread waits in recv() for the rest for good
            # (an imap of 500 KB results closed after two: 8 hangs in 8). With every worker
            # gone, closing our copy of the pipe's write end ends that wait with EOFError.
            result_queue = getattr(executor, "_result_queue", None)
            writer = getattr(result_queue, "_writer", None)
            if writer is not None:
                writer.close()
        # Its manager thread closes these as it ends; with none started (a worker failed to
        # start: "Too many open files"), they would wait for a garbage collection.
        call_queue = getattr(executor, "_call_queue", None)
        wakeup = getattr(executor, "_executor_manager_thread_wakeup", None)
        manager = getattr(executor, "_executor_manager_thread", None)
        # No cancel_futures: after the kill the executor fails every pending future itself.
        executor.shutdown(wait=True, cancel_futures=not abort)
        if self.start_error is not None:
            # A worker that could not start ended the manager thread (perhaps only now, as the
            # executor shut down): no one will tell the workers still waiting for a call to
            # stop, so they are killed before they are reaped.
            _kill(workers)
        if manager is None:
            if call_queue is not None:  # nothing was put in it: no feeder thread uses its pipe
                call_queue._reader.close()
                call_queue._writer.close()
            if wakeup is not None:
                wakeup.close()
        elif call_queue is not None and self.start_error is not None:
            # The manager thread ended on that error, before closing the queue of calls for
            # the workers: its feeder thread is left, perhaps writing into a full pipe. With
            # every worker gone, closing this last read end makes that write fail (EPIPE),
            # which the feeder takes as its end.
            call_queue._reader.close()
            call_queue.close()
            call_queue.join_thread()
        # Without this, the result pipe and the workers' sentinels stay open until a garbage
        # collection finds the executor.
        result_queue = getattr(executor, "_result_queue", None)
        if result_queue is not None:
            result_queue.close()
        for proc in workers:
            reap(proc)
        self._release(executor)

    @staticmethod
    def _processes_of(executor: cf.ProcessPoolExecutor | None) -> list[BaseProcess]:
        return list((getattr(executor, "_processes", None) or {}).values())


def _kill(workers: Iterable[BaseProcess]) -> None:
    """Kill the workers (those still running), and wait for each to end."""
    for proc in workers:
        proc.kill()
    for proc in workers:
        join_exit(proc)
