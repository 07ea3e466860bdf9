"""How the Ray engine's throughput grows with workers, against the local engine.

The same N camera-sized JPEGs (made as in bench_embed.py), a fresh workspace
(empty cache) for every run, one process:

  local      mlnb's local engine in this process (all cores), the baseline
  ray k=1    a local Ray with 1 CPU: one actor
  ray k=2    a local Ray with 2 CPUs: two actors, one CPU each
  ...        (up to --max-workers; each step adds one CPU, as adding a node would)

Rates are end to end (actor start and model load included); "first shard" is
the time until the first shard is on disk (the fixed cost of a job).

Then the start of a job when the previous one left its actor pool (models
loaded) in place: first job vs a second job on other images, same model, in
one local Ray with 2 CPUs; "start" is the time until the first shard (4 images) is done.

    .venv/bin/python benchmarks/bench_ray.py [--n 480] [--size 1024x768] [--max-workers 2] [--reuse-only]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from bench_embed import make_images  # noqa: E402 - the same images as the embedding benchmark


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=480)
    ap.add_argument("--size", default="1024x768")
    ap.add_argument("--max-workers", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=24)
    ap.add_argument("--reuse-only", action="store_true", help="only the first-job vs second-job start")
    args = ap.parse_args()
    w, h = map(int, args.size.split("x"))

    import polars as pl
    import ray

    import mlnb
    from mlnb.features import ray_engine
    from mlnb.features.engine import embed_images

    root = Path(tempfile.mkdtemp(prefix="mlnb-bench-ray-"))
    paths = make_images(root / "images", args.n, (w, h))
    frame = pl.DataFrame({"path": paths})
    print(f"{args.n} JPEGs of {w}x{h}, efficientnet_lite0, {os.cpu_count()} cores; shard size {args.shard_size}")

    if args.reuse_only:
        reuse(frame, root, 4)
        return
    mlnb.config.workspace = root / "ws-local"
    embed_images(paths[:8], progress=False)  # model loaded once, as a warm kernel has it
    mlnb.config.workspace = root / "ws-local-run"
    t = time.perf_counter()
    embed_images(paths, progress=False, use_cache=False)
    local = args.n / (time.perf_counter() - t)
    print(f"{'local engine':>14}: {local:7.1f} img/s  (baseline, 1.00x)")

    rates = {}
    for k in range(1, args.max_workers + 1):
        ray.init(num_cpus=k, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        mlnb.config.workspace = root / f"ws-ray{k}"
        first: list[float] = []
        t = time.perf_counter()

        def note_first(done: int, total: int, first: list[float] = first, t: float = t) -> None:
            if not first:
                first.append(time.perf_counter() - t)

        job = ray_engine.run_job(frame, "path", workers=k, shard_size=args.shard_size, progress=False, on_shard=note_first)
        secs = time.perf_counter() - t
        ray.shutdown()
        assert job.rows == args.n and job.computed == job.shards
        rates[k] = args.n / secs
        steady = (args.n - args.shard_size) / max(secs - first[0], 1e-9)
        print(
            f"{f'ray, {k} worker(s)':>14}: {rates[k]:7.1f} img/s  ({rates[k] / local:.2f}x local, "
            f"{rates[k] / rates[1]:.2f}x one worker; first shard after {first[0]:.1f} s, then {steady:.1f} img/s)"
        )

    reuse(frame, root, 4)


def reuse(frame, root: Path, shard_size: int) -> None:
    """Job start with a fresh pool vs with the pool the previous job left."""
    import ray

    import mlnb
    from mlnb.features import ray_engine

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    mlnb.config.workspace = root / "ws-reuse"
    starts, totals, actors = [], [], []
    half = frame.height // 2
    for part in (frame.head(half), frame.tail(frame.height - half)):  # other images: nothing cached or on disk
        first: list[float] = []
        t = time.perf_counter()

        def note_first(done: int, total: int, first: list[float] = first, t: float = t) -> None:
            if not first:
                first.append(time.perf_counter() - t)

        job = ray_engine.run_job(part, "path", workers=1, shard_size=shard_size, progress=False, on_shard=note_first)
        totals.append(time.perf_counter() - t)
        starts.append(first[0])
        actors.append(job.actors)
    ray.shutdown()
    print(f"\npool reuse, 1 worker, {half} images a job, shard size {shard_size}:")
    print(f"  first job   first shard after {starts[0]:5.2f} s, whole job {totals[0]:5.2f} s  (actor start + model load)")
    print(f"  second job  first shard after {starts[1]:5.2f} s, whole job {totals[1]:5.2f} s  "
          f"(same actor: {actors[0] == actors[1]}; start {starts[0] / starts[1]:.1f}x sooner)")


if __name__ == "__main__":
    main()
