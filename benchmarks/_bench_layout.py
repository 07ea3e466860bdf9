"""UMAP in a fresh kernel, with an empty and with a warm numba cache.

Each run is a new Python process (as a new Jupyter kernel is) with its own
empty workspace, so the layout cache never answers; only numba's cache differs.

    .venv/bin/python benchmarks/_bench_layout.py [--n 10000] [--d 1280]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = """
import time
t0 = time.perf_counter()
import numpy as np
from mlnb.widgets._layout import LayoutJob
n, d = {n}, {d}
rng = np.random.default_rng(0)
centres = rng.normal(size=(10, d)) * 3
X = (centres[rng.integers(0, 10, n)] + rng.normal(size=(n, d))).astype(np.float32)
t1 = time.perf_counter()
LayoutJob(X, "umap").wait()
print(f"{{time.perf_counter() - t1:.2f}} {{t1 - t0:.2f}}")
"""


def _fresh_kernel_umap(n: int, d: int, numba_cache: Path, workspace: Path) -> tuple[float, float]:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(numba_cache), MLNB_WORKSPACE=str(workspace))
    out = subprocess.run(
        [sys.executable, "-c", _CHILD.format(n=n, d=d)], env=env, capture_output=True, text=True, check=True
    )
    umap_s, setup_s = map(float, out.stdout.split())
    return umap_s, setup_s


def bench_umap_fresh_kernel(n: int = 10000, d: int = 1280) -> dict[str, float]:
    """Seconds for UMAP of n x d in a fresh process: empty numba cache, then warm; returns them too."""
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "numba"
        cold, _ = _fresh_kernel_umap(n, d, cache, Path(tmp) / "ws1")
        warm, _ = _fresh_kernel_umap(n, d, cache, Path(tmp) / "ws2")
    print(f"UMAP {n:,} x {d:,} in a fresh process: empty numba cache {cold:.1f} s, warm cache {warm:.1f} s "
          f"({cold / warm:.2f}x; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")  # fmt: skip
    return {"cold_s": cold, "warm_s": warm, "ratio": cold / warm}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--d", type=int, default=1280)
    a = ap.parse_args()
    bench_umap_fresh_kernel(a.n, a.d)
