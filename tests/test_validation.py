"""Bad arguments fail at call time, with a message naming the problem, before any work starts."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from parmap import imap, pmap, pstarmap, queue_collect, run_processes

from .helpers import children


def untouched() -> Iterator[int]:
    raise AssertionError("the input was read although the arguments are invalid")
    yield 0  # pragma: no cover


API: list[Callable[..., Any]] = [pmap, imap, pstarmap]

CASES: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"workers": 0}, ValueError, "workers must be at least 1, got 0"),
    ({"workers": -3}, ValueError, "workers must be at least 1"),
    ({"workers": 2.5}, TypeError, "workers must be an int"),
    ({"workers": True}, TypeError, "workers must be an int"),
    ({"chunksize": 0}, ValueError, "chunksize must be at least 1, got 0"),
    ({"chunksize": "8"}, TypeError, "chunksize must be an int"),
    ({"timeout": 0}, ValueError, "timeout must be a positive, finite number, got 0"),
    ({"timeout": -1.5}, ValueError, "timeout must be a positive"),
    ({"timeout": float("inf")}, ValueError, "timeout must be a positive, finite"),
    ({"timeout": float("nan")}, ValueError, "timeout must be a positive"),
    ({"timeout": "1"}, TypeError, "timeout must be a number"),
    ({"backend": "gpu"}, ValueError, "unknown backend 'gpu'; valid: auto, process, pool"),
    ({"backend": 3}, TypeError, "backend must be a name"),
    ({"start_method": "vfork"}, ValueError, "unknown start_method 'vfork'; valid: fork"),
    ({"backend": "thread", "start_method": "spawn"}, ValueError, "start_method= does not apply"),
    ({"backend": "serial", "start_method": "fork"}, ValueError, "start_method= does not apply"),
]


@pytest.mark.parametrize("api", API, ids=lambda f: f.__name__)
@pytest.mark.parametrize(("options", "error", "message"), CASES)
def test_bad_option_fails_before_work(
    api: Callable[..., Any], options: dict[str, Any], error: type[Exception], message: str
) -> None:
    before = children()
    with pytest.raises(error, match=message.replace("(", r"\(").replace(".", r"\.")):
        api(abs, untouched(), **options)
    assert children() == before


@pytest.mark.parametrize("api", API, ids=lambda f: f.__name__)
def test_non_callable_is_a_type_error(api: Callable[..., Any]) -> None:
    with pytest.raises(TypeError, match=r"the function must be callable, got int"):
        api(42, untouched())


@pytest.mark.parametrize("api", API, ids=lambda f: f.__name__)
def test_non_iterable_is_a_type_error(api: Callable[..., Any]) -> None:
    with pytest.raises(TypeError, match=r"argument 2 must be iterable, got int"):
        api(abs, 7)


def test_pmap_needs_an_iterable() -> None:
    with pytest.raises(TypeError, match="needs at least one iterable"):
        pmap(abs)  # type: ignore[call-overload]


def test_imap_ordered_must_be_bool() -> None:
    with pytest.raises(TypeError, match="ordered must be True or False"):
        imap(abs, [1], ordered="yes")  # type: ignore[call-overload]


def test_unpicklable_function_fails_at_call_time() -> None:
    import threading

    lock = threading.Lock()
    from parmap import TaskPicklingError

    with pytest.raises(TaskPicklingError, match="could not be pickled"):
        imap(lambda x: (lock, x), untouched(), backend="process")


def test_foreign_process_executor_rejects_timeout() -> None:
    import concurrent.futures as cf

    with cf.ProcessPoolExecutor(1) as executor, pytest.raises(ValueError, match="timeout="):
        pmap(abs, untouched(), backend=executor, timeout=1)


# Deliberately ill-typed calls: the untyped alias keeps mypy out of what is tested at run time.
untyped_run_processes: Any = run_processes
untyped_queue_collect: Any = queue_collect


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: untyped_run_processes(5, [()]), TypeError, "the target must be callable"),
        (lambda: untyped_run_processes(abs, 5), TypeError, "args_list must be iterable"),
        (lambda: untyped_run_processes(abs, [1]), TypeError, r"args_list\[0\] must be a tuple"),
        (lambda: run_processes(abs, [(1,)], timeout=0), ValueError, "timeout must be"),
        (lambda: run_processes(abs, [(1,)], start_method="x"), ValueError, "start_method"),
        (
            lambda: untyped_queue_collect(abs, [(1,)], channel="socket"),
            ValueError,
            "unknown channel 'socket'; valid: queue, pipe, manager",
        ),
        (lambda: untyped_queue_collect(abs, [[1]]), TypeError, "must be a tuple"),
    ],
)
def test_process_api_validation(
    call: Callable[[], Any], error: type[Exception], message: str
) -> None:
    before = children()
    with pytest.raises(error, match=message):
        call()
    assert children() == before


def test_imap_starts_nothing_until_iterated() -> None:
    before = children()
    it = imap(abs, itertools.count(), backend="process")
    assert children() == before
    it.close()


def test_backend_names_type_lists_every_registered_engine() -> None:
    """``BackendName`` (the ``Literal`` a typo fails mypy on) names "auto" and the registry."""
    from typing import get_args

    from parmap import BackendName
    from parmap.backends import BACKENDS

    assert set(get_args(BackendName)) == {"auto", *BACKENDS}
