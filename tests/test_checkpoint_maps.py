"""``checkpoint=`` through ``pmap`` and ``imap``: resume after a kill, never a stale result.

(The store itself, its batches, locks and fingerprints, is tested in ``test_checkpoint``.)
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from parmap import CheckpointError, imap, pmap

from .conftest import ENGINES, each_backend_and_method_once, with_engines
from .helpers import Lines, session_leftovers

WORK = """
import os, time

def work(x):
    with open(os.environ["PARMAP_TEST_LOG"], "a") as f:
        f.write(f"{x}\\n")
    if os.environ.get("PARMAP_TEST_BLOCK") and x >= 20:
        time.sleep(3600)  # the caller is killed meanwhile
    return x * x
"""

CALLER = """
import sys
sys.path.insert(0, sys.argv[1])
from work import work
from parmap import pmap

def report(done, total):
    if done >= 20:
        print("half", flush=True)

pmap(work, range(40), checkpoint=sys.argv[2], backend="process", workers=2, chunksize=1,
     progress=report)
"""


def _logged(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _stored(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT COUNT(*) FROM results").fetchone()[0])


@pytest.mark.timeout(90)
def test_a_caller_killed_half_way_resumes_with_only_the_missing_items(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "work.py").write_text(WORK)
    store = tmp_path / "run.sqlite"
    env = {**os.environ, "PARMAP_TEST_LOG": str(tmp_path / "first.log"), "PARMAP_TEST_BLOCK": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent.parent / "src"), *sys.path])
    proc = subprocess.Popen(
        [sys.executable, "-c", CALLER, str(tmp_path), str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        assert Lines(proc).next(timeout=60) == "half"
        deadline = time.monotonic() + 30  # the batch is committed within a second or so
        while not (store.exists() and _stored(store) >= 20):
            assert time.monotonic() < deadline, "the first 20 results were never committed"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        assert proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()
        assert not session_leftovers(proc.pid, timeout=10)  # its workers died with it
    stored = _stored(store)
    assert 20 <= stored < 40

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PARMAP_TEST_LOG", str(tmp_path / "second.log"))
    monkeypatch.delenv("PARMAP_TEST_BLOCK", raising=False)
    from work import work  # type: ignore[import-not-found]

    it = imap(work, range(40), checkpoint=store, backend="process", workers=2)
    assert list(it) == [x * x for x in range(40)]
    computed = _logged(tmp_path / "second.log")
    assert len(computed) == 40 - stored
    assert it.summary.from_checkpoint == stored
    sys.modules.pop("work", None)


def _square(x: int) -> int:
    return x * x


def _cube(x: int) -> int:
    return x * x * x


@with_engines(each_backend_and_method_once(ENGINES))
def test_a_rerun_returns_the_same_list_from_the_store(
    engine: dict[str, Any], tmp_path: Path
) -> None:
    store = tmp_path / "run.sqlite"
    first = pmap(_square, range(30), checkpoint=store, **engine)
    it = imap(_square, range(30), checkpoint=store, **engine)
    assert list(it) == first == [x * x for x in range(30)]
    assert it.summary.from_checkpoint == 30


def test_a_changed_function_is_never_answered_from_the_store(tmp_path: Path) -> None:
    store = tmp_path / "run.sqlite"
    assert pmap(_square, range(10), checkpoint=store) == [x * x for x in range(10)]
    it = imap(_cube, range(10), checkpoint=store)
    assert list(it) == [x**3 for x in range(10)]
    assert it.summary.from_checkpoint == 0
    # A function edited under the same name: its code differs.
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent("def _square(x):\n    return x * x + 1\n"), namespace)
    assert pmap(namespace["_square"], range(10), checkpoint=store) == [x * x + 1 for x in range(10)]


def test_a_changed_item_is_computed_again(tmp_path: Path) -> None:
    store = tmp_path / "run.sqlite"
    pmap(_square, [1, 2, 3, 4], checkpoint=store, backend="thread")
    it = imap(_square, [1, 2, 30, 4], checkpoint=store, backend="thread")
    assert list(it) == [1, 4, 900, 16]
    assert it.summary.from_checkpoint == 3


def _fails_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(x)
    return x


def test_failed_items_are_not_stored_and_run_again(tmp_path: Path) -> None:
    store = tmp_path / "run.sqlite"
    results = pmap(_fails_on_three, range(6), errors="return", checkpoint=store, backend="thread")
    assert isinstance(results[3], ValueError)
    it = imap(_fails_on_three, range(6), errors="return", checkpoint=store, backend="thread")
    assert isinstance(list(it)[3], ValueError)
    assert it.summary.from_checkpoint == 5
    assert it.summary.failed == 1


def test_one_checkpoint_used_twice_at_once_is_refused_at_call_time(tmp_path: Path) -> None:
    store = tmp_path / "run.sqlite"
    with imap(_square, range(10), checkpoint=store, backend="thread") as it:
        assert next(it) == 0
        with pytest.raises(CheckpointError, match=r"run\.sqlite"):
            pmap(_square, range(10), checkpoint=store, backend="thread")
    assert pmap(_square, range(3), checkpoint=store, backend="thread") == [0, 1, 4]


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "notes.txt"
    store.write_text("not a database\n" * 100)
    with pytest.raises(CheckpointError, match=r"notes\.txt"):
        pmap(_square, range(3), checkpoint=store)


def test_seed_is_part_of_what_is_stored(tmp_path: Path) -> None:
    store = tmp_path / "run.sqlite"
    pmap(_square, range(5), checkpoint=store, seed=1, backend="serial")
    it = imap(_square, range(5), checkpoint=store, seed=2, backend="serial")
    list(it)
    assert it.summary.from_checkpoint == 0
