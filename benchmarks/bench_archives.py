"""Per-image cost of reading from an archive vs a plain path (bytes read, no decode).

N camera-sized JPEGs (made as in bench_embed.py) as files, in a zip and in a tar:

  plain path      read_source(path)
  zip://          read_source('zip://m::x.zip')       (archive opened once, kept)
  archive+        read_source('archive+x.zip#m')
  tar://          read_source('tar://m::x.tar')
  zip, reopened   zipfile.ZipFile(x.zip) per member    (what each member cost before)
  tar, reopened   tarfile.open(x.tar) per member

    .venv/bin/python benchmarks/bench_archives.py [--n 200] [--size 1024x768]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from bench_embed import make_images  # noqa: E402 - the same images as the embedding benchmark


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--size", default="1024x768")
    args = ap.parse_args()
    w, h = map(int, args.size.split("x"))

    from mlnb import _archives
    from mlnb.images import read_source

    root = Path(tempfile.mkdtemp(prefix="mlnb-bench-archives-"))
    try:
        paths = make_images(root / "images", args.n, (w, h))
        names = [os.path.relpath(p, root / "images") for p in paths]
        with zipfile.ZipFile(root / "x.zip", "w") as zf:
            for p, m in zip(paths, names):
                zf.write(p, m)
        with tarfile.open(root / "x.tar", "w") as tf:
            for p, m in zip(paths, names):
                tf.add(p, m)
        mb = os.path.getsize(root / "x.zip") / 1e6
        print(f"{args.n} JPEGs of {w}x{h}; zip {mb:.0f} MB; {os.cpu_count()} cores")

        def per_image(sources, read=read_source) -> float:
            _archives.close_all()
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                for s in sources:
                    read(s)
                best = min(best, time.perf_counter() - t)
            return best / len(sources) * 1e3

        def zip_reopened(m: str) -> bytes:
            with zipfile.ZipFile(root / "x.zip") as zf:
                return zf.read(m)

        def tar_reopened(m: str) -> bytes:
            with tarfile.open(root / "x.tar") as tf:
                return tf.extractfile(m).read()

        plain = per_image(paths)
        rows = [
            ("plain path", plain),
            ("zip://", per_image([f"zip://{m}::{root / 'x.zip'}" for m in names])),
            ("archive+", per_image([f"archive+{root / 'x.zip'}#{m}" for m in names])),
            ("tar://", per_image([f"tar://{m}::{root / 'x.tar'}" for m in names])),
            ("zip, reopened", per_image(names, zip_reopened)),
            ("tar, reopened", per_image(names, tar_reopened)),
        ]
        for name, ms in rows:
            print(f"{name:>14}: {ms:7.3f} ms/image  ({ms / plain:5.2f}x plain path)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
