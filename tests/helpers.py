"""Process, thread and file-descriptor accounting for the tests, and waiting without sleeps."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def children(parent: int | None = None) -> set[int]:
    """Pids whose parent is ``parent`` (default: this process), zombies included."""
    parent = os.getpid() if parent is None else parent
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent:
            found.add(int(entry))
    return found


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def tcp_ports() -> dict[str, set[int]]:
    """``'socket:[inode]'`` (as ``/proc/self/fd`` links read) -> the local and remote ports of
    every TCP socket in this network namespace."""
    found: dict[str, set[int]] = {}
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            ports = {int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16)}
            found[f"socket:[{inode}]"] = ports
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pid: int, timeout: float) -> bool:
    """Block until process ``pid`` ends (any process, not only a child); False on timeout."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable) or not alive(pid)
    finally:
        os.close(fd)


class Lines:
    """Read a child's stdout line by line with a time limit, without buffering surprises."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.buffer = b""

    def next(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            readable, _, _ = select.select([self.fd], [], [], max(0.0, left))
            assert readable, f"no line from the child within {timeout}s (got {self.buffer!r})"
            data = os.read(self.fd, 65536)
            assert data, f"the child closed its output (got {self.buffer!r})"
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


def python_script(source: str, *args: str) -> subprocess.Popen[bytes]:
    """Start ``python -c source`` in a session of its own, its stdout and stderr piped."""
    return subprocess.Popen(
        [sys.executable, "-c", source, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        cwd=Path(__file__).parent.parent,
    )


def session_members(sid: int) -> set[int]:
    """Pids in session ``sid``, zombies excluded: a process a script started (or a process one
    of those started) stays in it when its parent dies, wherever it is reparented."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.add(int(entry))
    return found


def session_leftovers(sid: int, timeout: float) -> set[int]:
    """Wait up to ``timeout`` seconds for session ``sid`` to empty; kill and return what is left.

    (multiprocessing's helpers, the fork server and the resource tracker, exit on their own a
    moment after their caller.)"""
    deadline = time.monotonic() + timeout
    while True:
        left = session_members(sid)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


@dataclass
class Finished:
    """How a script run by ``run_script`` ended."""

    returncode: int
    out: str
    err: str
    seconds: float


def run_script(
    args: list[str], timeout: float, *, stdin: bytes | None = None, cwd: Path | None = None
) -> Finished:
    """Run ``python ARGS`` in a session of its own; fail if it runs past ``timeout`` or leaves
    a process behind (everything it started is killed either way)."""
    began = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        cwd=cwd or Path(__file__).parent.parent,
    )
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        session_leftovers(proc.pid, 0)
        raise AssertionError(
            f"still running after {timeout}s\nstdout:\n{out.decode()}\nstderr:\n{err.decode()}"
        ) from None
    seconds = time.monotonic() - began
    left = session_leftovers(proc.pid, 5.0)
    assert not left, f"processes outlived the script: {left}\nstderr:\n{err.decode()}"
    return Finished(proc.returncode, out.decode(), err.decode(), seconds)


@contextlib.contextmanager
def busy_program(*argv: str) -> Iterator[tuple[subprocess.Popen[bytes], list[int]]]:
    """Run ``python argv...`` in a session of its own, a program whose two busy workers each
    print ``started PID``; yield it and those pids. Its whole session is killed at the end."""
    proc = subprocess.Popen(
        [sys.executable, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        lines = Lines(proc)
        yield proc, [int(lines.next(30).split()[1]) for _ in range(2)]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
