"""Where the embedding pipeline spends its wall time: forward passes, decoding, the rest.

For a first sight of the images (decoding the originals) and for images already seen
(the decode-once copies), with torch's thread count as it is and at 1, against the
model alone on preprocessed batches in the same process (the ceiling).

    python benchmarks/profile_embed_pipeline.py [--n 256]

Wall time is split into: forward (inside ``Loaded.forward``), decode (some image
being decoded and no forward running) and other (neither: scheduling, stacking,
caching). On a CPU the engine decodes a batch, then runs it, so forward + decode
is the whole unless "other" says otherwise. Note: OpenMP threads that spin after a
forward pass take cores from the decoders; on a machine shared with other work,
``OMP_WAIT_POLICY=PASSIVE`` (set before torch loads) changed forward time several-fold.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_embed import make_images


def _merged(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, -1.0
    for s, e in sorted(intervals):
        if s > end:
            total += e - s
            end = e
        elif e > end:
            total += e - end
            end = e
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=256)
    args = ap.parse_args()
    import torch

    import mlnb
    from mlnb.features import engine

    tmp = Path(tempfile.mkdtemp())
    paths = make_images(tmp / "images", args.n, (2016, 1512))
    events: list[tuple[str, float, float]] = []
    decode_one, forward = engine._decode_one, engine.Loaded.forward

    def timed_decode(*a, **kw):
        t = time.perf_counter()
        try:
            return decode_one(*a, **kw)
        finally:
            events.append(("decode", t, time.perf_counter()))

    def timed_forward(self, batch, layer="pool"):
        t = time.perf_counter()
        try:
            return forward(self, batch, layer)
        finally:
            events.append(("forward", t, time.perf_counter()))

    engine._decode_one = timed_decode
    engine.Loaded.forward = timed_forward
    mlnb.config.workspace = tmp / ".mlnb-warmup"
    engine.embed_images(paths[:16], use_cache=False, progress=False)
    loaded = engine.get_loaded("efficientnet_lite0")
    pre = np.stack([engine.preprocess(loaded.spec, mlnb.images.load_image(p)) for p in paths[:32]])
    batches = [pre[i : i + 8] for i in range(0, len(pre), 8)]

    print(f"N={args.n} JPEGs 2016x1512, cpus={torch.get_num_threads()} torch threads")
    print(f"{'case':30s} {'img/s':>7s} {'vs model':>9s} {'forward':>8s} {'decode':>8s} {'other':>7s}")
    for threads in dict.fromkeys((torch.get_num_threads(), 1)):
        torch.set_num_threads(threads)
        t0, count = time.perf_counter(), 0
        while time.perf_counter() - t0 < 3:
            for b in batches:
                forward(loaded, b)
                count += len(b)
        ceiling = count / (time.perf_counter() - t0)
        print(f"{f'model only, threads={threads}':30s} {ceiling:7.0f} {1:8.2f}x")
        mlnb.config.workspace = tmp / f".mlnb-{threads}"  # no decode-once copies yet
        for case in ("first sight", "seen (decode-once copy)"):
            events.clear()
            t = time.perf_counter()
            engine.embed_images(paths, use_cache=False, progress=False)
            total = time.perf_counter() - t
            fwd = sum(e - s for k, s, e in events if k == "forward")
            dec = _merged([(s, e) for k, s, e in events if k == "decode"])
            rate = args.n / total
            print(f"{f'{case}, threads={threads}':30s} {rate:7.0f} {rate / ceiling:8.2f}x {fwd:7.2f}s {dec:7.2f}s {total - fwd - dec:6.2f}s")


if __name__ == "__main__":
    main()
