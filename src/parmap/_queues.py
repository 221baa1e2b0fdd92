"""``queue_collect``: producers in their own processes put items; the caller collects them all.

Each producer is called as ``producer(*args, channel)``; ``channel.put(item)`` sends an item.
The caller drains while the producers run, so items of any size flow (joining a process before
draining its queue deadlocks once the items exceed the pipe buffer), and it never asks
``Queue.empty()``, which is wrong about half the time right after a ``put``. A producer says it
is done by a last message on its own channel, after its items, carrying what became of the call
(the same reply a pool worker sends): so its items are all in, in its own put order, and an
exception, ``sys.exit()`` or death is reported as ``run_processes`` reports it.

Channels (``channel=``):

* ``"queue"``: one ``multiprocessing.Queue`` shared by all producers, items tagged by producer;
* ``"pipe"``: a ``multiprocessing.Pipe`` per producer;
* ``"manager"``: a ``multiprocessing.Manager().Queue()``, started and shut down by the call.

A producer killed in the middle of writing a large item to a shared queue can leave a partial
message that no reader can finish; ``"pipe"`` has no such hazard (the reader gets end-of-file).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.managers
import multiprocessing.queues
import os
import queue
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection, wait
from typing import Any, Generic, Protocol, TypeVar

from typing_extensions import TypeVarTuple, Unpack

from ._errors import WorkerCrashedError
from ._exit import AT_EXIT
from ._processes import Family, child_reply, prepare_children
from .backends._base import why_startup_failed

__all__ = ["CHANNELS", "Channel", "queue_collect"]

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)
Ts = TypeVarTuple("Ts")

CHANNELS = ("queue", "pipe", "manager")
#: How often the caller looks at the producers while a queue has nothing for it.
POLL = 0.05


class Channel(Protocol[T_contra]):
    """What a producer gets as its last argument: something to ``put`` items into."""

    def put(self, item: T_contra, /) -> None: ...


class _QueueEnd(Generic[T]):
    """A producer's end of a shared queue: tags each item with the producer's number."""

    def __init__(self, q: Any, index: int) -> None:
        self._q, self._index = q, index

    def put(self, item: T, /) -> None:
        self._q.put((self._index, False, item))

    def finish(self, reply: bytes) -> None:
        self._q.put((self._index, True, reply))


class _PipeEnd(Generic[T]):
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def put(self, item: T, /) -> None:
        self._conn.send((False, item))

    def finish(self, reply: bytes) -> None:
        self._conn.send((True, reply))
        self._conn.close()


def _producer_child(end: Any, caller: int, fn_bytes: bytes, index: int, payload: bytes) -> None:
    end.finish(child_reply(caller, fn_bytes, index, payload, end))


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
    ctx, fn_bytes, payloads = prepare_children(
        "queue_collect", producer, args_list, timeout, start_method
    )
    family = Family("queue_collect", len(payloads), timeout, ctx.get_start_method())
    items: list[list[T]] = [[] for _ in payloads]
    manager = None
    conns: dict[Connection, int] = {}
    shared: Any = None
    try:
        if channel == "manager":
            manager = _start_manager(ctx)
            shared = manager.Queue()
        elif channel == "queue":
            shared = ctx.Queue()
        _start_producers(ctx, family, fn_bytes, payloads, shared, conns)
        while not family.settled():
            if shared is not None:
                _drain_queue(family, shared, items)
            else:
                _drain_pipes(family, conns, items)
        for index in range(len(payloads)):
            family.results[index] = items[index]
        family.finish()
        return [item for produced in items for item in produced]
    finally:
        family.close()
        _close_channels(conns, shared, manager)


def _start_producers(
    ctx: Any,
    family: Family,
    fn_bytes: bytes,
    payloads: list[bytes],
    shared: Any,
    conns: dict[Connection, int],
) -> None:
    """Start a producer per payload, each with its end of the channel: the shared queue, or a
    pipe of its own, whose reading end goes in ``conns`` as it is made (closed by the caller
    on every exit)."""
    for index, payload in enumerate(payloads):
        theirs = None
        if shared is not None:
            end: Any = _QueueEnd(shared, index)
        else:
            ours, theirs = ctx.Pipe(duplex=False)
            conns[ours] = index
            end = _PipeEnd(theirs)
        proc = ctx.Process(
            target=_producer_child,
            args=(end, os.getpid(), fn_bytes, index, payload),
            name=f"parmap-producer-{index}",
        )
        family.start(index, proc)
        if theirs is not None:
            theirs.close()


def _close_channels(conns: dict[Connection, int], shared: Any, manager: Any) -> None:
    for conn in conns:
        conn.close()
    if isinstance(shared, multiprocessing.queues.Queue):
        shared.close()
        shared.join_thread()
    if manager is not None:
        manager.shutdown()


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


def _deliver(family: Family, items: list[list[Any]], index: int, last: bool, body: Any) -> None:
    if family.done[index]:
        return
    if last:
        family.reply(index, body)
    else:
        items[index].append(body)


def _drain_queue(family: Family, shared: Any, items: list[list[Any]]) -> None:
    try:
        index, last, body = shared.get(timeout=family.wait_time(POLL))
    except (EOFError, OSError):  # the manager's process is gone
        AT_EXIT.abandon()  # stopped at exit, as the call was abandoned: not an error to report
        raise
    except queue.Empty:
        for index in family.waiting():
            proc = family.procs[index]
            if proc is not None and proc.exitcode is not None:
                family.exited(index)
        return
    _deliver(family, items, index, last, body)


def _drain_pipes(family: Family, conns: dict[Connection, int], items: list[list[Any]]) -> None:
    sentinels = family.sentinels()
    handles: list[Any] = [c for c, i in conns.items() if not family.done[i]]
    ready = wait(handles + list(sentinels), family.wait_time(None))
    for handle in ready:
        if isinstance(handle, Connection):
            index = conns[handle]
            try:
                last, body = handle.recv()
            except (EOFError, OSError):
                family.exited(index, owes_reply=False)
                continue
            _deliver(family, items, index, last, body)
    for handle in ready:
        if handle in sentinels:
            index = sentinels[handle]
            conn = next(c for c, i in conns.items() if i == index)
            if not family.done[index] and not conn.poll():
                family.exited(index, owes_reply=False)
