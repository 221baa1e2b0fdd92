"""Fixtures shared by the suite: the engine matrix, the Dask cluster and the leak guard.

``ENGINES`` is the one list of ways to run a map, built from the backend registry (as AnyIO's
conftest builds its backend parameters from its own): every registered backend, times the start
methods where they apply, ``"auto"``, and executors passed as ``backend=``; an engine that needs
what is not installed is skipped, saying why. Each ``Engine`` carries what tests may rely on
there, and every narrower list is a filter of ``ENGINES`` on those properties.

Every test runs under pytest-timeout (pyproject sets the default) and under ``no_leaks``: a test
fails if a child process, a thread or a file descriptor it started is still there afterwards.
"""

from __future__ import annotations

import concurrent.futures as cf
import faulthandler
import gc
import importlib.util
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import settings

import parmap
from parmap.backends import BACKENDS, DaskBackend

from .helpers import children, open_fds, tcp_ports

settings.register_profile("parmap", deadline=None, print_blob=True)
settings.register_profile("ci", parent=settings.get_profile("parmap"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "parmap")

#: This platform's start methods, the default first.
START_METHODS = multiprocessing.get_all_start_methods()
DEFAULT_START_METHOD = START_METHODS[0]


def _fatal_errors_to_captured_stderr() -> None:
    """In a forked child: write fatal-error dumps to fd 2, which pytest captures.

    pytest points ``faulthandler`` at a copy of the terminal's stderr, and a forked worker
    inherits that: every crash test's segfaulting worker printed a 60-line dump over the
    progress dots. On fd 2 a dump is shown with its test's output if that test fails (and
    ``test_faults`` reads one).
    """
    if faulthandler.is_enabled():
        faulthandler.enable(file=2, all_threads=True)


os.register_at_fork(after_in_child=_fatal_errors_to_captured_stderr)


@dataclass(frozen=True)
class SessionHelper:
    """A long-lived helper a session fixture started (a Dask cluster), whose processes and
    connections are not a test's: its workers are respawned by their nannies when a test kills
    one, and its scheduler opens connections to them whenever it likes."""

    #: The pids to leave alone.
    pids: Callable[[], set[int]]
    #: The TCP ports it listens on: a socket with one end on them is the helper's.
    ports: Callable[[], set[int]]


SESSION_HELPERS: list[SessionHelper] = []
#: Threads and descriptors such a helper opened while a test ran (a Dask nanny watching, by
#: pipes, the worker it restarted), recorded by that test.
SESSION_THREADS: set[threading.Thread] = set()
SESSION_FDS: set[int] = set()


@dataclass(frozen=True)
class Engine:
    """One way to run a map, with what a test may rely on there, as data.

    Every list of engines a test uses is a filter of ``ENGINES`` on these properties.
    """

    #: A registered backend name or ``"auto"``; for an executor, its kind (the id).
    name: str
    start_method: str | None = None
    #: Makes the executor (given its size) passed as ``backend=``; one per test.
    executor: Callable[[int], cf.Executor] | None = None
    #: Items run in worker processes parmap starts and owns: a crash, an exit or a hang there
    #: is that worker's (killed, named in the error), never the caller's. The fault catalogue
    #: and the initializer's deaths apply to these.
    isolated: bool = False
    #: Items always run in this process (the calling thread, or threads of this process), so
    #: nothing is pickled and a map is cheap enough for Hypothesis's full ``max_examples``.
    in_process: bool = False
    #: ``timeout=`` is enforced (elsewhere asking for one is refused at call time).
    timeouts: bool = True
    #: An item that never returns is killed at its timeout (not left running, as on threads).
    kills_on_timeout: bool = False
    #: The session fixture that starts the service it runs on (a Dask cluster), or None. Such
    #: engines' tests run last (see ``pytest_collection_modifyitems``).
    service: str | None = None
    #: The module it needs; without it its tests are skipped (said so, as AnyIO does).
    requires: str | None = None
    #: With ``retries=`` or ``errors="return"``, a worker's death fails only its item: the map
    #: goes on, on a fresh worker (items run in worker processes parmap starts).
    recovers: bool = False
    #: ``max_tasks_per_worker=`` and ``max_memory_per_worker=`` are honoured (elsewhere refused).
    recycles: bool = False

    @property
    def default_method(self) -> bool:
        """Whether it runs on the default start method (or none applies)."""
        return self.start_method in (None, DEFAULT_START_METHOD)

    @contextmanager
    def options(self, workers: int | None = None) -> Iterator[dict[str, Any]]:
        """``backend=`` and the like for a call; an executor lives for the ``with`` block.
        ``workers``: the ``workers=`` option, or an executor's size (default: its own, 2)."""
        if self.executor is not None:
            with self.executor(workers or 2) as executor:
                yield {"backend": executor}
            return
        out: dict[str, Any] = {"backend": self.name}
        if self.start_method is not None:
            out["start_method"] = self.start_method
        if workers is not None:
            out["workers"] = workers
        yield out

    def param(self) -> Any:
        """As a pytest parameter: its id, and a skip mark where what it needs is missing."""
        missing = self.requires is not None and importlib.util.find_spec(self.requires) is None
        mark = pytest.mark.skipif(missing, reason=f"{self.requires} is not installed")
        return pytest.param(self, id=str(self), marks=mark)

    def __str__(self) -> str:
        return self.name if self.start_method is None else f"{self.name}-{self.start_method}"


#: Registered backends that run on a service the suite starts: the session fixture that starts
#: it, and the module it needs. Every other registered backend runs where parmap puts it: in
#: worker processes it starts (``processes=True``), or in this process.
SERVICES = {"dask": ("client", "distributed")}


def _backend_class(name: str) -> Any:
    entry = BACKENDS[name]
    return getattr(importlib.import_module(entry.module, "parmap.backends"), entry.cls)


def _engines() -> list[Engine]:
    """Every registered backend (times the start methods, where they apply), ``"auto"``, and a
    thread and a process executor passed as ``backend=``; engines on a service last."""
    engines, on_services = [], []
    for name, entry in BACKENDS.items():
        if name in SERVICES:
            fixture, module = SERVICES[name]
            on_services.append(Engine(name, timeouts=False, service=fixture, requires=module))
        elif entry.processes:
            engines += [
                Engine(
                    name,
                    m,
                    isolated=True,
                    kills_on_timeout=True,
                    recovers=True,
                    recycles=_backend_class(name).recycles,
                )
                for m in START_METHODS
            ]
        else:
            engines.append(Engine(name, in_process=True))
    # The default, once, on the default start method: it runs cheap work in the caller, costly
    # work (and any call with a timeout) on the "process" backend, tested above on every method.
    # With the long-map options it goes to worker processes at once.
    engines.append(Engine("auto", kills_on_timeout=True, recovers=True, recycles=True))
    engines.append(Engine("thread-executor", executor=cf.ThreadPoolExecutor, in_process=True))
    engines.append(Engine("process-executor", executor=cf.ProcessPoolExecutor, timeouts=False))
    return engines + on_services


#: Every way to run a map: the one list; every narrower one below or in a test is a filter of it.
ENGINES = _engines()
#: The engines whose workers are processes parmap starts (faults apply to these).
ISOLATED = [e for e in ENGINES if e.isolated]
#: The engines on which a map goes on past a worker's death (``retries=``, ``errors="return"``).
RECOVERING = [e for e in ENGINES if e.recovers]
#: The engines that replace worker processes (``max_tasks_per_worker=``, ...).
RECYCLING = [e for e in ENGINES if e.recycles]


def each_backend_and_method_once(engines: list[Engine]) -> list[Engine]:
    """Those of ``engines`` (in order) that bring a backend or a start method not seen before:
    what depends on the backend is tested on each backend, what depends on the start method on
    each method (on the first backend), but not every pair; the contract tests run every pair."""
    chosen: list[Engine] = []
    names: set[str] = set()
    methods: set[str] = set()
    for e in engines:
        method = e.start_method or DEFAULT_START_METHOD
        if e.name not in names or method not in methods:
            chosen.append(e)
            names.add(e.name)
            methods.add(method)
    return chosen


def with_engines(engines: list[Engine]) -> pytest.MarkDecorator:
    """Parametrize the ``engine`` fixture with these engines only (a filter of ``ENGINES``)."""
    return pytest.mark.parametrize("engine", [e.param() for e in engines], indirect=True)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests on the Dask cluster last. It keeps threads running until the session ends,
    and a fork beside running threads is what Python 3.12+ warns about (a thread holding a lock
    at that instant leaves it locked in the child): no other test should fork then."""
    items.sort(key=_on_a_service)


def _on_a_service(item: pytest.Item) -> bool:
    if item.path.name == "test_dask.py":
        return True
    callspec = getattr(item, "callspec", None)
    params = callspec.params.values() if callspec is not None else ()
    return any(isinstance(p, Engine) and p.service is not None for p in params)


@pytest.fixture(scope="session", autouse=True)
def _warm_multiprocessing() -> None:
    """Start the forkserver and the resource tracker once, before any leak baseline.

    Both are long-lived helpers that multiprocessing starts on first use and keeps for the life
    of the process; they are not leaks of the test that happens to use them first.
    """
    for method in ("forkserver", "spawn"):
        assert parmap.pmap(abs, [-1, -2], backend="process", start_method=method) == [1, 2]


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a child process, a thread or a file descriptor behind."""
    before_children = children()
    before_threads = set(threading.enumerate())
    before_fds = open_fds()
    yield
    parmap.shutdown()  # the warm workers a test leaves for the next call are not leaks
    # A descriptor held only by garbage awaiting collection (a cycle through a proxy or a
    # process object) is released here, as it would be at the program's next collection.
    gc.collect()
    left = children() - before_children
    helper_ports: set[int] = set()
    for helper in SESSION_HELPERS:
        left -= helper.pids()
        helper_ports |= helper.ports()
    threads = [
        t
        for t in threading.enumerate()
        if t not in before_threads and t not in SESSION_THREADS and t.is_alive()
    ]
    described = {fd: _describe_fd(fd) for fd in open_fds() - before_fds}
    # Gone already: the descriptor ``listdir`` itself used. Kept on purpose: multiprocessing's
    # heap arenas (``/dev/shm/pym-*``), which it grows once and reuses for later shared arrays;
    # tests/test_leaks.py shows descriptors do not grow over hundreds of calls.
    fds = {fd for fd, what in described.items() if what and "/dev/shm/pym-" not in what}
    fds -= SESSION_FDS
    if helper_ports:
        ports = tcp_ports()
        fds = {fd for fd in fds if not helper_ports & ports.get(described[fd], set())}
    described_children = {pid: _describe_pid(pid) for pid in left}
    for pid in left:  # do not let one test's leak break the next
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    assert not left, f"child processes outlived the test: {described_children}"
    assert not threads, f"threads outlived the test: {threads}"
    assert not fds, f"file descriptors outlived the test: { {fd: described[fd] for fd in fds} }"


def _describe_pid(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline") as f:
            return f"{state} {f.read().replace(chr(0), ' ')[:120]}"
    except OSError:
        return "gone"


def _describe_fd(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


@pytest.fixture(params=[e.param() for e in ENGINES])
def engine(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """``backend=``/``start_method=`` options for every way parmap can run a map; for fewer,
    parametrize it indirectly with a filter of ``ENGINES`` (``with_engines``)."""
    spec: Engine = request.param
    if spec.service is not None:
        request.getfixturevalue(spec.service)
    with spec.options() as options:
        yield options


@pytest.fixture(params=[e.param() for e in ISOLATED])
def process_engine(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The engines whose workers are processes parmap starts (faults apply to these)."""
    spec: Engine = request.param
    with spec.options() as options:
        yield options


@pytest.fixture(scope="session")
def client() -> Iterator[Any]:
    """The session's Dask cluster on loopback, two single-threaded worker processes; the
    client is the default one (what ``backend="dask"`` uses). Its processes, ports, and the
    threads and descriptors it opened starting are the cluster's, not the test's that started
    it (a test of the ``engine`` fixture starts it after ``no_leaks`` counted)."""
    distributed = pytest.importorskip("distributed")
    threads, fds = set(threading.enumerate()), open_fds()
    # Dask's default configuration: no test on this cluster kills its workers (those that do
    # start clusters of their own, see test_dask.crash_client).
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        scheduler_port=0, dashboard_address="127.0.0.1:0", silence_logs=logging.CRITICAL,
    )  # fmt: skip
    with cluster, distributed.Client(cluster) as c:
        # Dask starts some threads on first use and keeps them: start them now, before any
        # test counts threads; its workers belong to the cluster, not to a test.
        assert parmap.pmap(abs, range(-4, 0), backend=DaskBackend(c)) == [4, 3, 2, 1]
        SESSION_THREADS.update(set(threading.enumerate()) - threads)
        SESSION_FDS.update(open_fds() - fds)
        SESSION_HELPERS.append(SessionHelper(lambda: _pids(c), lambda: _ports(c)))
        yield c
        SESSION_HELPERS.clear()


def _pids(client: Any) -> set[int]:
    return set(client.run(os.getpid).values())


def _ports(client: Any) -> set[int]:
    """The scheduler's, every worker's and every nanny's port (workers change on restart)."""
    info = client.scheduler_info()
    addresses = [client.scheduler.address]
    for address, worker in info["workers"].items():
        addresses += [address, worker.get("nanny") or address]
    return {int(a.rsplit(":", 1)[1]) for a in addresses}
