"""Hostile files: zip, tar, gzip/bzip2/xz and pixel bombs, broken archives.

Each bomb inflates to far more than the byte cap, which the tests lower so that
they stay small for CI. Peak memory is measured in a child process
(``ru_maxrss`` before and after one load)."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import struct
import subprocess
import sys
import tarfile
import threading
import time
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
from mlnb.exceptions import ImageLoadError

MiB = 1 << 20
BOMB = 128 * MiB  # what each bomb inflates to
CAP = 8 * MiB  # the byte cap the tests set
CHUNK = b"\0" * MiB


class Zeros(io.RawIOBase):
    """A file of ``n`` zero bytes that never exists in memory as a whole."""

    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        k = min(len(b), self.left)
        b[:k] = bytes(k)
        self.left -= k
        return k


def zip_bomb(path, member="inner/bomb.png", size=BOMB):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, zf.open(member, "w", force_zip64=True) as fh:
        for _ in range(size // MiB):
            fh.write(CHUNK)
    return path


def tar_bomb(path, member="inner/bomb.png", size=BOMB):
    with tarfile.open(path, "w:gz", compresslevel=1) as tf:
        info = tarfile.TarInfo(member)
        info.size = size
        tf.addfile(info, io.BufferedReader(Zeros(size)))
    return path


def stream_bomb(path, opener, size=BOMB):
    with opener(path) as fh:
        for _ in range(size // MiB):
            fh.write(CHUNK)
    return path


def png_header_bomb(w, h):
    """A valid PNG header claiming ``w`` x ``h`` pixels, with almost no data."""

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bombs")
    good = d / "good.png"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(good)
    zip_bomb(d / "bomb.zip")
    tar_bomb(d / "bomb.tar.gz")
    stream_bomb(d / "bomb.jpg.gz", lambda p: gzip.open(p, "wb", compresslevel=1))
    stream_bomb(d / "bomb.jpg.bz2", lambda p: bz2.open(p, "wb", compresslevel=1))
    stream_bomb(d / "bomb.jpg.xz", lambda p: lzma.open(p, "wb", preset=0))
    (d / "big.raw").write_bytes(bytes(CAP + 1))
    with zipfile.ZipFile(d / "photos.zip", "w") as zf:
        zf.write(good, "inner/good.png")
    raw = bytearray((d / "photos.zip").read_bytes())
    at = raw.find(b"IDAT")  # the member is stored: damage its pixel data so the CRC check fails
    raw[at + 8 : at + 16] = b"\xff" * 8
    (d / "corrupt.zip").write_bytes(bytes(raw))
    (d / "notzip.zip").write_bytes(b"PK\x03\x04 this is not really a zip archive")
    return {
        "good": str(good),
        "zip": f"zip://inner/bomb.png::{d / 'bomb.zip'}",
        "archive+zip": f"archive+file://{d / 'bomb.zip'}#inner/bomb.png",
        "tar": f"tar://inner/bomb.png::{d / 'bomb.tar.gz'}",
        "archive+tar": f"archive+file://{d / 'bomb.tar.gz'}#inner/bomb.png",
        "gz": str(d / "bomb.jpg.gz"),
        "bz2": str(d / "bomb.jpg.bz2"),
        "xz": str(d / "bomb.jpg.xz"),
        "file": str(d / "big.raw"),
        "corrupt-zip": f"zip://inner/good.png::{d / 'corrupt.zip'}",
        "not-zip": f"archive+file://{d / 'notzip.zip'}#inner/good.png",
        "missing-member": f"zip://inner/absent.png::{d / 'photos.zip'}",
        "missing-archive": f"archive+file://{d / 'absent.zip'}#inner/good.png",
    }


REASONS = {
    "zip": "too large",
    "archive+zip": "too large",
    "tar": "too large",
    "archive+tar": "too large",
    "gz": "too large",
    "bz2": "too large",
    "xz": "too large",
    "file": "too large",
    "corrupt-zip": "corrupt archive",
    "not-zip": "not a zip or tar archive",
    "missing-member": "no member 'inner/absent.png'",
    "missing-archive": "archive not found",
}


@pytest.fixture
def low_caps(monkeypatch):
    monkeypatch.setattr(mlnb.config, "max_image_bytes", CAP)


@pytest.mark.parametrize("kind", sorted(REASONS))
def test_each_hostile_source_gives_its_reason(bombs, kind, low_caps):
    with pytest.raises(ImageLoadError) as info:
        images_mod.load_image(bombs[kind])
    assert REASONS[kind] in info.value.reason, info.value.reason


def test_a_bomb_within_the_cap_still_loads_a_real_member(bombs, tmp_path):
    # the cap is on one member, not on the archive: a big archive of small images is fine
    big = tmp_path / "big.zip"
    zip_bomb(big, member="padding.bin", size=4 * MiB)
    with zipfile.ZipFile(big, "a") as zf:
        zf.write(bombs["good"], "inner/good.png")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mlnb.config, "max_image_bytes", 1 * MiB)
        assert images_mod.load_image(f"zip://inner/good.png::{big}").size == (40, 30)
        assert images_mod.load_image(f"archive+file://{big}#inner/good.png").size == (40, 30)


_CHILD = """
import json, resource, sys, time
import mlnb
from mlnb.images import load_image
from mlnb.exceptions import ImageLoadError

def peak_mb():
    try:  # the high-water mark since it was reset below (Linux)
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

src, good, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
mlnb.config.max_image_bytes = cap
load_image(good)  # Pillow and its plugins loaded before the baseline
try:  # forget the peak of the imports: measure this load alone
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
except OSError:
    pass
base = peak_mb()
t = time.perf_counter()
try:
    load_image(src)
    reason = None
except ImageLoadError as exc:
    reason = exc.reason
print(json.dumps({"reason": reason, "grew_mb": peak_mb() - base, "seconds": time.perf_counter() - t}))
"""


def peak_growth(src: str, good: str, cap: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, src, good, str(cap)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["zip", "archive+zip", "tar", "gz", "bz2", "xz"])
def test_bomb_memory_stays_bounded(bombs, kind):
    got = peak_growth(bombs[kind], bombs["good"], CAP)
    print(f"\nFIGURE {kind} bomb ({BOMB // MiB} MiB inflated, cap {CAP // MiB} MiB): +{got['grew_mb']:.1f} MB peak, {got['seconds']:.2f}s, {got['reason']}")
    assert got["reason"] and "too large" in got["reason"]
    assert got["grew_mb"] < 3 * CAP / MiB + 16  # a few copies of the capped bytes at most, never the bomb


def test_memory_measure_sees_an_uncapped_bomb(bombs):
    # The same measure with the cap above the bomb: proves the bound above is the cap's doing.
    got = peak_growth(bombs["gz"], bombs["good"], 4 * BOMB)
    print(f"\nFIGURE gz bomb without a binding cap: +{got['grew_mb']:.1f} MB peak ({got['reason']})")
    assert got["grew_mb"] > BOMB / MiB * 0.9


def test_pixel_bomb_is_refused_at_pillows_warning_level():
    assert mlnb.config.max_image_pixels == Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing from Pillow leaks (DecompressionBombWarning)
        with pytest.raises(ImageLoadError, match="too large: 13000x13000 pixels"):
            images_mod.load_image(png_header_bomb(13000, 13000))


def test_pixel_limit_is_configurable(monkeypatch):
    data = png_header_bomb(3000, 3000)
    monkeypatch.setattr(mlnb.config, "max_image_pixels", 4_000_000)
    with pytest.raises(ImageLoadError, match="max_image_pixels"):
        images_mod.load_image(data)
    with pytest.raises(mlnb.MlnbError, match="positive whole number"):
        mlnb.config.max_image_pixels = 0


def test_pixels_decoded_at_once_are_bounded_across_threads(monkeypatch, tmp_path):
    # 8 images of 1.44M pixels, a budget of 3M: at most 2 decode at once, whatever the threads.
    monkeypatch.setattr(mlnb.config, "max_image_pixels", 3_000_000)
    path = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1200, 1200, 3), dtype=np.uint8)).save(path)
    peak, lock = [0], threading.Lock()

    def then(img):
        with lock:
            peak[0] = max(peak[0], images_mod._BUDGET._used)
        time.sleep(0.05)
        return img.size

    threads = [threading.Thread(target=images_mod.load_image, args=(str(path),), kwargs={"then": then}) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 0 < peak[0] <= 3_000_000
    assert images_mod._BUDGET._used == 0


def test_corrupt_exif_is_a_note_not_a_leaked_warning(tmp_path):
    img = Image.new("RGB", (32, 32), (1, 2, 3))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes())
    data = bytearray(buf.getvalue())
    at = data.find(b"Exif\0\0") + 6 + 8  # inside the IFD: claim an absurd entry count
    data[at : at + 2] = b"\xff\xff"
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        assert mlnb.embed(bytes(data)) is not None
    kinds = [w.category.__name__ for w in rec]
    assert kinds == ["ImageLoadWarning"], kinds  # never Pillow's own warning beside ours
    assert "1 image loaded with problems" in str(rec[0].message)
    frame = mlnb.last_failures()
    assert frame["null"].to_list() == [False] and "Corrupt EXIF data" in frame["reason"][0]


def test_sql_reports_each_row_caches_nothing_for_it_and_finishes(bombs, low_caps):
    sources = [bombs["good"], *(bombs[k] for k in REASONS)]
    t = pl.DataFrame({"path": sources})
    before = len(mlnb.cache)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = mlnb.sql("SELECT path, embed(path) AS f FROM t", t=t)
    took = time.perf_counter() - start
    assert out["f"].is_null().to_list() == [False] + [True] * len(REASONS)
    assert len(mlnb.cache) == before + 1  # only the good image
    (warning,) = [w.message for w in rec]
    assert isinstance(warning, ImageLoadWarning)
    assert "12 images could not be used" in str(warning)
    assert "... and 2 more (all of them: mlnb.last_failures())" in str(warning)
    for frame in (warning.failures, mlnb.last_failures()):
        assert frame.height == len(REASONS) and frame["null"].all()
        reasons = dict(zip(frame["source"], frame["reason"]))
        for kind, needle in REASONS.items():
            assert needle in reasons[bombs[kind]], (kind, reasons[bombs[kind]])
    assert "cannot preprocess" not in str(warning) and "file not found" not in str(warning)
    print(f"\nFIGURE SQL query over {len(sources)} rows ({len(REASONS)} hostile): {took:.2f}s")
