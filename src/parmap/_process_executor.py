"""``ProcessExecutor``: a ``concurrent.futures.Executor`` on parmap's own process workers.

::

    caller threads                  manager thread (one per executor)      worker i
    --------------                  ---------------------------------      --------
    submit(fn, *a, **k): fn pickled
      with the task; a one-item      loop:
      chunk, a _Future (PENDING) ─┐    take the requests
    map(fn, *its): a window of    │    pending work -> ProcessBackend,
      chunks, refilled as results ├─►  at most OUT_PER_WORKER chunks per ─C─► _run_task:
      are read                    │    worker out (future: RUNNING)            fn (cached per
    future.cancel() ──────────────┤    backend.poll([wake-up pipe])            bytes)(*a, **k)
    shutdown() ───────────────────┘      a reply    -> set_result /    ◄─────  reply
      requests (a deque) + a byte                      set_exception
      on the wake-up pipe, which         a sentinel -> WorkerCrashedError on the
      the backend's wait watches                       future it ran; slot refilled
                                         an overrun -> worker killed: TaskTimeoutError
                                       a RUNNING future cancelled -> backend.withdraw:
                                         its worker killed and replaced
                                     shut down and no work left: workers quit, it ends

The manager is the only thread that touches the backend (``ProcessBackend``, the engine of
``backend="process"``: its pipes, progress board, worker loop and the attribution of deaths and
overruns to the chunk a worker held); callers hand it work through a deque and wake it with a
byte on a pipe whose read end is in the backend's ``connection.wait`` list.

How a task's function travels: with every task, as bytes (the standard pickler for a function
importable by reference, a few dozen bytes and a microsecond; cloudpickle for lambdas,
closures and functions of ``__main__``), and each worker keeps the functions it unpickled in a
small cache keyed by those bytes. So a task sees its function as it was when it was submitted
(cloudpickle copies a closure's cells and ``__main__``'s globals), as with
``ProcessPoolExecutor``; nothing depends on which worker runs it (a respawned or recycled worker
just misses the cache once); and the common case, one function over many tasks, unpickles it
once per worker. A ``map`` call pickles its function once, and its chunks repeat the same bytes
object, which pickle writes once per chunk.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import itertools
import os
import pickle
import threading
import time
import types
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sized
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
)
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, Generic, TypeVar

from typing_extensions import ParamSpec

from ._api import check_start_method, default_workers
from ._chunking import ChunkSizer
from ._errors import TaskPicklingError, TaskUnpicklingError
from ._serialize import PROTOCOL, describe, dumps_function, loads
from .backends import Call, Chunk, Outcome
from .backends._process import QUIT_GRACE, ProcessBackend

__all__ = ["ProcessExecutor"]

R = TypeVar("R")
P = ParamSpec("P")

#: Chunks handed to the backend per worker (running, or queued there); the rest of the work
#: waits in the manager, PENDING (so cancellable as usual, and ``cancel_futures=`` cancels it).
OUT_PER_WORKER = 2
#: ``map`` without ``buffersize=``: chunks read ahead of the consumer, per worker.
MAP_WINDOW_PER_WORKER = 4
#: Functions a worker keeps unpickled (see the module docstring).
FUNCTION_CACHE = 64

#: A task as it travels: the pickled function, its positional and keyword arguments.
Task = tuple[bytes, tuple[Any, ...], "dict[str, Any] | None"]


# -- in a worker ---------------------------------------------------------------------------------

_FUNCTIONS: OrderedDict[bytes, Callable[..., Any]] = OrderedDict()


def _run_task(task: Task) -> Any:
    """Run one task in a worker (the function the executor's workers install)."""
    fn_bytes, args, kwargs = task
    fn = _FUNCTIONS.get(fn_bytes)
    if fn is None:
        try:
            fn = loads(fn_bytes)
        except BaseException as exc:
            what = f"the function could not be unpickled in the worker: {describe(exc)}"
            raise TaskUnpicklingError(what) from exc
        assert fn is not None
        # Plain functions only: a callable object may keep state between calls, which a task
        # must not see from an earlier one (each gets a fresh copy, as with ProcessPoolExecutor).
        if isinstance(fn, (types.FunctionType, types.BuiltinFunctionType)):
            _FUNCTIONS[fn_bytes] = fn
            if len(_FUNCTIONS) > FUNCTION_CACHE:
                _FUNCTIONS.popitem(last=False)
    else:
        _FUNCTIONS.move_to_end(fn_bytes)
    return fn(*args, **kwargs) if kwargs else fn(*args)


# -- in the caller -------------------------------------------------------------------------------


def _function_bytes(fn: Callable[..., Any]) -> bytes:
    """The function as it travels with each task (see the module docstring)."""
    if not callable(fn):
        raise TypeError(f"{fn!r} is not callable")
    plain = isinstance(fn, (types.FunctionType, types.BuiltinFunctionType))
    if plain and getattr(fn, "__module__", None) != "__main__":
        with contextlib.suppress(Exception):  # a lambda or a nested function: by value below
            return pickle.dumps(fn, PROTOCOL)
    try:
        return dumps_function(fn)
    except (Exception, SystemExit) as exc:
        raise TaskPicklingError(
            f"the function {fn!r} could not be pickled: {describe(exc)}"
        ) from exc


class _Future(cf.Future[R]):
    """A future whose ``cancel()`` also takes back running work: the manager kills the worker
    running it (``ProcessPoolExecutor``'s returns False for a running future instead)."""

    def __init__(self, withdraw: Callable[[_Future[Any]], None]) -> None:
        super().__init__()
        self._withdraw = withdraw

    def cancel(self) -> bool:
        # Future.cancel() refuses a RUNNING future; this is its body without that refusal
        # (its private state, as concurrent.futures' own executors use it).
        inner: Any = self
        with inner._condition:
            if inner._state == FINISHED:
                return False
            if inner._state in (CANCELLED, CANCELLED_AND_NOTIFIED):
                return True
            inner._state = CANCELLED
            inner._condition.notify_all()
        inner._invoke_callbacks()
        _notify(self)  # wait() and as_completed() see it now, not when the manager gets to it
        self._withdraw(self)
        return True


def _notify(future: cf.Future[Any]) -> bool:
    """``set_running_or_notify_cancel``, from whichever thread gets there first: True if the
    future now runs, False if it was cancelled (its waiters told, perhaps already)."""
    try:
        return future.set_running_or_notify_cancel()
    except RuntimeError:  # cancelled and notified already
        return False


def _settle(set_: Callable[[Any], None], value: Any) -> None:
    with contextlib.suppress(cf.InvalidStateError):  # cancelled meanwhile
        set_(value)


@dataclass(eq=False)
class _Work:
    """A chunk on its way, and the future that gets what becomes of it."""

    chunk: Chunk
    future: _Future[Any]
    #: A ``map`` chunk: the future's value is the whole ``Outcome`` (results and failure).
    whole: bool


class _Wake:
    """The wake-up pipe: any thread sets it, the manager's wait watches its read end."""

    def __init__(self) -> None:
        self.fd, self._write = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._write, False)
        self._lock = threading.Lock()
        self._closed = False

    def set(self) -> None:
        with self._lock:  # never a write to a closed (perhaps reused) descriptor
            if not self._closed:
                with contextlib.suppress(BlockingIOError):  # full: it is set already
                    os.write(self._write, b"!")

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 4096):
                pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            os.close(self.fd)
            os.close(self._write)


_SUBMIT, _WITHDRAW, _CLOSE, _CANCEL_PENDING, _ABORT = range(5)


class _Manager:
    """The thread that runs the backend for one executor (see the module docstring)."""

    def __init__(self, backend: ProcessBackend, call: Call) -> None:
        self.backend = backend
        self.call = call
        self.wake = _Wake()
        self.lock = threading.Lock()
        #: Why no work is taken any more (a RuntimeError's message), or None.
        self.refusing: str | None = None
        self.requests: deque[tuple[int, _Work | None]] = deque()
        self.pending: deque[_Work] = deque()
        self.out: dict[Chunk, _Work] = {}
        self.started = False
        self.closing = False
        self.aborting = False
        self.thread = threading.Thread(target=self._run, name="parmap-executor", daemon=True)
        self._positions = itertools.count()
        self._limit = OUT_PER_WORKER * backend.workers

    # -- from any thread -------------------------------------------------------------------------

    def put(self, work: _Work) -> None:
        with self.lock:
            if self.refusing is not None:
                raise RuntimeError(self.refusing)
            self.requests.append((_SUBMIT, work))
        self.wake.set()

    def request(self, kind: int, work: _Work | None = None, refuse: str | None = None) -> None:
        with self.lock:
            if refuse is not None and self.refusing is None:
                self.refusing = refuse
            self.requests.append((kind, work))
        self.wake.set()

    def chunk(self, items: list[Task], whole: bool) -> _Work:
        """A chunk with positions of its own: each chunk out holds items no other holds (the
        backend finds a dead worker's item on the board by its position)."""
        with self.lock:
            start = next(self._positions)
            for _ in range(len(items) - 1):
                next(self._positions)
        chunk = Chunk(start, items)
        future: _Future[Any] = _Future(lambda f: self._withdraw(chunk, f))
        return _Work(chunk, future, whole)

    def _withdraw(self, chunk: Chunk, future: _Future[Any]) -> None:
        with contextlib.suppress(RuntimeError):
            self.request(_WITHDRAW, _Work(chunk, future, False))

    # -- in the manager thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                self.wake.clear()
                self._take()
                if self.aborting:
                    break
                self._feed()
                if self.closing and not self.pending and not self.out:
                    break
                self._wait()
        finally:
            self._end()

    def _take(self) -> None:
        while self.requests:
            kind, work = self.requests.popleft()
            if kind == _SUBMIT:
                assert work is not None
                self.pending.append(work)
            elif kind == _WITHDRAW:
                assert work is not None
                if work.chunk in self.out and self.backend.withdraw(work.chunk):
                    del self.out[work.chunk]
            elif kind == _CANCEL_PENDING:
                for pending in list(self.pending):
                    pending.future.cancel()
            elif kind == _CLOSE:
                self.closing = True
            else:
                self.aborting = True

    def _feed(self) -> None:
        while self.pending and len(self.out) < self._limit:
            work = self.pending.popleft()
            if not _notify(work.future):
                continue  # cancelled while pending
            if not self.started:
                try:
                    self.backend.start(self.call)
                except Exception as exc:  # it stopped what it started; the next work retries
                    _settle(work.future.set_exception, exc)
                    continue
                self.started = True
            self.out[work.chunk] = work
            try:
                self.backend.submit(work.chunk)  # may start a worker (see ProcessBackend._grow)
            except Exception as exc:  # a worker would not start: its arguments, the system
                self._fail_all(exc)
                return

    def _fail_all(self, exc: Exception) -> None:
        """Every chunk out fails with ``exc``; the backend is stopped (the next work starts it
        afresh), so the executor stays usable."""
        out, self.out = list(self.out.values()), {}
        for work in out:
            _settle(work.future.set_exception, exc)
        self.backend.stop(abort=True)
        self.started = False

    def _wait(self) -> None:
        if not self.started:
            wait([self.wake.fd])
            return
        try:
            outcomes = self.backend.poll([self.wake.fd], None)
        except Exception as exc:  # a replacement worker would not start
            self._fail_all(exc)
            return
        for outcome in outcomes:
            work = self.out.pop(outcome.chunk, None)
            if work is None:
                continue  # withdrawn: its future was cancelled
            if work.whole:
                _settle(work.future.set_result, outcome)
            elif outcome.failure is not None:
                _settle(work.future.set_exception, outcome.failure[1])
            else:
                _settle(work.future.set_result, outcome.results[0])
        if self.backend.gave_up is not None:
            # Workers died starting (or in the initializer): every chunk out has failed with
            # why. Start afresh with the next work rather than stay broken.
            self.backend.stop(abort=True)
            self.started = False

    def _end(self) -> None:
        with self.lock:
            if self.refusing is None:
                self.refusing = "cannot schedule new futures after shutdown"
            left = [w for kind, w in self.requests if w is not None and kind == _SUBMIT]
            self.requests.clear()
        try:
            if self.started:
                self.backend.stop(abort=bool(self.out))
        finally:
            self.wake.close()
            for work in [*self.out.values(), *self.pending, *left]:
                work.future.cancel()
            self.out.clear()
            self.pending.clear()
            _LIVE.discard(self)


#: Managers whose thread runs; the exit hook stops them.
_LIVE: set[_Manager] = set()
_hooked = False


def _hook_exit() -> None:
    global _hooked
    if not _hooked:
        # Run as the main thread ends, before the interpreter waits for threads and before
        # atexit (where multiprocessing joins its children); see ``backends._ending``.
        with contextlib.suppress(AttributeError, RuntimeError):
            threading._register_atexit(_at_exit)  # type: ignore[attr-defined]
        _hooked = True


def _at_exit() -> None:
    """The main thread has ended: an executor still running is stopped, its pending futures
    cancelled and its busy workers killed, so that the exit never waits for a task."""
    managers = list(_LIVE)
    for manager in managers:
        manager.request(_ABORT, refuse="cannot schedule new futures after interpreter shutdown")
    for manager in managers:
        manager.thread.join(QUIT_GRACE + 1)


def _forget_in_child() -> None:
    """In a forked child: the parent's executors are not ours (their workers neither)."""
    _LIVE.clear()


os.register_at_fork(after_in_child=_forget_in_child)


class ProcessExecutor(cf.Executor):
    """A ``concurrent.futures.Executor`` on parmap's own worker processes, that never breaks.

    A worker that dies (a segfault, ``os._exit``, SIGKILL) fails only the future it was
    running, with [`WorkerCrashedError`][parmap.WorkerCrashedError] naming its pid and exit
    code or signal; a fresh worker takes its slot and every other future completes. Results or
    exceptions that will not (un)pickle, and ``sys.exit()`` in a task, fail only their own
    future, with the errors ``pmap`` raises for them.

    - ``workers``: worker processes (default: the CPUs this process may use).
    - ``timeout``: seconds per task; an overrun kills its worker and fails its future with
      [`TaskTimeoutError`][parmap.TaskTimeoutError].
    - ``initializer`` / ``initargs``: run once in each worker; what it returns is that
      worker's [`worker_state()`][parmap.worker_state].
    - ``start_method``: default ``"forkserver"`` where there is one (workers are started
      from the executor's thread, while others run: a fork there could copy a lock another
      thread holds), else ``"spawn"``.
    - ``max_tasks_per_worker``: a worker quits after this many tasks; a fresh one replaces it.

    ``future.cancel()`` works on a running future too: its worker is killed, and the future
    ends cancelled. At interpreter exit an executor not shut down is stopped: its pending
    futures are cancelled and its busy workers killed (``ProcessPoolExecutor`` waits for them).
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        timeout: float | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        start_method: str | None = None,
        max_tasks_per_worker: int | None = None,
    ) -> None:
        if workers is None:
            workers = default_workers()
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"ProcessExecutor(): workers must be an int >= 1, not {workers!r}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"ProcessExecutor(): timeout must be > 0, not {timeout!r}")
        if initializer is not None and not callable(initializer):
            raise TypeError(f"ProcessExecutor(): initializer {initializer!r} is not callable")
        if max_tasks_per_worker is not None and (
            not isinstance(max_tasks_per_worker, int) or max_tasks_per_worker < 1
        ):
            raise ValueError(
                f"ProcessExecutor(): max_tasks_per_worker must be an int >= 1, "
                f"not {max_tasks_per_worker!r}"
            )
        check_start_method("ProcessExecutor", start_method)
        if start_method is None:
            start_method = _default_start_method()
        self._workers = workers
        self._max_tasks = max_tasks_per_worker
        call = Call(
            _run_task,
            star=False,
            timeout=timeout,
            initializer=initializer,
            initargs=tuple(initargs),
            keep_going=True,
            max_tasks=max_tasks_per_worker,
            inheritable=True,  # a Lock in initargs travels as each worker starts
        )
        call.fn_bytes  # noqa: B018 - an initializer that will not pickle fails here, at once
        backend = ProcessBackend(workers, start_method, warm=False)
        backend.respawn_cap = False
        self._pid = os.getpid()
        self._manager = _Manager(backend, call)
        _hook_exit()
        _LIVE.add(self._manager)
        self._manager.thread.start()
        # Dropped without shutdown(): the work already submitted finishes, then it ends.
        weakref.finalize(self, self._manager.request, _CLOSE, refuse="")

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> cf.Future[R]:
        """Schedule ``fn(*args, **kwargs)``; its future. A function or arguments that will not
        pickle fail the future with [`TaskPicklingError`][parmap.TaskPicklingError]."""
        self._check_process()
        manager = self._manager
        try:
            task: Task = (_function_bytes(fn), args, kwargs or None)
        except TaskPicklingError as error:
            if manager.refusing is not None:
                raise RuntimeError(manager.refusing) from None
            failed: cf.Future[R] = cf.Future()
            failed.set_exception(error)
            return failed
        work = manager.chunk([task], whole=False)
        manager.put(work)
        future: cf.Future[R] = work.future
        return future

    def map(
        self,
        fn: Callable[..., R],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        buffersize: int | None = None,
    ) -> Iterator[R]:
        """``map(fn, *iterables)``, results in order, as ``Executor.map``: ``timeout`` is a
        deadline for the whole iterator (``TimeoutError``), an exception is raised when its
        result is reached. Input is read a window ahead of the results consumed
        (``buffersize`` items, or a few chunks per worker), so an endless iterable is fine.
        ``chunksize``: items per chunk (default: sized as the results come back)."""
        self._check_process()
        if chunksize is not None and (not isinstance(chunksize, int) or chunksize < 1):
            raise ValueError("chunksize must be >= 1.")
        if buffersize is not None and (not isinstance(buffersize, int) or buffersize < 1):
            raise ValueError("buffersize must be None or > 0.")
        if self._manager.refusing is not None:
            raise RuntimeError(self._manager.refusing)
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._max_tasks is not None:
            chunksize = min(chunksize or self._max_tasks, self._max_tasks)
        first = iterables[0] if len(iterables) == 1 else None
        total = len(first) if isinstance(first, Sized) else None
        sizer = ChunkSizer(self._workers, total, chunksize)
        try:
            fn_bytes = _function_bytes(fn)
        except TaskPicklingError as error:
            return _raise_later(error)
        args = zip(*iterables, strict=False)
        window = MAP_WINDOW_PER_WORKER * self._workers
        mapping: _Mapping[R] = _Mapping(self, fn_bytes, args, sizer, buffersize, window)
        mapping.fill()
        return mapping.results(deadline)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more work; ``cancel_futures``: cancel the futures not yet running. The
        workers quit once the work taken has finished; ``wait``: until then."""
        manager = self._manager
        if cancel_futures:
            with contextlib.suppress(RuntimeError):
                manager.request(
                    _CANCEL_PENDING, refuse="cannot schedule new futures after shutdown"
                )
        with contextlib.suppress(RuntimeError):
            manager.request(_CLOSE, refuse="cannot schedule new futures after shutdown")
        if wait and manager.thread is not threading.current_thread():
            manager.thread.join()

    def _check_process(self) -> None:
        if os.getpid() != self._pid:
            raise RuntimeError("a ProcessExecutor cannot be used in a child made by os.fork")


def _default_start_method() -> str:
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


def _raise_later(error: BaseException) -> Iterator[Any]:
    raise error
    yield  # pragma: no cover - a generator: raised when the first result is reached


class _Mapping(Generic[R]):
    """One ``map`` call: its window of chunks out, refilled as results are consumed."""

    def __init__(
        self,
        owner: ProcessExecutor,
        fn_bytes: bytes,
        args: Iterator[tuple[Any, ...]],
        sizer: ChunkSizer,
        buffersize: int | None,
        chunks: int,
    ) -> None:
        # The executor, kept alive while its results are read (``ex().map(...)`` is fine).
        self.owner, self.manager = owner, owner._manager
        self.fn_bytes, self.args, self.sizer = fn_bytes, args, sizer
        self.buffersize, self.chunks = buffersize, chunks
        self.window: deque[tuple[_Future[Outcome], int]] = deque()
        self.position = 0
        self.items_out = 0
        self.exhausted = False

    def fill(self) -> None:
        while not self.exhausted and len(self.window) < self.chunks:
            size = self.sizer.next_size(self.position)
            if self.buffersize is not None:
                size = min(size, self.buffersize - self.items_out)
                if size < 1:
                    return
            part = list(itertools.islice(self.args, size))
            if not part:
                self.exhausted = True
                return
            work = self.manager.chunk([(self.fn_bytes, a, None) for a in part], whole=True)
            self.manager.put(work)
            self.window.append((work.future, len(part)))
            self.position += len(part)
            self.items_out += len(part)

    def results(self, deadline: float | None) -> Iterator[R]:
        try:
            while self.window:
                future, count = self.window[0]
                left = None if deadline is None else deadline - time.monotonic()
                outcome = future.result(left)
                self.window.popleft()
                self.items_out -= count
                if outcome.failure is None:
                    self.sizer.observe(count, outcome.seconds)
                    self.fill()  # before yielding: the workers go on while the caller works
                yield from outcome.results
                if outcome.failure is not None:
                    raise outcome.failure[1]
        finally:
            for future, _ in self.window:
                future.cancel()
