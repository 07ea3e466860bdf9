"""The embedding cache at scale: N cached vectors, a lookup of L of them, inserts, disk per vector.

Builds, in a scratch folder:

  float32 cache   N vectors (the first L keyed to real, empty files, so the SQL query below
                  finds them), written 2,048 a transaction, as the engine writes batches
  float16 cache   the same N vectors with mlnb.config.cache_dtype = "float16"
  v1 cache        (--v1) the same in the previous layout (WITHOUT ROWID, 4 KiB pages,
                  per-row reads in IN-lists of 500), the baseline the new layout replaces

and times, on the same L random keys:

  get_block        one (L, d) float32 block                       (this cache)
  per-row dict     get_many: {key: vector}                        (the old API's shape)
  v1 per-row       the old reader on the old layout               (--v1)
  np.load          the same L x d block read from one .npy file   (the floor: bytes only)
  SQL query        SELECT embed(path) over the L files: keys, lookup and result frame,
                   without loading the model (asserted)

    .venv/bin/python benchmarks/bench_cache.py [--n 1000000] [--dim 1280] [--lookup 100000] [--v1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

BATCH = 2048


def _keys(root: Path, n: int, real: int) -> list[str]:
    """``real`` keys of empty files made under ``root`` (as source_key writes them), then synthetic ones."""
    from mlnb.images import source_key

    folder = root / "images"
    for c in range(100):
        (folder / f"c{c:02d}").mkdir(parents=True, exist_ok=True)
    keys = []
    for i in range(real):
        p = folder / f"c{i % 100:02d}" / f"img_{i:08d}.jpg"
        p.touch()
        keys.append(source_key(str(p)))
    keys += [f"file:/data/photos/c{i % 100:02d}/img_{i:08d}.jpg:{100_000 + i}:{1_700_000_000_000_000_000 + i}" for i in range(real, n)]
    return keys


def _vectors(start: int, count: int, dim: int) -> np.ndarray:
    rng = np.random.default_rng(start)
    return np.abs(rng.standard_normal((count, dim), dtype=np.float32))  # pooled CNN features are >= 0


def _fill(cache, ns: str, keys: list[str], dim: int) -> float:
    t = time.perf_counter()
    for s in range(0, len(keys), BATCH):
        cache.put_block(ns, keys[s : s + BATCH], _vectors(s, min(BATCH, len(keys) - s), dim))
    return len(keys) / (time.perf_counter() - t)


def _fill_v1(path: Path, ns: str, keys: list[str], dim: int) -> float:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute(
        "CREATE TABLE embeddings (ns TEXT NOT NULL, key TEXT NOT NULL, dim INTEGER NOT NULL, vec BLOB NOT NULL,"
        " crc INTEGER, PRIMARY KEY (ns, key)) WITHOUT ROWID"
    )
    t = time.perf_counter()
    for s in range(0, len(keys), BATCH):
        block = _vectors(s, min(BATCH, len(keys) - s), dim)
        rows = []
        for k, v in zip(keys[s : s + BATCH], block):
            data = v.tobytes()
            rows.append((ns, k, dim, data, zlib.crc32(data, zlib.crc32(k.encode()))))
        con.execute("BEGIN IMMEDIATE")
        con.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?)", rows)
        con.execute("COMMIT")
    rate = len(keys) / (time.perf_counter() - t)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return rate


def _read_v1(path: Path, ns: str, keys: list[str]) -> dict[str, np.ndarray]:
    """The schema-1 reader as it was: IN-lists of 500, a checksum and an array per row."""
    con = sqlite3.connect(path, isolation_level=None)
    out = {}
    for i in range(0, len(keys), 500):
        chunk = keys[i : i + 500]
        q = f"SELECT key, dim, vec, crc FROM embeddings WHERE ns = ? AND key IN ({','.join('?' * len(chunk))})"
        for key, dim, vec, crc in con.execute(q, [ns, *chunk]):
            if crc is None or crc != zlib.crc32(vec, zlib.crc32(key.encode())) or len(vec) != 4 * dim:
                continue
            out[key] = np.frombuffer(vec, dtype=np.float32)
    con.close()
    return out


def _best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def _disk(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--lookup", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--v1", action="store_true", help="also build the schema-1 layout as a baseline")
    ap.add_argument("--dir", default=None, help="scratch folder (default: a new one under /tmp, deleted at the end)")
    args = ap.parse_args()
    n, dim, L = args.n, args.dim, min(args.lookup, args.n)

    import polars as pl

    import mlnb
    from mlnb.config import DEFAULT_MODEL
    from mlnb.features import engine
    from mlnb.features.cache import EmbeddingCache
    from mlnb.features.zoo import get_spec

    root = Path(args.dir or tempfile.mkdtemp(prefix="mlnb-bench-cache-", dir="/tmp"))
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    need = n * dim * (4 + 2 + (8 if args.v1 else 0)) * 1.2 + L * dim * 4
    if need > free * 0.8:
        sys.exit(f"needs about {need / 1e9:.1f} GB in {root}, {free / 1e9:.1f} GB free: pass a smaller --n or --dim")
    print(f"{n:,} vectors of {dim} float32, lookup of {L:,}; {os.cpu_count()} cores; scratch {root}")
    try:
        mlnb.config.workspace = root / "ws"
        if dim == 1280:
            ns = engine.cache_namespace(get_spec(DEFAULT_MODEL), "pool")
        else:
            ns = f"bench|pool|p|fp32|{dim}"
        t = time.perf_counter()
        keys = _keys(root, n, L)
        print(f"keys: {time.perf_counter() - t:.1f} s ({L:,} real files)")

        f32_path = root / "ws" / "cache" / "embeddings.sqlite"
        f32 = EmbeddingCache(f32_path)
        rate32 = _fill(f32, ns, keys, dim)
        f32.close()
        mlnb.config.cache_dtype = "float16"
        f16_path = root / "f16.sqlite"
        f16 = EmbeddingCache(f16_path)
        rate16 = _fill(f16, ns, keys, dim)
        f16.close()
        mlnb.config.cache_dtype = "float32"
        rate_v1 = _fill_v1(root / "v1.sqlite", ns, keys, dim) if args.v1 else None
        for p in (f32_path, f16_path):  # fold the WAL in, as a long-lived cache would be
            sqlite3.connect(p).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()

        rng = np.random.default_rng(1)
        want = [keys[i] for i in rng.permutation(L)]  # the L real files, in random order
        truth = _vectors(0, 1, dim)  # spot check: key 0's vector
        np.save(root / "block.npy", np.concatenate([_vectors(s, min(BATCH, L - s), dim) for s in range(0, L, BATCH)]))

        f32, f16 = EmbeddingCache(f32_path), EmbeddingCache(f16_path)
        t_block, (found, block) = _best(lambda: f32.get_block(ns, want, dim), args.repeat)
        assert found.all() and block.shape == (L, dim)
        t_block16, (found16, block16) = _best(lambda: f16.get_block(ns, want, dim), args.repeat)
        assert found16.all()
        j = want.index(keys[0])
        assert np.array_equal(block[j], truth[0])
        cos = (block * block16).sum(1) / np.linalg.norm(block, axis=1) / np.linalg.norm(block16, axis=1)
        t_dict, got = _best(lambda: f32.get_many(ns, want), args.repeat)
        assert len(got) == L
        t_npy, _ = _best(lambda: np.load(root / "block.npy"), args.repeat)
        t_v1 = _best(lambda: _read_v1(root / "v1.sqlite", ns, want), args.repeat)[0] if args.v1 else None

        # The query a person runs: embed() over L cached images, the model never loaded.
        engine._LOADED.clear()
        frame = pl.DataFrame({"path": [k.split(":")[1] for k in keys[:L]]})
        mlnb.sql("SELECT 1")

        def query():
            return mlnb.sql("SELECT path, embed(path) AS f FROM frame", frame=frame)

        t_sql, out = _best(query, args.repeat)
        assert out.height == L and out["f"].null_count() == 0 and not engine._LOADED

        d32, d16 = _disk(f32_path), _disk(f16_path)
        print(f"\ninsert (batches of {BATCH}): float32 {rate32:,.0f} vec/s, float16 {rate16:,.0f} vec/s"
              + (f", v1 layout {rate_v1:,.0f} vec/s ({rate32 / rate_v1:.2f}x)" if rate_v1 else ""))
        print(f"disk per vector: float32 {d32 / n:,.0f} B ({d32 / n / (4 * dim):.2f}x the raw {4 * dim} B), "
              f"float16 {d16 / n:,.0f} B ({d16 / d32:.2f}x float32)"
              + (f", v1 layout {_disk(root / 'v1.sqlite') / n:,.0f} B" if args.v1 else ""))
        print(f"float16 vs float32: cosine min {cos.min():.6f}, mean {cos.mean():.6f}")
        print(f"\nlookup of {L:,} (best of {args.repeat}):")
        print(f"  get_block float32   {t_block:6.2f} s  (1.00x)")
        print(f"  get_block float16   {t_block16:6.2f} s  ({t_block / t_block16:.2f}x)")
        print(f"  per-row dict        {t_dict:6.2f} s  ({t_block / t_dict:.2f}x)")
        if t_v1 is not None:
            print(f"  v1 layout, per row  {t_v1:6.2f} s  ({t_block / t_v1:.2f}x; new layout is {t_v1 / t_block:.1f}x faster)")
        print(f"  np.load same block  {t_npy:6.2f} s  ({t_block / t_npy:.2f}x: the bytes-only floor)")
        print(f"  SQL embed() query   {t_sql:6.2f} s  (target < 2 s; model not loaded)")
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
