"""``pmap``, ``imap`` and ``pstarmap``: the typed signatures, over ``_api``'s plan of a call.

Each function has an overload per arity (so that ``pmap(f, xs, ys)`` checks ``f`` against the
items' types) times the two values of ``errors=``: with the default, ``"raise"``, a result list
is ``list[R]``; with ``"return"``, a failed item's slot holds its exception, and the list is
``list[R | Exception]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, TypeVar, overload

from typing_extensions import TypeVarTuple, Unpack

from ._api import MapIterator, MapOptions, _drive, _prepare
from ._recovery import ErrorsOption

__all__ = ["imap", "pmap", "pstarmap"]

R = TypeVar("R")
T1 = TypeVar("T1")
T2 = TypeVar("T2")
T3 = TypeVar("T3")
T4 = TypeVar("T4")
Ts = TypeVarTuple("Ts")


@overload
def pmap(
    fn: Callable[[T1], R],
    it1: Iterable[T1],
    /,
    *,
    errors: Literal["raise"] = "raise",
    **options: Unpack[MapOptions],
) -> list[R]: ...
@overload
def pmap(
    fn: Callable[[T1], R],
    it1: Iterable[T1],
    /,
    *,
    errors: Literal["return"],
    **options: Unpack[MapOptions],
) -> list[R | Exception]: ...
@overload
def pmap(
    fn: Callable[[T1, T2], R],
    it1: Iterable[T1],
    it2: Iterable[T2],
    /,
    *,
    errors: Literal["raise"] = "raise",
    **options: Unpack[MapOptions],
) -> list[R]: ...
@overload
def pmap(
    fn: Callable[[T1, T2], R],
    it1: Iterable[T1],
    it2: Iterable[T2],
    /,
    *,
    errors: Literal["return"],
    **options: Unpack[MapOptions],
) -> list[R | Exception]: ...
@overload
def pmap(
    fn: Callable[[T1, T2, T3], R],
    it1: Iterable[T1],
    it2: Iterable[T2],
    it3: Iterable[T3],
    /,
    *,
    errors: Literal["raise"] = "raise",
    **options: Unpack[MapOptions],
) -> list[R]: ...
@overload
def pmap(
    fn: Callable[[T1, T2, T3], R],
    it1: Iterable[T1],
    it2: Iterable[T2],
    it3: Iterable[T3],
    /,
    *,
    errors: Literal["return"],
    **options: Unpack[MapOptions],
) -> list[R | Exception]: ...
@overload
def pmap(
    fn: Callable[[T1, T2, T3, T4], R],
    it1: Iterable[T1],
    it2: Iterable[T2],
    it3: Iterable[T3],
    it4: Iterable[T4],
    /,
    *,
    errors: Literal["raise"] = "raise",
    **options: Unpack[MapOptions],
) -> list[R]: ...
@overload
def pmap(
    fn: Callable[[T1, T2, T3, T4], R],
    it1: Iterable[T1],
    it2: Iterable[T2],
    it3: Iterable[T3],
    it4: Iterable[T4],
    /,
    *,
    errors: Literal["return"],
    **options: Unpack[MapOptions],
) -> list[R | Exception]: ...
@overload
def pmap(
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
) -> list[R]: ...
@overload
def pmap(
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
) -> list[R | Exception]: ...
def pmap(
    fn: Callable[..., Any],
    /,
    *iterables: Iterable[Any],
    errors: ErrorsOption = "raise",
    **options: Unpack[MapOptions],
) -> list[Any]:
    """``list(map(fn, *iterables))``, computed in parallel.

    Results come back in input order. If items raise, the exception of the first failing item
    is raised, as the loop would raise it, with the worker's traceback as its ``__cause__``;
    work still outstanding is cancelled and its workers stopped. With ``errors="return"``
    every item runs, and a failed item's slot holds its exception instead (see the
    "Long-running maps" page, with ``retries``, worker recycling and ``checkpoint``).

    Args:
        fn: any callable; lambdas, closures and ``functools.partial`` objects work everywhere.
        iterables: one or more; with several, ``fn`` gets one item from each, like ``map``.
        errors: ``"raise"`` (default) or ``"return"``.
        options: ``workers``, ``backend``, ``chunksize``, ``timeout``, ``seed``, ``retries``
            and the rest of [`MapOptions`][parmap.MapOptions].

    Raises:
        TypeError, ValueError: bad arguments, before any work starts.
        WorkerCrashedError: a worker process died; names the item and the exit code or signal.
        TaskTimeoutError: an item ran longer than ``timeout``.
        TaskExitError: the function called ``sys.exit()``.
        SerializationError: an item, result or exception could not cross between processes.
    """
    plan = _prepare("pmap", fn, iterables, len(iterables) > 1, options, errors)
    return _collect(_drive(plan, ordered=True, bounded=False))


def _collect(chunks: Iterator[list[Any]]) -> list[Any]:
    results: list[Any] = []
    for chunk in chunks:
        if len(chunk) > len(results):
            chunk[:0] = results  # a move of the big list, rather than a copy of every item
            results = chunk
        else:
            results += chunk
    return results


@overload
def imap(
    fn: Callable[[T1], R],
    it1: Iterable[T1],
    /,
    *,
    ordered: bool = True,
    errors: Literal["raise"] = "raise",
    **options: Unpack[MapOptions],
) -> MapIterator[R]: ...
@overload
def imap(
    fn: Callable[[T1], R],
    it1: Iterable[T1],
    /,
    *,
    ordered: bool = True,
    errors: Literal["return"],
    **options: Unpack[MapOptions],
) -> MapIterator[R | Exception]: ...
@overload
def imap(
    fn: Callable[[T1, T2], R],
    it1: Iterable[T1],
    it2: Iterable[T2],
    /,
    *,
    ordered: bool = True,
    errors: Literal["raise"] = "raise",
    **options: Unpack[MapOptions],
) -> MapIterator[R]: ...
@overload
def imap(
    fn: Callable[[T1, T2], R],
    it1: Iterable[T1],
    it2: Iterable[T2],
    /,
    *,
    ordered: bool = True,
    errors: Literal["return"],
    **options: Unpack[MapOptions],
) -> MapIterator[R | Exception]: ...
@overload
def imap(
    fn: Callable[[T1, T2, T3], R],
    it1: Iterable[T1],
    it2: Iterable[T2],
    it3: Iterable[T3],
    /,
    *,
    ordered: bool = True,
    errors: Literal["raise"] = "raise",
    **options: Unpack[MapOptions],
) -> MapIterator[R]: ...
@overload
def imap(
    fn: Callable[[T1, T2, T3], R],
    it1: Iterable[T1],
    it2: Iterable[T2],
    it3: Iterable[T3],
    /,
    *,
    ordered: bool = True,
    errors: Literal["return"],
    **options: Unpack[MapOptions],
) -> MapIterator[R | Exception]: ...
@overload
def imap(
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
) -> MapIterator[R]: ...
@overload
def imap(
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
) -> MapIterator[R | Exception]: ...
def imap(
    fn: Callable[..., Any],
    /,
    *iterables: Iterable[Any],
    ordered: bool = True,
    errors: ErrorsOption = "raise",
    **options: Unpack[MapOptions],
) -> MapIterator[Any]:
    """A lazy [`pmap`][parmap.pmap]: results as you iterate, input read as they are consumed.

    At most a few chunks per worker are in flight or waiting to be read, so an endless generator
    works and memory stays flat. ``ordered=False`` yields results as they finish. Arguments are
    checked now; workers start at the first ``next()``. Close the iterator (or use it in a
    ``with`` block) to stop the workers early. With ``errors="return"`` failed items yield their
    exception in place; ``.summary`` says what the map went through.
    """
    if not isinstance(ordered, bool):
        raise TypeError("imap(): ordered must be True or False")
    plan = _prepare("imap", fn, iterables, len(iterables) > 1, options, errors)
    return MapIterator(_drive(plan, ordered=ordered, bounded=True), plan.recovery.summary)


@overload
def pstarmap(
    fn: Callable[[Unpack[Ts]], R],
    iterable: Iterable[tuple[Unpack[Ts]]],
    /,
    *,
    errors: Literal["raise"] = "raise",
    **options: Unpack[MapOptions],
) -> list[R]: ...
@overload
def pstarmap(
    fn: Callable[[Unpack[Ts]], R],
    iterable: Iterable[tuple[Unpack[Ts]]],
    /,
    *,
    errors: Literal["return"],
    **options: Unpack[MapOptions],
) -> list[R | Exception]: ...
def pstarmap(
    fn: Callable[..., Any],
    iterable: Iterable[Any],
    /,
    *,
    errors: ErrorsOption = "raise",
    **options: Unpack[MapOptions],
) -> list[Any]:
    """``list(itertools.starmap(fn, iterable))``, computed in parallel; options as in
    [`pmap`][parmap.pmap]."""
    plan = _prepare("pstarmap", fn, (iterable,), True, options, errors)
    return _collect(_drive(plan, ordered=True, bounded=False))
