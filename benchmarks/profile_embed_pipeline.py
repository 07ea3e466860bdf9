"""Where the embedding pipeline spends its time: decode wait vs forward, by thread setting.

    python benchmarks/profile_embed_pipeline.py [--n 1024]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench_embed import make_images


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1024)
    args = ap.parse_args()
    import torch

    import mlnb
    from mlnb.features import engine

    tmp = Path(tempfile.mkdtemp())
    mlnb.config.workspace = tmp / ".mlnb"
    paths = make_images(tmp / "images", args.n, (2016, 1512))
    spent = {"forward": 0.0}
    original = engine.Loaded.forward

    def forward(self, batch, layer="pool"):
        t = time.perf_counter()
        out = original(self, batch, layer)
        spent["forward"] += time.perf_counter() - t
        return out

    engine.Loaded.forward = forward
    engine.embed_images(paths[:256], use_cache=False)
    for threads in (torch.get_num_threads(), 1):
        torch.set_num_threads(threads)
        spent["forward"] = 0.0
        t = time.perf_counter()
        engine.embed_images(paths, use_cache=False, progress=False)
        total = time.perf_counter() - t
        print(f"torch threads={threads}: {args.n / total:.0f} img/s, total {total:.2f}s, forward {spent['forward']:.2f}s")
    t = time.perf_counter()
    list(engine._pool().map(lambda p: engine._decode_one(engine.get_loaded("efficientnet_lite0").spec, p), paths))
    print(f"decode alone in the pool: {args.n / (time.perf_counter() - t):.0f} img/s")


if __name__ == "__main__":
    main()
