"""The Dask backend against real clusters on loopback: the session's LocalCluster (``client``,
in conftest, which the contract tests of the ``engine`` fixture share), and a scheduler and a
worker started from the command line and reached by address."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

import parmap  # noqa: E402
from parmap import RemoteTraceback, WorkerCrashedError, imap, pmap  # noqa: E402
from parmap.backends import DaskBackend  # noqa: E402
from parmap.backends._dask import INLINE_LIMIT  # noqa: E402

pytestmark = pytest.mark.timeout(120)


@contextmanager
def _cluster(config: dict[str, Any] | None = None) -> Iterator[Any]:
    """A 2-worker LocalCluster (processes, nannies) and its client. ``config`` is set while the
    cluster starts: the scheduler reads its settings then, and nothing else is changed."""
    with dask.config.set(config or {}):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
            scheduler_port=0, dashboard_address="127.0.0.1:0", silence_logs=logging.CRITICAL,
        )  # fmt: skip
    with cluster, distributed.Client(cluster) as c:
        yield c


def _allowed_failures(dask_scheduler: Any) -> int:
    return int(dask_scheduler.allowed_failures)


#: The killed-worker cases: the Dask config, and how big the function is (a function over
#: INLINE_LIMIT pickled is a task of its own that every chunk depends on; see _dask.py).
CRASH_CASES = [("default config", "inline"), ("default config", "as a task"),
               ("allowed-failures 0", "inline")]  # fmt: skip
CONFIGS = {
    "default config": {},
    "allowed-failures 0": {"distributed.scheduler.allowed-failures": 0},
}


@pytest.fixture(params=CRASH_CASES, ids=" - ".join)
def crash_client(request: pytest.FixtureRequest, client: Any) -> Iterator[tuple[Any, str, str]]:
    """A cluster of its own for a test that kills workers, closed before the leak guard looks;
    with the case's config and function size.

    Shared, it would outlive the kills: LocalCluster closes a nanny whose worker is missing
    ``distributed.deploy.lost-worker-timeout`` (15 s) after one of its deaths, which shrank a
    cluster killed again at that moment for good, and slowed the session cluster's close by
    8 s when it came then. (``client``: Dask's own threads are started before the guard
    counts.)
    """
    config, size = request.param
    with _cluster(CONFIGS[config]) as c:
        yield c, config, size


def square(x: int) -> int:
    return x * x


def test_ordered_map(client: Any) -> None:
    assert pmap(square, range(100), backend=DaskBackend(client)) == [x * x for x in range(100)]


def test_unordered_imap_and_lambdas(client: Any) -> None:
    got = imap(lambda x: x + 1, range(50), backend=DaskBackend(client), ordered=False)
    assert sorted(got) == list(range(1, 51))


def test_the_remote_exception_keeps_type_and_traceback(client: Any) -> None:
    def fail(x: int) -> int:
        if x == 7:
            raise KeyError("seven")
        return x

    with pytest.raises(KeyError, match="seven") as info:
        pmap(fail, range(20), backend=DaskBackend(client), chunksize=3)
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "in fail" in str(info.value.__cause__)


def _killer(blob: bytes) -> Callable[[int], int]:
    """A function whose item 3 SIGKILLs its worker, pickled with ``blob`` (by value)."""

    def die(x: int) -> int:
        if x == 3 and blob:
            # A worker reports finished tasks every 2 ms: killed sooner, it takes the news of
            # the chunk it just finished along, and Dask blames that chunk too (see _dask.py).
            time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGKILL)
        return x + len(blob) * 0

    return die


@pytest.mark.timeout(180)
def test_a_killed_worker_is_a_crash_and_the_cluster_heals(
    crash_client: tuple[Any, str, str],
) -> None:
    client, config, size = crash_client
    tries = client.run_on_scheduler(_allowed_failures) + 1
    if config == "default config":
        assert tries > 1  # Dask retries a task whose worker died (3 times by default)
    else:
        assert tries == 1
    blob = b"x" * (INLINE_LIMIT + 1 if size == "as a task" else 1)
    die = _killer(blob)

    with pytest.raises(WorkerCrashedError) as info:
        pmap(die, range(6), backend=DaskBackend(client), chunksize=1)
    error = info.value
    assert type(error.__cause__).__name__ == "KilledWorker", repr(error.__cause__)
    if size == "inline":
        assert error.index == 3
    else:
        # Chunks queue on the worker holding the function's task, and Dask blames all those a
        # dying worker held (the right one in 24 runs out of 30): parmap names the lowest.
        assert error.index is not None
        assert error.index <= 3
    workers = f"each of the {tries} Dask workers" if tries > 1 else "the Dask worker"
    assert str(error).startswith(f"{workers} that ran item {error.index} ")

    # The nannies restart the workers, and the same client maps again, with the same function.
    client.wait_for_workers(2, timeout=60)
    assert pmap(square, range(10), backend=DaskBackend(client)) == [x * x for x in range(10)]
    items = [0, 1, 2, 4, 5]
    assert pmap(die, items, backend=DaskBackend(client), chunksize=1) == items


def test_a_task_dask_cancels_is_a_crash_not_a_dask_error(client: Any) -> None:
    def slow(x: int) -> int:
        time.sleep(0.3)
        return x

    def cancel_the_running_chunks() -> None:  # as Dask does when it loses what a task needs
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            running = [k for keys in client.processing().values() for k in keys
                       if str(k).startswith("run_chunk_with")]  # fmt: skip
            if running:
                client.cancel([distributed.Future(k, client) for k in running])
                return
            time.sleep(0.01)

    canceller = threading.Thread(target=cancel_the_running_chunks)
    canceller.start()
    try:
        with pytest.raises(WorkerCrashedError, match="Dask cancelled the task") as info:
            pmap(slow, range(4), backend=DaskBackend(client), chunksize=1)
    finally:
        canceller.join()
    assert isinstance(info.value.__cause__, cf.CancelledError)
    assert f"the task of item {info.value.index} " in str(info.value)
    assert pmap(square, range(4), backend=DaskBackend(client)) == [0, 1, 4, 9]


def test_the_generic_executor_path(client: Any) -> None:
    executor = client.get_executor(pure=False)
    assert pmap(square, range(30), backend=executor, chunksize=5) == [x * x for x in range(30)]


def test_ten_thousand_items(client: Any) -> None:
    out = pmap(square, range(10_000), backend=DaskBackend(client))
    assert out == [x * x for x in range(10_000)]


def test_backend_dask_uses_the_current_client(client: Any) -> None:
    with client.as_current():
        assert pmap(square, [1, 2, 3], backend="dask") == [1, 4, 9]


def test_the_client_passed_in_is_not_closed(client: Any) -> None:
    pmap(square, [1], backend=DaskBackend(client))
    assert client.status == "running"


def test_no_timeout_on_dask(client: Any) -> None:
    with pytest.raises(ValueError, match="timeout= cannot be enforced"):
        pmap(square, [1], backend=DaskBackend(client), timeout=1)


@pytest.fixture(scope="module")
def cli_cluster(tmp_path_factory: pytest.TempPathFactory, client: Any) -> Iterator[str]:
    """``dask scheduler`` and ``dask worker`` as processes; only these are stopped after.
    (``client``: Dask's own threads are started before the leak guard counts.)"""
    if shutil.which("dask", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("the dask command is not installed")
    dask_cmd = str(Path(sys.executable).parent / "dask")
    file = str(tmp_path_factory.mktemp("dask") / "scheduler.json")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = subprocess.Popen([dask_cmd, "scheduler", "--host", "127.0.0.1", "--port", "0",
                                  "--dashboard-address", "127.0.0.1:0", "--scheduler-file", file],
                                 **quiet)  # type: ignore[call-overload]  # fmt: skip
    # Functions of this module are pickled by name, and the worker runs this tree's parmap.
    root = Path(__file__).parent.parent
    path = os.pathsep.join([str(root / "src"), str(root)])
    worker = subprocess.Popen([dask_cmd, "worker", "--scheduler-file", file, "--nworkers", "1",
                               "--nthreads", "1", "--host", "127.0.0.1",
                               "--dashboard-address", "127.0.0.1:0"],
                              env={**os.environ, "PYTHONPATH": path},
                              **quiet)  # type: ignore[call-overload]  # fmt: skip
    try:
        with distributed.Client(scheduler_file=file, timeout=60) as c:
            c.wait_for_workers(1, timeout=60)
            address = c.scheduler.address
        yield address
    finally:
        # The worker first: stopped with its scheduler gone, its nanny waited 8 s for it to
        # close (4 runs of this file out of 6) before killing it.
        for proc in (worker, scheduler):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_a_cluster_reached_by_address(cli_cluster: str) -> None:
    backend = DaskBackend(address=cli_cluster)
    assert pmap(lambda x: -x, range(20), backend=backend) == [-x for x in range(20)]
    assert parmap.pmap(square, range(5), backend=backend) == [0, 1, 4, 9, 16]


def test_progress_and_initializer_on_dask(client: Any) -> None:
    seen: list[tuple[int, int | None]] = []
    out = pmap(lambda x: (parmap.worker_state(), x), range(30), backend=DaskBackend(client),
               initializer=lambda: "ready", progress=lambda *a: seen.append(a))  # fmt: skip
    assert out == [("ready", x) for x in range(30)]
    assert seen[-1] == (30, 30)


def _nested(backend: Any) -> list[int]:
    return pmap(abs, [-1, -2], backend=backend, workers=2)


def test_a_map_inside_a_dask_worker(client: Any) -> None:
    """Dask's worker processes are daemonic: a process backend inside one says so; "auto"
    runs in the worker."""
    with pytest.raises(ValueError, match=r"backend='process' starts processes.*daemonic worker"):
        client.submit(_nested, "process", pure=False).result()
    assert client.submit(_nested, "auto", pure=False).result() == [1, 2]
