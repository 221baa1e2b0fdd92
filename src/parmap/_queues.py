"""``queue_collect``: producers in their own processes put items; the caller collects them all.

Each producer is called as ``producer(*args, channel)``; ``channel.put(item)`` sends an item.
The producers are ``run_processes``'s children (``_processes.Children``: the ``"process"``
backend's workers, one item each, on the dispatch loop), so a producer's return, exception,
``sys.exit()`` or death is its chunk's outcome, reported as ``run_processes`` reports it, and
the lowest producer's failure is the one raised. What is added here is the channel:

* in the child, ``_Produce`` calls the producer with its end of the channel (inherited as the
  child started: the initializer's argument, see ``Children._spawn``) and, once the producer
  returns, flushes it (a ``multiprocessing.Queue`` puts from a feeder thread), so every item is
  in the channel before the child's reply is sent (an item the feeder could not pickle is then
  raised as the producer's error, as a pipe's or a manager's ``put`` raises it);
* in the caller, a ``Collector`` is drained while the engine waits (its pipes are waited on in
  the engine's one wait, with the children's pipes and sentinels; a manager's queue, which has
  no handle to wait on, is looked at every ``POLL``), and once more before any outcome is
  accepted: so a producer's items are all in, in its own put order, when its outcome is.

Items of any size flow (joining a process before draining its queue deadlocks once the items
exceed the pipe buffer), and ``Queue.empty()``, wrong about half the time right after a
``put``, is never asked.

Channels (``channel=``):

* ``"queue"``: one ``multiprocessing.Queue`` shared by all producers, items tagged by producer;
* ``"pipe"``: a ``multiprocessing.Pipe`` per producer (its writing end held by that producer
  alone);
* ``"manager"``: a ``multiprocessing.Manager().Queue()``, started and shut down by the call.

A producer killed in the middle of writing a large item to a shared queue can leave a partial
message that no reader can finish; ``"pipe"`` has no such hazard (the reader gets end-of-file).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.managers
import multiprocessing.queues
import queue
import time
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from typing import Any, Generic, Protocol, TypeVar

from typing_extensions import TypeVarTuple, Unpack

from ._errors import TaskPicklingError, WorkerCrashedError
from ._exit import AT_EXIT
from ._processes import Children, Collector, prepare_children, run_children
from ._serialize import dumps_task
from ._wire import INHERITED
from ._worker import worker_state
from .backends._base import Call, Outcome, why_startup_failed

__all__ = ["CHANNELS", "Channel", "queue_collect"]

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)
Ts = TypeVarTuple("Ts")

CHANNELS = ("queue", "pipe", "manager")
#: How often the caller looks at a manager's queue, which has no handle to wait on.
POLL = 0.05
#: The longest a drain of the channel reads before the caller looks at its children and the
#: deadline again (producers that put faster than it reads would keep it reading for good).
DRAIN_SECONDS = 0.02


class Channel(Protocol[T_contra]):
    """What a producer gets as its last argument: something to ``put`` items into."""

    def put(self, item: T_contra, /) -> None: ...


# -- in the child --------------------------------------------------------------------------------


def _keep(end: Any) -> Any:
    """The initializer of a producer's child: its end of the channel becomes its state."""
    return end


class _End(Generic[T]):
    """A producer's end of the channel: tags each item with the producer's number."""

    def __init__(self, raw: Any, index: int) -> None:
        self._raw, self._index = raw, index
        #: Items put: the producer's reply, by which the caller knows when all are in.
        self.count = 0
        #: What a queue's feeder thread could not send (it pickles each item on its own).
        self._unsent: list[BaseException] = []
        if isinstance(raw, multiprocessing.queues.Queue):
            # By default the feeder prints the error and drops the item: the caller would get
            # a result with an item missing. Kept, it is raised as the producer's, as a pipe's
            # or a manager's ``put`` raises it.
            setattr(raw, "_on_queue_feeder_error", lambda e, _: self._unsent.append(e))  # noqa: B010

    def put(self, item: T, /) -> None:
        if isinstance(self._raw, Connection):
            self._raw.send((self._index, item))
        else:
            self._raw.put((self._index, item))
        self.count += 1

    def flush(self) -> None:
        """Every item put is in the channel when this returns: a ``multiprocessing.Queue``'s
        feeder thread has written them all (a pipe's and a manager's ``put`` wait anyway)."""
        if isinstance(self._raw, multiprocessing.queues.Queue):
            self._raw.close()
            self._raw.join_thread()
            if self._unsent:
                raise self._unsent[0]


class _Produce:
    """The function a producer's child runs: ``producer(*args, channel)``, then a flush.

    An exception or a death needs no flush: the call fails, and no item is returned."""

    def __init__(self, producer: Callable[..., object]) -> None:
        self.producer = producer

    def __call__(self, index: int, *args: Any) -> int:
        """Run the producer; how many items it put (see ``_collected``)."""
        end: _End[Any] = _End(worker_state(), index)
        self.producer(*args, end)
        end.flush()
        return end.count


# -- in the caller -------------------------------------------------------------------------------


class _QueueCollector:
    """A shared queue: a ``multiprocessing.Queue`` (its reader waited on) or a manager's."""

    def __init__(self, shared: Any, items: list[list[Any]], *, managed: bool) -> None:
        self.shared, self.items, self.managed = shared, items, managed
        self.interval: float | None = POLL if managed else None
        # A producer killed while its feeder thread writes to a shared pipe holds the pipe's
        # write lock for good (and may leave half a message): the others would block on it.
        self.kills_safely = managed

    def handles(self) -> list[Any]:
        return [] if self.managed else [self.shared._reader]

    def end(self) -> Any:
        return self.shared

    def started(self, end: Any) -> None:
        pass

    def complete(self, outcomes: list[Outcome]) -> bool:
        return _collected(self.items, outcomes)

    def drain(self) -> None:
        until = time.monotonic() + DRAIN_SECONDS
        while time.monotonic() < until:
            try:
                index, item = self.shared.get_nowait()
            except queue.Empty:
                return
            except (EOFError, OSError):  # the manager's process is gone
                AT_EXIT.abandon()  # stopped at exit, as the call was abandoned: not an error
                raise
            self.items[index].append(item)

    def close(self) -> None:
        if not self.managed:
            self.shared.close()
            self.shared.join_thread()
            # The caller never puts, so no feeder thread closes its ends: closed now, not when
            # a garbage collection finds the queue (a traceback may hold it till then).
            self.shared._reader.close()
            self.shared._writer.close()


class _PipeCollector:
    """A pipe per producer, made as its child starts; the caller keeps the reading ends."""

    interval: float | None = None
    kills_safely = True  # each producer's pipe is its own

    def __init__(self, ctx: Any, items: list[list[Any]]) -> None:
        self.ctx, self.items = ctx, items
        self.readers: list[Connection] = []

    def handles(self) -> list[Any]:
        return list(self.readers)

    def end(self) -> Connection:
        ours, theirs = self.ctx.Pipe(duplex=False)
        self.readers.append(ours)
        return theirs  # type: ignore[no-any-return]

    def started(self, end: Connection) -> None:
        # Closed at once, before another child starts: forked, that child would hold it too,
        # and a producer that died mid-item would leave a read that never ends.
        end.close()

    def complete(self, outcomes: list[Outcome]) -> bool:
        return _collected(self.items, outcomes)

    def drain(self) -> None:
        until = time.monotonic() + DRAIN_SECONDS
        for conn in list(self.readers):
            try:
                while conn.poll() and time.monotonic() < until:
                    index, item = conn.recv()
                    self.items[index].append(item)
            except (EOFError, OSError):  # its producer has ended: nothing more will come
                self.readers.remove(conn)
                conn.close()

    def close(self) -> None:
        for conn in self.readers:
            conn.close()


def _collected(items: list[list[Any]], outcomes: list[Outcome]) -> bool:
    """Whether every item the producers of these outcomes put is in (a producer replies with
    how many it put; one that failed fails the call, whatever it put)."""
    return all(o.failure is not None or len(items[o.chunk.start]) >= o.results[0] for o in outcomes)


def queue_collect(
    producer: Callable[[Unpack[Ts], Channel[T]], object],
    args_list: Iterable[tuple[Unpack[Ts]]],
    /,
    *,
    channel: str = "queue",
    timeout: float | None = None,
    start_method: str | None = None,
) -> list[T]:
    """Run ``producer(*args, channel)`` in a process per ``args``; return every item they put.

    The result is what running the producers one after another would give: each producer's
    items in its own put order, producers in ``args_list`` order. A producer that raises or dies
    is reported as in [`run_processes`][parmap.run_processes]; ``timeout`` bounds the whole run.
    """
    if channel not in CHANNELS:
        raise ValueError(
            f"queue_collect(): unknown channel {channel!r}; valid: {', '.join(CHANNELS)}"
        )
    api = "queue_collect"
    args = prepare_children(api, producer, args_list, timeout, start_method)
    ctx = multiprocessing.get_context(start_method)
    items: list[list[T]] = [[] for _ in args]
    call = Call(_Produce(producer), True, None, _keep, max_tasks=1, inheritable=True)
    # The initializer's argument, the child's end of the channel, is what each child inherits
    # as it starts (Children._spawn): a Queue or a pipe end can travel no other way.
    call._fn_bytes = dumps_task(call.fn, _keep, INHERITED, TaskPicklingError)
    manager = None
    collector: _QueueCollector | _PipeCollector | None = None
    try:
        if channel == "manager":
            manager = _start_manager(ctx)
            collector = _QueueCollector(manager.Queue(), items, managed=True)
        elif channel == "queue":
            collector = _QueueCollector(ctx.Queue(), items, managed=False)
        else:
            collector = _PipeCollector(ctx, items)
        engine = _engine(api, start_method, timeout, collector)
        run_children(engine, call, [(n, *a) for n, a in enumerate(args)])
        return [item for produced in items for item in produced]
    finally:
        if collector is not None:
            collector.close()
        if manager is not None:
            manager.shutdown()


def _engine(
    api: str, start_method: str | None, timeout: float | None, collector: Collector
) -> Callable[[list[bytes]], Children]:
    def make(payloads: list[bytes]) -> Children:
        engine = Children(api, payloads, start_method, timeout, collector)
        engine.process_name = "parmap-producer"
        return engine

    return make


def _start_manager(ctx: Any) -> multiprocessing.managers.SyncManager:
    """``ctx.Manager()``, or, if its process dies while starting (under spawn it imports the
    main module first), ``WorkerCrashedError`` saying so rather than a bare ``EOFError``."""
    manager = multiprocessing.managers.SyncManager(ctx=ctx)
    try:
        manager.start()
    except EOFError:
        proc = getattr(manager, "_process", None)
        if proc is None:
            raise
        proc.join()
        what = f"queue_collect() manager process (pid {proc.pid}) while starting"
        error = WorkerCrashedError(what, exitcode=proc.exitcode)
        error.pid = proc.pid
        why = why_startup_failed(proc.exitcode, ctx.get_start_method())
        if why:
            error.args = (f"{error.args[0]}: {why}",)
        proc.close()
        raise error from None
    return manager
