"""``"process"``: parmap's own workers, one ``multiprocessing.Process`` and one pipe each.

::

    caller (this module, in the calling thread)          worker i (_worker.process_main)
    ---------------------------------------------        -------------------------------
    start():  spawn workers; send the function   ──F──►  install it (once per call)
    submit(): pickle the chunk; to an idle worker ──C──►  run it; reply  ──► pipe i
              (or a backlog)
    wait():   connection.wait(pipes + sentinels) ◄──────  ("ok", results) / a failure
              a reply    -> Outcome
              a sentinel -> the worker died: the chunk it ran fails with
                            WorkerCrashedError (item from the board), the
                            chunks queued behind it go back to the backlog,
                            a fresh worker takes its slot
              overrun    -> SIGKILL the worker: TaskTimeoutError, same as above
    stop():   quit idle workers, kill busy ones, join all  ──Q──►  return

Because the caller knows which worker holds which chunk, nothing is lost silently and no wait
is unbounded: every wait watches the workers' sentinels as well as their pipes.

``_pump`` is parmap's one wait over worker pipes and sentinels. Everything that supervises
processes of its own goes through it: ``pmap``'s calls, ``ProcessExecutor`` (``poll``: its
wake-up pipe waited on in the same wait), and the one-off children of ``run_processes`` and
``queue_collect`` (``one_shot``, set up in ``_processes.Children``: a worker per item, asked to
quit as soon as its reply is in, never replaced; their channels, too, in the same wait).

Tuning (see ``PREFETCH_BYTES``): a worker is given a second chunk while it runs one, so it never
waits for the caller between chunks, but only when that chunk is small. Writing a large chunk to
a busy worker would block the caller until the worker reads it, while the worker may be blocked
writing a large result that the caller, stuck in that write, never reads: a deadlock.
"""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import os
import pickle
import resource
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, ClassVar

from .._board import INITIALIZING, STARTING, Board, SlotView
from .._children import join_exit, reap
from .._errors import ResultUnpicklingError, TaskPicklingError, WorkerCrashedError
from .._exit import AT_EXIT
from .._serialize import describe
from .._wire import QUIT, RELEASE, Failure, Work, receive_buffers, split_framed
from .._worker import process_main
from ._base import (
    Backend,
    Call,
    Chunk,
    Outcome,
    crash_failure,
    initializer_crash,
    overdue,
    startup_crash,
    timeout_failure,
)

__all__ = ["ProcessBackend"]

#: A chunk up to this size may be queued behind the one a worker is running (well under the
#: 200+ KiB a Linux socket pair buffers, so the write returns at once).
PREFETCH_BYTES = 32 * 1024
#: Chunks a worker may hold: the one it runs and one queued. Only chunks of several items are
#: queued: the sizer puts several in a chunk only when each is cheap, and then a round trip of
#: waiting (0.2 ms, a few ms while the caller unpickles another worker's results) is a real
#: share of a chunk. A chunk of one item is an item the sizer found worth a round trip of its
#: own (``_chunking.TARGET_SECONDS``); queued, it could only leave another worker idle at the
#: end of the input (items of 2 to 200 ms, 2 workers: 0.18 below ProcessPoolExecutor's
#: efficiency in the same bench run with such items queued, 0.05 below without).
DEPTH = 2
#: How long a quitting worker gets before it is killed.
QUIT_GRACE = 5.0
#: With ``timeout=``, the longest wait between looks at the board.
OVERRUN_POLL = 0.25


@dataclass
class _Job:
    """A chunk ready to send: its message and the out-of-band buffers that follow it."""

    chunk: Chunk
    message: bytes
    buffers: list[pickle.PickleBuffer]

    @property
    def size(self) -> int:
        return len(self.message) + sum(memoryview(b).nbytes for b in self.buffers)


class _Worker:
    def __init__(self, proc: BaseProcess, conn: Connection, slot: int) -> None:
        self.proc, self.conn, self.slot = proc, conn, slot
        #: The chunks sent to this worker and not yet answered.
        self.held: deque[_Job] = deque()
        #: Items sent to it in this call (``max_tasks_per_worker``).
        self.ran = 0
        #: It stopped a chunk early, above ``max_memory_per_worker``: replace it when idle.
        self.spent = False


class ProcessBackend(Backend):
    name = "process"
    recycles = True
    inherits = True

    #: False for a long-lived engine (``ProcessExecutor``): a dead worker is always replaced,
    #: with no per-call cap on respawns (a worker that dies while starting still gives up).
    respawn_cap: bool = True
    #: True for one-off children (``_processes.Children``): a worker runs one chunk, is asked to
    #: quit as soon as its reply is in, and one that dies or is killed is not replaced (nothing
    #: of the call would run on it); a worker is started again only for a chunk left waiting.
    one_shot: ClassVar[bool] = False
    #: The workers' process names, numbered by slot.
    process_name = "parmap-worker"

    def __init__(
        self,
        workers: int,
        start_method: str | None,
        *,
        threads: int | None = None,
        warm: bool = True,
    ) -> None:
        self.workers = workers
        #: BLAS/OpenMP threads per worker (None: no limit); see ``_worker.become_worker``.
        self.threads = threads
        #: Whether to take workers from ``WARM`` and give them back after a call that ends well.
        self.warm = warm
        # Any: typeshed's BaseContext has no Process (its subclasses do).
        self._ctx: Any = multiprocessing.get_context(start_method)
        self._pool: list[_Worker] = []
        #: One-shot workers asked to quit once their reply was in: joined by ``stop``.
        self._retired: list[_Worker] = []
        self._board: Board | None = None
        self._call: Call | None = None
        self._function = b""
        self._backlog: deque[_Job] = deque()
        self._ready: list[Outcome] = []
        self._respawns = 0
        self._inherited: tuple[Any, ...] | None = None
        #: Why workers cannot run this call (they die starting, or one after another): every
        #: chunk fails with it, and no worker is started again until the next call.
        self._broken: WorkerCrashedError | None = None
        #: Held by ``interrupt`` and by ``stop`` as it ends the call: no worker is killed once
        #: it may be warm for another call.
        self._interrupting = threading.Lock()

    # -- the contract ----------------------------------------------------------------------------

    def start(self, call: Call) -> None:
        self._call = call
        self._respawns = 0
        self._broken = None
        self.recycled = 0
        self._function = call.spec.encode()
        #: initargs that travel as each worker starts: workers of this call only, never warm.
        self._inherited = call.inherited
        try:
            if not self._pool:
                kept = WARM.take(self._key()) if self._warm_ok() else None
                if kept is not None:
                    self._board, self._pool = kept
                else:  # workers start as chunks need them (see _dispatch)
                    self._board = Board.shared(self._ctx, self.workers)
            for worker in list(self._pool):
                worker.ran, worker.spent = 0, False
                self._send(worker, self._function)
        except BaseException:
            # Nothing was submitted, and the caller stops only a backend that started.
            self.stop(abort=True)
            raise

    def submit(self, chunk: Chunk) -> None:
        if self._broken is not None:
            self._ready.append(Outcome.failed(chunk, chunk.start, self._broken))
            return
        buffers: list[pickle.PickleBuffer] = []
        try:
            payload = self._payload(chunk, buffers)
        except TaskPicklingError as error:
            index = chunk.start if error.index is None else error.index
            self._ready.append(Outcome.failed(chunk, index, error))
            return
        self._backlog.append(_Job(chunk, Work(chunk.start, payload, buffers).encode(), buffers))
        self._dispatch()

    def wait(self) -> list[Outcome]:
        while not self._ready:
            self._pump(self._poll_interval())
        outcomes, self._ready = self._ready, []
        return outcomes

    def _payload(self, chunk: Chunk, buffers: list[pickle.PickleBuffer]) -> bytes:
        """The chunk's items pickled (large arrays out of band, in ``buffers``)."""
        return chunk.payload(buffers)

    def poll(self, extra: Sequence[Any], timeout: float | None) -> list[Outcome]:
        """Like ``wait``, but also return (perhaps with no outcome) as soon as one of the
        ``extra`` handles is ready or ``timeout`` passes: for an engine's owner that waits
        for new work as well (``ProcessExecutor``'s manager thread)."""
        if not self._ready:
            interval = self._poll_interval()
            if interval is not None and (timeout is None or interval < timeout):
                timeout = interval
            self._pump(timeout, extra)
        outcomes, self._ready = self._ready, []
        return outcomes

    def withdraw(self, chunk: Chunk) -> bool:
        """Take back a submitted chunk that has no outcome yet, and report none for it: it
        leaves the backlog, or the worker running it is killed and replaced (the chunks
        queued behind it go back to the backlog). False where it cannot be taken back: it
        is queued behind another chunk in a worker's pipe (its outcome will come), or it is
        not out at all."""
        for job in self._backlog:
            if job.chunk is chunk:
                self._backlog.remove(job)
                return True
        for worker in self._pool:
            if worker.held and worker.held[0].chunk is chunk:
                worker.proc.kill()
                worker.held.popleft()
                self._replace(worker, blamed=True)  # withdrawn: not a death to count
                self._dispatch()  # the backlog may have waited for this worker
                return True
        return False

    @property
    def gave_up(self) -> WorkerCrashedError | None:
        """Why workers cannot run this call (see ``_give_up``); None while they can."""
        return self._broken

    def _pump(self, timeout: float | None, extra: Sequence[Any] = ()) -> list[Any]:
        """One look at every pipe and sentinel: read replies, notice deaths, dispatch; the
        ``extra`` handles that are ready (the owner reads them).

        This is the one wait over worker pipes and sentinels in parmap: ``pmap``'s workers,
        ``ProcessExecutor``'s, and the one-off children of ``run_processes`` and
        ``queue_collect`` (whose channels come in as ``extra``) are all watched here."""
        # Map handles to workers before acting on any: replacing a dead worker can hand its
        # closed sentinel's fd number to the new worker's sentinel.
        conns = {w.conn: w for w in self._pool if w.held}
        sentinels = {w.proc.sentinel: w for w in self._pool}
        ready = wait([*conns, *sentinels, *extra], timeout)  # None: until something happens
        AT_EXIT.abandon()  # the workers may have been killed at exit: not a crash to report
        for handle in ready:
            if handle in conns:
                self._receive(conns[handle])
        for handle in ready:
            if handle in sentinels:
                self._lost(sentinels[handle])
        self._check_overruns()
        self._dispatch()
        return [handle for handle in ready if handle not in conns and handle not in sentinels]

    def stop(self, *, abort: bool) -> None:
        self._backlog.clear()
        self._ready.clear()
        with self._interrupting:
            self._call = None
        idle = not any(w.held or w.spent for w in self._pool)  # none above its memory limit
        if self._warm_ok() and not abort and self._pool and idle:
            for worker in list(self._pool):
                self._send(worker, RELEASE)  # drop the function and what it holds
            assert self._board is not None
            WARM.give(self._key(), (self._board, self._pool))
            self._pool = []
        else:
            pool, self._pool = self._pool, []
            stop_workers(pool)
        retired, self._retired = self._retired, []
        for worker in retired if abort else ():
            # Replied, and asked to quit: a failed call does not wait for one still flushing
            # (a producer's queue, into a pipe no one reads any more).
            with contextlib.suppress(OSError, ValueError):
                worker.proc.kill()
        stop_workers(retired)  # this joins them
        self._inherited = None

    def interrupt(self) -> None:
        """Kill the workers holding this call's chunks (from any thread): a blocked ``wait()``
        returns with their chunks failed. A call not started, or stopped, is left alone."""
        with self._interrupting:
            if self._call is None:
                return
            for worker in list(self._pool):
                if worker.held:
                    with contextlib.suppress(OSError, ValueError):  # gone, or closed
                        worker.proc.kill()

    def _warm_ok(self) -> bool:
        """Whether this call's workers may come from, and go back to, the warm sets."""
        return self.warm and self._inherited is None

    def _key(self) -> WarmKey:
        return self._ctx.get_start_method(), self.workers, self.threads

    # -- workers ---------------------------------------------------------------------------------

    def _spawn(self, slot: int) -> _Worker:
        assert self._board is not None
        check_descriptors()
        self._board.starting(slot)  # until the worker claims the slot, when it is set up
        AT_EXIT.abandon()
        ours, theirs = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=process_main,
            args=(theirs, os.getpid(), self.threads, self._board, slot, self._inherited),
            name=f"{self.process_name}-{slot}",
        )
        try:
            proc.start()
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        AT_EXIT.started(proc)
        return _Worker(proc, ours, slot)

    def _send(
        self, worker: _Worker, message: bytes, buffers: list[pickle.PickleBuffer] | None = None
    ) -> bool:
        try:
            worker.conn.send_bytes(message)
            for buffer in buffers or ():
                worker.conn.send_bytes(buffer.raw())
        except OSError:  # the worker died; its sentinel says how
            self._lost(worker)
            return False
        return True

    def _dispatch(self) -> None:
        while self._backlog and self._broken is None:
            job = self._backlog[0]
            worker = min(self._pool, key=lambda w: len(w.held), default=None)
            if (worker is None or worker.held) and len(self._pool) < self.workers:
                worker = self._grow()
            assert worker is not None
            if worker.held and (
                len(worker.held) >= DEPTH
                or job.size > PREFETCH_BYTES
                or len(job.chunk.items) == 1
                or not self._fits(worker, job)
            ):
                return
            if not worker.held and not self._fits(worker, job):
                worker = self._recycle(worker)
            self._backlog.popleft()
            worker.held.append(job)
            worker.ran += len(job.chunk.items)
            self._send(worker, job.message, job.buffers)

    def _grow(self) -> _Worker:
        """One more worker, for a chunk no worker is free for: workers start as the work needs
        them, so ``workers=10000`` over a generator of 5 items starts 5, and a map of one chunk
        starts one (a warm set of workers grows the same way). It takes the next slot, or for
        one-shot workers, whose dead leave their slots free, the lowest free one."""
        slot = len(self._pool)
        if self.one_shot:
            used = {worker.slot for worker in self._pool}
            slot = next(s for s in range(self.workers) if s not in used)
        return self._start_in(slot)

    def _start_in(self, slot: int) -> _Worker:
        """A worker started in ``slot`` (a new one, or a dead or retired worker's), in the pool
        and given the call's function."""
        worker = self._spawn(slot)
        # A worker's place in the pool is its slot, but for one-shot workers (see _grow).
        place = slot if slot < len(self._pool) and self._pool[slot].slot == slot else None
        if place is None:
            place = next((n for n, w in enumerate(self._pool) if w.slot == slot), None)
        if place is None:
            self._pool.append(worker)
        else:
            self._pool[place] = worker
        if self._call is not None:
            self._send(worker, self._function)
        return worker

    # -- recycling (max_tasks_per_worker, max_memory_per_worker) ---------------------------------

    def _fits(self, worker: _Worker, job: _Job) -> bool:
        """Whether the worker may take the chunk: within its item budget, and not past its
        memory limit (such a worker holds one chunk at a time: a second, already sent, would
        run past the limit)."""
        call = self._call
        if call is None:
            return True
        if call.max_memory is not None and (worker.spent or worker.held):
            return False
        return call.max_tasks is None or worker.ran + len(job.chunk.items) <= call.max_tasks

    def _recycle(self, worker: _Worker) -> _Worker:
        """Replace an idle worker that has done its share: asked to quit, it ends cleanly."""
        with contextlib.suppress(OSError):
            worker.conn.send_bytes(QUIT)
        if join_exit(worker.proc, QUIT_GRACE) is None:
            worker.proc.kill()
        worker.conn.close()
        _close(worker.proc)
        self.recycled += 1
        return self._start_in(worker.slot)

    def _receive(self, worker: _Worker) -> None:
        if worker not in self._pool or self._broken is not None:
            return  # a chunk of a broken call has been reported failed already
        try:
            outcome = self._read_reply(worker)
        except (EOFError, OSError):
            self._lost(worker)
            return
        except Exception as exc:  # a MemoryError receiving a large result
            self._unreceived(worker, exc)
            return
        self._ready.append(outcome)
        if self.one_shot and not worker.held:
            self._retire(worker)

    def _retire(self, worker: _Worker) -> None:
        """A one-shot worker's reply is in: it is asked to quit now (its memory goes back at
        once, as a child's that returns), and joined by ``stop``."""
        with contextlib.suppress(OSError):  # it died since: its exit code no longer matters
            worker.conn.send_bytes(QUIT)
        self._pool.remove(worker)
        self._retired.append(worker)

    def _unreceived(self, worker: _Worker, exc: Exception) -> None:
        """A reply could not be received (this process ran out of memory reading it): its
        chunk fails naming why, and the worker, its pipe now out of step, is replaced."""
        chunk = worker.held.popleft().chunk
        error = ResultUnpicklingError(
            f"the results of {chunk.describe()} could not be received: {describe(exc)}",
            index=chunk.start,
        )
        error.__cause__ = exc.with_traceback(None)  # its frames hold what was read so far
        self._ready.append(Outcome.failed(chunk, chunk.start, error))
        worker.proc.kill()
        self._replace(worker, blamed=True)

    def _read_reply(self, worker: _Worker) -> Outcome:
        main, sizes = split_framed(memoryview(worker.conn.recv_bytes()))
        buffers = receive_buffers(worker.conn, sizes)
        outcome = Outcome.from_reply(worker.held.popleft().chunk, main, buffers)
        self._respawns = 0  # workers do run this call
        worker.spent = outcome.spent  # above its memory limit: replaced before its next chunk
        return outcome

    def _lost(self, worker: _Worker) -> None:
        """A worker died: report the chunk it ran, requeue the ones it had not started."""
        AT_EXIT.abandon()
        if worker not in self._pool or self._broken is not None:
            return
        while worker.held and self._drain(worker):
            pass
        exitcode, pid = join_exit(worker.proc), worker.proc.pid
        assert self._board is not None
        view = self._board.view(worker.slot)
        fatal = self._fatal_death(view, exitcode, pid)
        if fatal is not None:
            self._give_up(fatal)
            return
        blamed = False
        if worker.held:
            chunk = worker.held.popleft().chunk
            failure = self._crash_failure(chunk, view, exitcode, pid)
            blamed = view.index in chunk  # the item it ran is to blame, not the workers
            self._ready.append(Outcome(chunk, [], failure))
        self._replace(worker, blamed=blamed)

    def _fatal_death(
        self, view: SlotView, exitcode: int | None, pid: int | None
    ) -> WorkerCrashedError | None:
        """A death that says no worker can run this call (it died while starting, or in the
        initializer: a fresh one would die the same way), to fail every chunk with; None for
        a death to report for the chunk the worker held."""
        if self._call is None:
            return None
        if view.index == STARTING:
            return startup_crash(pid, exitcode, self._ctx.get_start_method())
        if view.index == INITIALIZING:
            return initializer_crash(self._call, view, exitcode)
        return None

    def _crash_failure(
        self, chunk: Chunk, view: SlotView, exitcode: int | None, pid: int | None
    ) -> Failure:
        """The failure for the chunk a worker held as it died (see ``_base.crash_failure``)."""
        return crash_failure(chunk, view, exitcode, pid)

    def _drain(self, worker: _Worker) -> bool:
        """Read a reply a dead worker sent before it died; False when there is none."""
        try:
            if not worker.conn.poll():
                return False
            self._ready.append(self._read_reply(worker))
        except (EOFError, OSError):
            return False
        return True

    def _replace(self, worker: _Worker, *, blamed: bool) -> None:
        """Put a fresh worker in a dead (or killed) worker's slot; requeue its unstarted chunks.

        ``blamed``: an item it ran is to blame (it crashed or overran the worker). Workers
        dying with no item to blame, one after another with no reply between, cannot run
        this call: after ``2 * workers + 2`` such deaths, the call gives up."""
        self._backlog.extendleft(reversed(worker.held))
        worker.held.clear()
        worker.conn.close()
        exitcode = _close(worker.proc)
        if self.one_shot:  # its slot stays free until a chunk waits for a worker (_dispatch)
            self._pool.remove(worker)
            return
        self._respawns += 0 if blamed else 1
        if self.respawn_cap and self._respawns > 2 * self.workers + 2:
            self._give_up(WorkerCrashedError("worker after worker", exitcode=exitcode))
            return
        self._start_in(worker.slot)

    def _give_up(self, error: WorkerCrashedError) -> None:
        """Workers cannot run this call: report every chunk out as failed with ``error`` (the
        lowest-index rule above the line picks the one the loop reached first). Busy workers
        are stopped with the call; none is started again."""
        self._broken = error
        jobs = [job for worker in self._pool for job in worker.held] + list(self._backlog)
        self._backlog.clear()
        for job in jobs:
            self._ready.append(Outcome.failed(job.chunk, job.chunk.start, error))

    # -- timeouts --------------------------------------------------------------------------------

    def _poll_interval(self) -> float | None:
        if self._call is None or self._call.timeout is None:
            return None
        return min(self._call.timeout, OVERRUN_POLL)

    def _check_overruns(self) -> None:
        if self._call is None or self._call.timeout is None or self._board is None:
            return
        if self._broken is not None:
            return
        timeout = self._call.timeout
        for view in overdue(self._board, timeout):
            worker = next((w for w in self._pool if w.slot == view.slot), None)
            if worker is None or not worker.held:
                continue
            chunk = worker.held[0].chunk
            index, error = timeout_failure(view, timeout)
            if index >= 0 and index not in chunk:
                continue  # a stale stamp: the worker has moved on
            worker.proc.kill()
            worker.held.popleft()
            self._ready.append(Outcome(chunk, [], (max(index, chunk.start), error)))
            self._replace(worker, blamed=index >= 0)


#: Descriptors starting a worker takes at once: its socket pair, and multiprocessing's two pipes
#: to the child (and, under spawn, those to its helpers), with some room.
SPAWN_DESCRIPTORS = 8


def check_descriptors() -> None:
    """Raise ``OSError(EMFILE)`` if starting a worker could run out of file descriptors.

    multiprocessing opens two pipes to start a process and leaks the first when the second
    fails (``popen_fork._launch``): under ``ulimit -n 24`` every map that failed to start its
    workers left 2 descriptors open. So the limit is checked first (a listing of
    ``/proc/self/fd``, tens of microseconds, against the milliseconds a start takes)."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        used = len(os.listdir("/proc/self/fd"))
    except (OSError, ValueError):  # pragma: no cover - not Linux
        return
    if soft != resource.RLIM_INFINITY and used + SPAWN_DESCRIPTORS > soft:
        raise OSError(
            errno.EMFILE,
            f"Too many open files to start a worker process: {used} of the {soft} this "
            f"process may open are open, and starting one takes up to {SPAWN_DESCRIPTORS} "
            f"(raise the limit, `ulimit -n`, or use fewer workers=)",
        )


def stop_workers(pool: list[_Worker]) -> None:
    """Stop workers: idle ones are asked to quit, busy ones are killed; join all."""
    for worker in pool:
        if worker.held:
            worker.proc.kill()
        else:
            with contextlib.suppress(OSError):
                worker.conn.send_bytes(QUIT)
    deadline = time.monotonic() + QUIT_GRACE
    for worker in pool:
        if join_exit(worker.proc, max(0.0, deadline - time.monotonic())) is None:
            worker.proc.kill()
        _close(worker.proc)
        worker.conn.close()


def _close(proc: BaseProcess) -> int | None:
    """Wait for a worker to end, release its process object, forget it at exit; its code."""
    code = reap(proc)
    AT_EXIT.ended(proc)
    return code


#: Workers are kept per start method, worker count and BLAS thread limit.
WarmKey = tuple[str, int, "int | None"]
#: A set of idle workers and the board they write to.
_Kept = tuple[Board, list[_Worker]]


class WarmPools:
    """Idle workers kept between calls, one set per (start method, worker count).

    A call takes the set (so two threads never share one), and gives it back when it ends well;
    a call that fails or is interrupted shuts its workers down instead. At exit every set is
    shut down (see ``_exit``). In a child made by ``os.fork`` the parent's sets are forgotten,
    never used.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[WarmKey, _Kept] = {}

    def take(self, key: WarmKey) -> _Kept | None:
        with self._lock:
            return self._idle.pop(key, None)

    def give(self, key: WarmKey, kept: _Kept) -> None:
        with self._lock:
            # Read under the lock: a set given after the exit hook ran would never be stopped.
            if not AT_EXIT.ran and key not in self._idle:
                self._idle[key] = kept
                return
        stop_workers(kept[1])  # another call's set is already kept, or the interpreter exits

    def has(self, key: WarmKey) -> bool:
        return key in self._idle

    def shutdown(self) -> None:
        with self._lock:
            idle, self._idle = list(self._idle.values()), {}
        for _, pool in idle:
            stop_workers(pool)

    def forget(self) -> None:
        """In a forked child: drop the parent's sets, closing our copies of their pipes."""
        self._lock = threading.Lock()
        idle, self._idle = list(self._idle.values()), {}
        for _, pool in idle:
            for worker in pool:
                worker.conn.close()


WARM = WarmPools()
AT_EXIT.first(WARM.shutdown)  # asked to quit, and waited for, before the rest are killed
os.register_at_fork(after_in_child=WARM.forget)
