"""embed() in SQL against its Python twin embed_frame on the same images, same process.

Each run starts from an empty cache (a fresh workspace), so both compute every
image; the order alternates. Prints images/s and the SQL/frame ratio (target: 1.0).

    .venv/bin/python benchmarks/bench_embed_sql.py [--n 256] [--size 1024x768] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench_embed import make_images


def main() -> None:
    import polars as pl

    import mlnb

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--size", default="1024x768")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    w, h = map(int, args.size.split("x"))
    root = Path(tempfile.mkdtemp())
    photos = pl.DataFrame({"path": make_images(root / "imgs", args.n, (w, h))})
    mlnb.embed(photos["path"][0])  # model loaded and warm before timing

    def fresh() -> None:
        mlnb.config.workspace = tempfile.mkdtemp(dir=root)

    def frame() -> None:
        mlnb.embed_frame(photos, "path", progress=False)

    def sql() -> None:
        mlnb.sql("SELECT path, embed(path) AS f FROM photos", photos=photos)

    times: dict[str, list[float]] = {"embed_frame": [], "SQL embed()": []}
    for i in range(args.repeat):
        order = [("embed_frame", frame), ("SQL embed()", sql)]
        for name, fn in order if i % 2 == 0 else order[::-1]:
            fresh()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["embed_frame"])
    print(f"{args.n} JPEGs {args.size}, efficientnet_lite0, cache empty each run, median of {args.repeat}")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"  {name:12s} {args.n / m:7.1f} img/s   {m / base:.3f}x the time of embed_frame")


if __name__ == "__main__":
    main()
