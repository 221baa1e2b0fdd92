"""``run_processes``: one OS process per argument tuple, return values back, nothing left behind.

``multiprocessing.Process`` throws its target's return value away and says nothing when the
target raises. Here the children are the ``"process"`` backend's workers, and the call is the
dispatch loop's, so everything a map does for an item is done for a child:

* ``Children`` is that engine set up for one-off children: a worker per argument tuple, each
  given one chunk of one item (``Call.max_tasks=1``), all started before any is waited for (the
  loop's window holds every item), none kept warm, none replaced when it dies, each asked to
  quit as soon as its reply is in. Its reply is a pool worker's (``_worker.run_chunk``): a
  return value, an exception with its traceback, a ``sys.exit()`` and a value that will not
  pickle come back exactly as from ``pmap``. A death is seen on the worker's sentinel, in the
  engine's one wait over pipes and sentinels (``ProcessBackend._pump``), and named here as the
  child's ("``run_processes() child 1 (pid 4242) died with exit code 7``").
* ``_dispatch.dispatch`` runs the call: results in order, and the loop's failure, the lowest
  child's, once every lower child has finished (``_reorder``); the engine is then stopped, which
  kills the children still running and joins every one.
* ``timeout=`` bounds the whole run, not each item, so it is enforced here, above the engine's
  per-item rule: ``Children.wait`` waits no longer than the deadline, and at the deadline fails
  every chunk still out with ``TaskTimeoutError`` (the loop then raises the lowest).

``_queues.queue_collect`` runs its producers on the same engine, their channels watched in the
same wait (``Children.channel``).
"""

from __future__ import annotations

import contextlib
import pickle
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from typing_extensions import TypeVarTuple, Unpack

from ._api import (
    check_callable,
    check_iterable,
    check_may_start_processes,
    check_start_method,
    check_timeout,
)
from ._board import SlotView
from ._chunking import ChunkSizer
from ._dispatch import Reader, dispatch
from ._errors import TaskPicklingError, TaskTimeoutError, WorkerCrashedError
from ._recovery import LongRun, Recovery
from ._serialize import dumps_items
from ._wire import Failure
from .backends._base import Call, Chunk, Outcome, why_startup_failed
from .backends._process import ProcessBackend, _Worker

__all__ = ["Children", "Collector", "prepare_children", "run_children", "run_processes"]

R = TypeVar("R")
Ts = TypeVarTuple("Ts")


class Collector(Protocol):
    """The caller's side of ``queue_collect``'s channel, as ``Children`` drives it."""

    #: The longest wait before ``drain`` is called again (None: only when a handle is ready).
    interval: float | None
    #: Whether a producer may be killed while others go on putting (see ``Children._handed``).
    kills_safely: bool

    def handles(self) -> list[Any]:
        """What to wait on along with the children's pipes and sentinels."""

    def end(self) -> Any:
        """What the next child inherits as it starts: its end of the channel."""

    def started(self, end: Any) -> None:
        """That child has started (the caller's copy of a pipe end can be closed)."""

    def drain(self) -> None:
        """Take in items already in the channel (for a moment at most), without blocking."""

    def complete(self, outcomes: list[Outcome]) -> bool:
        """Whether every item put by the producers of these outcomes is in."""


class Children(ProcessBackend):
    """The ``"process"`` backend as one-off children: one worker per item, started at once;
    a whole-run deadline; deaths named as the child's; a channel drained as it waits."""

    one_shot = True
    process_name = "parmap-child"

    def __init__(
        self,
        api: str,
        payloads: list[bytes],
        start_method: str | None,
        timeout: float | None,
        channel: Collector | None = None,
    ) -> None:
        super().__init__(max(1, len(payloads)), start_method, warm=False)
        self.api = api
        #: Each child's arguments, pickled before any child started (see ``prepare_children``).
        self.payloads = payloads
        self.timeout = timeout
        self.deadline: float | None = None
        self.channel = channel

    def start(self, call: Call) -> None:
        if self.timeout is not None:
            self.deadline = time.monotonic() + self.timeout
        super().start(call)

    def _payload(self, chunk: Chunk, buffers: list[pickle.PickleBuffer]) -> bytes:
        return self.payloads[chunk.start]

    def _spawn(self, slot: int) -> _Worker:
        if self.channel is None:
            return super()._spawn(slot)
        end = self.channel.end()
        self._inherited = (end,)  # the child's initializer hands it to the producer
        try:
            return super()._spawn(slot)
        finally:
            self._inherited = None
            self.channel.started(end)

    def wait(self) -> list[Outcome]:
        """Outcomes, as the engine's; with a channel, only once every item put before those
        outcomes' replies were sent is in (a producer flushes its channel before it replies)."""
        channel = self.channel
        # With a channel, outcomes wait until their producers' items are in: a producer replies
        # with how many it put, once its channel has them all.
        while not self._ready or (channel is not None and not channel.complete(self._ready)):
            left = None if self.deadline is None else self.deadline - time.monotonic()
            if left is not None and left <= 0:
                # Not drained again: a producer killed while its queue's thread wrote a large
                # item leaves half a message that no read of a shared queue would ever finish.
                self._expire()
                if channel is not None:  # done, but its items not all in: late too
                    self._ready = [
                        o if channel.complete([o]) else self._late(o.chunk) for o in self._ready
                    ]
                return self._handed()
            if channel is not None and channel.interval is not None:
                left = channel.interval if left is None else min(left, channel.interval)
            self._pump(left, [] if channel is None else channel.handles())
            if channel is not None:
                channel.drain()
        return self._handed()

    def _handed(self) -> list[Outcome]:
        """The outcomes there are; past the lowest failure among them, every child still
        running is stopped now, as the loop would never have started it (its side effects,
        a producer's items, end here). Not with a shared queue (``kills_safely``): a producer
        killed while writing to it would block the others; those are stopped with the call."""
        outcomes, self._ready = self._ready, []
        failed = [o.failure[0] for o in outcomes if o.failure is not None]
        if failed and (self.channel is None or self.channel.kills_safely):
            cut = min(failed)
            self._backlog = deque(j for j in self._backlog if j.chunk.start < cut)
            for worker in list(self._pool):
                if worker.held and worker.held[0].chunk.start > cut:
                    worker.proc.kill()
                    worker.held.clear()  # no outcome: the loop waits only for lower ones
                    self._replace(worker, blamed=True)
        return outcomes

    def _expire(self) -> None:
        """The whole run's time is up: every child still running is killed, and its chunk
        fails with ``TaskTimeoutError`` (the loop raises the lowest: the first of them)."""
        assert self.timeout is not None
        jobs = list(self._backlog)
        self._backlog.clear()
        for worker in list(self._pool):
            if worker.held:
                worker.proc.kill()
                jobs += worker.held
                worker.held.clear()
                self._replace(worker, blamed=True)
        for job in jobs:
            self._ready.append(self._late(job.chunk))

    def _late(self, chunk: Chunk) -> Outcome:
        """``TaskTimeoutError`` for a child still running, or still putting, at the deadline."""
        assert self.timeout is not None
        what = f"{self.api}() child {chunk.start}"
        return Outcome.failed(
            chunk, chunk.start, TaskTimeoutError(what, timeout=self.timeout, index=chunk.start)
        )

    def _fatal_death(
        self, view: SlotView, exitcode: int | None, pid: int | None
    ) -> WorkerCrashedError | None:
        return None  # no child is started again: each death is its own child's failure

    def _crash_failure(
        self, chunk: Chunk, view: SlotView, exitcode: int | None, pid: int | None
    ) -> Failure:
        index = chunk.start
        what = f"{self.api}() child {index} (pid {pid})"
        if exitcode == 0:
            what += " exited without reporting (os._exit(0)?) and"
        error = WorkerCrashedError(what, exitcode=exitcode, index=index, pid=pid)
        why = why_startup_failed(exitcode, self._ctx.get_start_method())
        if why:  # exit code 1 under spawn: the target may have exited 1 too
            error.args = (f"{error.args[0]}; if it died while starting: {why}",)
        return index, error


def prepare_children(
    api: str,
    target: Callable[..., Any],
    args_list: Iterable[tuple[Any, ...]],
    timeout: float | None,
    start_method: str | None,
) -> list[tuple[Any, ...]]:
    """Validate everything before any child starts; the argument tuples."""
    check_callable(api, target, "target")
    check_timeout(api, timeout)
    check_start_method(api, start_method)
    args = list(check_iterable(api, args_list, "args_list"))
    for n, item in enumerate(args):
        if not isinstance(item, tuple):
            raise TypeError(f"{api}(): args_list[{n}] must be a tuple, got {type(item).__name__}")
    check_may_start_processes(api, "it", "call it from a process that is not daemonic")
    return args


def run_children(
    engine_for: Callable[[list[bytes]], Children], call: Call, args: list[tuple[Any, ...]]
) -> list[Any]:
    """Run ``call``'s function once per argument tuple, each in a child of the engine made by
    ``engine_for`` (given the pickled arguments); the return values, in order, or the loop's
    failure. The function and every argument are pickled before any child starts."""
    call.fn_bytes  # noqa: B018 - pickle the function now: a failure is raised before any start
    payloads = [
        dumps_items([a], n, "the arguments of child", TaskPicklingError) for n, a in enumerate(args)
    ]
    engine, count = engine_for(payloads), len(payloads)
    results: list[Any] = []
    parts = dispatch(
        engine,
        call,
        Reader(iter(range(count)), range(count)),
        ChunkSizer(engine.workers, count, 1, 1),  # a chunk per child
        None,
        Recovery(LongRun()),
        ordered=True,
        bounded=False,
        noun="child",
    )
    with contextlib.closing(parts):
        for part in parts:
            results += part
    return results


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
    api = "run_processes"
    args = prepare_children(api, target, args_list, timeout, start_method)
    call = Call(target, True, None, max_tasks=1)
    return run_children(lambda p: Children(api, p, start_method, timeout), call, args)
