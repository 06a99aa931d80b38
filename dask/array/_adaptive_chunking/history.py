"""The history store: profiles kept across processes in an embedded SQLite file.

Rows hold plain values and JSON text, never pickles, so a shared history file
cannot run code; every statement is parameterized. The file and its directory are
created readable by their owner only. Several processes may write at once: the
database runs in WAL mode, each write is one short transaction, and a busy
database is retried. A file that is not a database or fails the integrity check is
moved aside (a warning names both paths) and a fresh one is started: history is
never emptied silently. The schema carries a version; older files are migrated
forward, newer ones refused (not moved). Every row is checked (:func:`check_row`)
when it is written, imported and read back.

Nothing here reads Dask's config: the engine passes the path and the bounds.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dask.array._adaptive_chunking import errors as _errors

__all__ = [
    "SCHEMA_VERSION", "HistoryStore", "check_row", "default_path", "fingerprint",
    "MATCHED", "CARRIED", "differences", "carried_over", "comparable",
    "observation_to_json", "observation_from_json",
]

#: Version of the tables below; :data:`_MIGRATIONS` moves older files forward.
SCHEMA_VERSION = 1
_SQL_INT_MAX = 2**63 - 1  # SQLite's INTEGER; larger limits mean "no limit"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS profiles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    signature TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    shape TEXT NOT NULL,
    dtype TEXT NOT NULL,
    chunks TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS profiles_by_workload ON profiles (signature, fingerprint);
"""

#: version -> statements that bring a file of that version to the next one.
_MIGRATIONS: dict[int, list[str]] = {0: [_SCHEMA]}

_COLUMNS = ("id", "created", "signature", "fingerprint", "shape", "dtype", "chunks", "data")
_JSON_COLUMNS = ("shape", "chunks", "data")


def default_path() -> Path:
    """Where history lives unless configured: the platform's cache directory.

    ``$XDG_CACHE_HOME/dask/adaptive-chunking.sqlite3`` (``~/.cache`` by default) on
    Linux and other Unix systems, ``~/Library/Caches/dask`` on macOS and
    ``%LOCALAPPDATA%\\dask\\Cache`` on Windows.
    """
    name = "adaptive-chunking.sqlite3"
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        return base / "dask" / "Cache" / name
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "dask" / name
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dask" / name


def observation_to_json(o) -> dict[str, Any]:
    """A :class:`model.Observation` as plain JSON values (see :func:`observation_from_json`)."""
    import dataclasses

    out = dataclasses.asdict(o)
    out["terms"] = [list(t) for t in o.terms]
    return out


def observation_from_json(d: dict[str, Any]):
    """The :class:`model.Observation` stored by :func:`observation_to_json`.

    Raises ValueError naming the field for a stored value of the wrong kind.
    """
    import dataclasses
    import math

    from dask.array._adaptive_chunking.model import Observation

    if not isinstance(d, dict):
        raise ValueError(f"stored observation is {type(d).__name__}, not a JSON object")
    fields = {f.name: f for f in dataclasses.fields(Observation)}
    unknown = set(d) - set(fields)
    if unknown:
        raise ValueError(f"stored observation has unknown field(s) {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in d.items():
        if name == "terms":
            try:
                value = tuple((str(op), int(n), float(g), float(sec)) for op, n, g, sec in value)
                ok = all(n >= 0 and 0 <= g < math.inf and 0 <= sec < math.inf
                         for _, n, g, sec in value)
            except (TypeError, ValueError, OverflowError):
                ok = False
            if not ok:
                raise ValueError(f"stored observation has bad terms {value!r}")
        elif value is not None or fields[name].default is not None:  # None: only if optional
            if not _amount(value):
                raise ValueError(
                    f"stored observation field {name} is {value!r}, not a number >= 0")
        kwargs[name] = value
    try:
        return Observation(**kwargs)
    except TypeError as e:  # a required field missing
        raise ValueError(f"stored observation is incomplete ({e})") from None


def _amount(value: Any) -> bool:
    """Whether ``value`` is a finite number >= 0 (a size, a count, a time)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return 0 <= float(value) < math.inf
    except OverflowError:  # an int beyond any float
        return False


def _private_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents, each owner-only (0700).

    (``Path.mkdir(parents=True)`` gives the parents the default mode.)
    """
    missing = []
    while not directory.exists():
        missing.append(directory)
        if directory.parent == directory:
            break
        directory = directory.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:  # another process made it meanwhile
            pass


def fingerprint(*, cores: int, threads: int, memory_limit: int, scheduler: str) -> str:
    """The hardware a profile was measured on, as canonical JSON text.

    ``cores`` the CPUs this process may use, ``threads`` the tasks run at once,
    ``memory_limit`` the bytes it may use (cgroup-aware), ``scheduler`` its kind
    (``"sync"``, ``"threads"``, ``"processes"``, ``"distributed"``).

    >>> fingerprint(cores=2, threads=2, memory_limit=2**30, scheduler="threads")
    '{"cores": 2, "memory_limit": 1073741824, "scheduler": "threads", "threads": 2}'
    """
    return json.dumps({"cores": int(cores), "threads": int(threads),
                       "memory_limit": int(memory_limit), "scheduler": str(scheduler)},
                      sort_keys=True)


#: What must match for stored computes to predict a new one. The memory limit is not
#: among them: time and memory per chunk byte do not depend on it, and the budget
#: is recomputed for the limit planned for.
MATCHED = ("scheduler", "cores", "threads")


def differences(stored: str, here: str) -> list[str]:
    """What of fingerprint ``stored`` does not match ``here``, in words (empty: none).

    >>> f = lambda threads, gib: fingerprint(cores=2, threads=threads,
    ...                                      memory_limit=gib * 2**30, scheduler="threads")
    >>> differences(f(2, 16), f(2, 4))
    []
    >>> differences(f(1, 16), f(2, 16))
    ['threads 1 stored, 2 here']
    """
    x, y = json.loads(stored), json.loads(here)
    return [f"{k} {x.get(k)} stored, {y.get(k)} here" for k in MATCHED if x.get(k) != y.get(k)]


#: What may differ when stored computes plan for here: time and memory per chunk
#: byte carry over to other thread and core counts of the same kind of scheduler,
#: while the plan's parallelism (like its budget) is set for here.
CARRIED = ("cores", "threads")


def carried_over(stored: str, here: str) -> str | None:
    """What computes measured on fingerprint ``stored`` carry over to ``here``, in
    words: '' when the hardware is alike, None when they cannot plan for here (another
    kind of scheduler).

    >>> f = lambda threads, gib: fingerprint(cores=2, threads=threads,
    ...                                      memory_limit=gib * 2**30, scheduler="threads")
    >>> carried_over(f(2, 16), f(2, 16))
    ''
    >>> print(carried_over(f(2, 16), f(8, 4)))  # doctest: +NORMALIZE_WHITESPACE
    measured with 2 threads and a 16.0 GiB memory limit, planned for 8 threads and a
    4.0 GiB memory limit
    >>> print(carried_over(f(2, 16), fingerprint(cores=2, threads=1, memory_limit=2**34,
    ...                                          scheduler="sync")))
    None
    """
    x, y = json.loads(stored), json.loads(here)
    if any(x.get(k) != y.get(k) for k in MATCHED if k not in CARRIED):
        return None
    keys = [k for k in (*CARRIED, "memory_limit") if x.get(k) != y.get(k)]
    if not keys:
        return ""

    def words(f: dict) -> str:
        parts = [f"{f.get(k)} {k}" for k in CARRIED if k in keys]
        if "memory_limit" in keys:
            parts.append(f"a {int(f.get('memory_limit') or 0) / 2**30:.1f} GiB memory limit")
        return " and ".join(parts)

    return f"measured with {words(x)}, planned for {words(y)}"


def comparable(a: str, b: str) -> bool:
    """Whether profiles measured on fingerprints ``a`` and ``b`` predict each other:
    the same :data:`MATCHED` scheduler kind, cores and threads, at any memory limit.

    >>> f = lambda gib: fingerprint(cores=2, threads=2, memory_limit=gib * 2**30,
    ...                             scheduler="threads")
    >>> comparable(f(16), f(4))
    True
    """
    return not differences(a, b)


class HistoryStore:
    """Profiles stored in one SQLite file (see the module's description).

    Parameters
    ----------
    path : str or Path
        The database file; its directory is created (owner-only) when missing.
    max_rows : int, optional
        Rows kept; the oldest beyond it are deleted after each write.
    timeout : float
        Seconds a write waits for another process's transaction.

    One store may be used from several threads (a lock serializes its connection)
    and survives a fork (the child opens its own connection). A file that is not a
    database or fails SQLite's integrity check is moved aside; one that is locked,
    read-only or on a full disk raises ``sqlite3.OperationalError`` and is left as
    it is; one written by a newer version of this package raises RuntimeError.

    >>> import tempfile, pathlib
    >>> store = HistoryStore(pathlib.Path(tempfile.mkdtemp()) / "h.sqlite3")
    >>> row = store.add(signature="s", fingerprint="{}", shape=(10,), dtype="float64",
    ...                 chunks=((5, 5),), data={"computes": 1})
    >>> [r["data"]["computes"] for r in store.rows(signature="s")]
    [1]
    >>> store.close()
    """

    def __init__(self, path: str | os.PathLike, *, max_rows: int | None = None,
                 timeout: float = 10.0):
        self.path = Path(path)
        self.max_rows = max_rows
        self.timeout = timeout
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._lock = threading.RLock()
        self._warned_rows: set[int] = set()

    # -- opening --------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                return self._conn
            self._conn = None  # a connection inherited through fork() is not used
            _private_dirs(self.path.parent)
            if not self.path.exists():  # created owner-only before SQLite opens it
                with contextlib.suppress(FileExistsError):
                    os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            inode = _inode(self.path)
            try:
                conn = self._open()
            except sqlite3.DatabaseError as e:
                if not _unreadable(e):
                    raise  # locked, read-only, disk full, I/O: the file is not the problem
                self._move_aside(e, inode)
                conn = self._open()
            self._conn, self._pid = conn, os.getpid()
            return conn

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL stays consistent; faster commits
            if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise _Corrupt("the integrity check failed")
            if self._version(conn) != SCHEMA_VERSION:
                self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _version(self, conn: sqlite3.Connection) -> int:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"the history file {self.path} was written by a newer version of "
                f"dask-adaptive-chunking (schema {version}, this one reads up to "
                f"{SCHEMA_VERSION}); upgrade, or set 'array.adaptive-chunking.history-path' "
                "to another file"
            )
        return version

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with self._write(conn):
            version = self._version(conn)  # again, under the lock: another may have done it
            while version < SCHEMA_VERSION:
                for script in _MIGRATIONS[version]:
                    # one statement at a time: executescript() would commit midway
                    for statement in filter(str.strip, script.split(";")):
                        conn.execute(statement)
                version += 1
                conn.execute(f"PRAGMA user_version={version}")

    def _move_aside(self, error: Exception, inode: int | None) -> None:
        if inode is not None and _inode(self.path) != inode:
            return  # another process moved it and started a new one meanwhile
        aside = self.path.with_name(
            f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        )
        os.replace(self.path, aside)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            with contextlib.suppress(FileNotFoundError):
                os.replace(side, aside.with_name(aside.name + suffix))
        _errors.warn(
            f"adaptive chunking: the history file {self.path} could not be read "
            f"({error}); it was moved to {aside} and a new history was started",
            stacklevel=5,
        )
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))

    @contextmanager
    def _write(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """One short write transaction; a busy database is retried until ``timeout``."""
        with self._lock:
            conn = conn or self._connect()
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) and "busy" not in str(e):
                        raise
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # also after a failed COMMIT (a full disk)
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise

    def _read(self, sql: str, args: Iterable = ()) -> list[tuple]:
        with self._lock:
            return self._connect().execute(sql, tuple(args)).fetchall()

    # -- rows -----------------------------------------------------------------

    def add(self, *, signature: str, fingerprint: str, shape, dtype: str, chunks,
            data: dict[str, Any], created: float | None = None) -> int:
        """Store one profile; returns its row id."""
        return self.add_many([dict(
            created=time.time() if created is None else created, signature=signature,
            fingerprint=fingerprint, shape=shape, dtype=dtype, chunks=chunks, data=data,
        )])[0]

    def add_many(self, records: list[dict[str, Any]], *, skip_existing: bool = False
                 ) -> list[int]:
        """Store several profiles in one transaction; returns their row ids.

        Each record has the columns ``created``, ``signature``, ``fingerprint``,
        ``shape``, ``dtype``, ``chunks`` and ``data``, and is checked first
        (ValueError naming the column). With ``skip_existing``, a record equal to a
        stored one is not stored again (id 0).
        """
        values = [_values(check_row(r)) for r in records]
        ids = []
        with self._write() as conn:
            for v in values:
                if skip_existing and conn.execute(
                    "SELECT 1 FROM profiles WHERE created = ? AND signature = ? AND "
                    "fingerprint = ? AND shape = ? AND dtype = ? AND chunks = ? AND data = ?",
                    v,
                ).fetchone():
                    ids.append(0)
                    continue
                cur = conn.execute(
                    "INSERT INTO profiles (created, signature, fingerprint, shape, dtype, "
                    "chunks, data) VALUES (?, ?, ?, ?, ?, ?, ?)", v,
                )
                ids.append(int(cur.lastrowid))
            if self.max_rows is not None and self.max_rows < _SQL_INT_MAX:
                _prune(conn, int(self.max_rows))
        return ids

    def rows(self, *, signature: str | None = None,
             fingerprint: str | Iterable[str] | None = None,
             limit: int | None = None) -> list[dict[str, Any]]:
        """Stored profiles, newest first, optionally of one signature and of one
        fingerprint (or any of several).

        A row that does not hold a valid profile (edited by hand, or imported by an
        older version) is skipped, with one warning naming its id.
        """
        where, args = [], []
        if signature is not None:
            where.append("signature = ?")
            args.append(signature)
        if fingerprint is not None:
            wanted = [fingerprint] if isinstance(fingerprint, str) else list(fingerprint)
            if not wanted:
                return []
            where.append(f"fingerprint IN ({', '.join('?' * len(wanted))})")
            args += wanted
        sql = f"SELECT {', '.join(_COLUMNS)} FROM profiles"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(min(int(limit), _SQL_INT_MAX))
        out = []
        for values in self._read(sql, args):
            try:
                out.append(_row(values))
            except (ValueError, TypeError, KeyError) as e:
                if values[0] not in self._warned_rows:
                    self._warned_rows.add(values[0])
                    _errors.warn(
                        f"adaptive chunking: row {values[0]} of the history file "
                        f"{self.path} is not a valid profile ({e}); it is ignored. "
                        "engine.clear_history() removes it (with the rest)",
                        stacklevel=3,
                    )
        return out

    def fingerprints(self, signature: str | None = None) -> list[str]:
        """The distinct hardware fingerprints stored (of one signature)."""
        if signature is None:
            return [f for (f,) in self._read("SELECT DISTINCT fingerprint FROM profiles")]
        return [f for (f,) in self._read(
            "SELECT DISTINCT fingerprint FROM profiles WHERE signature = ?", (signature,))]

    def generation(self) -> tuple[int, int]:
        """(newest row id, row count): it changes with every write, clear or prune."""
        newest, count = self._read("SELECT MAX(id), COUNT(*) FROM profiles")[0]
        return int(newest or 0), int(count)

    def __len__(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM profiles")[0][0])

    def clear(self) -> int:
        """Delete every stored profile; returns how many there were."""
        with self._write() as conn:
            return int(conn.execute("DELETE FROM profiles").rowcount)

    # -- exchange -------------------------------------------------------------

    def export(self, path: str | os.PathLike) -> int:
        """Write every profile, oldest first, as JSON lines; returns the count."""
        path = _file_path(path, "export to")
        own = {os.path.realpath(f"{self.path}{suffix}") for suffix in ("", "-wal", "-shm")}
        if os.path.realpath(path) in own:
            raise ValueError(
                f"cannot export the history to its own database file {path}; pass another "
                "path, e.g. 'history.jsonl'"
            )
        rows = self.rows()[::-1]
        with open(path, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({k: r[k] for k in _COLUMNS if k != "id"}) + "\n")
        return len(rows)

    def import_(self, path: str | os.PathLike) -> int:
        """Add the profiles of a JSON-lines file made by :meth:`export`.

        Raises ValueError naming the line for a line that is not such a profile;
        nothing is added then. Profiles already stored (the same file imported
        twice) are not added again; returns how many were added.
        """
        records = list(_read_lines(_file_path(path, "import from")))
        return sum(1 for i in self.add_many(records, skip_existing=True) if i)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __repr__(self) -> str:
        return f"<HistoryStore {str(self.path)!r}>"


def _prune(conn: sqlite3.Connection, max_rows: int) -> None:
    """Delete every row older than the newest ``max_rows``.

    Ids only grow (``AUTOINCREMENT``) and only the oldest rows or all of them are
    ever deleted, so the ids of a file are contiguous and the newest ``max_rows``
    are those above ``newest - max_rows``. That takes two lookups in the id index;
    finding the cut with ``OFFSET`` walked every kept row, 2.1 ms of each write
    once the default 10,000 rows were stored (now 0.1 ms). A file with ids deleted
    by hand keeps fewer rows, never more.
    """
    # One aggregate per SELECT: SQLite reads MIN and MAX off the index only then.
    oldest, newest = conn.execute(
        "SELECT (SELECT MIN(id) FROM profiles), (SELECT MAX(id) FROM profiles)").fetchone()
    if newest is not None and newest - oldest >= max_rows:
        conn.execute("DELETE FROM profiles WHERE id <= ?", (newest - max_rows,))


class _Corrupt(sqlite3.DatabaseError):
    """The file opened as SQLite but failed its integrity check."""


#: SQLITE_CORRUPT and SQLITE_NOTADB: the file itself is damaged or not a database.
_UNREADABLE_CODES = (11, 26)


def _unreadable(e: sqlite3.DatabaseError) -> bool:
    """Whether ``e`` says the file is not a usable database (and not, say, locked)."""
    if isinstance(e, _Corrupt):
        return True
    code = getattr(e, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in _UNREADABLE_CODES
    text = str(e)
    return "not a database" in text or "malformed" in text


def _file_path(path: Any, what: str) -> str:
    """``path`` as a file name (str, bytes or path-like; not a file descriptor)."""
    if isinstance(path, (str, bytes, os.PathLike)):
        name = os.fsdecode(os.fspath(path))
        if name:
            return name
    raise TypeError(f"a file path to {what} is a string or path, got {path!r}")


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def _row(values: Iterable) -> dict[str, Any]:
    row = dict(zip(_COLUMNS, values))
    for name in _JSON_COLUMNS:
        row[name] = json.loads(row[name])
    row = check_row(row)
    row["shape"] = tuple(row["shape"])
    row["chunks"] = tuple(tuple(c) for c in row["chunks"])
    return row


def check_row(r: Any) -> dict[str, Any]:
    """``r`` if it is a stored profile (its columns as plain values), else ValueError.

    The one check of a row, for what is written, imported and read back.
    """
    import numpy as np

    if not isinstance(r, dict):
        raise ValueError(f"a profile is a JSON object, got {type(r).__name__}")
    missing = [k for k in _COLUMNS[1:] if k not in r]
    if missing:
        raise ValueError(f"missing field(s) {missing}")
    if not _amount(r["created"]):
        raise ValueError(f"created is {r['created']!r}, not a time in seconds")
    for name in ("signature", "fingerprint", "dtype"):
        if not _text(r[name]):
            raise ValueError(f"{name} is {r[name]!r}, not a non-empty UTF-8 string")
    try:
        hardware = json.loads(r["fingerprint"])
        ok = isinstance(hardware, dict)
    except (TypeError, ValueError, RecursionError):
        ok = False
    if not ok:
        raise ValueError(f"fingerprint is {r['fingerprint']!r}, not a JSON object")
    try:
        np.dtype(r["dtype"])
    except TypeError as e:
        raise ValueError(f"dtype is {r['dtype']!r}, not a NumPy dtype") from e

    def lengths(v) -> bool:
        return isinstance(v, (list, tuple)) and all(
            type(n) is int and n >= 0 for n in v)

    shape, chunks = r["shape"], r["chunks"]
    if not lengths(shape):
        raise ValueError(f"shape is {shape!r}, not a list of lengths")
    if not isinstance(chunks, (list, tuple)) or len(chunks) != len(shape) or not all(
        lengths(c) and sum(c) == n for c, n in zip(chunks, shape)
    ):
        raise ValueError(f"chunks {chunks!r} are not chunks of shape {shape!r}")
    if not isinstance(r["data"], dict):
        raise ValueError(f"data is {type(r['data']).__name__}, not a JSON object")
    try:
        json.dumps(r["data"], allow_nan=False)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"data cannot be stored as JSON ({e})") from None
    if "observation" in r["data"]:
        observation_from_json(r["data"]["observation"])
    if "operations" in r["data"]:
        _check_operations(r["data"]["operations"])
    return r


def _check_operations(ops: Any) -> None:
    """ValueError unless ``ops`` names a workload's operations as
    ``history_service.operations`` stores them (rows stored before it have none)."""
    ok = isinstance(ops, dict) and set(ops) == {"source", "applied"} and _text(
        ops["source"]) and isinstance(ops["applied"], list) and all(
        _text(op) for op in ops["applied"])
    if not ok:
        raise ValueError(f"stored operations {ops!r} are not a source and a list of names")


def _text(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        value.encode("utf-8")  # a lone surrogate cannot be stored
    except UnicodeEncodeError:
        return False
    return True


def _values(r: dict[str, Any]) -> tuple:
    """A checked row as the SQL parameters of its columns (JSON for the structured ones)."""
    return (
        float(r["created"]), r["signature"], r["fingerprint"], json.dumps(list(r["shape"])),
        str(r["dtype"]), json.dumps([list(c) for c in r["chunks"]]),
        json.dumps(r["data"], allow_nan=False),
    )


def _read_lines(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                yield check_row(json.loads(raw.decode("utf-8")))
            except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
                why = "nested too deeply" if isinstance(e, RecursionError) else str(e)[:300]
                raise ValueError(
                    f"{path}, line {n}: not a profile exported by export_history() ({why}); "
                    "fix or remove that line"
                ) from None
