"""``"pool"``: ``multiprocessing.Pool``, started per call, chunks through ``apply_async``.

Pool never notices a worker that dies mid-task (bpo-22393, open since 2014): it replaces the
worker and waits forever for the lost task. The watching in ``_watched`` turns that into a
``WorkerCrashedError`` within a tenth of a second, and the pool is torn down.

Its own ``terminate()`` cannot be trusted to return. It stops each worker with
``Process.terminate()`` (SIGTERM) and waits for it without limit, and a worker the pool has
just started (a replacement, or one of a call that ended before all its workers were up) still
has the caller's signal dispositions: a SIGTERM the caller ignores, or a handler that does
nothing (asyncio's), keeps it alive and the caller waiting. So here a worker's ``terminate()``
is ``kill()``: SIGKILL, which nothing catches or ignores. But a worker killed while it writes a
result holds the result pipe's write lock, shared between processes, for good, and may leave
half a message in the pipe: ``terminate()`` then waits for that lock (as does the pool's task
thread), or its result thread for the rest of the message, forever (with 500 KB results, most
runs beside two busy processes). So the pool is torn down here instead (``_KillingPool.teardown``):
its workers killed first, then everything they may have held released, and its threads joined.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Iterable
from multiprocessing.context import BaseContext
from multiprocessing.pool import TERMINATE, Pool
from multiprocessing.process import BaseProcess
from typing import Any

from .._children import join_exit, reap
from .._worker import pool_initializer, run_chunk
from ._base import Chunk
from ._watched import Receiver, WatchedPool, guarded_context

__all__ = ["PoolBackend"]

#: The most seconds a teardown waits for each of the pool's threads (each ends at once: every
#: pipe end and lock it could wait on is released first).
THREAD_JOIN = 5.0


class _KillingPool(Pool):
    """A ``Pool`` whose workers' ``terminate()`` is ``kill()``, that is torn down without
    blocking, and whose result thread reads through a ``Receiver`` (see the module docstring)."""

    receiver: Receiver
    # Pool's own, which typeshed does not declare.
    _pool: list[BaseProcess]
    _inqueue: Any
    _outqueue: Any
    _change_notifier: Any
    _quick_get: Any

    def __init__(self, *args: Any, **kwds: Any) -> None:
        try:
            super().__init__(*args, **kwds)
        except BaseException:
            # A worker failed to start (``Too many open files``): Pool has killed and joined the
            # others, but its pipes and their sentinels would wait for a garbage collection.
            # (On a KeyboardInterrupt it has not: they are killed here.)
            for proc in self._pool:
                if proc.exitcode is None:
                    proc.kill()
                    join_exit(proc)
                proc.close()
            self._close_channels()
            raise

    @staticmethod
    def Process(ctx: BaseContext, *args: Any, **kwds: Any) -> Any:
        proc: BaseProcess = ctx.Process(*args, **kwds)  # type: ignore[attr-defined]
        proc.terminate = proc.kill  # type: ignore[method-assign]
        return proc

    def _setup_queues(self) -> None:
        super()._setup_queues()  # type: ignore[misc]
        self.receiver = Receiver(self._quick_get, quietly=True)
        self._quick_get = self.receiver

    def _close_channels(self) -> None:
        for name in ("_inqueue", "_outqueue", "_change_notifier"):
            channel = getattr(self, name, None)
            if channel is not None:
                channel.close()

    def teardown(self, workers: Iterable[BaseProcess]) -> set[BaseProcess]:
        """``terminate()`` and ``join()``, each wait bounded; returns every worker, killed.

        The order matters: no worker may be started or left running while what the workers
        shared is released, and no thread of the pool may be using a pipe end closed under it.
        """
        self._terminate.cancel()  # type: ignore[attr-defined]  # terminate() could block
        self._state = TERMINATE
        handlers = (self._worker_handler, self._task_handler, self._result_handler)  # type: ignore[attr-defined]
        worker_handler, task_handler, result_handler = handlers
        # 1. No new workers: the worker thread ends (and tells the task thread to end).
        worker_handler._state = TERMINATE
        task_handler._state = TERMINATE
        self._change_notifier.put(None)
        worker_handler.join(THREAD_JOIN)
        # 2. Every worker killed and reaped: from now on nothing outside this process holds
        # the pool's pipes or locks.
        killed = {*self._pool, *workers}
        for proc in killed:
            if proc.exitcode is None:
                proc.kill()
        for proc in killed:
            join_exit(proc)
        inqueue, outqueue = self._inqueue, self._outqueue
        # 3. The task thread: its writes to the workers' pipe fail (EPIPE) rather than block
        # once this process closes its read end, the last one (only terminate() reads it); the
        # result pipe's write lock is released if a killed worker held it; the result pipe is
        # closed to writes (EPIPE) if nothing reads it any more.
        self._taskqueue.put(None)  # type: ignore[attr-defined]
        inqueue._reader.close()
        deadline = time.monotonic() + THREAD_JOIN
        while task_handler.is_alive() and time.monotonic() < deadline:
            task_handler.join(0.05)
            if task_handler.is_alive():
                _release_if_orphaned(outqueue._wlock)
                if not result_handler.is_alive():
                    outqueue._reader.close()
        # 4. The result thread: with the task thread gone, this process's write end of the
        # result pipe is the last; closing it ends a wait for a message, or for the rest of
        # one, with EOFError. (Not while the task thread may still write to it.)
        if not task_handler.is_alive():
            outqueue._writer.close()
            result_handler.join(THREAD_JOIN)
        # Without this, the pool's pipes and its workers' sentinels stay open until a garbage
        # collection finds the pool (its threads hold references to it).
        if not any(thread.is_alive() for thread in handlers):
            self._close_channels()
        return killed


def _release_if_orphaned(lock: Any) -> None:
    """Release a multiprocessing lock that a process now dead holds, for good otherwise.

    Called once every worker is dead. The lock is held (its semaphore is zero) and no thread of
    this process holds it (the semaphore's count of this process's acquisitions is zero): a
    worker held it. A ``Lock`` is a plain semaphore, which any process may post.
    """
    semlock = getattr(lock, "_semlock", None)
    if semlock is not None and semlock._is_zero() and semlock._count() == 0:
        semlock.release()


class PoolBackend(WatchedPool):
    name = "pool"
    broken = ()

    _pool: _KillingPool | None = None

    def _open(self, initargs: tuple[Any, ...]) -> None:
        # The context checks for descriptors before each fork, and keeps why a worker could
        # not start (see guarded_context).
        context = guarded_context(self._ctx, self._start_failed)
        # Recycling: see ``WatchedPool._open_for``.
        self._pool = _KillingPool(
            self.size, pool_initializer, initargs, self.tasks, context=context
        )
        self._receiver = self._pool.receiver

    def _processes(self) -> Iterable[BaseProcess]:
        return list(getattr(self._pool, "_pool", None) or ())

    def _receives(self) -> bool:
        return self._pool is None or self._pool._result_handler.is_alive()  # type: ignore[attr-defined]

    def _submit(self, chunk: Chunk) -> cf.Future[Any]:
        assert self._pool is not None
        payload = chunk.payload()
        future: cf.Future[Any] = cf.Future()
        future.set_running_or_notify_cancel()
        self._pool.apply_async(
            run_chunk,
            (chunk.start, payload),
            callback=future.set_result,
            error_callback=future.set_exception,
        )
        return future

    def _close(self, abort: bool) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # Nothing is outstanding, or it is abandoned: the pool is torn down as terminate()
        # would, without its waits that never end (see the module docstring).
        for proc in pool.teardown(self._procs.values()):
            reap(proc)
        self._release(pool)
