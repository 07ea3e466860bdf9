from __future__ import annotations

import gzip
import io
import struct
import tarfile
import threading
import warnings
import zipfile
import zlib

import numpy as np
import polars as pl
import pytest
from PIL import Image

import mlnb
from mlnb import images as images_mod
from mlnb._report import ImageLoadWarning


def cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture
def cat(photo_dir):
    return photo_dir / "chelsea.png"


def test_shape_and_sql_type(cat):
    v = mlnb.embed(str(cat))
    assert v.shape == (1280,) and v.dtype == np.float32 and np.isfinite(v).all()
    out = mlnb.sql(f"SELECT embed('{cat}') AS f")
    assert out.schema["f"] == pl.Array(pl.Float32, 1280)
    assert cos(out["f"][0].to_numpy(), v) > 0.9999


def test_every_input_kind_gives_the_same_vector(cat, tmp_path, monkeypatch):
    data = cat.read_bytes()
    ref = mlnb.embed(str(cat))
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as zf:
        zf.writestr("inner/cat.png", data)
    with tarfile.open(tmp_path / "photos.tar", "w") as tf:
        info = tarfile.TarInfo("inner/cat.png")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    (tmp_path / "cat.png.gz").write_bytes(gzip.compress(data))
    monkeypatch.setattr(images_mod, "fetch_url", lambda url, timeout: data)
    pil = Image.open(cat)
    sources = [
        f"file://{cat}",
        data,
        pil,
        np.asarray(pil.convert("RGB")),
        f"zip://inner/cat.png::{tmp_path / 'photos.zip'}",
        f"archive+file://{tmp_path / 'photos.zip'}#inner/cat.png",
        f"archive+file://{tmp_path / 'photos.tar'}#inner/cat.png",
        f"tar://inner/cat.png::{tmp_path / 'photos.tar'}",
        str(tmp_path / "cat.png.gz"),
        "https://example.org/cat.png",
    ]
    for s in sources:
        v = mlnb.embed(s)
        assert v is not None and cos(v, ref) > 0.999, s


def test_bytes_column_in_sql(cat):
    t = pl.DataFrame({"img": [cat.read_bytes()]})
    out = mlnb.sql("SELECT embed(img) AS f FROM t", t=t)
    assert cos(out["f"][0].to_numpy(), mlnb.embed(str(cat))) > 0.999


def _bomb_png(w=60000, h=60000):
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_bad_inputs_give_null_and_one_summary_warning(cat, tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("hello, not an image")
    full = cat.read_bytes()
    Image.open(cat).convert("RGB").save(tmp_path / "whole.jpg")
    (tmp_path / "truncated.jpg").write_bytes((tmp_path / "whole.jpg").read_bytes()[:2000])
    (tmp_path / "bomb.png").write_bytes(_bomb_png())

    def unreachable(url, timeout):
        raise TimeoutError("timed out")

    monkeypatch.setattr(images_mod, "fetch_url", unreachable)
    t = pl.DataFrame(
        {
            "path": [
                str(cat),
                str(tmp_path / "missing.jpg"),
                str(tmp_path / "notes.txt"),
                str(tmp_path / "truncated.jpg"),
                str(tmp_path / "bomb.png"),
                "https://unreachable.invalid/x.jpg",
                None,
            ]
        }
    )
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = mlnb.sql("SELECT path, embed(path) AS f FROM t", t=t)
    assert out.height == 7
    nulls = out["f"].is_null().to_list()
    assert nulls == [False, True, True, True, True, True, True]
    ours = [x for x in w if issubclass(x.category, ImageLoadWarning)]
    assert len(ours) == 1
    msg = str(ours[0].message)
    assert "5 images could not be used" in msg
    for needle in ("file not found", "not an image", "truncated", "too large", "timed out"):
        assert needle in msg, needle
    assert len(full) > 0


def test_modes_are_converted(tmp_path):
    rgb = Image.new("RGB", (64, 48), (200, 30, 30))
    variants = {
        "gray.png": rgb.convert("L"),
        "cmyk.jpg": rgb.convert("CMYK"),
        "palette.png": rgb.convert("P"),
        "alpha.png": rgb.convert("RGBA"),
        "sixteen.png": Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257),
    }
    for name, img in variants.items():
        img.save(tmp_path / name)
        loaded = images_mod.load_image(str(tmp_path / name))
        assert loaded.mode == "RGB" and loaded.size == (64, 48), name
        assert mlnb.embed(str(tmp_path / name)) is not None


def test_cache_hit_invalidation_and_no_entry_for_failures(cat, tmp_path, counting_forward):
    p = tmp_path / "c.png"
    p.write_bytes(cat.read_bytes())
    first = mlnb.embed(str(p))
    assert sum(counting_forward) == 1
    again = mlnb.embed(str(p))
    assert sum(counting_forward) == 1 and np.array_equal(first, again)  # served from the cache
    Image.open(cat).rotate(90).save(p)  # new content, new size/mtime
    changed = mlnb.embed(str(p))
    assert sum(counting_forward) == 2 and cos(changed, first) < 0.999
    before = len(mlnb.cache)
    with pytest.warns(ImageLoadWarning):
        assert mlnb.embed(str(tmp_path / "nope.png")) is None
    assert len(mlnb.cache) == before
    info = mlnb.cache.info()
    assert info["entries"].sum() == before and mlnb.cache.size > 0
    assert mlnb.cache.clear() == before and len(mlnb.cache) == 0


def test_cache_persists_across_processes(cat, tmp_path, _workspace):
    import subprocess
    import sys

    code = f"import mlnb; mlnb.config.workspace = {str(_workspace)!r}; mlnb.embed({str(cat)!r}); print(len(mlnb.cache))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("1")
    assert len(mlnb.cache) == 1


def test_bf16_features_are_faithful(photo_dir, monkeypatch):
    paths = [str(p) for p in sorted(photo_dir.iterdir())]
    monkeypatch.setattr(mlnb.config, "_precision", "fp32")
    ref = mlnb.embed(paths).to_numpy()
    monkeypatch.setattr(mlnb.config, "_precision", "bf16")
    low = mlnb.embed(paths).to_numpy()
    for a, b in zip(ref, low):
        assert cos(a, b) >= 0.99


def test_similarity_search_in_sql(photo_dir, counting_forward):
    q = photo_dir / "chelsea.png"
    sql = (
        f"SELECT regexp_extract(path, '[^/]+$') AS name FROM read_images('{photo_dir}/*') "
        f"ORDER BY array_cosine_similarity(embed(path), embed('{q}')) DESC LIMIT 3"
    )
    out = mlnb.sql(sql)
    assert out["name"][0] == "chelsea.png"
    n = sum(counting_forward)
    mlnb.sql(sql)
    assert sum(counting_forward) == n  # the second run is served from the cache


def test_named_layer_and_unknown_layer(cat):
    v = mlnb.embed(str(cat), layer="_blocks.5")
    assert v.shape == (80,)
    out = mlnb.sql(f"SELECT embed('{cat}', layer := '_blocks.5') AS f")
    assert out.schema["f"] == pl.Array(pl.Float32, 80)
    with pytest.raises(mlnb.MlnbError, match="no layer"):
        mlnb.embed(str(cat), layer="_blocks.99")


def test_user_model(cat):
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
    mlnb.register_model("tiny_test", net, input_size=32, replace=True)
    v = mlnb.embed(str(cat), model="tiny_test")
    assert v.shape == (4,)
    mlnb.register_model("tiny_test_l", net, input_size=32, layer="1", replace=True)
    assert mlnb.embed(str(cat), model="tiny_test_l").shape == (8,)
    assert mlnb.sql(f"SELECT embed('{cat}', model := 'tiny_test') AS f").schema["f"] == pl.Array(pl.Float32, 4)
    with pytest.raises(mlnb.MlnbError, match="nn.Module"):
        mlnb.register_model("bad", object())


def test_threads_share_one_warm_model(photo_dir):
    paths = [str(p) for p in sorted(photo_dir.iterdir())]
    results = [None] * 4
    errors = []

    def work(i):
        try:
            results[i] = mlnb.embed(paths).to_numpy()
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results[1:]:
        assert np.allclose(r, results[0], atol=1e-3)


def test_cached_features_need_no_model(photo_dir, monkeypatch):
    """A query the cache answers does not load the model (a fresh kernel re-running a notebook)."""
    from mlnb.features import engine

    paths = [str(p) for p in sorted(photo_dir.iterdir())]
    first = mlnb.embed(paths)
    monkeypatch.setattr(engine, "_LOADED", {})

    def no_model(name):
        raise AssertionError("the model was loaded for cached features")

    monkeypatch.setattr(engine, "get_loaded", no_model)
    again = mlnb.embed(paths)
    assert (again.to_numpy() == first.to_numpy()).all()
