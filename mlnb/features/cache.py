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

Vectors are stored as float32 or float16 (``mlnb.config.cache_dtype``); each
row records its own format, so a cache holds both and always reads back
float32. Reads come back as one ``(n, d)`` block (:meth:`EmbeddingCache.get_block`).

Layout (schema 2): a rowid table with a unique index on ``(ns, key)``, 16 KiB
pages and memory-mapped reads. Schema 1 was a ``WITHOUT ROWID`` table on
4 KiB pages, where every 5 KiB vector spilled into overflow pages: about
1.7x the bytes on disk and twice the page reads per lookup.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..workspace import per_workspace

T = TypeVar("T")

#: ``PRAGMA user_version`` of the layout below (0: without checksums; 1: WITHOUT ROWID, float32 only).
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vec BLOB NOT NULL,
    crc INTEGER,
    fmt TEXT NOT NULL DEFAULT 'f4'
);
CREATE UNIQUE INDEX IF NOT EXISTS embeddings_key ON embeddings (ns, key);
"""

#: Stored formats: the ``fmt`` column's values and their NumPy dtypes.
_FORMATS = {"f4": np.dtype("<f4"), "f2": np.dtype("<f2")}
_FMT_OF = {"float32": "f4", "float16": "f2"}
#: Page size of new files: three float32 (or six float16) 1280-d vectors a page, no overflow chains.
_PAGE_SIZE = 16384
#: Keys per SELECT (SQLite allows far more bound variables; larger gains nothing measurable).
_CHUNK = 4096

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


def _store_format() -> str:
    from ..config import config

    return _FMT_OF[getattr(config, "cache_dtype", "float32")]


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
                con.execute(f"PRAGMA page_size={_PAGE_SIZE}")  # only takes on a new, empty file
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=NORMAL")
                con.execute("PRAGMA cache_size=-65536")  # 64 MiB: the index of a million keys stays in memory
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
            version = con.execute("PRAGMA user_version").fetchone()[0]  # another process may have done it
            if version < SCHEMA_VERSION:
                cols = [r[1] for r in con.execute("PRAGMA table_info(embeddings)")]
                if cols:
                    self._upgrade(con, cols)
                else:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            con.execute(statement)
                con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            con.execute("COMMIT")
        except BaseException:
            _rollback(con)
            raise

    def _upgrade(self, con: sqlite3.Connection, cols: list[str]) -> None:
        """Schemas 0 and 1 to 2, inside the caller's transaction."""
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
        if "fmt" not in cols:  # the WITHOUT ROWID table of schemas 0 and 1: rows copied into the new layout
            con.execute("ALTER TABLE embeddings RENAME TO embeddings_v1")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    con.execute(statement)
            con.execute("INSERT INTO embeddings (ns, key, dim, vec, crc, fmt) SELECT ns, key, dim, vec, crc, 'f4' FROM embeddings_v1")
            con.execute("DROP TABLE embeddings_v1")

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

    def get_block(self, ns: str, keys: Sequence[str], dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The stored vectors of ``keys`` as one block: ``(found[len(keys)] bool, vectors[found.sum(), d] float32)``,
        rows in the order of ``keys``. ``keys`` should be distinct.

        Rows of another dimension than ``dim`` (default: the first row's) are misses. Damaged
        rows are dropped (so they are computed again) and reported in one :class:`CacheWarning`.

        >>> found, vectors = cache.get_block("efficientnet_lite0|pool|...", keys)  # doctest: +SKIP
        """
        found = np.zeros(len(keys), dtype=bool)
        if not keys:
            return found, np.empty((0, dim or 0), dtype=np.float32)
        keys = list(keys)

        def read(con: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], list[str]]:
            rows: list[tuple[Any, ...]] = []
            for i in range(0, len(keys), _CHUNK):
                chunk = keys[i : i + _CHUNK]
                q = f"SELECT key, dim, vec, crc, fmt FROM embeddings WHERE ns = ? AND key IN ({','.join('?' * len(chunk))})"
                rows.extend(con.execute(q, [ns, *chunk]).fetchall())
            good, damaged = [], []
            for row in rows:
                key, d, vec, crc, fmt = row
                dt = _FORMATS.get(fmt)
                if dt is None or crc is None or len(vec) != dt.itemsize * d or crc != checksum(key, vec):
                    damaged.append(key)
                else:
                    good.append(row)
            if damaged:
                _delete(con, ns, damaged)
            return good, damaged

        good, damaged = self._guarded(read, ([], []))
        if damaged:
            shown = ", ".join(damaged[:3]) + (f" and {len(damaged) - 3} more" if len(damaged) > 3 else "")
            _warn(f"{len(damaged)} cached vectors in {self.path} failed their checksum and are computed again: {shown}")
        if dim is None:
            dim = good[0][1] if good else 0
        where = {k: i for i, k in enumerate(keys)}
        good = [row for row in good if row[1] == dim]
        pos = np.fromiter((where[row[0]] for row in good), dtype=np.int64, count=len(good))
        found[pos] = True
        # Each row's place in the block: its key's rank among the keys found.
        slot = np.cumsum(found)[pos] - 1
        out = np.empty((len(good), dim), dtype=np.float32)
        for fmt, dt in _FORMATS.items():
            mine = [j for j, row in enumerate(good) if row[4] == fmt]
            if mine:
                data = b"".join([good[j][2] for j in mine])
                out[slot[mine]] = np.frombuffer(data, dtype=dt).reshape(len(mine), dim)
        return found, out

    def get_many(self, ns: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors of ``keys`` that are present and whole, as ``{key: vector}`` (rows of
        one block: prefer :meth:`get_block` for many keys)."""
        keys = list(dict.fromkeys(keys))
        found, block = self.get_block(ns, keys)
        return dict(zip([k for k, f in zip(keys, found) if f], block))

    def missing(self, ns: str, keys: Sequence[str]) -> list[str]:
        """The ``keys`` with no entry (reads the index only, not the vectors)."""
        keys = list(keys)
        if not keys:
            return []

        def read(con: sqlite3.Connection) -> set[str]:
            have: set[str] = set()
            for i in range(0, len(keys), _CHUNK):
                chunk = keys[i : i + _CHUNK]
                q = f"SELECT key FROM embeddings WHERE ns = ? AND key IN ({','.join('?' * len(chunk))})"
                have.update(k for (k,) in con.execute(q, [ns, *chunk]))
            return have

        have = self._guarded(read, set())
        return [k for k in keys if k not in have]

    def put_block(self, ns: str, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Store ``vectors[i]`` for ``keys[i]`` in one transaction, in ``mlnb.config.cache_dtype``
        (a vector that float16 cannot hold, beyond +-65504, stays float32)."""
        if not len(keys):
            return
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(keys):
            raise ValueError(f"put_block needs one row per key: {len(keys)} keys, vectors of shape {vectors.shape}")
        fmt = _store_format()
        with np.errstate(over="ignore"):  # overflowing rows are found below and kept float32
            stored = np.ascontiguousarray(vectors, dtype=_FORMATS[fmt])
        fits = np.isfinite(stored).all(axis=1) | ~np.isfinite(vectors).all(axis=1) if fmt != "f4" else None
        d = int(vectors.shape[1])
        rows = []
        for i, k in enumerate(keys):
            if fits is not None and not fits[i]:
                data, f = np.ascontiguousarray(vectors[i], dtype="<f4").tobytes(), "f4"
            else:
                data, f = stored[i].tobytes(), fmt
            rows.append((ns, k, d, data, checksum(k, data), f))

        def write(con: sqlite3.Connection) -> None:
            con.execute("BEGIN IMMEDIATE")
            try:
                con.executemany("INSERT OR REPLACE INTO embeddings (ns, key, dim, vec, crc, fmt) VALUES (?, ?, ?, ?, ?, ?)", rows)
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise

        self._guarded(write, None)

    def put_many(self, ns: str, items: Sequence[tuple[str, np.ndarray]]) -> None:
        """Store ``(key, vector)`` pairs (see :meth:`put_block`)."""
        if not items:
            return
        dims = {np.shape(v) for _k, v in items}
        if len(dims) == 1:
            self.put_block(ns, [k for k, _v in items], np.stack([np.asarray(v, dtype=np.float32) for _k, v in items]))
        else:
            for k, v in items:
                self.put_block(ns, [k], np.asarray(v, dtype=np.float32)[None])

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
