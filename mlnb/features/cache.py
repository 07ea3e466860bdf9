"""The embedding cache: one SQLite file in the workspace (``cache/embeddings.sqlite``).

An entry is keyed by the image's identity (:func:`mlnb.images.source_key`:
path + size + mtime for local files, a content hash for bytes and in-memory
images, the URL for URLs) and a namespace made of the model, its weights,
the layer and the preprocessing. Entries are written a batch per
transaction: an interrupted or failed run leaves whole batches or nothing,
and failures are never written.

Every vector is stored with a CRC-32 of its key and bytes and checked when
read: a damaged one is a miss (recomputed) and is reported, never served. A
damaged database file is moved aside (the warning names both paths) and a
fresh cache starts.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..workspace import per_workspace

T = TypeVar("T")

#: ``PRAGMA user_version`` of the layout below (0: the first one, without checksums).
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vec BLOB NOT NULL,
    crc INTEGER,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
"""

# SQLITE_CORRUPT and SQLITE_NOTADB: the file itself is damaged (not "database is locked").
_DAMAGED_CODES = (11, 26)


class CacheWarning(UserWarning):
    """The embedding cache found damaged vectors or a damaged file, and recovered."""


def checksum(key: str, vec: bytes) -> int:
    """CRC-32 of an entry's key and vector bytes (a vector moved to another key fails too)."""
    return zlib.crc32(vec, zlib.crc32(key.encode("utf-8")))


def _is_damage(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _DAMAGED_CODES
    text = str(exc)
    return "malformed" in text or "not a database" in text


def _warn(message: str) -> None:
    warnings.warn_explicit(CacheWarning(message), CacheWarning, filename="mlnb", lineno=0, module="mlnb")


class EmbeddingCache:
    """Persistent vectors; thread-safe; shared by every process on the workspace."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._con: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._con is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
            try:
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=NORMAL")
                con.executescript(_SCHEMA)
                self._migrate(con)
            except BaseException:
                con.close()
                raise
            self._con = con
        return self._con

    def _migrate(self, con: sqlite3.Connection) -> None:
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version >= SCHEMA_VERSION:
            return
        con.execute("BEGIN IMMEDIATE")
        try:
            if con.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:  # another process may have done it
                cols = [r[1] for r in con.execute("PRAGMA table_info(embeddings)")]
                if "crc" not in cols:
                    con.execute("ALTER TABLE embeddings ADD COLUMN crc INTEGER")
                # Version 0 had no checksums: keep the vectors that are whole and finite, sealed now.
                bad, fixed = [], []
                for ns, key, dim, vec in con.execute("SELECT ns, key, dim, vec FROM embeddings WHERE crc IS NULL").fetchall():
                    if len(vec) == 4 * dim and np.isfinite(np.frombuffer(vec, dtype=np.float32)).all():
                        fixed.append((checksum(key, vec), ns, key))
                    else:
                        bad.append((ns, key))
                con.executemany("UPDATE embeddings SET crc = ? WHERE ns = ? AND key = ?", fixed)
                con.executemany("DELETE FROM embeddings WHERE ns = ? AND key = ?", bad)
                con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            con.execute("COMMIT")
        except BaseException:
            _rollback(con)
            raise

    def _guarded(self, fn: Callable[[sqlite3.Connection], T], fallback: T) -> T:
        """Run ``fn(connection)`` under the lock; a damaged file is moved aside, a fresh
        cache started and ``fn`` tried once more on it."""
        with self._lock:
            for attempt in (0, 1):
                try:
                    return fn(self._connect())
                except sqlite3.DatabaseError as exc:
                    if not _is_damage(exc) or attempt:
                        raise
                    self._move_aside(exc)
        return fallback  # pragma: no cover - the loop returns or raises

    def _move_aside(self, exc: BaseException) -> None:
        if self._con is not None:
            with contextlib.suppress(sqlite3.Error):
                self._con.close()
            self._con = None
        aside = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, aside)
        for suffix in ("-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
        _warn(
            f"The embedding cache {self.path} is damaged ({exc}); moved it to {aside} and started "
            "an empty one. Features are computed again as needed; delete the moved file when you do not need it."
        )

    def get_many(self, ns: str, keys: list[str]) -> dict[str, np.ndarray]:
        """The stored vectors of ``keys`` that are present and whole; damaged ones are dropped
        (so they are computed again) and reported in one :class:`CacheWarning`."""
        if not keys:
            return {}

        def read(con: sqlite3.Connection) -> tuple[dict[str, np.ndarray], list[str]]:
            out: dict[str, np.ndarray] = {}
            damaged: list[str] = []
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                q = f"SELECT key, dim, vec, crc FROM embeddings WHERE ns = ? AND key IN ({','.join('?' * len(chunk))})"
                for key, dim, vec, crc in con.execute(q, [ns, *chunk]):
                    if crc is None or crc != checksum(key, vec) or len(vec) != 4 * dim:
                        damaged.append(key)
                        continue
                    out[key] = np.frombuffer(vec, dtype=np.float32)
            if damaged:
                _delete(con, ns, damaged)
            return out, damaged

        out, damaged = self._guarded(read, ({}, []))
        if damaged:
            shown = ", ".join(damaged[:3]) + (f" and {len(damaged) - 3} more" if len(damaged) > 3 else "")
            _warn(f"{len(damaged)} cached vectors in {self.path} failed their checksum and are computed again: {shown}")
        return out

    def put_many(self, ns: str, items: list[tuple[str, np.ndarray]]) -> None:
        if not items:
            return
        rows = []
        for k, v in items:
            data = np.ascontiguousarray(v, dtype=np.float32).tobytes()
            rows.append((ns, k, int(v.shape[0]), data, checksum(k, data)))

        def write(con: sqlite3.Connection) -> None:
            con.execute("BEGIN IMMEDIATE")
            try:
                con.executemany("INSERT OR REPLACE INTO embeddings (ns, key, dim, vec, crc) VALUES (?, ?, ?, ?, ?)", rows)
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise

        self._guarded(write, None)

    def info(self) -> Any:
        """Entries and bytes per model/layer as a Polars frame."""
        import polars as pl

        schema = {"model": pl.String, "layer": pl.String, "entries": pl.Int64, "bytes": pl.Int64}
        if not self.path.exists():
            return pl.DataFrame(schema=schema)
        rows = self._guarded(
            lambda con: con.execute("SELECT ns, count(*), sum(length(vec)) FROM embeddings GROUP BY ns ORDER BY ns").fetchall(), []
        )
        return pl.DataFrame(
            [{"model": ns.split("|")[0], "layer": ns.split("|")[1], "entries": n, "bytes": b} for ns, n, b in rows], schema=schema
        )

    @property
    def size(self) -> int:
        """Bytes on disk."""
        return sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.exists() and ".damaged-" not in p.name)

    def __len__(self) -> int:
        if not self.path.exists():
            return 0
        return int(self._guarded(lambda con: con.execute("SELECT count(*) FROM embeddings").fetchone()[0], 0))

    def clear(self, model: str | None = None) -> int:
        """Delete all entries (or one model's); returns how many were deleted."""
        if not self.path.exists():
            return 0

        def delete(con: sqlite3.Connection) -> int:
            if model is None:
                n = con.execute("DELETE FROM embeddings").rowcount
            else:
                n = con.execute("DELETE FROM embeddings WHERE ns LIKE ?", [model.replace("%", r"\%") + "|%"]).rowcount
            con.execute("VACUUM")
            return int(n)

        return self._guarded(delete, 0)

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None


def _delete(con: sqlite3.Connection, ns: str, keys: list[str]) -> None:
    con.execute("BEGIN IMMEDIATE")
    try:
        con.executemany("DELETE FROM embeddings WHERE ns = ? AND key = ?", [(ns, k) for k in keys])
        con.execute("COMMIT")
    except BaseException:
        _rollback(con)
        raise


def _rollback(con: sqlite3.Connection) -> None:
    # An interrupt (Ctrl-C) can land before BEGIN took effect or after COMMIT did: roll back
    # only an open transaction, and never let the rollback hide the original exception.
    if con.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            con.execute("ROLLBACK")


def get_cache() -> EmbeddingCache:
    return per_workspace("cache/embeddings.sqlite", EmbeddingCache)


class CacheHandle:
    """``mlnb.cache``: the current workspace's embedding cache.

    >>> import mlnb
    >>> mlnb.cache.info()  # doctest: +SKIP
    >>> mlnb.cache.clear()  # doctest: +SKIP
    """

    def info(self) -> Any:
        return get_cache().info()

    @property
    def size(self) -> int:
        return get_cache().size

    def __len__(self) -> int:
        return len(get_cache())

    def clear(self, model: str | None = None) -> int:
        return get_cache().clear(model)

    @property
    def path(self) -> Path:
        return get_cache().path

    def __repr__(self) -> str:
        c = get_cache()
        return f"<mlnb embedding cache: {len(c):,} entries, {c.size / 1e6:.1f} MB at {c.path}>"


cache = CacheHandle()
