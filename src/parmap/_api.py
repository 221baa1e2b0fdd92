"""``pmap``, ``imap`` and ``pstarmap``: the options, their checks, and the plan of a call.

Every call goes through ``_prepare`` (all checks, before any process starts: a bad argument is
an exception naming it, and no input is read) and then ``_drive``: ``"auto"`` runs its probe
(``_auto``), and the dispatch loop (``_dispatch``) runs the rest on the engine chosen, reading
the input a chunk at a time and handing back results, in order or as they finish, with the
loop's first error.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypedDict, TypeVar

from typing_extensions import Self

from . import backends
from ._auto import Auto
from ._chunking import ChunkSizer
from ._dispatch import Reader, dispatch
from ._local import run_rest
from ._progress import Progress, ProgressOption, make_progress
from ._recovery import ErrorsOption, LongRun, Recovery, Summary, parse_bytes
from ._resume import Resume
from ._seeded import Seeded
from .backends import Backend, BackendName, Call

__all__ = ["MapIterator", "MapOptions", "default_workers"]

R = TypeVar("R")


class MapOptions(TypedDict, total=False):
    """The keyword options of ``pmap``, ``imap`` and ``pstarmap``, declared once.

    - ``workers``: how many items run at once; default: the CPUs this process may use.
    - ``backend``: ``"auto"`` (default: in this process when parallelism cannot pay, else
      worker processes), ``"process"``, ``"pool"``, ``"futures"``, ``"thread"``, ``"serial"``,
      ``"dask"`` (needs a running ``distributed.Client``), a
      [`Backend`][parmap.backends.Backend], or any ``concurrent.futures.Executor`` (used, never
      shut down).
    - ``chunksize``: items per round trip to a worker; default: adaptive.
    - ``timeout``: seconds any one item may run; an overrun raises
      [`TaskTimeoutError`][parmap.TaskTimeoutError] and the worker process running it is
      killed. On ``"serial"`` the item cannot be interrupted: the overrun is reported after
      the item returns. On ``"thread"`` the call raises at once; the thread cannot be killed
      and finishes the item on its own. Where it cannot be enforced (``"dask"``, a process
      executor you pass) asking for one is a ``ValueError``.
    - ``start_method``: ``"fork"``, ``"spawn"`` or ``"forkserver"``; default: the platform's.
    - ``progress``: ``True`` for a tqdm bar, or a callable receiving ``(done, total)``.
    - ``initializer``: called as ``initializer(*initargs)`` once in each worker (process or
      thread) before its first item; what it returns is that worker's
      [`worker_state()`][parmap.worker_state].
    - ``initargs``: the initializer's arguments.
    - ``limit_threads``: ``True`` (default): worker processes use at most ``cpus // workers``
      BLAS/OpenMP threads each (numpy, scipy), so they do not oversubscribe the cores. A
      forked worker inherits the BLAS the caller had already started, whose threads only
      threadpoolctl can limit: install the ``blas`` extra.
    - ``seed``: reseed ``random`` (and ``numpy.random``, when numpy is imported) from
      ``(seed, item index)`` before each item: a run gives the same random numbers whatever
      the backend and scheduling. Without it each worker has a random state of its own.
    - ``retries``: an item whose worker died running it, or that overran ``timeout``, runs
      again, up to this many more times (default 0); only that item counts an attempt.
    - ``retry_on``: exception types (a type or a tuple) that your function raises and that are
      retried too, with ``retries``.
    - ``max_tasks_per_worker``: a worker process is replaced after running this many items.
    - ``max_memory_per_worker``: bytes (an int, or a string such as ``"512MiB"`` or
      ``"2GB"``): a worker process whose resident memory is above this after an item is
      replaced before it starts another.
    - ``checkpoint``: a path: results are stored there (SQLite) as they arrive, and a rerun of
      the same call computes only the items not stored (see the "Long-running maps" page).

    Beside these, ``errors="return"`` (a keyword of its own, for typing) keeps a map going past
    failures: a failed item's slot holds its exception.
    """

    workers: int | None
    backend: BackendName | Backend | cf.Executor
    chunksize: int | None
    timeout: float | None
    start_method: str | None
    progress: ProgressOption
    initializer: Callable[..., object] | None
    initargs: tuple[Any, ...]
    limit_threads: bool
    seed: int | None
    retries: int
    retry_on: type[BaseException] | tuple[type[BaseException], ...]
    max_tasks_per_worker: int | None
    max_memory_per_worker: int | str | None
    checkpoint: str | os.PathLike[str] | None


# -- validation ----------------------------------------------------------------------------------


@dataclass
class _Plan:
    """A call, checked and ready: what runs, on what, over which input."""

    backend: Backend | Auto
    call: Call
    items: Reader
    sizer: ChunkSizer
    progress: Progress | None
    recovery: Recovery
    resume: Resume | None = None


def default_workers() -> int:
    """The CPUs this process may run on (respects affinity and container limits)."""
    if hasattr(os, "process_cpu_count"):
        return os.process_cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1  # pragma: no cover - not Linux


def _known_length(iterables: tuple[Iterable[Any], ...]) -> int | None:
    try:
        return min(len(it) for it in iterables)  # type: ignore[arg-type]
    except TypeError:
        return None


def check_positive_int(api: str, name: str, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{api}(): {name} must be an int or None, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{api}(): {name} must be at least 1, got {value}")


def check_timeout(api: str, timeout: object) -> None:
    if timeout is None:
        return
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
        raise TypeError(f"{api}(): timeout must be a number of seconds or None")
    if not timeout > 0 or math.isinf(timeout):
        raise ValueError(f"{api}(): timeout must be a positive, finite number, got {timeout}")


def check_start_method(api: str, start_method: object) -> None:
    valid = multiprocessing.get_all_start_methods()
    if start_method is not None and start_method not in valid:
        raise ValueError(
            f"{api}(): unknown start_method {start_method!r}; valid: {', '.join(valid)}"
        )


def check_callable(api: str, fn: object, what: str = "function") -> None:
    if not callable(fn):
        raise TypeError(f"{api}(): the {what} must be callable, got {type(fn).__name__}")


def check_iterable(api: str, value: object, what: str) -> Iterator[Any]:
    try:
        return iter(value)  # type: ignore[call-overload, no-any-return]
    except TypeError:
        raise TypeError(f"{api}(): {what} must be iterable, got {type(value).__name__}") from None


def check_may_start_processes(api: str, what: str, instead: str) -> None:
    """Raise ``ValueError`` where this process cannot run worker processes (see
    ``_no_processes``); ``instead``: what to do inside a daemonic worker."""
    why = _no_processes()
    if why is None:
        return
    if why == "finalizing":
        raise ValueError(
            f"{api}(): {what} starts processes, and the interpreter is shutting down (this call "
            "runs during its finalization, from a __del__ or a late exit handler), when they "
            "cannot be started dependably: call it before the interpreter exits"
        )
    if why == "daemonic":
        raise ValueError(
            f"{api}(): {what} starts processes, and this process is a daemonic worker (of "
            f'backend="pool", a multiprocessing.Pool, a Dask worker or another daemonic '
            f"Process), which may not have children: {instead}, or run the outer map with "
            f'backend="process" or "futures", whose workers may start processes'
        )
    raise ValueError(
        f"{api}(): {what} starts processes, and this process ignores SIGCHLD (SIG_IGN), so "
        f"the system reaps its children the moment they end and multiprocessing cannot wait "
        f"for them: restore the default first, signal.signal(signal.SIGCHLD, signal.SIG_DFL), "
        f'or use backend="thread"'
    )


#: What a map inside a daemonic worker can use instead of worker processes.
IN_A_DAEMON = 'use backend="thread" (or "serial") inside it'


def _no_processes() -> str | None:
    """Why this process cannot run worker processes, if it cannot: ``"daemonic"`` (a daemonic
    worker, whose children multiprocessing refuses with a bare ``AssertionError``),
    ``"finalizing"`` (the interpreter is shutting down: a process or a thread started now
    may hang in its start-up for good) or ``"sigchld"`` (SIGCHLD ignored: children are
    reaped unseen, so no exit code is ever known and ``Process.close()`` fails on workers
    that are long gone)."""
    if sys.is_finalizing():
        return "finalizing"
    if multiprocessing.current_process().daemon:
        return "daemonic"
    sigchld = getattr(signal, "SIGCHLD", None)
    if sigchld is not None and signal.getsignal(sigchld) == signal.SIG_IGN:
        return "sigchld"
    return None


def _choose_backend(
    api: str,
    backend: object,
    workers: int | None,
    start_method: str | None,
    total: int | None,
    limit_threads: bool,
    recycling: bool = False,
) -> Backend | Auto:
    if isinstance(backend, (Backend, cf.Executor)):
        return _given_backend(api, backend, workers, start_method)
    name = _backend_name(api, backend)
    count = workers or default_workers()
    if total is not None:
        count = max(1, min(count, total))
    threads = max(1, default_workers() // count) if limit_threads else None
    if name == "auto":
        if _measures(count, total, recycling):
            return Auto(count, start_method, total, threads)
        name = "serial"
    elif name != "serial" and sys.is_finalizing():
        raise ValueError(
            f"{api}(): backend={name!r} starts workers, and the interpreter is shutting down "
            "(this call runs during its finalization, from a __del__ or a late exit handler), "
            "when neither processes nor threads can be started dependably: use "
            "backend='serial' (the default, 'auto', does so by itself)"
        )
    elif start_method is not None and not backends.BACKENDS[name].processes:
        raise ValueError(f"{api}(): start_method= does not apply to the {name!r} backend")
    elif backends.BACKENDS[name].processes:
        check_may_start_processes(api, f"backend={name!r}", IN_A_DAEMON)
    return backends.create(name, count, start_method, threads)


def _measures(count: int, total: int | None, recycling: bool) -> bool:
    """Whether ``"auto"`` goes on to measure the function. Not with one worker or one item:
    nothing to share, so the caller runs it, unless workers are to be replaced (processes,
    then). Nor where worker processes cannot run (see ``_no_processes``): the caller is all
    there is."""
    several = count > 1 and (total is None or total > 1)
    return (several or recycling) and not _no_processes()


def _given_backend(
    api: str, backend: Backend | cf.Executor, workers: int | None, start_method: str | None
) -> Backend:
    """A backend or an executor passed as ``backend=``: used as it is."""
    if isinstance(backend, Backend):
        if workers is not None:
            raise ValueError(f"{api}(): workers= is for named backends; {backend!r} has its own")
        return backend
    if start_method is not None:
        raise ValueError(f"{api}(): start_method= does not apply to an executor you pass")
    return backends.wrap(backend, workers)


def _backend_name(api: str, backend: object) -> str:
    names = ["auto", *backends.BACKENDS]
    if not isinstance(backend, str):
        raise TypeError(
            f"{api}(): backend must be a name ({', '.join(names)}), a parmap Backend or a "
            f"concurrent.futures.Executor, got {type(backend).__name__}"
        )
    if backend not in names:
        raise ValueError(f"{api}(): unknown backend {backend!r}; valid: {', '.join(names)}")
    return backend


def _check_type(what: str, *expected: type) -> Callable[[str, str, object], None]:
    """A check that the value is one of ``expected`` (a bool is not taken for an int)."""

    def check(api: str, name: str, value: object) -> None:
        if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
            raise TypeError(f"{api}(): {name} must be {what}, got {type(value).__name__}")

    return check


def _check_initializer(api: str, name: str, value: object) -> None:
    if value is not None:
        check_callable(api, value, "initializer")


def _check_count(api: str, name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{api}(): {name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{api}(): {name} must be 0 or more, got {value}")


def _exception_types(api: str, value: object) -> tuple[type[BaseException], ...]:
    """``retry_on=``: a type or a tuple of types, as ``except`` takes them."""
    types = value if isinstance(value, tuple) else (value,)
    for kind in types:
        if not (isinstance(kind, type) and issubclass(kind, BaseException)):
            raise TypeError(
                f"{api}(): retry_on must be an exception type or a tuple of them, got {kind!r}"
            )
    return types


def _check_exception_types(api: str, value: object) -> None:
    _exception_types(api, value)


def _check_size(api: str, name: str, value: object) -> None:
    if value is not None:
        parse_bytes(api, name, value)


def _check_errors(api: str, errors: object) -> ErrorsOption:
    if errors == "raise" or errors == "return":
        return errors
    raise ValueError(f'{api}(): errors must be "raise" or "return", got {errors!r}')


def _check_path(api: str, name: str, value: object) -> None:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{api}(): {name} must be a path (str or os.PathLike) or None")


#: How each option is checked at call time, by name (``backend`` and ``progress`` are checked
#: where they are resolved). An option added to ``MapOptions`` gets its line here.
_CHECKS: dict[str, Callable[[str, str, object], None]] = {
    "workers": check_positive_int,
    "chunksize": check_positive_int,
    "timeout": lambda api, _, value: check_timeout(api, value),
    "start_method": lambda api, _, value: check_start_method(api, value),
    "initializer": _check_initializer,
    "initargs": _check_type("a tuple", tuple),
    "seed": _check_type("an int or None", int, type(None)),
    "limit_threads": _check_type("True or False", bool),
    "retries": _check_count,
    "retry_on": lambda api, _, value: _check_exception_types(api, value),
    "max_tasks_per_worker": check_positive_int,
    "max_memory_per_worker": lambda api, name, value: _check_size(api, name, value),
    "checkpoint": _check_path,
}


def _check_options(api: str, options: MapOptions) -> None:
    unknown = set(options) - set(MapOptions.__annotations__)
    if unknown:
        raise TypeError(
            f"{api}(): unknown option(s) {', '.join(sorted(unknown))}; "
            f"valid: {', '.join(MapOptions.__annotations__)}"
        )
    for name, value in options.items():
        check = _CHECKS.get(name)
        if check is not None:
            check(api, name, value)


def _check_engine(api: str, chosen: Backend | Auto, options: MapOptions, policy: LongRun) -> None:
    """What the chosen engine cannot honour is refused before work starts."""
    if options.get("timeout") is not None and not chosen.timeouts:
        raise ValueError(f"{api}(): timeout= cannot be enforced by {chosen!r}")
    if "retry_on" in options and not options.get("retries"):
        raise ValueError(f"{api}(): retry_on= needs retries= (how many more times to run)")
    for name in ("max_tasks_per_worker", "max_memory_per_worker"):
        if options.get(name) is not None and not chosen.recycles:
            raise ValueError(
                f"{api}(): {name}= cannot be honoured by {chosen!r}: {chosen.no_recycling}; use "
                f"backend='process' (or 'auto')"
            )
    if options.get("seed") is not None and chosen.threaded:
        raise ValueError(
            f"{api}(): seed= cannot hold on {chosen.workers} threads of one process: they share "
            "one random state, and another thread draws between an item's reseeding and its "
            "own draws; use backend='process' (or workers=1)"
        )


def _prepare(
    api: str,
    fn: Callable[..., Any],
    iterables: tuple[Iterable[Any], ...],
    star: bool,
    options: MapOptions,
    errors: object = "raise",
) -> _Plan:
    check_callable(api, fn)
    policy = LongRun(
        options.get("retries", 0),
        _exception_types(api, options.get("retry_on", ())),
        _check_errors(api, errors),
    )
    if not iterables:
        raise TypeError(f"{api}(): needs at least one iterable after the function")
    sources = [check_iterable(api, it, f"argument {n + 2}") for n, it in enumerate(iterables)]
    _check_options(api, options)
    total = _known_length(iterables)
    chosen = _choose_backend(
        api,
        options.get("backend", "auto"),
        options.get("workers"),
        options.get("start_method"),
        total,
        options.get("limit_threads", True),
        options.get("max_tasks_per_worker") is not None
        or options.get("max_memory_per_worker") is not None,
    )
    _check_engine(api, chosen, options, policy)
    items = sources[0] if len(sources) == 1 else zip(*sources, strict=False)
    whole = iterables[0] if len(iterables) == 1 and isinstance(iterables[0], range) else None
    reader = Reader(items, whole)
    seed, given = options.get("seed"), (fn, star)  # as given: what the checkpoint stores under
    if seed is not None:  # the index travels with each item; see _seeded
        fn, star, reader = Seeded(fn, seed, star), False, Reader(enumerate(items))
    initializer, initargs = options.get("initializer"), options.get("initargs", ())
    memory = options.get("max_memory_per_worker")
    call = Call(
        fn,
        star,
        options.get("timeout"),
        initializer,
        initargs,
        keep_going=policy.keep_going,
        max_tasks=options.get("max_tasks_per_worker"),
        max_memory=None if memory is None else parse_bytes(api, "", memory),
        inheritable=chosen.inherits,
    )
    if chosen.pickles:
        call.fn_bytes  # noqa: B018 - pickle the function now, so a failure is raised here
    progress = make_progress(api, options.get("progress", False), total)
    sizer = ChunkSizer(chosen.workers, total, options.get("chunksize"), chosen.largest_chunk(call))
    recovery = Recovery(policy)
    path, resume = options.get("checkpoint"), None
    if path is not None:  # last: it holds the file until the map ends
        shape = (*given, seed, initializer, initargs)
        resume = Resume.open(api, path, shape, recovery.summary)
    return _Plan(chosen, call, reader, sizer, progress, recovery, resume)


# -- the dispatch loop ---------------------------------------------------------------------------


def _drive(plan: _Plan, *, ordered: bool, bounded: bool) -> Iterator[list[Any]]:
    """Yield lists of results (in input order if ``ordered``); raise the loop's first error.

    ``"auto"`` first runs its probe here and names the engine for the rest. Where that engine
    runs everything in the caller anyway and no per-chunk feature is asked for, ``pmap`` maps
    the rest in one comprehension, the loop's own speed; otherwise the dispatch loop runs it.
    """
    call, reader, progress = plan.call, plan.items, plan.progress
    try:
        backend = plan.backend
        if isinstance(backend, Auto) and plan.resume is not None:
            backend = backend.to_workers(call)  # every item goes through the checkpoint
        elif isinstance(backend, Auto):
            backend = yield from backend.probe(call, reader, plan.sizer, progress)
        plain = call.timeout is None and call.initializer is None and not call.keep_going
        plain = plain and plan.resume is None
        if backend.runs_in_caller and plain and not bounded and progress is None:
            yield run_rest(call.fn, call.star, reader.position, reader.rest())
            return
        yield from dispatch(
            backend,
            call,
            reader,
            plan.sizer,
            progress,
            plan.recovery,
            plan.resume,
            ordered=ordered,
            bounded=bounded,
        )
    finally:
        if progress is not None:
            progress.close()
        if plan.resume is not None:
            plan.resume.close()


class MapIterator(Iterator[R], Generic[R]):
    """What [`imap`][parmap.imap] returns: an iterator that can be closed, and a context manager.

    Closing it (or dropping the last reference, or leaving the ``with`` block) stops the
    workers at once; items not yet read from the input are never read.
    """

    def __init__(self, chunks: Iterator[list[Any]], summary: Summary | None = None) -> None:
        self._chunks = chunks
        #: What the map went through so far: retries, failures, recycled workers, results read
        #: from the checkpoint (see [`Summary`][parmap.Summary]); final once it is exhausted.
        self.summary = Summary() if summary is None else summary
        #: The current chunk's results not yet handed out, last first: each is popped as it is
        #: handed out, so that parmap holds no reference to a result the consumer has
        #: (CPython's ``test_free_reference``, bpo-14406).
        self._current: list[Any] = []

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> R:
        while not self._current:
            self._current = next(self._chunks)
            self._current.reverse()
        return self._current.pop()  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop the workers; later ``next()`` calls raise ``StopIteration``."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        self._chunks = iter(())
        self._current = []

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
