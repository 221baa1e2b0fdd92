"""``"pool"``: ``multiprocessing.Pool``, started per call, chunks through ``apply_async``.

Pool never notices a worker that dies mid-task (bpo-22393, open since 2014): it replaces the
worker and waits forever for the lost task. The watching in ``_watched`` turns that into a
``WorkerCrashedError`` within a tenth of a second, and ``terminate()`` ends the pool.

``terminate()`` stops each worker with ``Process.terminate()`` (SIGTERM) and then waits for it
without limit. A worker set up by ``_worker.become_worker`` dies of it, but one the pool has just
started (a replacement, or one of a call that ended before all its workers were up) still has
the caller's signal dispositions: a SIGTERM the caller ignores (inherited even across exec), or
a handler that does nothing (asyncio's), keeps it alive, and the caller waiting for it forever.
So here a worker's ``terminate()`` is ``kill()``: SIGKILL, which nothing catches or ignores.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Iterable
from multiprocessing.context import BaseContext
from multiprocessing.pool import Pool
from multiprocessing.process import BaseProcess
from typing import Any

from .._children import reap
from .._worker import pool_initializer, run_chunk
from ._base import Chunk
from ._watched import WatchedPool

__all__ = ["PoolBackend"]


class _KillingPool(Pool):
    """A ``Pool`` whose workers' ``terminate()`` is ``kill()`` (see the module docstring)."""

    @staticmethod
    def Process(ctx: BaseContext, *args: Any, **kwds: Any) -> Any:
        proc: BaseProcess = ctx.Process(*args, **kwds)  # type: ignore[attr-defined]
        proc.terminate = proc.kill  # type: ignore[method-assign]
        return proc


class PoolBackend(WatchedPool):
    name = "pool"
    broken = ()

    _pool: Pool | None = None

    def _open(self, initargs: tuple[Any, ...]) -> None:
        self._pool = _KillingPool(self.workers, pool_initializer, initargs, context=self._ctx)

    def _processes(self) -> Iterable[BaseProcess]:
        return list(getattr(self._pool, "_pool", None) or ())

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
        # Nothing is outstanding (or it is abandoned): terminate() is what Pool's own ``with``
        # does, and it runs the pool's finalizer now. close() and join() would wait for the
        # pool's maintenance thread, which looks at its workers every tenth of a second.
        pool.terminate()
        pool.join()
        # After the join: the pool may have started a replacement worker until then.
        workers = {*getattr(pool, "_pool", ()), *self._procs.values()}
        # Without this, the pool's pipes and its workers' sentinels stay open until a garbage
        # collection finds the pool (its threads hold references to it).
        for name in ("_inqueue", "_outqueue", "_change_notifier"):
            channel = getattr(pool, name, None)
            if channel is not None:
                channel.close()
        for proc in workers:
            reap(proc)
        self._release(pool)
