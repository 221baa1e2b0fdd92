"""What runs inside a worker process: its set-up, its loop, and the reply it sends back.

::

    caller                                   worker process
    ------                                   --------------
    Spec: the function, cloudpickled     ──► install(): unpickled once per call, kept in _STATE
      once per call (see _wire)
    Work: a chunk of pickled items       ──► run_chunk(): unpickle the items, run them
                                               (_execute.execute: the item loop), then
    Outcome.from_reply (backends)        ◄── a reply (_wire): Done, Raised, Exited or Broken

The messages, both ways, are ``_wire``'s; chunks run in this process (threads, the caller) are
``_local``'s. The function runs until the chunk ends or the first exception, as a ``for`` loop
would.

Every worker process also runs ``watch_caller``: if the caller dies (even by SIGKILL), the
worker notices within a quarter of a second and exits instead of lingering as an orphan; on
Linux the kernel kills it as well (``die_with_parent``), even while a task holds the GIL.
"""

from __future__ import annotations

import importlib
import os
import pickle
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from multiprocessing.connection import Connection
from multiprocessing.util import Finalize
from typing import Any

from ._board import CHUNK, IDLE, INDEX, INITIALIZING, RECEIVING, RETURNING, STARTED, Board, Cells
from ._errors import ParmapError, ResultPicklingError
from ._execute import execute
from ._forked import forget_fork_server
from ._local import NO_STATE, local_state
from ._serialize import describe, dumps, dumps_items, loads, name_of
from ._wire import (
    INHERITED,
    QUIT,
    RELEASE,
    Broken,
    Done,
    Exited,
    Raised,
    Spec,
    Work,
    read_order,
    send_framed,
)

__all__ = [
    "become_worker",
    "install",
    "pool_initializer",
    "process_main",
    "run_chunk",
    "run_chunk_with",
    "run_items",
    "worker_state",
]

ORPHAN_POLL_SECONDS = 0.25


class _State:
    """The worker's state for the call: the function installed from the call's ``Spec``."""

    spec: Spec | None = None
    fn: Callable[..., Any] | None = None
    #: Why the function cannot run (it did not unpickle, the initializer failed).
    install_error: Broken | None = None
    worker_state: Any = NO_STATE
    board: Cells | None = None
    base = 0
    key: object = None
    #: ``initargs`` passed as this process started (see ``_wire.INHERITED``).
    inherited: tuple[Any, ...] = ()
    #: A ``"pool"``/``"futures"`` worker that retires after a number of chunks: once above
    #: ``max_memory_per_worker`` (``spent``), it declines the chunks it is given until then.
    declines = False
    spent = False


_STATE = _State()


def _traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def install(spec: Spec) -> None:
    """Unpickle the call's function once and run its initializer; a failure is reported with
    every chunk (see ``_serialize.dumps_task`` for what ``spec.fn_bytes`` holds)."""
    _STATE.spec = spec
    _STATE.fn, _STATE.install_error, _STATE.worker_state = None, None, NO_STATE
    try:
        fn, initializer, initargs = loads(spec.fn_bytes)
        if initargs == INHERITED:
            initargs = _STATE.inherited
    except BaseException as exc:
        _STATE.install_error = Broken(-1, "function-unpickle", describe(exc), _traceback(exc))
        return
    if initializer is not None:
        board, base = _STATE.board, _STATE.base
        if board is not None:
            board[base + STARTED] = time.monotonic_ns()  # timeout= bounds the initializer too
            board[base + INDEX] = INITIALIZING
        try:
            _STATE.worker_state = initializer(*initargs)
        except BaseException as exc:
            what = f"the initializer {name_of(initializer)} raised {describe(exc)}"
            _STATE.install_error = Broken(-1, "initializer", what, _traceback(exc))
            return
        finally:
            if board is not None:
                board[base + INDEX] = IDLE
    _STATE.fn = fn


def worker_state() -> Any:
    """What this worker's ``initializer=`` returned (a loaded model, a connection, ...).

    Call it from the function you map. Each worker (process or thread) ran the initializer once
    for the call; without ``initializer=`` this raises [`ParmapError`][parmap.ParmapError].
    """
    state = local_state()
    if state is NO_STATE:
        state = _STATE.worker_state
    if state is NO_STATE:
        raise ParmapError("worker_state(): no initializer= ran for this call in this worker")
    return state


def run_chunk(
    start: int,
    payload: bytes | memoryview,
    buffers: list[bytearray] | None = None,
    out: list[pickle.PickleBuffer] | None = None,
) -> bytes:
    """Run one chunk with the installed function; return the encoded reply. Never raises.

    ``buffers``: the chunk's out-of-band buffers; ``out``: where to set aside the results'
    (see ``_serialize.dumps``), for a caller that sends them on their own.
    """
    board, base, spec = _STATE.board, _STATE.base, _STATE.spec
    assert spec is not None
    if _STATE.install_error is not None:
        failed = _STATE.install_error
        return Broken(start, failed.phase, failed.what, failed.traceback).encode()
    if board is not None:
        board[base + CHUNK] = start  # first: a death while declining is this chunk's
    if _STATE.spent and _STATE.declines:
        # Above the memory limit, and the engine cannot retire this worker before its task
        # limit: not one item run, the chunk goes back whole (``_recovery``: a worker that
        # stopped early), and each decline brings that limit nearer.
        return Done([], 0.0, spent=True).encode()
    if board is not None:
        if spec.timeout is not None:  # the stamp first: never RECEIVING with an old one
            board[base + STARTED] = time.monotonic_ns()
        board[base + INDEX] = RECEIVING
    try:
        items = loads(payload, buffers)
    except BaseException as exc:
        return Broken(start, "task-unpickle", describe(exc), _traceback(exc)).encode()
    return run_items(start, items, out)


def run_items(
    start: int, items: Sequence[Any], out: list[pickle.PickleBuffer] | None = None
) -> bytes:
    """Run the installed function over items already here; return the encoded reply."""
    board, base, spec = _STATE.board, _STATE.base, _STATE.spec
    assert _STATE.fn is not None
    assert spec is not None
    began = time.perf_counter()
    spent = False
    if spec.memory is None:
        results, exc = execute(_STATE.fn, spec.star, start, items, board, base, spec.timeout)
    else:
        results, exc, spent = _execute_within(spec.memory, start, items)
        _STATE.spent = spent
    if board is None or spec.timeout is None:
        return _reply(start, results, exc, time.perf_counter() - began, out, spent)
    board[base + STARTED] = time.monotonic_ns()  # pickling results is bounded as an item is
    board[base + INDEX] = RETURNING
    try:
        return _reply(start, results, exc, time.perf_counter() - began, out, spent)
    finally:
        board[base + INDEX] = IDLE


def _execute_within(
    memory: int, start: int, items: Sequence[Any]
) -> tuple[list[Any], BaseException | None, bool]:
    """``execute``, an item at a time, stopping once an item leaves the worker above
    ``memory`` resident bytes: the results so far, the exception, and whether it is above
    (then the caller replaces this worker, and sends the rest of the chunk elsewhere). One
    ``pread`` of ``/proc/self/statm`` per item, only in maps that ask."""
    fn, spec = _STATE.fn, _STATE.spec
    assert fn is not None
    assert spec is not None
    board, base, results = _STATE.board, _STATE.base, []
    for offset in range(len(items)):
        one = items[offset : offset + 1]
        done, exc = execute(fn, spec.star, start + offset, one, board, base, spec.timeout)
        results += done
        if exc is not None:
            return results, exc, resident_bytes() > memory
        if resident_bytes() > memory:
            return results, None, True
    return results, None, False


_STATM: tuple[int, int] | None = None  # (pid, fd): /proc/self names the process that opens it


def resident_bytes() -> int:
    """This process's resident memory (Linux: ``/proc/self/statm``; elsewhere its peak)."""
    global _STATM
    if _STATM is None or _STATM[0] != os.getpid():
        try:
            _STATM = (os.getpid(), os.open("/proc/self/statm", os.O_RDONLY))
        except OSError:  # pragma: no cover - not Linux
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    pages = int(os.pread(_STATM[1], 64, 0).split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _reply(
    start: int,
    results: list[Any],
    exc: BaseException | None,
    seconds: float,
    out: list[pickle.PickleBuffer] | None,
    spent: bool = False,
) -> bytes:
    """The encoded reply for a chunk's results and the exception that stopped them, if any;
    ``spent``: the worker is above its memory limit (said in a ``Done`` only)."""
    if exc is None:
        try:
            return Done(results, seconds, spent).encode(out)
        except (Exception, SystemExit):
            if out is not None:
                out.clear()
            return _unpicklable_result(results, start)
    index = start + len(results)
    tb = _traceback(exc)
    reply: Raised | Exited
    if isinstance(exc, SystemExit):
        code = exc.code if isinstance(exc.code, (int, str, type(None))) else repr(exc.code)
        reply = Exited(index, code, results, tb, spent)
    else:
        try:
            reply = Raised(index, dumps(exc), results, tb, spent)
        except (Exception, SystemExit) as problem:
            what = f"the exception {describe(exc)} raised by item {index} could not be pickled: "
            failed = Broken(index, "result-pickle", what + describe(problem), tb, results)
            return _encode_broken(failed, start)
    try:
        return reply.encode()
    except (Exception, SystemExit):
        return _unpicklable_result(results, start)


def _unpicklable_result(results: list[Any], start: int) -> bytes:
    """The reply for results that would not pickle: an error naming the first such item, with
    the results before it (they pickle: those after it run again, where the map goes on)."""
    try:
        dumps_items(results, start, "the result of item", ResultPicklingError)
    except ResultPicklingError as error:
        cause = error.__cause__ or error
        index = start if error.index is None else error.index
        failed = Broken(index, "result-pickle", str(error), _traceback(cause))
        return _encode_broken(replace(failed, partial=results[: index - start]), start)
    raise AssertionError("unreachable: the results pickled on their own")  # pragma: no cover


def _encode_broken(reply: Broken, start: int) -> bytes:
    """A ``Broken`` reply with the results before its item, or without them if even they will
    not pickle as a whole (then they run again, where the map goes on)."""
    try:
        return reply.encode()
    except (Exception, SystemExit):
        return replace(reply, partial=[]).encode()


def run_chunk_with(key: object, fn_bytes: bytes, star: bool, start: int, payload: bytes) -> bytes:
    """``run_chunk`` for executors parmap did not start: installs the function on first use."""
    if _STATE.key != key:
        install(Spec(fn_bytes, star))
        _STATE.key = key
    return run_chunk(start, payload)


# -- worker process set-up -----------------------------------------------------------------------


def watch_caller(caller: int) -> None:
    """Exit this process soon after the caller dies (even by SIGKILL).

    The caller is not always the parent: under ``forkserver`` the parent is the fork server,
    which outlives the caller for as long as its children hold its pipe. A pidfd (Linux 5.3+)
    wakes the watching thread the moment the caller ends; elsewhere it polls.
    """

    def watch() -> None:
        try:
            fd = os.pidfd_open(caller)
        except ProcessLookupError:
            os._exit(1)
        except (AttributeError, OSError):
            fd = None
        if fd is not None:
            select.select([fd], [], [])
        else:  # pragma: no cover - kernels without pidfd
            while _exists(caller):
                time.sleep(ORPHAN_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="parmap-orphan-watch", daemon=True).start()


#: prctl(2): the signal this process gets when its parent ends.
PR_SET_PDEATHSIG = 1


def die_with_parent() -> bool:
    """Have the kernel SIGKILL this process when its parent ends (Linux); True if it will.

    The watcher thread of ``watch_caller`` needs the GIL to act, and a task running a long C
    call that holds it (``sum(range(10**10))``) kept orphaned workers running for a minute
    after their caller was killed. A signal from the kernel needs nothing from the process.

    The parent is the caller (``fork``, ``spawn``) or the fork server (``forkserver``), which
    exits when its caller does (see ``_forked.forget_fork_server``). The kernel sends the
    signal when the parent's *thread* that started this process ends, not the parent process:
    a caller mapping from a thread that then ends would lose its warm workers with it
    (measured: killed at once, exit code -9), and an ``imap`` started in one thread may be read
    in another after the first has ended. So it is asked for only where the parent's main
    thread started this process, which ends with its process (``/proc`` says which thread it
    was); workers started from other threads rely on the watcher alone.
    """
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        with open(f"/proc/{parent}/task/{parent}/children") as f:
            if str(os.getpid()) not in f.read().split():
                return False
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):  # no such file (no CONFIG_PROC_CHILDREN), no prctl
        return False
    if os.getppid() != parent:  # the parent ended before the kernel was asked
        os._exit(1)
    return True


def _exists(pid: int) -> bool:  # pragma: no cover - kernels without pidfd
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: What BLAS and OpenMP libraries read for their thread counts, when they start.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def reset_signals() -> None:
    """Give a worker process the signal dispositions of a worker, not of its caller.

    Ctrl-C is the caller's to handle (a terminal sends SIGINT to the whole process group), so
    SIGINT is ignored. SIGTERM ends the worker: it is how ``Pool.terminate()`` and
    multiprocessing's exit handler stop workers, and a handler a forked worker inherited (a
    service's ``sys.exit`` on SIGTERM) would instead raise in the item, which parmap reports
    as the item's ``SystemExit`` while the worker lives on and ``terminate()`` waits for it
    forever; an ignored SIGTERM (kept even across ``exec``, so under spawn too) would do the
    same. Any other handler the caller installed in Python is its own (it would run the
    caller's code in the worker) and is reset too; a signal it chose to ignore stays ignored
    (one that ignores SIGCHLD starts no workers at all: see ``_api.check_may_start_processes``).
    A forked worker also inherits the caller's wakeup fd (asyncio's self-pipe): a signal here
    would write to the caller's event loop.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for number in signal.valid_signals():
        if number in (signal.SIGINT, signal.SIGTERM):
            continue
        try:
            handler = signal.getsignal(number)
            if callable(handler):
                signal.signal(number, signal.SIG_DFL)
        except (OSError, ValueError):  # pragma: no cover - SIGKILL, SIGSTOP, real-time
            continue
    signal.set_wakeup_fd(-1)


def become_worker(caller: int, threads: int | None = None) -> None:
    """Set up a worker process: a worker's signals (see ``reset_signals``: SIGINT ignored,
    SIGTERM ends it, none of the caller's handlers); exit when the caller dies
    (``watch_caller``; on Linux also ``die_with_parent``, which works while a task holds the
    GIL); at most ``threads`` BLAS/OpenMP threads, so that workers x threads does not
    oversubscribe the cores (a variable you set yourself is kept; libraries a forked worker
    inherited already started are limited through threadpoolctl, when it is installed); and a
    random state of its own for numpy, which, unlike ``random``, a forked child would
    otherwise share with its siblings."""
    reset_signals()
    forget_fork_server()  # else this worker keeps its parent, the fork server, running
    die_with_parent()
    watch_caller(caller)
    if threads is not None:
        for variable in THREAD_VARIABLES:
            os.environ.setdefault(variable, str(threads))
        try:
            threadpoolctl = importlib.import_module("threadpoolctl")
        except ImportError:
            pass
        else:
            threadpoolctl.threadpool_limits(threads)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def attach_board(board: Board | None, slot: int | None) -> None:
    if board is None or slot is None or slot >= board.slots:
        _STATE.board = None
        return
    board.claim(slot, os.getpid())
    _STATE.board, _STATE.base = board.writer(), Board.base(slot)


def pool_initializer(
    caller: int,
    threads: int | None,
    board: Board,
    counts: Any,
    fn_bytes: bytes,
    star: bool,
    timeout: float | None,
    inherited: tuple[Any, ...] | None = None,
    memory: int | None = None,
    retiring: bool = False,
) -> None:
    """Initializer for ``multiprocessing.Pool`` and ``ProcessPoolExecutor`` workers
    (``inherited``: the call's ``initargs`` where they travel as the worker starts;
    ``memory``: ``max_memory_per_worker``; ``retiring``: the engine replaces each worker after
    a number of chunks, and the worker frees its slot on the board as it exits, for its
    successor; above ``memory``, it declines chunks until then)."""
    _STATE.inherited = inherited or ()
    become_worker(caller, threads)
    slot = claim_slot(board, counts)
    attach_board(board, slot)
    _STATE.declines, _STATE.spent = retiring, False  # not the forked caller's
    if retiring and slot is not None:
        # Run by multiprocessing as the process ends after its last task (not at a death):
        # its reply is sent by then, so the slot has nothing left to say about it.
        Finalize(None, free_slot, (board, slot, counts), exitpriority=0)
    install(Spec(fn_bytes, star, timeout, memory))


#: The cells of ``pool_initializer``'s ``counts``: workers that found no free slot on the board,
#: workers that exited after running a chunk, and workers that retired in all, whose pids follow
#: from ``RETIREES`` on, in a ring (the caller reads them: see ``_watched.WatchedPool._track``).
UNSLOTTED, RETIRED, EXITS, RETIREES = 0, 1, 2, 3


def claim_slot(board: Board, counts: Any) -> int | None:
    """A free slot on the board (no pid), claimed for this process; None if there is none."""
    with counts.get_lock():
        for view in board:
            if not view.pid:
                board.claim(view.slot, os.getpid())
                return view.slot
        counts[UNSLOTTED] += 1
    return None


def free_slot(board: Board, slot: int, counts: Any) -> None:
    """As this worker retires: give its slot back, and say that it retired (a retired worker's
    exit code says nothing: ProcessPoolExecutor's, forked from its manager thread, exit with 1)."""
    with counts.get_lock():
        if board.view(slot).chunk != IDLE:
            counts[RETIRED] += 1
        ring = len(counts) - RETIREES
        counts[RETIREES + counts[EXITS] % ring] = os.getpid()
        counts[EXITS] += 1
        board.free(slot)


def process_main(
    conn: Connection,
    caller: int,
    threads: int | None,
    board: Board,
    slot: int,
    inherited: tuple[Any, ...] | None = None,
) -> None:
    """The loop of a ``"process"`` backend worker: one pipe in, one pipe out, until told to quit
    (``inherited``: the call's ``initargs`` where they travel as the worker starts)."""
    _STATE.inherited = inherited or ()
    become_worker(caller, threads)
    attach_board(board, slot)
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        order = read_order(message, conn)
        if isinstance(order, Work):
            out: list[pickle.PickleBuffer] = []
            reply = run_chunk(order.start, order.payload, list(order.buffers), out)
            send_framed(conn, reply, out)
        elif isinstance(order, Spec):
            install(order)
        elif order == RELEASE:
            _STATE.fn = None
        else:
            assert order == QUIT
            return
