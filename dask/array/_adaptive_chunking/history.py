"""The history store: profiles kept across processes in an embedded SQLite file.

Rows hold plain values and JSON text, never pickles, so a shared history file
cannot run code; every statement is parameterized. The file and its directory are
created readable by their owner only. Several processes may write at once: the
database runs in WAL mode, each write is one short transaction, and a busy
database is retried. A file that cannot be read as this store is moved aside (a
warning names both paths) and a fresh one is started: history is never emptied
silently. The schema carries a version; older files are migrated forward.

Nothing here reads Dask's config: the engine passes the path and the bounds.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dask.array._adaptive_chunking.instrument import AdaptiveChunkingWarning

__all__ = [
    "SCHEMA_VERSION", "HistoryStore", "default_path", "fingerprint", "comparable",
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

    fields = {f.name: f for f in dataclasses.fields(Observation)}
    unknown = set(d) - set(fields)
    if unknown:
        raise ValueError(f"stored observation has unknown field(s) {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in d.items():
        if name == "terms":
            try:
                value = tuple((str(op), int(n), float(g), float(sec)) for op, n, g, sec in value)
            except (TypeError, ValueError) as e:
                raise ValueError(f"stored observation has bad terms {value!r}") from e
        elif value is not None:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value)
            if not ok:
                raise ValueError(f"stored observation field {name} is {value!r}, not a number")
        kwargs[name] = value
    return Observation(**kwargs)


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


def comparable(a: str, b: str, memory_tolerance: float = 1.25) -> bool:
    """Whether profiles measured on fingerprints ``a`` and ``b`` predict each other.

    The same scheduler kind, cores and threads, and memory limits within
    ``memory_tolerance`` of each other (the budget is recomputed for the new limit;
    what transfers is the per-chunk behaviour, which a very different machine
    changes).

    >>> f = lambda gib: fingerprint(cores=2, threads=2, memory_limit=gib * 2**30,
    ...                             scheduler="threads")
    >>> comparable(f(16), f(14)), comparable(f(16), f(4))
    (True, False)
    """
    x, y = json.loads(a), json.loads(b)
    if any(x.get(k) != y.get(k) for k in ("scheduler", "cores", "threads")):
        return False
    low, high = sorted((max(x.get("memory_limit", 0), 1), max(y.get("memory_limit", 0), 1)))
    return high / low <= memory_tolerance


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

    >>> import tempfile, pathlib
    >>> store = HistoryStore(pathlib.Path(tempfile.mkdtemp()) / "h.sqlite3")
    >>> row = store.add(signature="s", fingerprint="f", shape=(10,), dtype="float64",
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

    # -- opening --------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        _private_dirs(self.path.parent)
        if not self.path.exists():  # created owner-only before SQLite opens it
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            conn = self._open()
        except sqlite3.DatabaseError as e:
            self._move_aside(e)
            conn = self._open()
        self._conn = conn
        return conn

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("the integrity check failed")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with self._write(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"schema version {version} is newer than this package's "
                    f"{SCHEMA_VERSION}"
                )
            while version < SCHEMA_VERSION:
                for script in _MIGRATIONS[version]:
                    # one statement at a time: executescript() would commit midway
                    for statement in filter(str.strip, script.split(";")):
                        conn.execute(statement)
                version += 1
                conn.execute(f"PRAGMA user_version={version}")

    def _move_aside(self, error: Exception) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        n = 0
        while aside.exists():
            n += 1
            aside = aside.with_name(f"{aside.name.split('~')[0]}~{n}")
        os.replace(self.path, aside)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                os.replace(side, aside.with_name(aside.name + suffix))
        warnings.warn(
            f"adaptive chunking: the history file {self.path} could not be read "
            f"({error}); it was moved to {aside} and a new history was started",
            AdaptiveChunkingWarning,
            stacklevel=4,
        )
        os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))

    @contextmanager
    def _write(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """One short write transaction; a busy database is retried until ``timeout``."""
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
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- rows -----------------------------------------------------------------

    def add(self, *, signature: str, fingerprint: str, shape, dtype: str, chunks,
            data: dict[str, Any], created: float | None = None) -> int:
        """Store one profile; returns its row id."""
        values = (
            time.time() if created is None else float(created), str(signature),
            str(fingerprint), json.dumps(list(shape)), str(dtype),
            json.dumps([list(c) for c in chunks]), json.dumps(data, allow_nan=False),
        )
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO profiles (created, signature, fingerprint, shape, dtype, "
                "chunks, data) VALUES (?, ?, ?, ?, ?, ?, ?)", values,
            )
            rowid = int(cur.lastrowid)
            if self.max_rows is not None and self.max_rows < _SQL_INT_MAX:
                conn.execute(  # everything older than the newest max_rows rows
                    "DELETE FROM profiles WHERE id <= "
                    "(SELECT id FROM profiles ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (int(self.max_rows),),
                )
        return rowid

    def rows(self, *, signature: str | None = None, fingerprint: str | None = None,
             limit: int | None = None) -> list[dict[str, Any]]:
        """Stored profiles, newest first, optionally of one signature and fingerprint."""
        where, args = [], []
        if signature is not None:
            where.append("signature = ?")
            args.append(signature)
        if fingerprint is not None:
            where.append("fingerprint = ?")
            args.append(fingerprint)
        sql = f"SELECT {', '.join(_COLUMNS)} FROM profiles"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(min(int(limit), _SQL_INT_MAX))
        return [_row(r) for r in self._connect().execute(sql, args)]

    def last_id(self) -> int:
        """The id of the newest row (0 when empty): it changes with every write."""
        row = self._connect().execute("SELECT MAX(id), COUNT(*) FROM profiles").fetchone()
        return int(row[0] or 0) * 2**32 + int(row[1])  # a clear or prune changes it too

    def __len__(self) -> int:
        return int(self._connect().execute("SELECT COUNT(*) FROM profiles").fetchone()[0])

    def clear(self) -> int:
        """Delete every stored profile; returns how many there were."""
        with self._write() as conn:
            return int(conn.execute("DELETE FROM profiles").rowcount)

    # -- exchange -------------------------------------------------------------

    def export(self, path: str | os.PathLike) -> int:
        """Write every profile, oldest first, as JSON lines; returns the count."""
        rows = self.rows()[::-1]
        with open(path, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({k: r[k] for k in _COLUMNS if k != "id"}) + "\n")
        return len(rows)

    def import_(self, path: str | os.PathLike) -> int:
        """Add the profiles of a JSON-lines file made by :meth:`export`.

        Raises ValueError naming the line for a line that is not such a profile;
        nothing is added then.
        """
        records = list(_read_lines(path))
        with self._write() as conn:
            for r in records:
                conn.execute(
                    "INSERT INTO profiles (created, signature, fingerprint, shape, dtype, "
                    "chunks, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (r["created"], r["signature"], r["fingerprint"], json.dumps(r["shape"]),
                     r["dtype"], json.dumps(r["chunks"]), json.dumps(r["data"])),
                )
        return len(records)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __repr__(self) -> str:
        return f"<HistoryStore {str(self.path)!r}>"


def _row(values: Iterable) -> dict[str, Any]:
    row = dict(zip(_COLUMNS, values))
    for name in _JSON_COLUMNS:
        row[name] = json.loads(row[name])
    row["shape"] = tuple(row["shape"])
    row["chunks"] = tuple(tuple(c) for c in row["chunks"])
    return row


def _read_lines(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                ok = (isinstance(r, dict) and isinstance(r.get("signature"), str)
                      and isinstance(r.get("fingerprint"), str)
                      and isinstance(r.get("dtype"), str)
                      and isinstance(r.get("created"), (int, float))
                      and isinstance(r.get("shape"), list)
                      and isinstance(r.get("chunks"), list)
                      and isinstance(r.get("data"), dict))
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(
                    f"{path}, line {n}: not a profile exported by export_history() "
                    f"(a JSON object with created, signature, fingerprint, shape, dtype, "
                    f"chunks and data); fix or remove that line"
                )
            yield r
