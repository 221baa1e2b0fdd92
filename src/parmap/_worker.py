"""What runs inside a worker, and the reply it sends back.

::

    caller                                   worker process (or thread)
    ------                                   --------------------------
    function, cloudpickled once per call ──► install(): unpickled once, kept in _STATE
    (start, pickled chunk of items)      ──► run_chunk(): unpickle items, then
                                               for each item: fn(item); board index = next item
    decode(): results, or the first      ◄── reply, pickled: ("ok", results, seconds)
    failure as an exception                  | ("raised", index, pickled exception, traceback)
                                             | ("exit", index, code, traceback)
                                             | ("error", index, phase, description, traceback)

The per-item loop does nothing but call the function, append the result and store one number on
the progress board (two when ``timeout=`` is set): no lock, no message, no clock unless needed.
The function runs until the chunk ends or the first exception, as a ``for`` loop would.

Every worker process also runs ``watch_caller``: if the caller dies (even by SIGKILL), the
worker notices within a quarter of a second and exits instead of lingering as an orphan; on
Linux the kernel kills it as well (``die_with_parent``), even while a task holds the GIL.
"""

from __future__ import annotations

import importlib
import itertools
import operator
import os
import pickle
import select
import signal
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import starmap
from multiprocessing.connection import Connection
from typing import Any

from ._board import CHUNK, IDLE, INDEX, INITIALIZING, RECEIVING, RETURNING, STARTED, Board, Cells
from ._errors import (
    InitializerError,
    ParmapError,
    RemoteTraceback,
    ResultPicklingError,
    ResultUnpicklingError,
    SerializationError,
    TaskExitError,
    TaskTimeoutError,
    TaskUnpicklingError,
    note_item,
)
from ._forked import forget_fork_server
from ._serialize import describe, dumps, dumps_items, loads

__all__ = [
    "Failure",
    "decode",
    "execute",
    "failure_from_local",
    "process_main",
    "run_chunk",
    "run_chunk_with",
    "run_items",
    "run_rest",
    "worker_state",
]

#: A failure at an item: its index and the exception to raise for it.
Failure = tuple[int, BaseException]

ORPHAN_POLL_SECONDS = 0.25

# Messages from the caller to a process-backend worker: a one-byte tag, then the body.
TAG_FUNCTION = b"F"  # star (a byte), timeout (a double, 0: none), memory limit (0: none), fn
TAG_CHUNK = b"C"  # 8-byte start index, then the pickled list of items
TAG_QUIT = b"Q"
TAG_RELEASE = b"R"  # the call is over: drop the function (a warm worker waits for the next)
_START = struct.Struct("<q")
_FUNCTION = struct.Struct("<?dq")


def execute(
    fn: Callable[..., Any],
    star: bool,
    start: int,
    items: Iterable[Any],
    board: Cells | None,
    base: int,
    timeout: float | None,
) -> tuple[list[Any], BaseException | None]:
    """Run ``fn`` over ``items``; return the results and the exception that stopped them, if any.

    The failing item's index is ``start + len(results)``. With ``timeout`` each item's start
    is on the board, where the caller finds an item that never returns; an item that returns
    late is caught here, exactly, by the clock read that stamps the next item's start (the
    caller looks only every so often, and would miss an item that ended before it looked).
    """
    results: list[Any] = []
    calls = starmap(fn, items) if star else map(fn, items)
    try:
        if board is None:
            results.extend(calls)
            return results, None
        append = results.append
        at, when = base + INDEX, base + STARTED
        board[at] = start
        if timeout is not None:
            clock, limit = time.monotonic_ns, int(timeout * 1e9)
            board[when] = began = clock()
            for index, result in enumerate(calls, start + 1):
                now = clock()
                if now - began > limit:
                    late = index - 1
                    return results, TaskTimeoutError(f"item {late}", timeout=timeout, index=late)
                append(result)
                board[at] = index
                board[when] = began = now
        else:
            for index, result in enumerate(calls, start + 1):
                append(result)
                board[at] = index
        return results, None
    except BaseException as exc:  # the function's own exception, whatever it is
        if star:
            return results, not_arguments(exc, start + len(results)) or exc
        return results, exc
    finally:
        if board is not None:
            board[base + INDEX] = IDLE


def run_rest(fn: Callable[..., Any], star: bool, start: int, items: Iterator[Any]) -> list[Any]:
    """Map the rest of the input here, in one comprehension (CPython's fastest loop, about 10%
    ahead of ``list.extend(map(...))``). Exceptions propagate as from a loop, noted with their
    item (see ``note_item``); ``sys.exit()`` becomes ``TaskExitError``.

    The failing item is found from the iterator's length hint; an input without one (a
    generator, several iterables zipped) is counted as it is read instead, which costs a few
    percent on trivial functions only where the hint is missing.
    """
    before = operator.length_hint(items, -1)
    counted = None
    if before < 0:
        counted = itertools.count()
        items = map(operator.itemgetter(1), zip(counted, items, strict=False))
    try:
        if star:
            return [fn(*args) for args in items]
        return [fn(item) for item in items]
    except (Exception, SystemExit) as exc:
        if counted is not None:
            index = start + next(counted) - 1
        else:
            index = start + before - operator.length_hint(items, 0) - 1
        if isinstance(exc, SystemExit):
            raise failure_from_local(index, exc)[1] from exc
        unpacking = not_arguments(exc, index) if star else None
        if unpacking is not None:
            raise unpacking from exc
        note_item(exc, index)
        raise


def not_arguments(exc: BaseException, index: int) -> TypeError | None:
    """With ``star``: the error naming item ``index`` if ``exc`` says it was not a tuple of
    arguments (raised by the unpacking here, not inside the function), else None."""
    if not isinstance(exc, TypeError) or "iterable" not in str(exc):
        return None
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None or tb.tb_frame.f_code.co_filename != __file__:
        return None  # raised inside the function
    return TypeError(f"item {index} is not a tuple of arguments ({exc})")


def failure_from_local(index: int | None, exc: BaseException) -> Failure:
    """The exception to raise for ``exc`` raised in this process (threads, serial)."""
    where = -1 if index is None else index
    if isinstance(exc, SystemExit):
        what = "an item" if index is None else f"item {index}"
        error = TaskExitError(what, code=exc.code, index=index)
        error.__cause__ = exc
        return where, error
    return where, exc


# -- in a worker process -------------------------------------------------------------------------


#: What ``worker_state`` returns where no initializer ran.
_NO_STATE: Any = object()
#: The state of a thread that runs chunks in a process parmap did not start (threads, caller).
_LOCAL = threading.local()


class _State:
    fn: Callable[..., Any] | None = None
    install_error: tuple[str, str, str] | None = None  # phase, description, traceback
    worker_state: Any = _NO_STATE
    star = False
    timeout: float | None = None
    #: Resident bytes after which a chunk stops early and the worker is replaced.
    memory: int | None = None
    board: Cells | None = None
    base = 0
    key: object = None


_STATE = _State()


def _traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def install(
    task_bytes: bytes, star: bool, timeout: float | None, memory: int | None = None
) -> None:
    """Unpickle the call's function once and run its initializer; a failure is reported with
    every chunk (see ``_serialize.dumps_task`` for what ``task_bytes`` holds)."""
    _STATE.star, _STATE.timeout, _STATE.memory = star, timeout, memory
    _STATE.fn, _STATE.install_error, _STATE.worker_state = None, None, _NO_STATE
    try:
        fn, initializer, initargs = loads(task_bytes)
    except BaseException as exc:
        _STATE.install_error = ("function-unpickle", describe(exc), _traceback(exc))
        return
    if initializer is not None:
        board, base = _STATE.board, _STATE.base
        if board is not None:
            board[base + STARTED] = time.monotonic_ns()  # timeout= bounds the initializer too
            board[base + INDEX] = INITIALIZING
        try:
            _STATE.worker_state = initializer(*initargs)
        except BaseException as exc:
            what = f"the initializer {_name(initializer)} raised {describe(exc)}"
            _STATE.install_error = ("initializer", what, _traceback(exc))
            return
        finally:
            if board is not None:
                board[base + INDEX] = IDLE
    _STATE.fn = fn


def _name(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def worker_state() -> Any:
    """What this worker's ``initializer=`` returned (a loaded model, a connection, ...).

    Call it from the function you map. Each worker (process or thread) ran the initializer once
    for the call; without ``initializer=`` this raises [`ParmapError`][parmap.ParmapError].
    """
    state = getattr(_LOCAL, "state", _NO_STATE)
    if state is _NO_STATE:
        state = _STATE.worker_state
    if state is _NO_STATE:
        raise ParmapError("worker_state(): no initializer= ran for this call in this worker")
    return state


def enter_local(
    states: dict[int, tuple[bool, Any]],
    initializer: Callable[..., object],
    initargs: tuple[Any, ...],
) -> Any:
    """In a thread that runs chunks here: run the initializer once for the call (``states``
    remembers it per thread), make its value this thread's ``worker_state``, and return
    the value that was there before. Raises ``InitializerError`` if it failed."""
    ident = threading.get_ident()
    if ident not in states:
        try:
            states[ident] = (True, initializer(*initargs))
        except BaseException as exc:
            states[ident] = (False, exc)
    ok, value = states[ident]
    if not ok:
        error = InitializerError(f"the initializer {_name(initializer)} raised {describe(value)}")
        raise error from value
    before = getattr(_LOCAL, "state", _NO_STATE)
    _LOCAL.state = value
    return before


def leave_local(before: Any) -> None:
    _LOCAL.state = before


def run_chunk(
    start: int,
    payload: bytes | memoryview,
    buffers: list[bytearray] | None = None,
    out: list[pickle.PickleBuffer] | None = None,
) -> bytes:
    """Run one chunk with the installed function; return the pickled reply. Never raises.

    ``buffers``: the chunk's out-of-band buffers; ``out``: where to set aside the results'
    (see ``_serialize.dumps``), for a caller that sends them on their own.
    """
    board, base = _STATE.board, _STATE.base
    if _STATE.install_error is not None:
        phase, what, tb = _STATE.install_error
        return dumps(("error", start, (phase, what), [], tb))
    if board is not None:
        board[base + CHUNK] = start
        if _STATE.timeout is not None:  # the stamp first: never RECEIVING with an old one
            board[base + STARTED] = time.monotonic_ns()
        board[base + INDEX] = RECEIVING
    try:
        items = loads(payload, buffers)
    except BaseException as exc:
        return dumps(("error", start, ("task-unpickle", describe(exc)), [], _traceback(exc)))
    return run_items(start, items, out)


def run_items(
    start: int, items: Sequence[Any], out: list[pickle.PickleBuffer] | None = None
) -> bytes:
    """Run the installed function over items already here; return the pickled reply."""
    board, base = _STATE.board, _STATE.base
    assert _STATE.fn is not None
    began = time.perf_counter()
    spent = False
    if _STATE.memory is None:
        results, exc = execute(_STATE.fn, _STATE.star, start, items, board, base, _STATE.timeout)
    else:
        results, exc, spent = _execute_within(_STATE.memory, start, items)
    if board is None or _STATE.timeout is None:
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
    assert _STATE.fn is not None
    board, base, results = _STATE.board, _STATE.base, []
    for offset in range(len(items)):
        done, exc = execute(
            _STATE.fn, _STATE.star, start + offset, items[offset : offset + 1], board, base,
            _STATE.timeout,
        )  # fmt: skip
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
    """The pickled reply for a chunk's results and the exception that stopped them, if any;
    ``spent``: the worker is above its memory limit (said in an "ok" reply only)."""
    if exc is None:
        try:
            return dumps(("ok", results, seconds, True) if spent else ("ok", results, seconds), out)
        except (Exception, SystemExit):
            if out is not None:
                out.clear()
            return _unpicklable_result(results, start)
    index = start + len(results)
    tb = _traceback(exc)
    detail: object
    if isinstance(exc, SystemExit):
        code = exc.code if isinstance(exc.code, (int, str, type(None))) else repr(exc.code)
        kind, detail = "exit", code
    else:
        try:
            kind, detail = "raised", dumps(exc)
        except (Exception, SystemExit) as problem:
            what = f"the exception {describe(exc)} raised by item {index} could not be pickled: "
            return dumps(("error", index, ("result-pickle", what + describe(problem)), [], tb))
    try:
        return dumps((kind, index, detail, results, tb))
    except (Exception, SystemExit):
        return _unpicklable_result(results, start)


def _unpicklable_result(results: list[Any], start: int) -> bytes:
    """The reply for results that would not pickle: an error naming the first such item."""
    try:
        dumps_items(results, start, "the result of item", ResultPicklingError)
    except ResultPicklingError as error:
        cause = error.__cause__ or error
        index = start if error.index is None else error.index
        return dumps(("error", index, ("result-pickle", str(error)), [], _traceback(cause)))
    raise AssertionError("unreachable: the results pickled on their own")  # pragma: no cover


def run_chunk_with(key: object, fn_bytes: bytes, star: bool, start: int, payload: bytes) -> bytes:
    """``run_chunk`` for executors parmap did not start: installs the function on first use."""
    if _STATE.key != key:
        install(fn_bytes, star, timeout=None)
        _STATE.key = key
    return run_chunk(start, payload)


def decode(
    data: bytes | memoryview, start: int, count: int, buffers: list[bytearray] | None = None
) -> tuple[list[Any], float, Failure | None, bool]:
    """Read a reply in the caller: the results (up to the failure, if any), seconds, failure,
    and whether the worker is above its memory limit."""
    items = f"items {start}..{start + count - 1}" if count > 1 else f"item {start}"
    try:
        reply = loads(data, buffers)
    except (Exception, SystemExit) as exc:
        error = ResultUnpicklingError(
            f"the results of {items} could not be unpickled: {describe(exc)}", index=start
        )
        error.__cause__ = exc
        return [], 0.0, (start, error), False
    if reply[0] == "ok":
        return reply[1], reply[2], None, len(reply) > 3
    kind, index, detail, partial, tb = reply
    failure: BaseException
    if kind == "raised":
        try:
            failure = loads(detail)
        except (Exception, SystemExit) as exc:
            failure = ResultUnpicklingError(
                f"the exception raised by item {index} could not be unpickled: {describe(exc)}",
                index=index,
            )
    elif kind == "exit":
        failure = TaskExitError(f"item {index}", code=detail, index=index)
    else:
        failure = _serialization_error(*detail, index=index, items=items)
    failure.__cause__ = RemoteTraceback(tb)
    return partial, 0.0, (index, failure), False


def _serialization_error(
    phase: str, what: str, *, index: int, items: str
) -> SerializationError | InitializerError:
    if phase == "initializer":
        return InitializerError(what, index=index)
    if phase == "function-unpickle":
        return TaskUnpicklingError(
            f"the function could not be unpickled in the worker: {what}", index=index
        )
    if phase == "task-unpickle":
        return TaskUnpicklingError(
            f"{items} could not be unpickled in the worker: {what}", index=index
        )
    return ResultPicklingError(what, index=index)


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
    counter: Any,
    fn_bytes: bytes,
    star: bool,
    timeout: float | None,
) -> None:
    """Initializer for ``multiprocessing.Pool`` and ``ProcessPoolExecutor`` workers."""
    become_worker(caller, threads)
    with counter.get_lock():
        slot = counter.value
        counter.value += 1
    attach_board(board, slot)
    install(fn_bytes, star, timeout)


def process_main(
    conn: Connection, caller: int, threads: int | None, board: Board, slot: int
) -> None:
    """The loop of a ``"process"`` backend worker: one pipe in, one pipe out, until told to quit."""
    become_worker(caller, threads)
    attach_board(board, slot)
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        tag = message[:1]
        if tag == TAG_CHUNK:
            (start,) = _START.unpack_from(message, 1)
            payload, sizes = split_framed(memoryview(message)[1 + _START.size :])
            buffers = receive_buffers(conn, sizes)
            out: list[pickle.PickleBuffer] = []
            send_framed(conn, run_chunk(start, payload, buffers, out), out)
        elif tag == TAG_FUNCTION:
            star, timeout, memory = _FUNCTION.unpack_from(message, 1)
            install(
                message[1 + _FUNCTION.size :],
                bool(star),
                timeout if timeout > 0 else None,
                memory if memory > 0 else None,
            )
        elif tag == TAG_RELEASE:
            _STATE.fn = None
        else:
            return


# Framing for out-of-band buffers on a pipe: a message holds the buffer count, their sizes and
# the pickle; each buffer follows as a message of its own, written straight from the array's
# memory and read straight into the memory the array is then built on (no copies through
# pickle streams). The receiver knows each size before reading, so each buffer is writable.
_COUNT = struct.Struct("<I")


def frame(main: bytes, buffers: Sequence[pickle.PickleBuffer]) -> bytes:
    sizes = [memoryview(b).nbytes for b in buffers]
    return _COUNT.pack(len(sizes)) + struct.pack(f"<{len(sizes)}Q", *sizes) + main


def split_framed(message: memoryview) -> tuple[memoryview, list[int]]:
    """A framed message's pickle, and the sizes of the buffers that follow it."""
    (count,) = _COUNT.unpack_from(message, 0)
    sizes = list(struct.unpack_from(f"<{count}Q", message, _COUNT.size))
    return message[_COUNT.size + 8 * count :], sizes


def send_framed(conn: Connection, main: bytes, buffers: Sequence[pickle.PickleBuffer]) -> None:
    conn.send_bytes(frame(main, buffers))
    for buffer in buffers:
        conn.send_bytes(buffer.raw())


def receive_buffers(conn: Connection, sizes: Sequence[int]) -> list[bytearray]:
    buffers = []
    for size in sizes:
        buffer = bytearray(size)
        conn.recv_bytes_into(buffer)
        buffers.append(buffer)
    return buffers


def function_message(
    fn_bytes: bytes, star: bool, timeout: float | None, memory: int | None = None
) -> bytes:
    return TAG_FUNCTION + _FUNCTION.pack(star, timeout or 0.0, memory or 0) + fn_bytes


def chunk_message(start: int, payload: bytes, buffers: Sequence[pickle.PickleBuffer]) -> bytes:
    return TAG_CHUNK + _START.pack(start) + frame(payload, buffers)
