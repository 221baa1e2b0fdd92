"""Shared by ``"pool"`` and ``"futures"``: a stdlib process pool, watched from outside.

Neither ``multiprocessing.Pool`` nor ``ProcessPoolExecutor`` says which worker died or what it
was doing (Pool does not even notice: bpo-22393). Here their workers start through
``_worker.pool_initializer``, which claims a slot on the progress board, installs the function
once and ignores SIGINT. While the caller waits, every worker process is checked: a death names
the item its slot held; an item older than ``timeout=`` gets its worker killed. A worker that
dies before it claims a slot died while starting (under spawn, importing the main module), as
would every worker the engine started after it: Pool would respawn them forever.

Recycling (``max_tasks_per_worker=``, ``max_memory_per_worker=``) uses the engines' own task
limits, which count chunks (``tasks_per_worker``; chunks capped by ``largest_chunk``). A worker
that retires frees its slot as it exits (a ``multiprocessing.util.Finalize``, after its last
reply) and records its pid in a ring of ``counts``: the caller's slots never run out, however
many workers come and go, and a retired worker (whose exit code says nothing:
ProcessPoolExecutor's, forked from its manager thread, exit with 1) is not taken for one that
died starting.
"""

from __future__ import annotations

import contextlib
import copy
import math
import multiprocessing
import os
import signal
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable
from multiprocessing.connection import wait
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

from .._board import IDLE, INITIALIZING, Board, SlotView
from .._errors import ParmapError, ResultUnpicklingError, WorkerCrashedError
from .._forked import ours
from .._serialize import describe
from .._wire import Failure
from .._worker import EXITS, RETIRED, RETIREES, UNSLOTTED
from ._base import (
    Call,
    Chunk,
    FutureBackend,
    Outcome,
    crash_failure,
    initializer_crash,
    overdue,
    startup_crash,
    timeout_failure,
)

__all__ = ["Receiver", "WatchedPool", "guarded_context"]

#: A worker found dead after finishing a chunk gets this long for its reply to arrive.
REPLY_GRACE = 0.5
#: How long to wait for the engine's thread to record the exit code of a worker it reaped.
REAP_RACE = 0.5
#: After the engine says it broke, how long its workers get to be reaped.
BROKEN_JOIN = 2.0
#: With ``max_memory_per_worker``, the most chunks a worker runs (see ``tasks_per_worker``):
#: a process start every 16 chunks (of about 20 ms each: ``_chunking.TARGET_SECONDS``) is a few
#: percent, and a worker above the limit declines at most 15 chunks before it is replaced.
MEMORY_TASKS = 16


class Receiver:
    """What the engine's result-reading thread calls in place of its result pipe's ``recv``,
    keeping what stopped it other than the end of the pipe (a ``MemoryError`` receiving a
    large result): the engine says nothing about that (Pool's thread just dies, and
    ProcessPoolExecutor calls it a worker's abrupt death)."""

    def __init__(self, recv: Callable[[], Any], *, quietly: bool) -> None:
        self._recv = recv
        #: Raise ``EOFError`` in its place (the engine's thread then ends without a traceback).
        self._quietly = quietly
        self.error: BaseException | None = None

    def __call__(self) -> Any:
        try:
            return self._recv()
        except (OSError, EOFError):
            raise
        except BaseException as exc:
            # Without its traceback: its frames hold what was received so far (a large buffer).
            self.error = exc.with_traceback(None)
            if self._quietly:
                raise EOFError from None
            raise


def guarded_context(
    ctx: BaseContext, failed: Callable[[BaseException], None] | None = None
) -> BaseContext:
    """A copy of ``ctx`` whose processes, as they start:

    * under fork, first check that the four descriptors a fork takes are there: when the second
      of its two pipes fails (``OSError: Too many open files``), multiprocessing's fork launcher
      leaves the first one open, two descriptors lost per failed call. Checked here, the error
      comes before the launcher opens anything;
    * tell ``failed`` why they could not start. The engines start replacements on a thread of
      their own, which that error ends, printed and otherwise unseen (``Pool``'s worker
      thread, ``ProcessPoolExecutor``'s manager thread): the chunks out would wait forever.
    """
    guarded = copy.copy(ctx)
    make = ctx.Process  # type: ignore[attr-defined]
    forks = ctx.get_start_method() == "fork"

    def process(*args: Any, **kwds: Any) -> Any:
        proc = make(*args, **kwds)
        start = proc.start

        def checked_start() -> None:
            del proc.start  # this function: under spawn the process is pickled as it starts
            try:
                if forks:
                    reserve_descriptors()
                start()
            except Exception as exc:  # a KeyboardInterrupt here reaches the caller as itself
                if failed is not None:
                    failed(exc)
                raise

        proc.start = checked_start
        return proc

    guarded.Process = process  # type: ignore[attr-defined]
    return guarded


def reserve_descriptors() -> None:
    """Open (and close) two pipes: ``OSError`` now if a fork's two pipes could not be opened."""
    first = os.pipe()
    try:
        second = os.pipe()
    finally:
        for fd in first:
            os.close(fd)
    for fd in second:
        os.close(fd)


class WatchedPool(FutureBackend):
    reopens = True
    inherits = True
    #: ``max_tasks_per_worker=`` and ``max_memory_per_worker=``: each worker runs a number of
    #: chunks and is replaced; see ``_open_for``.
    recycles = True

    def __init__(
        self, workers: int, start_method: str | None, *, threads: int | None = None
    ) -> None:
        super().__init__()
        self.workers = workers
        self.threads = threads
        self._ctx: BaseContext = multiprocessing.get_context(start_method)
        self._board = Board.local(1)
        self._procs: dict[int, BaseProcess] = {}
        #: ``_worker.pool_initializer``'s counts: workers without a slot, workers retired.
        self._counts: Any = None
        #: Chunks a worker runs before it is replaced, then retires (recycling; see
        #: ``_open_for``); None: no limit.
        self.tasks: int | None = None
        self._recycled_before = 0  # by engines this call closed (see ``_restart``)
        #: Workers that retired (recycling), and how many of the engine's ring were read.
        self._retired: set[int] = set()
        self._read = 0
        self._blind = False
        #: Reads the engine's result pipe, where ``_open`` installs one (see ``Receiver``).
        self._receiver: Receiver | None = None
        #: Why the engine could not start a worker (see ``guarded_context``).
        self.start_error: BaseException | None = None
        #: Chunks submitted before the engine opens (see ``start``), and the engine's size.
        self._queued: list[Chunk] | None = None
        self.size = workers

    @abstractmethod
    def _open(self, initargs: tuple[Any, ...]) -> None:
        """Start the engine with ``pool_initializer`` and these arguments."""

    @staticmethod
    def _release(engine: object) -> None:
        """Drop the engine's hold on the initializer's arguments once it is shut down.

        The engine keeps them (the board among them) until a garbage collection finds it, and
        multiprocessing's shared heap grows a new arena, with a new descriptor, while freed
        blocks wait for that.
        """
        if hasattr(engine, "_initargs"):
            engine._initargs = ()

    @abstractmethod
    def _processes(self) -> Iterable[BaseProcess]:
        """The engine's worker processes right now."""

    def start(self, call: Call) -> None:
        """Get ready; the engine opens at the first ``wait``, with no more workers than the
        chunks submitted by then: both engines start their workers when they open (``Pool``
        all of them; ``ProcessPoolExecutor`` too under fork), and ``workers=10000`` over a
        generator of 5 items started 10,000 processes."""
        super().start(call)
        self._queued = []
        self.recycled = self._recycled_before = 0

    def _restart(self, call: Call) -> None:
        recycled = self.recycled
        super()._restart(call)
        self.recycled = self._recycled_before = recycled  # the workers of the closed engine

    def submit(self, chunk: Chunk) -> None:
        if self._queued is None:
            super().submit(chunk)
        else:
            self._queued.append(chunk)

    def wait(self) -> list[Outcome]:
        if self._queued is not None:
            queued, self._queued = self._queued, None
            assert self._call is not None
            self._open_for(self._call, len(queued))
            for chunk in queued:
                super().submit(chunk)
        return super().wait()

    @property
    def retiring(self) -> bool:
        """Whether workers retire after ``tasks`` chunks (recycling)."""
        return self.tasks is not None

    def largest_chunk(self, call: Call) -> int | None:
        """``max_tasks`` shared among the chunks a worker runs (see ``tasks_per_worker``)."""
        if call.max_tasks is None:
            return None
        return call.max_tasks // tasks_per_worker(call)

    def _open_for(self, call: Call, chunks: int) -> None:
        """Open the engine. With recycling, each worker runs ``tasks_per_worker`` chunks and
        exits (both engines replace it, counting chunks): a chunk holds at most
        ``largest_chunk`` items, and one cut short above ``max_memory`` leaves the rest for a
        fresh worker, so neither limit depends on the engine counting items, or on a worker
        retiring mid-task (which ProcessPoolExecutor calls a break, failing every other chunk
        out). The cost: a process start every few chunks (docs/performance.md). A retiring
        worker frees its slot on the board as it exits, for a successor to claim."""
        self.size = max(1, min(self.workers, chunks))
        recycling = call.max_tasks is not None or call.max_memory is not None
        self.tasks = tasks_per_worker(call) if recycling else None
        # Slots for replacements too: Pool starts a new worker for each one that dies.
        self._board = Board.shared(self._ctx, 2 * self.size + 8)
        # The ring of retired pids: the caller reads it at every submit and wait (``_track``),
        # and between two looks no more workers retire than there are chunks out (at most
        # WINDOW_PER_WORKER per worker) plus the workers themselves.
        ring = 8 * self.size + 16
        counts = self._counts = self._ctx.Array("i", RETIREES + ring)
        self._retired, self._read, self._blind = set(), 0, False
        self._procs = {}
        self._suspects: dict[int, float] = {}
        args = (
            os.getpid(),
            self.threads,
            self._board,
            counts,
            call.fn_bytes,
            call.star,
            call.timeout,
            call.inherited,  # after fn_bytes: set there, where initargs travel this way
            call.max_memory,
            self.retiring,
        )
        self._receiver = None
        self.start_error = None
        try:
            self._open(args)
        except BaseException:
            # What did start is stopped at once (the engine's workers, its pipes, the call's
            # registration at exit), whoever stops the call after.
            self.stop(abort=True)
            raise
        self._track()

    def _start_failed(self, error: BaseException) -> None:
        """A worker could not start (on the engine's thread, or in ``_open``): the call's
        failure, at no item (see ``_check``), with why as its cause."""
        if self.start_error is None:
            failure = ParmapError(
                f"the {self.name!r} engine could not start a worker: {describe(error)}"
            )
            failure.__cause__ = error
            self.start_error = failure

    def _track(self) -> None:
        """Keep every worker process the engine has shown us (it forgets the dead ones), until
        one that retired is gone from the engine too (with recycling, workers come and go all
        through the call)."""
        current = list(self._processes())
        for proc in current:
            if proc.pid is not None and proc.pid not in self._procs:
                self._procs[proc.pid] = proc
                ours(proc)
        if self.retiring and self._counts is not None:
            self._read_retirees(self._counts)
            for pid, proc in list(self._procs.items()):
                # Not closed here: the engine's thread may still join it. Forgotten, its
                # sentinel is closed as the engine drops it too.
                if pid in self._retired and proc not in current:
                    del self._procs[pid]

    def _not_retired(self, dead: list[tuple[int, int | None]]) -> list[tuple[int, int | None]]:
        """Those of the ``dead`` workers (pid, exit code) that did not retire: read after they
        were found dead, since a worker records its retirement before it ends."""
        if self.retiring and dead and self._counts is not None:
            self._read_retirees(self._counts)
            dead = [d for d in dead if d[0] not in self._retired]
        return dead

    def _read_retirees(self, counts: Any) -> None:
        """Take in the pids of the workers that retired since the last look.

        Read without the lock (the caller never waits on it: a worker killed while holding it
        would hold it for good): a worker writes its pid into the ring before it counts it in
        ``EXITS``, so every entry below the count is there. The ring holds more than can retire
        between two looks (see ``_open_for``); if it ever overflowed, the pids lost could be
        taken for workers that died starting, so that check stops for this engine
        (``_blind``), and those workers stay in ``_procs`` until it closes."""
        raw = counts.get_obj()
        exits = raw[EXITS]
        self.recycled = self._recycled_before + raw[RETIRED]
        ring = len(raw) - RETIREES
        if exits - self._read > ring:
            self._blind, self._read = True, exits - ring
        for n in range(self._read, exits):
            self._retired.add(raw[RETIREES + n % ring])
        self._read = exits

    def _exitcode(self, pid: int) -> tuple[bool, int | None]:
        """Whether worker ``pid`` is dead, and its exit code where known."""
        proc = self._procs.get(pid)
        if proc is not None:
            deadline = time.monotonic() + REAP_RACE
            while True:
                code = proc.exitcode
                if code is not None or not wait([proc.sentinel], 0):
                    return code is not None, code
                # Ended, but the engine's own thread won the race to reap it and is about to
                # record the exit code in the Popen object we share with it.
                if time.monotonic() > deadline:
                    return True, None
                time.sleep(0.005)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True, None
        return False, None

    def stop(self, *, abort: bool) -> None:
        self._queued = None
        super().stop(abort=abort)
        self._procs.clear()
        self._board = Board.local(1)  # free the shared block now (see _release)
        self._counts = None
        self._receiver = None
        # Workers the engine replaced are remembered by multiprocessing until its next clean-up,
        # and their sentinels stay open until then: clean up now.
        multiprocessing.active_children()

    def interrupt(self) -> None:
        """Kill the engine's workers (from any thread): ``wait()`` sees the deaths."""
        if self._call is None:
            return
        for proc in self._processes():
            with contextlib.suppress(OSError, ValueError):  # gone, or closed
                proc.kill()

    def _submitted(self) -> None:
        self._track()

    def _check(self, *, broken: bool = False) -> Failure | None:
        """The first of: a worker that died in the initializer, one that died holding a
        chunk, one that died starting (each a failure), or an overrun (its worker killed);
        before those, results that could not be received (the engine then kills its workers)."""
        self._track()
        if self.start_error is not None:
            return -1, self.start_error  # no worker can start: every chunk out fails with it
        unreceived = self._unreceived()
        if unreceived is not None:
            return unreceived
        if broken:
            # The engine is stopping its workers; once they are joined every exit code is known.
            deadline = time.monotonic() + BROKEN_JOIN
            for proc in self._procs.values():
                proc.join(max(0.0, deadline - time.monotonic()))
        initializing = self._died_initializing()
        if initializing is not None:
            return -1, initializing
        death = self._died_holding(broken)
        if death is not None:
            return death
        starting = self._died_starting()
        if starting is not None:
            return -1, starting
        return self._overrun()

    def _receives(self) -> bool:
        """Whether the engine is still reading results (Pool's result thread is alive)."""
        return True

    def _unreceived(self) -> Failure | None:
        """The engine stopped receiving results (a ``MemoryError`` reading a large one): the
        failure for the lowest chunk out, whose results will never arrive (which reply the
        engine was reading is unknown; the rest are lost with it)."""
        error = self._receiver.error if self._receiver is not None else None
        if (error is None and self._receives()) or not self._pending:
            return None
        chunk = min(self._pending.values(), key=lambda c: c.start)
        why = describe(error) if error is not None else "its result-reading thread ended"
        failure = ResultUnpicklingError(
            f"the results of {chunk.describe()} could not be received: the {self.name!r} "
            f"engine stopped reading results ({why})",
            index=chunk.start,
        )
        failure.__cause__ = error
        return chunk.start, failure

    def _died_initializing(self) -> WorkerCrashedError | None:
        """A worker that died in the initializer: the engine would start another, forever.
        (Several may have by now, some reaped by the engine unseen: name one whose exit code
        is known.)"""
        died = [
            (view, *self._exitcode(view.pid))
            for view in self._board
            if view.pid and view.index == INITIALIZING
        ]
        died = [d for d in died if d[1]]
        if not died or self._call is None:
            return None
        view, _, exitcode = max(died, key=lambda d: d[2] is not None)
        return initializer_crash(self._call, view, exitcode)

    def _died_holding(self, broken: bool) -> Failure | None:
        """The failure for a worker that died holding a pending chunk, if one did."""
        pending = {chunk.start: chunk for chunk in self._pending.values()}
        deaths = []
        for view in self._board:
            chunk = pending.get(view.chunk)
            if not view.pid or chunk is None:
                continue
            dead, exitcode = self._exitcode(view.pid)
            if not dead or (view.index == IDLE and not broken and self._may_still_reply(view)):
                continue
            deaths.append((exitcode == -signal.SIGTERM, view, chunk, exitcode))
        if not deaths:
            return None
        # The engine may have killed the others (SIGTERM) on noticing the first death.
        _, view, chunk, exitcode = min(deaths, key=lambda d: (d[0], d[1].chunk))
        return crash_failure(chunk, view, exitcode, view.pid)

    def _may_still_reply(self, view: SlotView) -> bool:
        """A worker that died after finishing its chunk: its reply may still be on its way."""
        first = self._suspects.setdefault(view.pid, time.monotonic())
        return time.monotonic() - first < REPLY_GRACE

    def _overrun(self) -> Failure | None:
        """An item (or timed phase) past ``timeout=``: its worker is killed."""
        assert self._call is not None
        timeout = self._call.timeout
        if timeout is not None:
            for view in overdue(self._board, timeout):
                os.kill(view.pid, signal.SIGKILL)
                return timeout_failure(view, timeout)
        return None

    def _died_starting(self) -> WorkerCrashedError | None:
        """A worker that died before it claimed a slot on the board, if any.

        Not one the engine stopped (SIGTERM) on noticing another's death: ProcessPoolExecutor
        stops them all, some perhaps still starting (a slow fork, a loaded machine).
        """
        if self._counts is None or self._counts.get_obj()[UNSLOTTED] or self._blind:
            # The slots ran out (a worker without one may have been set up), or retirements
            # were missed (see _read_retirees): no telling a worker that died starting.
            return None
        claimed = {view.pid for view in self._board if view.pid}
        dead = []
        for pid in self._procs:
            if pid not in claimed and pid not in self._retired:
                gone, exitcode = self._exitcode(pid)
                if gone and exitcode != -signal.SIGTERM:
                    dead.append((pid, exitcode))
        dead = self._not_retired(dead)
        if not dead:
            return None
        pid, exitcode = min(dead, key=lambda d: d[1] is None)  # one whose exit code is known
        return startup_crash(pid, exitcode, self._ctx.get_start_method())


def tasks_per_worker(call: Call) -> int:
    """How many chunks a worker of ``"pool"`` or ``"futures"`` runs before it is replaced.

    With ``max_tasks_per_worker=N``, about the square root of N, each chunk of at most N over
    that many items (``largest_chunk``): a worker never runs more than N items, and a process
    start (5-20 ms on the 2-core host, the engine's replacement included) is paid every sqrt(N)
    chunks rather than every chunk, while chunks of up to sqrt(N) items still amortize their
    round trips (N = 10**6 over 100,000 trivial items: 3.6 us an item with a worker per chunk,
    0.14-0.17 with this). With ``max_memory_per_worker``, at most ``MEMORY_TASKS``: a worker above
    the limit declines the chunks it is given until its task limit replaces it (see
    ``_worker.run_chunk``), a round trip each.
    """
    tasks = MEMORY_TASKS if call.max_memory is not None else None
    if call.max_tasks is not None:
        tasks = min(tasks or call.max_tasks, max(1, math.isqrt(call.max_tasks)))
    return tasks or 1
