"""``apmap`` and ``aimap``: ``pmap`` and ``imap`` for async code, under asyncio or Trio (AnyIO).

The map is the one ``pmap`` and ``imap`` run: the same checks, at call time (``_api._prepare``),
and the same dispatch loop (``_api._drive``), which yields one list of results per chunk. That
loop blocks, so it runs on a worker thread (``anyio.to_thread.run_sync``) while the event loop
only waits for it. ``apmap`` makes one hop: the thread runs the whole map and hands back the
list. ``aimap`` makes one hop per batch: an ``__anext__`` that has used up its batch asks the
thread for the next chunk's results, so results cross a chunk at a time, never an item at a
time, and the loop advances only when the consumer asks: a slow consumer stops the reading of
input, as with ``imap``.

Cancellation. A generator running on another thread cannot be closed, and the thread is
blocked in the backend's ``wait()``. So each hop runs as a child task, and the awaiting task
waits for it; when that task is cancelled (an AnyIO cancel scope or timeout, ``task.cancel()``,
``asyncio.wait_for``, a Trio cancel), it calls ``_Run.interrupt()``: a flag, which the input
reader sees (no further input is read, so no further chunk starts) and the thread sees between
chunks (it closes the dispatch loop, whose ``finally`` stops the backend as for any aborted
call), and ``Backend.interrupt()`` on the engine, which on engines whose items run in worker
processes they own (``"process"``, ``"pool"``, ``"futures"``, and ``"auto"`` once it has sent
the work to ``"process"`` workers) kills the workers holding the call's chunks, so that the
blocked ``wait()`` returns. The cancelled task then waits, shielded, for the thread to finish,
interrupting again every ``INTERRUPT_AGAIN`` seconds (for workers started after a look: a cancel
during start-up): once the cancellation completes, no worker of the call is left, and the next
call starts fresh ones.

Where items run in threads or in the caller (``"thread"``, ``"serial"``, ``"auto"`` while it
probes or once it keeps the work in the caller, an executor you pass, ``"dask"``) a running item
cannot be interrupted: cancellation takes effect once the items running return (in ``"serial"``
and ``"auto"``, after the current item; no further item starts).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar, overload

from typing_extensions import Self, Unpack

from ._api import MapOptions, _drive, _Plan, _prepare
from ._auto import Auto
from ._dispatch import Reader
from ._maps import _collect
from ._recovery import ErrorsOption

__all__ = ["AsyncMapIterator", "aimap", "apmap"]

R = TypeVar("R")
T = TypeVar("T")
T1 = TypeVar("T1")
T2 = TypeVar("T2")
T3 = TypeVar("T3")
T4 = TypeVar("T4")

#: While a cancelled task waits for the map's thread, how often the map is interrupted again.
INTERRUPT_AGAIN = 0.1

#: What to install when AnyIO is missing.
EXTRA = "pip install 'parmap-typed[async]'"


def _require_anyio(api: str) -> None:
    """Raise ``ImportError`` naming the extra if AnyIO is not installed (``import parmap`` does
    not need it: it is imported here, on first use)."""
    try:
        import anyio  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{api}() needs AnyIO (anyio>=4): {EXTRA}", name="anyio") from exc


class _Stoppable(Reader):
    """The call's input, which yields nothing more once the map is interrupted."""

    def __init__(self, inner: Reader, run: _Run) -> None:
        super().__init__(iter(()))
        self._inner, self._run = inner, run
        self.position = inner.position

    def take(self, count: int) -> Sequence[Any]:
        if self._run.interrupted:
            return []
        part = self._inner.take(count)
        self.position = self._inner.position
        return part

    def rest(self) -> Iterator[Any]:
        return self._until_interrupted(self._inner.rest())

    def _until_interrupted(self, items: Iterator[Any]) -> Iterator[Any]:
        run = self._run
        for item in items:
            if run.interrupted:
                return
            yield item


class _Run:
    """One map, run by the map's thread, interruptible from the event loop's.

    ``step`` and ``close`` run on the map's thread (one at a time); ``interrupt`` on the event
    loop's, at any time.
    """

    def __init__(self, plan: _Plan, *, ordered: bool, bounded: bool) -> None:
        self.interrupted = False
        #: Whether the dispatch loop has ended (finished, raised, or closed).
        self.done = False
        self._backend = plan.backend
        self.summary = plan.recovery.summary
        plan.items = _Stoppable(plan.items, self)
        self._chunks = _drive(plan, ordered=ordered, bounded=bounded)
        self._lock = threading.Lock()

    def interrupt(self) -> None:
        """Have the map's thread return soon, the map stopped (see the module docstring)."""
        self.interrupted = True
        backend = self._backend
        engine = backend.engine if isinstance(backend, Auto) else backend
        if engine is not None and not self.done:
            engine.interrupt()

    def step(self) -> list[Any] | None:
        """The next chunk's results; ``None`` at the end, or once interrupted (then the loop is
        closed: its backend stopped)."""
        with self._lock:
            if self.done:
                return None
            try:
                batch = None if self.interrupted else next(self._chunks, None)
            except BaseException:
                self.done = True  # the loop raised: it is over, its backend stopped
                raise
            if batch is None or self.interrupted:
                self._close()
                return None
            return batch

    def collect(self) -> list[Any]:
        """Every result, in order (``apmap``)."""
        return _collect(iter(self.step, None))

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        self.done = True
        close = getattr(self._chunks, "close", None)  # a generator: its finally stops the backend
        if close is not None:
            close()


async def _in_thread(run: _Run, work: Callable[[], T]) -> T:
    """``work()`` on a worker thread. If the awaiting task is cancelled meanwhile, the map is
    interrupted and the thread waited for (shielded), then the cancellation goes on."""
    import anyio

    finished = anyio.Event()
    outcome: list[Any] = []  # [True, value] or [False, exception]

    async def hop() -> None:
        try:
            # Not abandoned on cancel: this task waits for the thread, whatever happens.
            outcome[:] = [True, await anyio.to_thread.run_sync(work)]
        except anyio.get_cancelled_exc_class():
            raise  # cancelled before the thread started: so was the awaiting task
        except BaseException as exc:
            outcome[:] = [False, exc]
        finally:
            finished.set()

    async with anyio.create_task_group() as group:
        group.start_soon(hop)
        try:
            await finished.wait()
        except BaseException:  # cancelled (asyncio's own cancel, too, arrives here)
            with anyio.CancelScope(shield=True):
                while not finished.is_set():
                    run.interrupt()
                    with anyio.move_on_after(INTERRUPT_AGAIN):
                        await finished.wait()
            raise
    ok, value = outcome
    if not ok:
        try:
            raise value
        finally:
            del value, outcome  # no cycle through this frame
    return value  # type: ignore[no-any-return]


# -- apmap ---------------------------------------------------------------------------------------


@overload
def apmap(
    fn: Callable[[T1], R],
    it1: Iterable[T1],
    /,
    *,
    errors: Literal["raise"] = "raise",
    **options: Unpack[MapOptions],
) -> Coroutine[Any, Any, list[R]]: ...
@overload
def apmap(
    fn: Callable[[T1], R],
    it1: Iterable[T1],
    /,
    *,
    errors: Literal["return"],
    **options: Unpack[MapOptions],
) -> Coroutine[Any, Any, list[R | Exception]]: ...
@overload
def apmap(
    fn: Callable[[T1, T2], R],
    it1: Iterable[T1],
    it2: Iterable[T2],
    /,
    *,
    errors: Literal["raise"] = "raise",
    **options: Unpack[MapOptions],
) -> Coroutine[Any, Any, list[R]]: ...
@overload
def apmap(
    fn: Callable[[T1, T2], R],
    it1: Iterable[T1],
    it2: Iterable[T2],
    /,
    *,
    errors: Literal["return"],
    **options: Unpack[MapOptions],
) -> Coroutine[Any, Any, list[R | Exception]]: ...
@overload
def apmap(
    fn: Callable[[T1, T2, T3], R],
    it1: Iterable[T1],
    it2: Iterable[T2],
    it3: Iterable[T3],
    /,
    *,
    errors: Literal["raise"] = "raise",
    **options: Unpack[MapOptions],
) -> Coroutine[Any, Any, list[R]]: ...
@overload
def apmap(
    fn: Callable[[T1, T2, T3], R],
    it1: Iterable[T1],
    it2: Iterable[T2],
    it3: Iterable[T3],
    /,
    *,
    errors: Literal["return"],
    **options: Unpack[MapOptions],
) -> Coroutine[Any, Any, list[R | Exception]]: ...
@overload
def apmap(
    fn: Callable[[T1, T2, T3, T4], R],
    it1: Iterable[T1],
    it2: Iterable[T2],
    it3: Iterable[T3],
    it4: Iterable[T4],
    /,
    *,
    errors: Literal["raise"] = "raise",
    **options: Unpack[MapOptions],
) -> Coroutine[Any, Any, list[R]]: ...
@overload
def apmap(
    fn: Callable[[T1, T2, T3, T4], R],
    it1: Iterable[T1],
    it2: Iterable[T2],
    it3: Iterable[T3],
    it4: Iterable[T4],
    /,
    *,
    errors: Literal["return"],
    **options: Unpack[MapOptions],
) -> Coroutine[Any, Any, list[R | Exception]]: ...
@overload
def apmap(
    fn: Callable[..., R],
    it1: Iterable[Any],
    it2: Iterable[Any],
    it3: Iterable[Any],
    it4: Iterable[Any],
    it5: Iterable[Any],
    /,
    *iterables: Iterable[Any],
    errors: Literal["raise"] = "raise",
    **options: Unpack[MapOptions],
) -> Coroutine[Any, Any, list[R]]: ...
@overload
def apmap(
    fn: Callable[..., R],
    it1: Iterable[Any],
    it2: Iterable[Any],
    it3: Iterable[Any],
    it4: Iterable[Any],
    it5: Iterable[Any],
    /,
    *iterables: Iterable[Any],
    errors: Literal["return"],
    **options: Unpack[MapOptions],
) -> Coroutine[Any, Any, list[R | Exception]]: ...
def apmap(
    fn: Callable[..., Any],
    /,
    *iterables: Iterable[Any],
    errors: ErrorsOption = "raise",
    **options: Unpack[MapOptions],
) -> Coroutine[Any, Any, list[Any]]:
    """[`pmap`][parmap.pmap] for async code: ``await apmap(fn, xs)`` is ``pmap(fn, xs)``, and
    the event loop runs on meanwhile (asyncio or Trio; needs the ``async`` extra: AnyIO).

    The map runs on a worker thread; the results come back in one list. Options, results and
    errors are ``pmap``'s: arguments are checked when ``apmap(...)`` is called, before any work
    starts; the first failing item's exception is raised from the ``await``.

    Cancelling the awaiting task (a cancel scope, a timeout, ``task.cancel()``) stops the map:
    worker processes running its items are killed, and the cancellation completes once none is
    left. Items running in threads or in the caller (``"thread"``, ``"serial"``, ``"auto"``
    when it keeps the work here) cannot be interrupted: it completes once they return.

    Raises:
        ImportError: AnyIO is not installed (``pip install 'parmap-typed[async]'``).
        TypeError, ValueError: bad arguments, before any work starts.
    """
    _require_anyio("apmap")
    plan = _prepare("apmap", fn, iterables, len(iterables) > 1, options, errors)
    return _apmap(_Run(plan, ordered=True, bounded=False))


async def _apmap(run: _Run) -> list[Any]:
    return await _in_thread(run, run.collect)


# -- aimap ---------------------------------------------------------------------------------------


class AsyncMapIterator(AsyncIterator[R], Generic[R]):
    """What [`aimap`][parmap.aimap] returns: an async iterator that can be closed, and an async
    context manager.

    Closing it (``await it.aclose()``, or leaving the ``async with`` block) stops the workers;
    items not yet read from the input are never read. Breaking out of an ``async for`` does not
    close it: use ``async with``.
    """

    def __init__(self, run: _Run) -> None:
        self._run = run
        #: What the map went through so far (see [`Summary`][parmap.Summary]).
        self.summary = run.summary
        #: The current batch, last first: each result is popped as it is handed out.
        self._current: list[Any] = []

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> R:
        while not self._current:
            batch = None if self._run.done else await _in_thread(self._run, self._run.step)
            if batch is None:
                raise StopAsyncIteration
            batch.reverse()
            self._current = batch
        return self._current.pop()  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        """Stop the workers; later ``__anext__`` calls raise ``StopAsyncIteration``."""
        import anyio

        self._current = []
        if self._run.done:
            return
        self._run.interrupt()  # a batch being fetched by another task comes back soon
        with anyio.CancelScope(shield=True):
            await _in_thread(self._run, self._run.close)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


@overload
def aimap(
    fn: Callable[[T1], R],
    it1: Iterable[T1],
    /,
    *,
    ordered: bool = True,
    errors: Literal["raise"] = "raise",
    **options: Unpack[MapOptions],
) -> AsyncMapIterator[R]: ...
@overload
def aimap(
    fn: Callable[[T1], R],
    it1: Iterable[T1],
    /,
    *,
    ordered: bool = True,
    errors: Literal["return"],
    **options: Unpack[MapOptions],
) -> AsyncMapIterator[R | Exception]: ...
@overload
def aimap(
    fn: Callable[[T1, T2], R],
    it1: Iterable[T1],
    it2: Iterable[T2],
    /,
    *,
    ordered: bool = True,
    errors: Literal["raise"] = "raise",
    **options: Unpack[MapOptions],
) -> AsyncMapIterator[R]: ...
@overload
def aimap(
    fn: Callable[[T1, T2], R],
    it1: Iterable[T1],
    it2: Iterable[T2],
    /,
    *,
    ordered: bool = True,
    errors: Literal["return"],
    **options: Unpack[MapOptions],
) -> AsyncMapIterator[R | Exception]: ...
@overload
def aimap(
    fn: Callable[[T1, T2, T3], R],
    it1: Iterable[T1],
    it2: Iterable[T2],
    it3: Iterable[T3],
    /,
    *,
    ordered: bool = True,
    errors: Literal["raise"] = "raise",
    **options: Unpack[MapOptions],
) -> AsyncMapIterator[R]: ...
@overload
def aimap(
    fn: Callable[[T1, T2, T3], R],
    it1: Iterable[T1],
    it2: Iterable[T2],
    it3: Iterable[T3],
    /,
    *,
    ordered: bool = True,
    errors: Literal["return"],
    **options: Unpack[MapOptions],
) -> AsyncMapIterator[R | Exception]: ...
@overload
def aimap(
    fn: Callable[..., R],
    it1: Iterable[Any],
    it2: Iterable[Any],
    it3: Iterable[Any],
    it4: Iterable[Any],
    /,
    *iterables: Iterable[Any],
    ordered: bool = True,
    errors: Literal["raise"] = "raise",
    **options: Unpack[MapOptions],
) -> AsyncMapIterator[R]: ...
@overload
def aimap(
    fn: Callable[..., R],
    it1: Iterable[Any],
    it2: Iterable[Any],
    it3: Iterable[Any],
    it4: Iterable[Any],
    /,
    *iterables: Iterable[Any],
    ordered: bool = True,
    errors: Literal["return"],
    **options: Unpack[MapOptions],
) -> AsyncMapIterator[R | Exception]: ...
def aimap(
    fn: Callable[..., Any],
    /,
    *iterables: Iterable[Any],
    ordered: bool = True,
    errors: ErrorsOption = "raise",
    **options: Unpack[MapOptions],
) -> AsyncMapIterator[Any]:
    """[`imap`][parmap.imap] for async code: ``async for r in aimap(fn, xs)``, the event loop
    running on meanwhile (asyncio or Trio; needs the ``async`` extra: AnyIO).

    Results cross from the map's thread a chunk at a time; input is read as they are consumed
    (a slow consumer stops the reading of input), and ``ordered=False`` yields them as they
    finish. Arguments are checked now, when ``aimap(...)`` is called; workers start at the first
    ``__anext__``. Use it in an ``async with`` block (or ``await it.aclose()``) to stop the
    workers early. Cancelling a task waiting in ``__anext__`` stops the map as for
    [`apmap`][parmap.apmap], and the iterator ends.

    Raises:
        ImportError: AnyIO is not installed (``pip install 'parmap-typed[async]'``).
        TypeError, ValueError: bad arguments, before any work starts.
    """
    _require_anyio("aimap")
    if not isinstance(ordered, bool):
        raise TypeError("aimap(): ordered must be True or False")
    plan = _prepare("aimap", fn, iterables, len(iterables) > 1, options, errors)
    return AsyncMapIterator(_Run(plan, ordered=ordered, bounded=True))
