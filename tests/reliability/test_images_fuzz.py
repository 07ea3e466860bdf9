"""Property: whatever bytes the loader is given (random, or real PNG/JPEG/GIF/
TIFF/WebP bytes mutated), it returns an RGB image or raises ImageLoadError —
never another exception and never a warning of Pillow's own."""

from __future__ import annotations

import gzip
import io
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import mlnb
from mlnb import images as images_mod
from mlnb.exceptions import ImageLoadError


def _seeds() -> list[bytes]:
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 255, (23, 31, 3), dtype=np.uint8))
    out = []
    for fmt, mode in [("PNG", "RGB"), ("PNG", "P"), ("PNG", "RGBA"), ("JPEG", "RGB"), ("JPEG", "CMYK"), ("GIF", "P"), ("TIFF", "RGB"), ("BMP", "RGB"), ("WEBP", "RGB")]:
        buf = io.BytesIO()
        kwargs = {"exif": Image.Exif().tobytes()} if fmt == "JPEG" else {}
        img.convert(mode).save(buf, format=fmt, **kwargs)
        out.append(buf.getvalue())
    return out


SEEDS = _seeds()


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "overwrite", "truncate", "insert", "delete", "dims"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[at : at + len(chunk)] = chunk
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif op == "dims":  # headers claiming huge sizes: width/height fields sit early in every format
            pos = draw(st.integers(0, min(40, max(0, len(data) - 4))))
            data[pos : pos + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\xff\xff", b"\x7f\xff\x00\x01", b"\x00\x00\x00\x00"]))
    return bytes(data)


def _check(data: bytes, source=None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a Pillow warning leaking out fails the test
        try:
            img = images_mod.load_image(source if source is not None else data)
        except ImageLoadError as exc:
            assert exc.reason
            return
    assert img.mode == "RGB" and img.size[0] > 0 and img.size[1] > 0


@pytest.fixture(autouse=True)
def small_caps(monkeypatch):
    # mutated headers may claim any size: keep each decode small for CI
    monkeypatch.setattr(mlnb.config, "max_image_pixels", 2_000_000)
    monkeypatch.setattr(mlnb.config, "max_image_bytes", 1 << 20)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_image_bytes_load_or_are_reported(data):
    _check(data)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_load_or_are_reported(data):
    _check(data)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), st.sampled_from(["gz", "zip", "zip-raw", "archive"]))
def test_mutated_files_and_archives_load_or_are_reported(data, how):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d)
        if how == "gz":
            (p / "x.png.gz").write_bytes(gzip.compress(data))
            src = str(p / "x.png.gz")
        elif how == "zip-raw":  # the archive itself is the mutated bytes
            (p / "a.zip").write_bytes(data)
            src = f"zip://x.png::{p / 'a.zip'}"
        else:
            with zipfile.ZipFile(p / "a.zip", "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr("x.png", data)
            raw = bytearray((p / "a.zip").read_bytes())
            if how == "archive" and len(raw) > 40:  # damage the archive's compressed stream too
                raw[30 + len(raw) // 3] ^= 0xFF
            (p / "a.zip").write_bytes(bytes(raw))
            src = f"archive+file://{p / 'a.zip'}#x.png" if how == "archive" else f"zip://x.png::{p / 'a.zip'}"
        _check(data, source=src)
