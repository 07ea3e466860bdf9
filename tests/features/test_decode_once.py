"""Decode once: a second model, layer or thumbnail reads the workspace's small copy."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from PIL import Image

import mlnb
from mlnb import _copies, images


@pytest.fixture
def reads(monkeypatch):
    """Paths whose original bytes were read (each read is followed by a full decode)."""
    seen: list[str] = []
    original = images.read_source

    def read_source(src, **kw):
        seen.append(str(src))
        return original(src, **kw)

    monkeypatch.setattr(images, "read_source", read_source)
    return seen


def _photo(path, size=(800, 600), color=(200, 30, 40)):
    rng = np.random.default_rng(sum(color))
    arr = (rng.random((size[1], size[0], 3)) * 60 + np.array(color) * 0.7).astype(np.uint8)
    Image.fromarray(arr).save(path, quality=90)
    return str(path)


@pytest.mark.slow
def test_second_layer_and_thumbnail_read_the_copy(photo_dir, reads):
    from mlnb.features.engine import embed_images

    paths = sorted(str(p) for p in photo_dir.iterdir())
    first, ok = embed_images(paths, use_cache=False, progress=False)
    assert ok.all() and sorted(reads) == paths  # each original decoded once
    reads.clear()
    again, _ = embed_images(paths, use_cache=False, progress=False)
    embed_images(paths, layer="_blocks.10", use_cache=False, progress=False)
    for p in paths:
        images.thumbnail(p, 64)
    assert reads == []  # the model again, another layer, thumbnails: all from the copy
    # The copy holds the pixels the first pass used: the very same features.
    np.testing.assert_array_equal(first, again)
    mlnb.config.decode_once = False
    try:
        direct, _ = embed_images(paths, use_cache=False, progress=False)
    finally:
        mlnb.config.decode_once = True
    np.testing.assert_array_equal(direct, first)


def test_copy_is_small_and_used(tmp_path, reads):
    p = _photo(tmp_path / "a.jpg", (2000, 1500))
    img = images.load_image(p, draft=(256, 256))
    assert min(img.size) == 256
    assert images.load_image(p, draft=(200, 200)).size == img.size
    assert reads == [p]
    # a reader that needs more than the copy has reads the original (and keeps a larger copy)
    assert min(images.load_image(p, draft=(400, 400)).size) == 400
    assert images.load_image(p, draft=(256, 256)).size[1] == 400
    assert reads == [p, p]
    # without draft the caller wants the original's pixels
    assert images.load_image(p).size == (2000, 1500)


def test_copy_invalidated_when_the_file_changes(tmp_path, reads):
    p = _photo(tmp_path / "a.jpg", (1200, 900), color=(250, 0, 0))
    red = np.asarray(images.load_image(p, draft=(256, 256))).mean(axis=(0, 1))
    time.sleep(0.01)
    _photo(tmp_path / "a.jpg", (1000, 900), color=(0, 0, 250))
    blue = np.asarray(images.load_image(p, draft=(256, 256))).mean(axis=(0, 1))
    assert red[0] > red[2] and blue[2] > blue[0]
    assert reads == [p, p]


def test_small_images_and_off_switch_make_no_copy(tmp_path, reads):
    small = _photo(tmp_path / "s.jpg", (300, 200))
    images.load_image(small, draft=(256, 256))
    images.load_image(small, draft=(256, 256))
    assert reads == [small, small]  # decoding it again is cheap; no lossy or larger copy
    big = _photo(tmp_path / "b.jpg", (1200, 900))
    mlnb.config.decode_once = False
    try:
        images.load_image(big, draft=(256, 256))
        images.load_image(big, draft=(256, 256))
    finally:
        mlnb.config.decode_once = True
    assert reads.count(big) == 2
    assert _copies.get_store().size() == 0


def test_torn_copy_falls_back_to_the_original(tmp_path, reads):
    p = _photo(tmp_path / "a.jpg", (1200, 900))
    want = np.asarray(images.load_image(p, draft=(256, 256)))
    path = _copies.get_store().path(images.source_key(p))
    path.write_bytes(path.read_bytes()[:1000])
    np.testing.assert_array_equal(np.asarray(images.load_image(p, draft=(256, 256))), want)
    assert reads == [p, p]


def test_lru_eviction_keeps_the_store_bounded(tmp_path, monkeypatch):
    paths = [_photo(tmp_path / f"{i}.jpg", (1200, 900), color=(i * 20, 50, 50)) for i in range(8)]
    per_copy = 341 * 256 * 3 + 16
    monkeypatch.setattr(mlnb.config, "_decode_once_max_bytes", 4 * per_copy + 100)
    store = _copies.get_store()
    for p in paths[:4]:
        images.load_image(p, draft=(256, 256))
    images.load_image(paths[0], draft=(256, 256))  # used again: the newest
    images.load_image(paths[4], draft=(256, 256))  # over the cap: the oldest go
    assert store.size() <= mlnb.config.decode_once_max_bytes
    kept = {p for p in paths[:5] if store.path(images.source_key(p)).exists()}
    assert paths[0] in kept and paths[4] in kept and paths[1] not in kept
    for p in paths[5:]:
        images.load_image(p, draft=(256, 256))
    assert store.size() <= mlnb.config.decode_once_max_bytes


def test_concurrent_writers_leave_whole_copies(tmp_path):
    paths = [_photo(tmp_path / f"{i}.jpg", (900, 700), color=(i * 30, 90, 10)) for i in range(4)]
    want = {p: np.asarray(images.load_image(p, draft=(256, 256))) for p in paths}
    store = _copies.get_store()
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for i in range(40):
                p = paths[(seed + i) % len(paths)]
                if i % 3 == 0:
                    store.discard(images.source_key(p))
                got = np.asarray(images.load_image(p, draft=(256, 256)))
                np.testing.assert_array_equal(got, want[p])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    left = [n for _d, _s, files in os.walk(store.root) for n in files if n.endswith(".tmp")]
    assert left == []
