"""The stored state behind ``checkpoint=``: results kept in an SQLite file as they arrive.

One table holds ``(function, index, item, result)``: the function's fingerprint, the item's
position, the item's fingerprint and its pickled result. A rerun of the same call answers an item
from the file only where all three match, so a changed function or a changed item is computed
again, never answered from the store (the new result then replaces the old row). Rows stored under
another function's fingerprint are left in the file, untouched: going back to an earlier version
of the function finds its results again. The file grows with the results; delete it to start over.

Results are written from the caller, in batches: a batch is committed (one transaction) once it
holds ``BATCH_ITEMS`` results or its first result is ``BATCH_SECONDS`` old, whichever comes
first; a thread of the checkpoint's own commits an aged batch while the map waits for slow items.
The file is in WAL mode with ``synchronous=FULL``, so a commit survives a crash of the caller,
``kill -9`` and power loss, and an interrupted write never corrupts the file: a crash loses at most
the batch not yet committed. ``close()`` commits the rest.

One process at a time: ``open`` takes an exclusive ``flock`` on a sidecar file, ``PATH.lock``
(left in place afterwards; it is empty), for the checkpoint's life. The system drops it when its
holder dies, even by ``kill -9``, so no stale lock outlives a crash; a second ``open`` of a held
file (in another process or in this one) raises ``CheckpointError``. A process forked while a
checkpoint is open (a ``fork`` worker) closes its copy of that descriptor at once, so a worker
that outlives its caller does not keep the file locked. Local file systems only: neither WAL mode
nor ``flock`` is dependable over NFS.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import pickle
import sqlite3
import threading
import time
import weakref

import cloudpickle

from ._errors import CheckpointError
from ._serialize import describe

__all__ = ["BATCH_ITEMS", "BATCH_SECONDS", "Checkpoint"]

#: Commit a batch once it holds this many results...
BATCH_ITEMS = 1000
#: ...or once its first result is this many seconds old.
BATCH_SECONDS = 1.0

#: ``PRAGMA application_id`` of a parmap checkpoint ("pmap"): how ``open`` tells one from any
#: other SQLite file. ``PRAGMA user_version`` holds the layout's version.
APPLICATION_ID = 0x706D6170
FORMAT_VERSION = 1
_SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE results (
    function TEXT NOT NULL,
    idx INTEGER NOT NULL,
    item BLOB NOT NULL,
    result BLOB NOT NULL,
    PRIMARY KEY (function, idx)
) WITHOUT ROWID
"""


#: Open checkpoints, for the fork hook below.
_OPEN: weakref.WeakSet[Checkpoint] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child closes its copies of the checkpoints' lock descriptors (the lock, shared
    with the parent, stays the parent's) and never touches their connections."""
    for checkpoint in list(_OPEN):
        checkpoint._forget_in_child()


def _close_all_at_exit() -> None:
    """Commit what checkpoints left open at exit hold (a program that never closed one)."""
    for checkpoint in list(_OPEN):
        with contextlib.suppress(Exception):
            checkpoint.close()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all_at_exit)


class Checkpoint:
    """Results of one function stored in an SQLite file, by item index and item fingerprint.

    ``Checkpoint.open(path, function_fingerprint(fn))``, then ``stored`` to look an item up and
    ``add`` to keep a result; ``close`` (or ``with``) commits what is left and lets the file go.
    Safe to use from any thread, one call at a time or several.
    """

    def __init__(
        self,
        path: str,
        function: str,
        connection: sqlite3.Connection,
        lock_fd: int,
        rows: dict[int, tuple[bytes, bytes | None]],
    ) -> None:
        """Use ``Checkpoint.open``."""
        self.path = path
        self.function = function
        #: Results in a batch are committed once it is this old (seconds) or this large.
        self.batch_seconds = BATCH_SECONDS
        self.batch_items = BATCH_ITEMS
        self._connection = connection
        self._lock_fd = lock_fd
        #: index -> (item fingerprint, pickled result); the result is ``None`` where it was
        #: dropped from memory (answered once already, or stored by this checkpoint) and is
        #: read back from the file if asked for again.
        self._rows = rows
        self._buffer: list[tuple[str, int, bytes, bytes]] = []
        self._batch_began = 0.0
        self._condition = threading.Condition()
        self._flusher: threading.Thread | None = None
        self._failure: BaseException | None = None  # the flusher thread's, raised by the next call
        self._closing = False
        self._closed = False
        self._forked = False

    # -- opening

    @classmethod
    def open(cls, path: str | os.PathLike[str], function: str) -> Checkpoint:
        """Open the checkpoint at ``path`` for the function whose fingerprint is ``function``,
        creating the file if there is none.

        Raises ``CheckpointError`` if another process (or another open ``Checkpoint`` in this
        one) holds it, if the file is not a parmap checkpoint (not SQLite, or another program's
        SQLite database), if it was written by a newer parmap, or if SQLite fails on it.
        """
        path = os.fspath(path)
        lock_fd = _lock(path)
        try:
            connection = _connect(path)
            try:
                rows = _load(path, connection, function)
            except BaseException:
                connection.close()
                raise
        except BaseException:
            os.close(lock_fd)
            raise
        checkpoint = cls(path, function, connection, lock_fd, rows)
        _OPEN.add(checkpoint)
        return checkpoint

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reading

    def stored(self, index: int, item_fp: bytes) -> tuple[bool, object]:
        """``(True, result)`` if a result for item ``index`` with fingerprint ``item_fp`` is
        stored under this function, else ``(False, None)``.

        A stored result that no longer unpickles (its class was renamed, say) counts as not
        stored: the item is computed again.
        """
        if not item_fp:
            return False, None
        with self._condition:
            self._check_open()
            row = self._rows.get(index)
            if row is None or row[0] != item_fp:
                return False, None
            data = row[1]
            if data is None:
                data = self._read_back(index)
                if data is None:
                    return False, None
            else:
                self._rows[index] = (item_fp, None)  # answered: the caller has it now
        try:
            return True, pickle.loads(data)
        except Exception:
            return False, None

    def _read_back(self, index: int) -> bytes | None:
        if self._buffer:
            self._commit()
        found = self._connection.execute(
            "SELECT result FROM results WHERE function = ? AND idx = ?", (self.function, index)
        ).fetchone()
        return None if found is None else bytes(found[0])

    def count(self) -> int:
        """How many items have a result stored under this function (those in the batch not yet
        committed included)."""
        with self._condition:
            return len(self._rows)

    # -- writing

    def add(self, index: int, item_fp: bytes, result: object) -> None:
        """Store the result of item ``index`` (fingerprint ``item_fp``), replacing any earlier
        one for that index: into the current batch, committed with it.

        Raises ``CheckpointError`` naming the item if the result cannot be pickled; an item
        without a fingerprint (``b""``) is not stored.
        """
        if not item_fp:
            return
        try:
            try:
                data = pickle.dumps(result, pickle.HIGHEST_PROTOCOL)
            except Exception:
                data = cloudpickle.dumps(result, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise CheckpointError(
                self.path,
                f"the result of item {index} cannot be pickled into it ({describe(exc)})",
                index=index,
            ) from exc
        with self._condition:
            self._check_open()
            now = time.monotonic()
            if not self._buffer:
                self._batch_began = now
                self._condition.notify()  # the flusher: a batch to age
            self._buffer.append((self.function, index, item_fp, data))
            self._rows[index] = (item_fp, None)
            full = len(self._buffer) >= self.batch_items
            if full or now - self._batch_began >= self.batch_seconds:
                self._commit()
            elif self._flusher is None:
                self._flusher = threading.Thread(
                    target=self._flush_aged, name=f"parmap-checkpoint {self.path}", daemon=True
                )
                self._flusher.start()

    def flush(self) -> None:
        """Commit the current batch now."""
        with self._condition:
            self._check_open()
            self._commit()

    def _commit(self) -> None:
        """Write the batch in one transaction (the caller holds ``_condition``)."""
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        if not self._buffer:
            return
        try:
            with self._connection:  # BEGIN ... COMMIT, or ROLLBACK if it fails
                self._connection.execute("BEGIN IMMEDIATE")
                self._connection.executemany(
                    "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?)", self._buffer
                )
        except sqlite3.Error as exc:
            raise CheckpointError(
                self.path, f"cannot store {len(self._buffer)} results: {describe(exc)}"
            ) from exc
        self._buffer.clear()

    def _flush_aged(self) -> None:
        """The flusher thread: commit a batch once it is ``batch_seconds`` old, so that a map
        of slow items loses no more than that to a crash."""
        with self._condition:
            while not self._closing:
                if not self._buffer or self._failure is not None:
                    self._condition.wait()
                    continue
                left = self._batch_began + self.batch_seconds - time.monotonic()
                if left > 0:
                    self._condition.wait(left)
                    continue
                try:
                    self._commit()
                except BaseException as exc:  # for the caller's next call to raise
                    self._failure = exc

    # -- closing

    def close(self) -> None:
        """Commit the current batch, close the file and release the lock. Idempotent."""
        if self._forked:
            return
        with self._condition:
            if self._closed:
                return
            self._closing = True
            self._condition.notify_all()
            flusher = self._flusher
        if flusher is not None:
            flusher.join()
        with self._condition:
            if self._closed:
                return
            self._closed = True
            _OPEN.discard(self)
            try:
                self._commit()
            finally:
                self._connection.close()
                os.close(self._lock_fd)

    def _check_open(self) -> None:
        """Raise if closed, or the flusher thread's failure if it had one (the caller holds
        ``_condition``)."""
        if self._closed or self._closing or self._forked:
            raise CheckpointError(self.path, "this Checkpoint is closed")
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def _forget_in_child(self) -> None:
        self._forked = True
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)


def _lock(path: str) -> int:
    """Take the exclusive lock on ``PATH.lock``; its descriptor."""
    lock_path = path + ".lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise CheckpointError(path, f"cannot open its lock file: {describe(exc)}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if isinstance(exc, BlockingIOError):
            raise CheckpointError(
                path,
                f"in use by another process or another open checkpoint (it holds {lock_path})",
            ) from None
        raise CheckpointError(path, f"cannot lock {lock_path}: {describe(exc)}") from exc
    return fd


def _connect(path: str) -> sqlite3.Connection:
    """Connect to a checkpoint file, creating it; refuse one that is not SQLite."""
    try:
        with open(path, "rb") as file:
            header = file.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        header = b""
    except OSError as exc:
        raise CheckpointError(path, f"cannot read it: {describe(exc)}") from exc
    if header and header != _SQLITE_MAGIC:
        raise CheckpointError(path, "not a parmap checkpoint: the file is not an SQLite database")
    try:
        # Transactions are begun and committed explicitly; the connection may be used from any
        # thread (an imap consumed elsewhere, the flusher), always under the checkpoint's lock.
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise CheckpointError(path, f"SQLite cannot open it: {describe(exc)}") from exc
    return connection


def _load(
    path: str, connection: sqlite3.Connection, function: str
) -> dict[int, tuple[bytes, bytes | None]]:
    """Check (or lay out) the file and read the function's rows."""
    try:
        application_id = connection.execute("PRAGMA application_id").fetchone()[0]
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if application_id != APPLICATION_ID and (application_id != 0 or tables != 0):
            raise CheckpointError(path, "not a parmap checkpoint: another program's database")
        if application_id == APPLICATION_ID and version > FORMAT_VERSION:
            raise CheckpointError(
                path,
                f"written by a newer parmap (layout {version}; this one reads up to "
                f"{FORMAT_VERSION})",
            )
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise CheckpointError(path, f"SQLite cannot use WAL mode there (it uses {mode!r})")
        connection.execute("PRAGMA synchronous = FULL")
        if application_id == 0:
            with connection:
                connection.execute("BEGIN IMMEDIATE")
                connection.execute(_SCHEMA)
                connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                connection.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
        found = connection.execute(
            "SELECT idx, item, result FROM results WHERE function = ?", (function,)
        )
        rows: dict[int, tuple[bytes, bytes | None]] = {
            index: (bytes(item), bytes(result)) for index, item, result in found
        }
    except sqlite3.Error as exc:
        raise CheckpointError(path, f"SQLite failed on it: {describe(exc)}") from exc
    return rows
