"""Maps under resource limits fail with a clear error, leave nothing behind, and the next call
works: the caller out of memory receiving a result (the issue's case 8), and too few file
descriptors to start the workers (case 4). Each runs as a program under a time limit, checked
for leftover processes (a limit set there is that program's alone)."""

from __future__ import annotations

import sys
import textwrap

import pytest

from .helpers import run_script

resource = pytest.importorskip("resource")

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc/self (status, fd)"
)

#: The caller's address space is limited to 200 MB above what it uses; item 1's result is
#: 300 MB (the worker lifts the limit it inherited, so only receiving fails).
OUT_OF_MEMORY = textwrap.dedent(
    """
    import resource, sys
    import parmap

    def huge(x):
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
        return bytes(300_000_000) if x == 1 else b"small"

    def address_space():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024

    backend = sys.argv[1]
    assert parmap.pmap(abs, [-1], backend=backend, workers=1) == [1]  # imports done
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (address_space() + 200_000_000, hard))
    try:
        parmap.pmap(huge, range(3), backend=backend, workers=1, chunksize=1)
    except Exception as exc:
        print(type(exc).__name__, getattr(exc, "index", None), type(exc.__cause__).__name__)
        print(exc)
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
    assert parmap.pmap(abs, [-1, -2], backend=backend, workers=2) == [1, 2]
    print("done", flush=True)
    """
)


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "backend",
    [
        "process",
        "pool",
        "futures",
    ],
)
def test_results_the_caller_cannot_receive(backend: str) -> None:
    """ "pool" hung for good (its result thread died of the MemoryError, unnoticed); "futures"
    raised WorkerCrashedError blaming SIGTERM (the executor's own kill of its workers);
    "process" raised a bare MemoryError naming no item."""
    finished = run_script(["-c", OUT_OF_MEMORY, backend], timeout=60)
    assert finished.returncode == 0, finished.err
    lines = finished.out.splitlines()
    assert lines[0] == "ResultUnpicklingError 1 MemoryError", finished.out
    assert "the results of item 1 could not be received" in lines[1]
    assert "MemoryError" in lines[1]
    assert lines[-1] == "done"
    assert finished.err == ""


#: Three maps with 8 workers under a limit of 24 descriptors, then one with 2.
TOO_FEW_DESCRIPTORS = textwrap.dedent(
    """
    import multiprocessing, os, resource, sys
    import parmap

    def descriptors():
        return set(os.listdir("/proc/self/fd"))

    backend = sys.argv[1]
    assert parmap.pmap(abs, [-1, -2], backend=backend, workers=2) == [1, 2]  # imports done
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (24, hard))
    before = descriptors()
    for _ in range(3):
        try:
            parmap.pmap(abs, range(-20, 0), backend=backend, workers=8)
        except OSError as exc:
            print("OSError", exc.errno)
        print("left", len(descriptors() - before), len(multiprocessing.active_children()))
    assert parmap.pmap(abs, range(-4, 0), backend=backend, workers=2) == [4, 3, 2, 1]
    print("left", len(descriptors() - before), len(multiprocessing.active_children()))
    print("done", flush=True)
    """
)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("backend", ["pool", "futures"])
def test_too_few_descriptors_for_the_workers(backend: str) -> None:
    """Each failed call lost two descriptors (multiprocessing's fork launcher leaves its first
    pipe open when its second fails), "pool" more until a garbage collection, and the next call
    then failed too."""
    finished = run_script(["-c", TOO_FEW_DESCRIPTORS, backend], timeout=60)
    assert finished.returncode == 0, finished.err
    assert finished.out.splitlines() == [
        *["OSError 24", "left 0 0"] * 3,
        "left 0 0",
        "done",
    ], finished.out
