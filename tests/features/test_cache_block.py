"""The embedding cache returns one block, stores float16 on request, and upgrades old files."""

from __future__ import annotations

import sqlite3
import zlib

import numpy as np
import pytest

import mlnb
from mlnb.features.cache import SCHEMA_VERSION, CacheWarning, EmbeddingCache, checksum

NS = "m|pool|p|fp32"


def vectors(keys: list[str], dim: int = 48) -> np.ndarray:
    return np.stack([np.random.default_rng(zlib.crc32(k.encode())).standard_normal(dim).astype(np.float32) for k in keys])


@pytest.fixture
def half(monkeypatch):
    monkeypatch.setattr(mlnb.config, "_cache_dtype", "float16")


def test_get_block_is_one_array_in_the_order_asked(tmp_path):
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    keys = [f"k{i}" for i in range(50)]
    cache.put_block(NS, keys, vectors(keys))
    asked = ["nope", *reversed(keys[10:20]), "other", keys[3]]
    found, block = cache.get_block(NS, asked)
    assert found.tolist() == [False, *[True] * 10, False, True]
    assert block.dtype == np.float32 and block.flags.c_contiguous and block.shape == (11, 48)
    assert np.array_equal(block, vectors([k for k, f in zip(asked, found) if f]))
    found, block = cache.get_block(NS, [])
    assert found.shape == (0,) and block.shape == (0, 0)


def test_rows_of_another_dimension_are_misses(tmp_path):
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    cache.put_block(NS, ["a"], vectors(["a"], 48))
    cache.put_block(NS, ["b"], vectors(["b"], 16))
    found, block = cache.get_block(NS, ["a", "b"], dim=16)
    assert found.tolist() == [False, True] and block.shape == (1, 16)


def test_float16_halves_the_bytes_and_keeps_the_direction(tmp_path, half):
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    keys = [f"k{i}" for i in range(200)]
    want = vectors(keys, 1280)
    cache.put_block(NS, keys, want)
    found, got = cache.get_block(NS, keys)
    assert found.all() and got.dtype == np.float32
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.999
    assert cache.info()["bytes"].item() == 200 * 1280 * 2


def test_float32_rows_still_read_after_switching_to_float16(tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    cache.put_block(NS, ["old"], vectors(["old"]))
    monkeypatch.setattr(mlnb.config, "_cache_dtype", "float16")
    cache.put_block(NS, ["new"], vectors(["new"]))
    big = np.full((1, 48), 1e6, dtype=np.float32)  # float16 cannot hold it: kept float32
    cache.put_block(NS, ["big"], big)
    found, got = cache.get_block(NS, ["new", "old", "big"])
    assert found.all()
    assert np.array_equal(got[1], vectors(["old"])[0])  # exact: stored as float32
    assert np.allclose(got[0], vectors(["new"])[0], atol=1e-2) and np.array_equal(got[2], big[0])
    fmts = dict(sqlite3.connect(tmp_path / "e.sqlite").execute("SELECT key, fmt FROM embeddings").fetchall())
    assert fmts == {"old": "f4", "new": "f2", "big": "f4"}


def test_a_damaged_float16_row_is_a_miss(tmp_path, half):
    path = tmp_path / "e.sqlite"
    cache = EmbeddingCache(path)
    keys = ["a", "b"]
    cache.put_block(NS, keys, vectors(keys))
    cache.close()
    con = sqlite3.connect(path)
    vec = bytearray(con.execute("SELECT vec FROM embeddings WHERE key = 'b'").fetchone()[0])
    vec[3] ^= 0xFF
    con.execute("UPDATE embeddings SET vec = ? WHERE key = 'b'", [bytes(vec)])
    con.commit()
    con.close()
    with pytest.warns(CacheWarning, match="1 cached vectors"):
        found, _ = EmbeddingCache(path).get_block(NS, keys)
    assert found.tolist() == [True, False]


def test_a_schema_1_cache_is_upgraded_and_keeps_its_vectors(tmp_path):
    path = tmp_path / "v1.sqlite"
    con = sqlite3.connect(path)
    con.executescript(
        "CREATE TABLE embeddings (ns TEXT NOT NULL, key TEXT NOT NULL, dim INTEGER NOT NULL, vec BLOB NOT NULL,"
        " crc INTEGER, PRIMARY KEY (ns, key)) WITHOUT ROWID; PRAGMA user_version = 1;"
    )
    keys = [f"k{i}" for i in range(10)]
    vec = vectors(keys)
    con.executemany("INSERT INTO embeddings VALUES (?, ?, ?, ?, ?)", [(NS, k, 48, v.tobytes(), checksum(k, v.tobytes())) for k, v in zip(keys, vec)])
    con.commit()
    con.close()
    cache = EmbeddingCache(path)
    found, got = cache.get_block(NS, keys)
    assert found.all() and np.array_equal(got, vec)
    assert cache.missing(NS, ["k1", "zz"]) == ["zz"]
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} == {"embeddings"}


def test_cache_dtype_is_checked():
    with pytest.raises(mlnb.MlnbError, match="Unknown cache_dtype 'int8'"):
        mlnb.config.cache_dtype = "int8"
