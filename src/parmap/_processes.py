"""``run_processes``: one OS process per argument tuple, return values back, nothing left behind.

``multiprocessing.Process`` throws its target's return value away and says nothing when the
target raises. Here each child runs the target through the same code as a pool worker
(``_worker.run_chunk`` with a one-item chunk), so a return value, an exception with its traceback,
a ``sys.exit()`` and a value that will not pickle come back exactly as they do from ``pmap``.

``Family`` supervises a set of such one-off children for this module and ``_queues``: all
are started before any is waited for; the caller waits on every child's reply pipe and sentinel
at once, so a child that dies is noticed at once, and a reply of any size is read while the
child is still alive (never join-before-drain). Failures are chosen like the loop's: the lowest
index, once every lower child has finished. Then the higher children are killed; every child is
joined before the call returns or raises.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

from typing_extensions import TypeVarTuple, Unpack

from ._api import (
    check_callable,
    check_iterable,
    check_may_start_processes,
    check_start_method,
    check_timeout,
)
from ._children import join_exit, reap
from ._errors import (
    TaskPicklingError,
    TaskTimeoutError,
    WorkerCrashedError,
    note_item,
)
from ._exit import AT_EXIT
from ._serialize import dumps_items, dumps_task, loads
from ._wire import Done, Failure, Spec, decode_reply
from ._worker import become_worker, install, run_chunk, run_items
from .backends._base import why_startup_failed

__all__ = ["Family", "child_reply", "run_processes"]

R = TypeVar("R")
Ts = TypeVarTuple("Ts")

#: How long a child that exited with code 0 may take to deliver the reply it owes us.
REPLY_GRACE = 2.0
#: How long a child that reported may take to exit before it is killed.
EXIT_GRACE = 5.0


def child_reply(caller: int, fn_bytes: bytes, index: int, payload: bytes, *extra: Any) -> bytes:
    """In a child: run ``fn(*args, *extra)`` once, as a pool worker runs an item; the reply."""
    become_worker(caller)
    install(Spec(fn_bytes, star=True))
    if not extra:
        return run_chunk(index, payload)
    try:
        (args,) = loads(payload)
    except BaseException:  # reported the usual way, by run_chunk
        return run_chunk(index, payload)
    return run_items(index, [(*args, *extra)])


def _process_child(
    conn: Connection, caller: int, fn_bytes: bytes, index: int, payload: bytes
) -> None:
    conn.send_bytes(child_reply(caller, fn_bytes, index, payload))
    conn.close()


class Family:
    """One-off children of one call, their results, and the loop's choice of failure."""

    def __init__(
        self, api: str, count: int, timeout: float | None, start_method: str = "fork"
    ) -> None:
        self.api = api
        self.start_method = start_method
        self.procs: list[BaseProcess | None] = [None] * count
        self.results: list[Any] = [None] * count
        self.done = [False] * count
        self.failure: Failure | None = None
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self._exited_at: dict[int, float] = {}

    # -- outcomes --------------------------------------------------------------------------------

    def succeed(self, index: int, value: Any) -> None:
        self.results[index], self.done[index] = value, True

    def fail(self, index: int, error: BaseException) -> None:
        self.done[index] = True
        if self.failure is None or index < self.failure[0]:
            self.failure = (index, error)
        for later in range(index + 1, len(self.procs)):
            self.done[later] = True  # the loop would never have got there
            self.kill(later)

    def reply(self, index: int, data: bytes) -> None:
        reply = decode_reply(data, index, 1)
        if isinstance(reply, Done):
            self.succeed(index, reply.results[0])
        else:
            self.fail(*(reply if isinstance(reply, tuple) else reply.failure(index, 1)))

    def waiting(self) -> list[int]:
        return [i for i, done in enumerate(self.done) if not done]

    def settled(self) -> bool:
        return not self.waiting()

    # -- processes -------------------------------------------------------------------------------

    def start(self, index: int, proc: BaseProcess) -> None:
        AT_EXIT.abandon()
        proc.start()
        AT_EXIT.started(proc)
        self.procs[index] = proc

    def kill(self, index: int) -> None:
        proc = self.procs[index]
        if proc is not None and proc.exitcode is None:
            proc.kill()

    def sentinels(self) -> dict[int, int]:
        """Sentinel -> index, for children still owing their outcome."""
        out = {}
        for index in self.waiting():
            proc = self.procs[index]
            if proc is not None:
                out[proc.sentinel] = index
        return out

    def exited(self, index: int, *, owes_reply: bool = True) -> None:
        """The child's process ended before its outcome arrived."""
        AT_EXIT.abandon()  # killed at exit: not a death to report
        proc = self.procs[index]
        assert proc is not None
        join_exit(proc)
        if proc.exitcode == 0 and owes_reply:
            # Its reply may still be on its way (a queue's feeder thread); allow it a moment.
            first = self._exited_at.setdefault(index, time.monotonic())
            if time.monotonic() - first < REPLY_GRACE:
                return
        what = f"{self.api}() child {index} (pid {proc.pid})"
        if proc.exitcode == 0:
            what += " exited without reporting (os._exit(0)?) and"
        error = WorkerCrashedError(what, exitcode=proc.exitcode, index=index)
        error.pid = proc.pid
        why = why_startup_failed(proc.exitcode, self.start_method)
        if why:  # no board here to say whether it ran anything: the target may have exited 1
            error.args = (f"{error.args[0]}; if it died while starting: {why}",)
        self.fail(index, error)

    def wait_time(self, poll: float | None) -> float | None:
        """How long to block before looking again (``poll`` caps it), or raise on a timeout."""
        waits = [w for w in (poll, REPLY_GRACE if self._exited_at else None) if w is not None]
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                index = self.waiting()[0]
                assert self.timeout is not None
                self.fail(
                    index,
                    TaskTimeoutError(
                        f"{self.api}() child {index}", timeout=self.timeout, index=index
                    ),
                )
                return 0.0
            waits.append(left)
        return min(waits) if waits else None

    def finish(self) -> list[Any]:
        """Raise the loop's failure, if any, or return the results."""
        if self.failure is not None:
            note_item(self.failure[1], self.failure[0], "child")
            raise self.failure[1]
        return self.results

    def close(self) -> None:
        """Join every child: those that reported get a moment to exit, the rest are killed."""
        deadline = time.monotonic() + EXIT_GRACE
        for proc in self.procs:
            if proc is None:
                continue
            if self.failure is None:
                join_exit(proc, max(0.0, deadline - time.monotonic()))
            if proc.exitcode is None:
                proc.kill()
            reap(proc)
            AT_EXIT.ended(proc)


def prepare_children(
    api: str,
    target: Callable[..., Any],
    args_list: Iterable[tuple[Any, ...]],
    timeout: float | None,
    start_method: str | None,
) -> tuple[Any, bytes, list[bytes]]:
    """Validate and pickle everything before any child starts; the context to start them."""
    check_callable(api, target, "target")
    check_timeout(api, timeout)
    check_start_method(api, start_method)
    args = list(check_iterable(api, args_list, "args_list"))
    for n, item in enumerate(args):
        if not isinstance(item, tuple):
            raise TypeError(f"{api}(): args_list[{n}] must be a tuple, got {type(item).__name__}")
    check_may_start_processes(api, "it", "call it from a process that is not daemonic")
    fn_bytes = dumps_task(target, None, (), TaskPicklingError)
    payloads = [
        dumps_items([a], n, "the arguments of child", TaskPicklingError) for n, a in enumerate(args)
    ]
    return multiprocessing.get_context(start_method), fn_bytes, payloads


def run_processes(
    target: Callable[[Unpack[Ts]], R],
    args_list: Iterable[tuple[Unpack[Ts]]],
    /,
    *,
    timeout: float | None = None,
    start_method: str | None = None,
) -> list[R]:
    """Run ``target(*args)`` in its own process for each ``args``, all at once; return the values.

    All processes start before any is waited for. The return values come back in ``args_list``
    order. If targets raise, the exception of the lowest-numbered one is re-raised with its
    original type and the child's traceback as ``__cause__`` (later children are stopped); a
    child that dies raises [`WorkerCrashedError`][parmap.WorkerCrashedError] naming its exit
    code or signal. ``timeout`` bounds the whole run: on expiry the children still running are
    killed and [`TaskTimeoutError`][parmap.TaskTimeoutError] names the first of them.
    """
    ctx, fn_bytes, payloads = prepare_children(
        "run_processes", target, args_list, timeout, start_method
    )
    family = Family("run_processes", len(payloads), timeout, ctx.get_start_method())
    conns: dict[Connection, int] = {}
    try:
        for index, payload in enumerate(payloads):
            ours, theirs = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=_process_child,
                args=(theirs, os.getpid(), fn_bytes, index, payload),
                name=f"parmap-child-{index}",
            )
            family.start(index, proc)
            theirs.close()
            conns[ours] = index
        while not family.settled():
            sentinels = family.sentinels()
            handles: list[Any] = [c for c, i in conns.items() if not family.done[i]]
            ready = wait(handles + list(sentinels), family.wait_time(None))
            for handle in ready:
                if isinstance(handle, Connection):
                    _read(family, handle, conns[handle])
            for handle in ready:
                if not isinstance(handle, Connection) and handle in sentinels:
                    index = sentinels[handle]
                    if not family.done[index]:
                        conn = next(c for c, i in conns.items() if i == index)
                        if conn.poll():
                            _read(family, conn, index)
                        else:
                            family.exited(index, owes_reply=False)
        return family.finish()
    finally:
        family.close()
        for conn in conns:
            conn.close()


def _read(family: Family, conn: Connection, index: int) -> None:
    if family.done[index]:
        return
    try:
        data = conn.recv_bytes()
    except (EOFError, OSError):
        family.exited(index, owes_reply=False)
        return
    family.reply(index, data)
