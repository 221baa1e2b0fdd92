"""``"dask"`` / ``DaskBackend``: chunks as tasks on a Dask distributed cluster.

Facts about distributed this follows (measured with 2026.8 on two cores): a task costs about
1.7 ms to schedule, so items travel in chunks sized like local ones (10k trivial items: 16.7 s
one task each, 0.03 s in chunks of 1000); each chunk is one opaque ``bytes`` object (a plain list
costs ~20 us per element to schedule); ``pure=True``, the default, merges identical calls, so
every submit says ``pure=False``; the scheduler unpickles what it is given, so the function
travels as cloudpickled bytes.

How the function reaches the workers, and what survives their deaths (2-worker LocalCluster,
default config, an item that SIGKILLs its worker, which Dask retries on the next worker until
``allowed-failures``, 3, is used up):

* It used to be scattered (``broadcast=True``). Scattered data lives only on workers: once the
  ones holding it had died, the scheduler forgot it and every chunk depending on it, and the map
  raised ``FutureCancelledError: ... already forgotten`` (3 runs out of 3), not a crash.
* As a task of its own (``bytes(fn_bytes)``, the bytes held in the task's spec by the
  scheduler), it is recomputed instead. But every chunk then depends on it, and Dask assigns a
  task to a worker holding its dependencies (others get work by stealing): right after the
  function's task ran on one worker, or was recomputed on one, the chunks queue there (20 items
  of 0.1 s, 10 runs: 1.05-1.20 s in 6, 1.31-2.07 s in 4, all 20 items on one worker in the
  slowest; scattered, 1.04-1.15 s), and a chunk that kills its worker takes the chunks queued
  with it along (the crash named the right item in 11 runs out of 20).
* Inline, in each chunk's task, there is nothing to lose and nothing to chase: chunks spread
  like independent tasks, and the crash named the right item in 20 runs out of 20 (19 out of 20
  with ``allowed-failures`` 0). It costs the bytes once per chunk: nothing measurable up to
  64 KiB (400 chunks: 2.20 s inline, 2.24 s as a task), 0.3-0.8 s more at 256 KiB, 104 s
  against 2.7 s at 20 MiB.

So a function that pickles to at most ``INLINE_LIMIT`` (64 KiB) travels inline, a larger one as
a task (each worker fetches it once per call); above 10 MB Dask warns "Sending large graph".

A worker that dies mid-task is retried by Dask and ends in ``KilledWorker``, reported as
``WorkerCrashedError`` naming the chunk, with the Dask error as its cause. Dask blames every
task the dying workers held, and a worker reports finished tasks in batches every 2 ms, so a
chunk that finished just before another one killed its worker can be blamed too; parmap then
names the lower of them. A task Dask cancels without being asked (it lost something the task
needed, the cluster restarted) is reported as ``WorkerCrashedError`` too, not as Dask's
``CancelledError``. On an error or an early close the outstanding tasks are cancelled. A client
passed in is never closed by parmap; a client parmap opened (from ``address=``) is.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import importlib
import threading
import uuid
from dataclasses import dataclass
from functools import partial
from typing import Any

from .._errors import BackendUnavailableError, WorkerCrashedError
from .._wire import Failure
from .._worker import run_chunk_with
from ._base import Call, Chunk, FutureBackend, Outcome

__all__ = ["DaskBackend"]

#: A function that pickles to no more than this travels in every chunk's task; a larger one is
#: a task of its own that the chunks depend on (see the module docstring).
INLINE_LIMIT = 64 * 1024


@dataclass(eq=False)
class _Task:
    """A chunk's Dask future, the local one the dispatch loop waits on, and the gather of its
    result (on the client's event loop) while one is under way."""

    remote: Any
    local: cf.Future[Any]
    fetch: cf.Future[Any] | None = None


def _settle(
    local: cf.Future[Any], *, result: Any = None, exception: BaseException | None = None
) -> None:
    """Complete ``local`` unless it is already done (cancelled when the call stopped)."""
    try:
        if exception is not None:
            local.set_exception(exception)
        else:
            local.set_result(result)
    except cf.InvalidStateError:
        pass


def _distributed() -> Any:
    try:
        return importlib.import_module("distributed")
    except ImportError as exc:
        raise BackendUnavailableError(
            "the 'dask' backend needs distributed: pip install 'parmap-typed[dask]'"
        ) from exc


class DaskBackend(FutureBackend):
    """Run on a Dask cluster: ``DaskBackend(client)``, ``DaskBackend(address="tcp://...")``, or
    ``backend="dask"`` for the current default client."""

    name = "dask"

    def __init__(self, client: Any = None, *, address: str | None = None) -> None:
        super().__init__()
        distributed = _distributed()
        if client is not None and address is not None:
            raise ValueError("DaskBackend(): pass a client or an address, not both")
        if client is not None and not isinstance(client, distributed.Client):
            raise TypeError(f"DaskBackend(): expected a distributed.Client, got {client!r}")
        self._given = client
        self._address = address
        self._client: Any = client
        self._owned = False
        self._tasks: dict[cf.Future[Any], _Task] = {}
        self._lock = threading.RLock()  # _fetched may run inside _landed
        self._fn: Any = None
        self._key = ""
        self.timeouts = False  # Dask cannot kill the task of one item; refused at call time
        self.workers = self._count(client) if client is not None else 1

    @classmethod
    def from_name(cls, workers: int, start_method: str | None) -> DaskBackend:
        """``backend="dask"``: the client ``distributed.get_client()`` finds."""
        distributed = _distributed()
        try:
            client = distributed.get_client()
        except ValueError as exc:
            raise ValueError(
                "backend='dask' uses the current Dask client and there is none: create a "
                "distributed.Client first, or pass DaskBackend(address=...)"
            ) from exc
        return cls(client)

    @staticmethod
    def _count(client: Any) -> int:
        return max(1, int(sum(client.nthreads().values())))

    def start(self, call: Call) -> None:
        super().start(call)
        if self._client is None:
            self._client = _distributed().Client(self._address)
            self._owned = True
        self.workers = self._count(self._client)
        self._key = uuid.uuid4().hex
        fn_bytes = call.fn_bytes
        if len(fn_bytes) <= INLINE_LIMIT:
            self._fn = fn_bytes  # in each chunk's task: nothing for Dask to lose or to chase
        else:
            # A task whose only input is the bytes, held by the scheduler in the task's spec:
            # each worker fetches its result once per call, and the scheduler recomputes it
            # when the workers holding it have died. bytes(b) is b; a builtin, so the
            # scheduler, which unpickles the task, needs nothing new to import.
            self._fn = self._client.submit(bytes, fn_bytes, key=f"parmap-fn-{self._key}")

    def _submit(self, chunk: Chunk) -> cf.Future[Any]:
        assert self._call is not None
        remote = self._client.submit(
            run_chunk_with, self._key, self._fn, self._call.star, chunk.start, chunk.payload(),
            pure=False,
        )  # fmt: skip
        local: cf.Future[Any] = cf.Future()
        local.set_running_or_notify_cancel()
        task = _Task(remote, local)
        self._tasks[local] = task
        remote.add_done_callback(lambda _: self._landed(task))
        return local

    def _landed(self, task: _Task) -> None:
        """The task is done: start fetching its result, or pass on its error.

        Runs in Dask's callback thread, which every future of the process shares, or in the
        caller's (from ``_check``); the gather runs on the client's event loop, so that neither
        thread waits on a worker. (Gathering here with ``result()`` held up every other
        future's callback behind one slow gather: 3 maps out of about 40 whose item killed its
        worker stalled 30 s, ``distributed.comm.timeouts.connect``; none out of about 150 since.)
        """
        with self._lock:
            if task.local.done() or task.fetch is not None:
                return
            status = task.remote.status
            if status == "finished":
                gather = self._client.gather(task.remote, asynchronous=True)
                task.fetch = asyncio.run_coroutine_threadsafe(
                    gather, self._client.loop.asyncio_loop
                )
                task.fetch.add_done_callback(partial(self._fetched, task))
                return
        if status in ("error", "cancelled"):
            try:
                task.remote.result()  # raises what the client holds: no worker is asked
            except BaseException as exc:  # the task's failure, or its cancellation
                _settle(task.local, exception=exc)
        # Otherwise ("lost") its result died with a worker before we asked for it, and Dask
        # is computing it again; _check lands it once it is done.

    def _fetched(self, task: _Task, fetch: cf.Future[Any]) -> None:
        """A gather ended (on the client's event loop: must not block)."""
        with self._lock:
            if task.fetch is not fetch or fetch.cancelled():
                return  # given up on by _check
            exc = fetch.exception()
            if exc is None:
                _settle(task.local, result=fetch.result())
            else:
                _settle(task.local, exception=exc)

    def _check(self, *, broken: bool = False) -> Failure | None:
        """Every tenth of a second while the caller waits: land the tasks whose results were
        lost with a worker once Dask has computed them again. A fetch under way when its result
        was lost is abandoned (it may wait on the dead worker until Dask's connect timeout) and
        a new one started; the abandoned one ends by itself and is ignored."""
        for task in list(self._tasks.values()):
            with self._lock:
                if task.local.done():
                    continue
                if task.fetch is not None and task.remote.status != "finished":
                    task.fetch = None  # lost: abandoned, its result unused
            if task.fetch is None and task.remote.status in ("finished", "error", "cancelled"):
                self._landed(task)
        return None

    def _finish(self, chunk: Chunk, future: cf.Future[Any]) -> Outcome:
        exc = future.exception()
        self._tasks.pop(future, None)
        # WorkerCrashedError's message reads "<what> died with an unknown exit status".
        if exc is not None and type(exc).__name__ == "KilledWorker":
            tries = int(getattr(exc, "allowed_failures", 0)) + 1  # Dask's retries, then this
            what = (
                f"each of the {tries} Dask workers that ran {chunk.describe()} in turn"
                if tries > 1
                else f"the Dask worker that ran {chunk.describe()}"
            )
        elif isinstance(exc, (cf.CancelledError, asyncio.CancelledError)):
            # Not ours: we cancel only in _close, after the last wait. Dask dropped the task
            # (it lost data the task needed, or the cluster was restarted).
            what = (
                f"a Dask worker holding the task of {chunk.describe()} or data it needed "
                f"(Dask cancelled the task: {exc})"
            )
        else:
            return super()._finish(chunk, future)
        crash = WorkerCrashedError(what, exitcode=None, index=chunk.start)
        crash.__cause__ = exc
        return Outcome.failed(chunk, chunk.start, crash)

    def _close(self, abort: bool) -> None:
        remote = [task.remote for task in self._tasks.values()]
        self._tasks.clear()
        if remote:
            self._client.cancel(remote)
        self._fn = None
        if self._owned:
            self._client.close()
            self._client, self._owned = None, False
