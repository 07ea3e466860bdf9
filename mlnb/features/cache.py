"""The embedding cache: one SQLite file in the workspace (``cache/embeddings.sqlite``).

An entry is keyed by the image's identity (:func:`mlnb.images.source_key`:
path + size + mtime for local files, a content hash for bytes and in-memory
images, the URL for URLs) and a namespace made of the model, its weights,
the layer and the preprocessing. Entries are written a batch per
transaction: an interrupted or failed run leaves whole batches or nothing,
and failures are never written.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..workspace import per_workspace

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vec BLOB NOT NULL,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
"""


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
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.executescript(_SCHEMA)
            self._con = con
        return self._con

    def get_many(self, ns: str, keys: list[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if not keys:
            return out
        with self._lock:
            con = self._connect()
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                q = f"SELECT key, vec FROM embeddings WHERE ns = ? AND key IN ({','.join('?' * len(chunk))})"
                for key, vec in con.execute(q, [ns, *chunk]):
                    out[key] = np.frombuffer(vec, dtype=np.float32)
        return out

    def put_many(self, ns: str, items: list[tuple[str, np.ndarray]]) -> None:
        if not items:
            return
        rows = [(ns, k, int(v.shape[0]), np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in items]
        with self._lock:
            con = self._connect()
            con.execute("BEGIN IMMEDIATE")
            try:
                con.executemany("INSERT OR REPLACE INTO embeddings (ns, key, dim, vec) VALUES (?, ?, ?, ?)", rows)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def info(self) -> Any:
        """Entries and bytes per model/layer as a Polars frame."""
        import polars as pl

        schema = {"model": pl.String, "layer": pl.String, "entries": pl.Int64, "bytes": pl.Int64}
        if not self.path.exists():
            return pl.DataFrame(schema=schema)
        with self._lock:
            rows = self._connect().execute("SELECT ns, count(*), sum(length(vec)) FROM embeddings GROUP BY ns ORDER BY ns").fetchall()
        return pl.DataFrame(
            [{"model": ns.split("|")[0], "layer": ns.split("|")[1], "entries": n, "bytes": b} for ns, n, b in rows], schema=schema
        )

    @property
    def size(self) -> int:
        """Bytes on disk."""
        return sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.exists())

    def __len__(self) -> int:
        if not self.path.exists():
            return 0
        with self._lock:
            return int(self._connect().execute("SELECT count(*) FROM embeddings").fetchone()[0])

    def clear(self, model: str | None = None) -> int:
        """Delete all entries (or one model's); returns how many were deleted."""
        if not self.path.exists():
            return 0
        with self._lock:
            con = self._connect()
            if model is None:
                n = con.execute("DELETE FROM embeddings").rowcount
            else:
                n = con.execute("DELETE FROM embeddings WHERE ns LIKE ?", [model.replace("%", r"\%") + "|%"]).rowcount
            con.execute("VACUUM")
        return int(n)

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None


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
