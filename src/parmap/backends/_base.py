"""The backend contract: move chunks to workers, report what became of each.

A backend never decides what the caller sees. It takes chunks (a start index and a list of
items), runs the call's function over them somewhere, and reports an ``Outcome`` per chunk:
the results, or a failure at one item (the function's exception, a dead worker, an overrun
timeout, something that would not pickle). Ordering, the in-flight bound, chunk sizing, choosing
the loop's exception and raising it all happen once, above this line, in ``parmap._api``.

Two ways to write one:

* subclass ``Backend`` and implement ``start``/``submit``/``wait``/``stop`` (the
  ``"process"`` backend does, to own its pipes and worker lifetimes);
* subclass ``FutureBackend`` and implement ``_submit(chunk) -> Future``, like an engine of
  ``concurrent.futures``; ``wait`` is written once here. Override ``_check`` to watch workers
  for deaths and overruns, ``_close`` to release the engine.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing.process
import os
import pickle
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .._board import IDLE, INITIALIZING, RECEIVING, RETURNING, TIMED_PHASES, Board, Cells, SlotView
from .._errors import (
    InitializerError,
    ParmapError,
    TaskPicklingError,
    TaskTimeoutError,
    WorkerCrashedError,
)
from .._execute import execute
from .._local import enter_local, failure_from_local, leave_local
from .._serialize import dumps_items, dumps_task
from .._wire import INHERITED, Done, Failure, Spec, decode_reply
from . import _ending

__all__ = ["Backend", "Call", "Chunk", "FutureBackend", "Outcome"]

#: How often a FutureBackend looks at its workers while it waits (deaths, overruns).
WATCH_INTERVAL = 0.1
#: In a call that goes on, how many times in a row an engine may break with no death to blame
#: before the break ends the call (each time, every chunk out runs again on a fresh engine).
UNATTRIBUTED_BREAKS = 3


@dataclass
class Call:
    """One ``pmap``/``imap``/``pstarmap`` call, as a backend sees it."""

    fn: Callable[..., Any]
    star: bool
    timeout: float | None
    initializer: Callable[..., object] | None = None
    initargs: tuple[Any, ...] = ()
    #: A failure does not end the call (``retries=``, ``errors="return"``): an engine that
    #: breaks with a worker's death reports the chunks it lost (``Outcome.lost``) and goes on.
    keep_going: bool = False
    #: Items a worker process runs before it is replaced (``max_tasks_per_worker=``).
    max_tasks: int | None = None
    #: Resident bytes above which a worker process is replaced (``max_memory_per_worker=``).
    max_memory: int | None = None
    #: The engine passes arguments to its worker processes as they start (``Backend.inherits``):
    #: ``initargs`` that only travel that way (a ``multiprocessing.Lock``, ``Value``,
    #: ``Barrier``...) may, instead of inside ``fn_bytes``.
    inheritable: bool = False
    #: Those ``initargs``, once ``fn_bytes`` found they must travel by inheritance.
    inherited: tuple[Any, ...] | None = field(default=None, repr=False)
    _fn_bytes: bytes | None = field(default=None, repr=False)
    #: Threads of this process that ran the initializer for this call: (ok, value or error).
    local_states: dict[int, tuple[bool, Any]] = field(default_factory=dict, repr=False)

    @property
    def spec(self) -> Spec:
        """What a worker process needs to run this call's chunks (see ``_wire``)."""
        return Spec(self.fn_bytes, self.star, self.timeout, self.max_memory)

    @property
    def fn_bytes(self) -> bytes:
        """The function with its initializer, cloudpickled once per call."""
        if self._fn_bytes is None:
            try:
                self._fn_bytes = dumps_task(
                    self.fn, self.initializer, self.initargs, TaskPicklingError
                )
            except TaskPicklingError as error:
                if not (self.inheritable and _inheritance_only(error)):
                    raise
                self._fn_bytes = dumps_task(self.fn, self.initializer, INHERITED, TaskPicklingError)
                self.inherited = self.initargs
        return self._fn_bytes

    def run_here(self, chunk: Chunk, board: Cells | None = None,
                 base: int = 0) -> Outcome:  # fmt: skip
        """Run a chunk in this thread (the caller, or a thread of an executor), with this
        thread's initializer state; with a timeout, each overrun is reported as it returns."""
        before = None
        if self.initializer is not None:
            try:
                before = enter_local(self.local_states, self.initializer, self.initargs)
            except InitializerError as error:
                return Outcome.failed(chunk, chunk.start, error)
        try:
            return _run_chunk_here(self, chunk, board, base)
        finally:
            if self.initializer is not None:
                leave_local(before)


def _inheritance_only(error: BaseException) -> bool:
    """Whether pickling failed on an object multiprocessing passes only to a process it
    starts ("... should only be shared between processes through inheritance")."""
    cause = error.__cause__
    return isinstance(cause, RuntimeError) and "through inheritance" in str(cause)


@dataclass(eq=False)
class Chunk:
    """Consecutive items ``start``, ``start + 1``, ...; hashed by identity."""

    start: int
    items: Sequence[Any]  # a list, or a range (see ``_api._Reader``)

    @property
    def stop(self) -> int:
        return self.start + len(self.items)

    def __contains__(self, index: int) -> bool:
        return self.start <= index < self.stop

    def describe(self) -> str:
        last = self.stop - 1
        return f"item {self.start}" if last == self.start else f"items {self.start}..{last}"

    def payload(self, buffers: list[pickle.PickleBuffer] | None = None) -> bytes:
        """The items pickled, or [`TaskPicklingError`][parmap.TaskPicklingError] naming the
        first that will not; with ``buffers``, large arrays (numpy) are appended there, out of
        band (pickle protocol 5), rather than copied into the bytes."""
        return dumps_items(self.items, self.start, "item", TaskPicklingError, buffers)


@dataclass
class Outcome:
    """What became of a chunk: its results, or the failure that stopped it."""

    chunk: Chunk
    #: All the results, or with a failure those of the items before it that survived.
    results: list[Any]
    failure: Failure | None = None
    seconds: float = 0.0  # time the worker spent on the chunk, for chunk sizing
    #: Not run, through no fault of its own (the engine stopped its worker for another chunk's
    #: crash): to be submitted again whole. Only with ``Call.keep_going``.
    lost: bool = False
    #: Its worker is above ``max_memory_per_worker`` (and stopped the chunk there, if early).
    spent: bool = False

    @classmethod
    def failed(cls, chunk: Chunk, index: int, error: BaseException) -> Outcome:
        return cls(chunk, [], (index, error))

    @classmethod
    def from_reply(
        cls, chunk: Chunk, data: bytes | memoryview, buffers: list[bytearray] | None = None
    ) -> Outcome:
        reply = decode_reply(data, chunk.start, len(chunk.items), buffers)
        if isinstance(reply, tuple):  # it would not even unpickle
            return cls(chunk, [], reply)
        if isinstance(reply, Done):
            return cls(chunk, reply.results, None, reply.seconds, spent=reply.spent)
        failure = reply.failure(chunk.start, len(chunk.items))
        return cls(chunk, reply.partial, failure, spent=getattr(reply, "spent", False))


def _run_chunk_here(call: Call, chunk: Chunk, board: Cells | None, base: int) -> Outcome:
    began = time.perf_counter()
    if board is None and call.timeout is not None:
        # Nothing watches the caller: a board of its own, on which ``execute`` catches each
        # item that returns late (the caller's thread cannot be interrupted before that).
        board, base = Board.local(1).writer(), 0
    results, exc = execute(call.fn, call.star, chunk.start, chunk.items, board, base, call.timeout)
    if exc is not None:
        return Outcome(chunk, results, failure_from_local(chunk.start + len(results), exc))
    return Outcome(chunk, results, None, time.perf_counter() - began)


class Backend(ABC):
    """Runs chunks of one call at a time. Instances may be reused for call after call."""

    #: The name in the registry (``backend="..."``).
    name: ClassVar[str]
    #: True where chunks cross a process boundary: the function is pickled before work starts.
    pickles: bool = True
    #: False where ``timeout=`` cannot be enforced; asking for one is then a ``ValueError``.
    timeouts: bool = True
    #: True where items run on several threads of one process at once: they share module-level
    #: state (``random``'s), so ``seed=`` cannot hold there and is refused at call time.
    threaded: bool = False
    #: True where every chunk runs in the calling thread, in order, when waited for: the
    #: caller then keeps one chunk out at a time (more would run no sooner, and each is sized
    #: knowing how the one before went), and ``pmap`` may map the input in one go.
    runs_in_caller: ClassVar[bool] = False
    #: True where a worker process can be replaced on its own, mid-call, for
    #: ``max_tasks_per_worker=`` and ``max_memory_per_worker=`` (refused elsewhere).
    recycles: ClassVar[bool] = False
    #: Why not, where ``recycles`` is False: said as the options are refused.
    no_recycling: ClassVar[str] = "its items do not run in worker processes it replaces"
    #: True where the engine starts worker processes with arguments (``initargs`` holding a
    #: ``multiprocessing.Lock`` travel that way, as with ``multiprocessing.Pool``).
    inherits: ClassVar[bool] = False
    #: How many items can run at once; sets the in-flight bound and chunk sizes.
    workers: int
    #: Worker processes replaced during the call (``max_tasks_per_worker=`` and
    #: ``max_memory_per_worker=``); read for the map's summary before ``stop``.
    recycled: int = 0

    def largest_chunk(self, call: Call) -> int | None:
        """The most items a chunk of ``call`` may hold (None: no limit of the engine's): with
        ``max_tasks_per_worker``, that many, as a fresh worker takes any chunk whole."""
        return call.max_tasks

    def __repr__(self) -> str:
        name = getattr(self, "name", None)
        return f"backend={name!r}" if name else super().__repr__()

    @abstractmethod
    def start(self, call: Call) -> None:
        """Get ready to run ``call``'s function (start or reuse workers)."""

    @abstractmethod
    def submit(self, chunk: Chunk) -> None:
        """Queue a chunk. Problems with the chunk itself are reported by
        [`wait`][parmap.backends.Backend.wait]."""

    @abstractmethod
    def wait(self) -> list[Outcome]:
        """Block until at least one submitted chunk has an outcome; return those there are."""

    @abstractmethod
    def stop(self, *, abort: bool) -> None:
        """End the call. ``abort``: outstanding chunks are abandoned and their workers stopped.

        Every process and thread the backend started for the call is gone when this returns,
        except workers it keeps warm for the next call.
        """

    def interrupt(self) -> None:  # noqa: B027 - by default there is nothing to interrupt
        """Make a ``wait()`` blocked in another thread return soon (``apmap``'s cancellation).

        Called from any thread, at any time: before ``start``, during it, after ``stop``. An
        engine whose items run in processes it owns kills the ones running this call's chunks,
        which then fail as crashes; the caller stops the call. By default nothing: an item
        running in a thread or in the caller cannot be interrupted, and ``wait()`` returns when
        it does.
        """


def crash_failure(
    chunk: Chunk, view: SlotView | None, exitcode: int | None, pid: int | None
) -> Failure:
    """The failure for a chunk whose worker died, naming the item the board says it held."""
    index = chunk.start
    where = f"while it held {chunk.describe()}"
    if view is not None and view.index in chunk:
        index = view.index
        where = f"while running item {index}"
        if len(chunk.items) > 1:
            where += f" (of {chunk.describe()})"
    elif view is not None and view.index == RECEIVING:
        where = f"while unpickling {chunk.describe()}"
    elif view is not None and view.index in (IDLE, RETURNING):
        where = f"while returning the results of {chunk.describe()}"
    elif view is not None and view.index == INITIALIZING:
        where = "while running the initializer"
    error = WorkerCrashedError(f"a worker (pid {pid}) {where}", exitcode=exitcode, index=index)
    error.index, error.pid = index, pid
    return index, error


def initializer_crash(call: Call, view: SlotView, exitcode: int | None) -> WorkerCrashedError:
    """A worker died in the initializer: named, so the engine's respawning does not hide it."""
    name = getattr(call.initializer, "__qualname__", repr(call.initializer))
    error = WorkerCrashedError(
        f"a worker (pid {view.pid}) running the initializer {name}", exitcode=exitcode
    )
    error.pid = view.pid
    return error


def startup_crash(pid: int | None, exitcode: int | None, start_method: str) -> WorkerCrashedError:
    """A worker died before it ran anything of the call's: raised at once, since a fresh worker
    would die the same way (the engine's respawning would go on forever)."""
    error = WorkerCrashedError(f"a worker (pid {pid}) while starting", exitcode=exitcode)
    error.pid = pid
    why = why_startup_failed(exitcode, start_method)
    if why:
        error.args = (f"{error.args[0]}: {why}",)
    return error


def why_startup_failed(exitcode: int | None, start_method: str) -> str:
    """The usual reason a worker exits with code 1 before it runs anything: under spawn and
    forkserver it first imports the caller's main module, running its module-level code."""
    if exitcode != 1 or start_method not in ("spawn", "forkserver"):
        return ""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    path = getattr(main, "__file__", None)
    where = f"the module {name}" if name else path
    if where is None:
        return ""  # nothing to import (python -c, an interactive session)
    method = f"start_method={start_method!r}"
    # A relative path is resolved as multiprocessing does, against the directory it started in.
    started_in = getattr(multiprocessing.process, "ORIGINAL_DIR", None) or os.getcwd()
    if name is None and not os.path.isfile(os.path.join(started_in, path or "")):
        return (
            f"under {method} each worker first imports the main module, and it was not read "
            f"from a file ({path!r}, as with a script piped to the interpreter) that a worker "
            f'could import: run the script from a file, or use start_method="fork"'
        )
    return (
        f"under {method} each worker first imports the main module ({where}); a parmap call "
        f'made there at module level, without `if __name__ == "__main__":`, runs again in each '
        f"worker, which may not start processes of its own while it starts (the RuntimeError "
        f'about the "bootstrapping phase" that the worker printed): put the call under that '
        f"guard (if the worker printed another error, that is what stopped it)"
    )


def overdue(board: Board, timeout: float) -> list[SlotView]:
    """Slots whose current item, or timed phase (the initializer, unpickling a chunk, pickling
    its results), started more than ``timeout`` seconds ago, the loop's first first."""
    now = time.monotonic()
    late = [
        v
        for v in board
        if (v.index >= 0 or v.index in TIMED_PHASES) and v.pid and now - v.started > timeout
    ]
    return sorted(late, key=_position)


def _position(view: SlotView) -> int:
    """The item an overrun counts against: its own, or its chunk's first (-1: none yet)."""
    if view.index >= 0:
        return view.index
    return -1 if view.index == INITIALIZING else view.chunk


def timeout_failure(view: SlotView, timeout: float) -> Failure:
    """An overrun of an item or of a timed phase, at the item it counts against."""
    index = _position(view)
    what = {
        INITIALIZING: "the initializer",
        RECEIVING: f"unpickling the chunk at item {view.chunk}",
        RETURNING: f"pickling the results of the chunk at item {view.chunk}",
    }.get(view.index, f"item {view.index}")
    error = TaskTimeoutError(what, timeout=timeout, index=index if index >= 0 else None)
    return index, error


class FutureBackend(Backend):
    """A backend over an engine that returns a ``concurrent.futures.Future`` per chunk."""

    #: Exceptions by which the engine says it broke (a worker died); see ``_diagnose``.
    broken: ClassVar[tuple[type[BaseException], ...]] = (cf.BrokenExecutor,)
    #: Whether ``start`` may open the engine afresh mid-call (see ``_restart``).
    reopens: ClassVar[bool] = False

    def __init__(self) -> None:
        self._pending: dict[cf.Future[Any], Chunk] = {}
        self._failed: list[Outcome] = []
        self._fatal: Failure | None = None
        #: Breaks in a row the engine's workers could not be blamed for (see ``wait``).
        self._unattributed = 0
        self._call: Call | None = None
        #: The thread that last started, fed or waited for the call (see ``_ending``).
        self.driver: threading.Thread | None = None
        #: Whether the call was abandoned as the main thread ended (see ``_ending``).
        self.abandoned = False

    @abstractmethod
    def _submit(self, chunk: Chunk) -> cf.Future[Any]:
        """Start running a chunk; the future's value is what ``_outcome`` reads."""

    def _outcome(self, chunk: Chunk, value: Any) -> Outcome:
        """Turn a finished future's value into an outcome: by default a pickled reply."""
        return Outcome.from_reply(chunk, value)

    def _check(self, *, broken: bool = False) -> Failure | None:
        """Look at the workers: a failure that breaks the call (a death, an overrun), if any.

        ``broken``: the engine has said it broke, so no reply is still on its way.
        """
        return None

    def _close(self, abort: bool) -> None:
        """Release the engine at the end of a call."""

    def let_go(self) -> None:
        """The main thread has ended and no thread the interpreter waits for drives this call:
        release what would hold the exit up (from the main thread, while a daemon thread may
        still be using the engine; see ``_ending``)."""

    def start(self, call: Call) -> None:
        self._call = call
        self._fatal = None
        self.driver, self.abandoned = threading.current_thread(), False
        _ending.opened(self)

    def submit(self, chunk: Chunk) -> None:
        self.driver = threading.current_thread()
        try:
            future = self._submit(chunk)
        except TaskPicklingError as error:
            self._failed.append(Outcome.failed(chunk, error.index or chunk.start, error))
            return
        except self.broken as exc:  # broken for good by a death (an executor you pass)
            crash = WorkerCrashedError(
                f"the executor, broken by a worker's death, could not take {chunk.describe()}",
                exitcode=None,
            )  # no item's own failure (index None): it ends the call, whatever the options
            crash.__cause__ = exc
            self._failed.append(Outcome.failed(chunk, chunk.start, crash))
            return
        except RuntimeError as exc:  # "cannot schedule new futures after interpreter shutdown"
            if not _ending.exiting() or "shutdown" not in str(exc):
                raise
            raise ParmapError(
                f"the {self.name!r} backend takes no new work once the main thread has ended "
                f"({exc}); backend='process' does"
            ) from exc
        self._pending[future] = chunk
        self._submitted()

    def _submitted(self) -> None:
        """Called after each submission (an engine may start workers on demand)."""

    def wait(self) -> list[Outcome]:
        self.driver = threading.current_thread()
        while not self._failed:
            if not self._pending:
                raise RuntimeError("wait() with nothing submitted")  # pragma: no cover
            done, _ = cf.wait(self._pending, WATCH_INTERVAL, cf.FIRST_COMPLETED)
            if self.abandoned:
                _ending.park()  # its workers were let go: not a failure to report
            if self._fatal is None and self._watch(done):
                continue
            for future in done:
                if future in self._pending:
                    self._failed.append(self._finish(self._pending.pop(future), future))
        outcomes, self._failed = self._failed, []
        return outcomes

    def _watch(self, done: set[cf.Future[Any]]) -> bool:
        """Look at the workers once ``done`` have finished (perhaps none): report a fatal
        failure's chunk; True where the engine was opened afresh (the chunks out are lost)."""
        # Before any chunk leaves _pending: a broken engine's dead worker is found by the chunk
        # it held.
        broke = any(self._broke(f) for f in done)
        self._fatal = self._check(broken=broke)
        call = self._call
        going_on = call is not None and call.keep_going and self.reopens
        if self._fatal is not None:
            self._fail_holder(self._fatal)
            if going_on and self._fatal[0] >= 0:
                self._restart(call)  # type: ignore[arg-type]
                return True
        elif broke and going_on and self._unattributed < UNATTRIBUTED_BREAKS:
            # Broken, but no death found on the board (a worker that died between items, or
            # before its slot said what it held): every chunk out is run again on a fresh
            # engine, none charged an attempt; a limit on such breaks in a row keeps an engine
            # that cannot run the call from looping.
            self._unattributed += 1
            self._restart(call)  # type: ignore[arg-type]
            return True
        return False

    def _broke(self, future: cf.Future[Any]) -> bool:
        return not future.cancelled() and isinstance(future.exception(), self.broken)

    def _finish(self, chunk: Chunk, future: cf.Future[Any]) -> Outcome:
        exc = future.exception()
        if exc is None:
            self._unattributed = 0
            return self._outcome(chunk, future.result())
        if isinstance(exc, self.broken):
            if self._fatal is not None:
                index, error = self._fatal
                return Outcome(chunk, [], (chunk.start if index < 0 else index, error))
            crash = WorkerCrashedError(
                f"the executor broke while running {chunk.describe()}", exitcode=None
            )
            crash.index = chunk.start
            crash.__cause__ = exc
            return Outcome.failed(chunk, chunk.start, crash)
        return Outcome.failed(chunk, chunk.start, exc)

    def _restart(self, call: Call) -> None:
        """After a worker's death, in a call that goes on (``Call.keep_going``): the chunks
        that finished well are reported, every other one as lost (run again), and the engine
        is closed (its workers killed) and opened afresh. An engine that cannot be reopened
        (an executor you pass) reports the others as they come, as the executor fails them."""
        if not self.reopens:
            return
        for future, chunk in list(self._pending.items()):
            del self._pending[future]
            if future.done() and not future.cancelled() and future.exception() is None:
                self._failed.append(self._finish(chunk, future))
            else:
                self._failed.append(Outcome(chunk, [], lost=True))
        self._close(True)
        self.start(call)

    def _fail_holder(self, fatal: Failure) -> None:
        """Report the chunk holding a fatal failure's item, or, for a failure at no item (the
        workers cannot start: index -1), every chunk out; their futures may never finish."""
        index, error = fatal
        for future, chunk in list(self._pending.items()):
            if index in chunk or index < 0:
                del self._pending[future]
                future.cancel()
                self._failed.append(Outcome(chunk, [], (max(index, chunk.start), error)))

    def stop(self, *, abort: bool) -> None:
        # The engine first: ProcessPoolExecutor, broken after we cancelled a future, fails on
        # setting that future's exception (InvalidStateError in its management thread).
        self._close(abort or self._fatal is not None)
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._failed.clear()
        _ending.closed(self)
