"""Embedding explorer: UMAP time on 10,000 x 1,280 features (and its cache hit),
then, in JupyterLab + Chromium, time to first render and hover latency with
100,000 points (coordinates given, so the view alone is measured).

    .venv/bin/python benchmarks/bench_explorer.py [--umap-n 10000] [--points 100000]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np


def clustered(n: int, d: int, k: int = 10, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 3
    return (centres[rng.integers(0, k, n)] + rng.normal(size=(n, d))).astype(np.float32)


def bench_umap(n: int, tmp: Path) -> None:
    import mlnb
    from mlnb.widgets.explorer import umap_coordinates

    mlnb.config.workspace = tmp / ".mlnb"
    X = clustered(n, 1280)
    t0 = time.perf_counter()
    umap_coordinates(X)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    umap_coordinates(X)
    again = time.perf_counter() - t0
    print(f"UMAP {n:,} x 1,280 -> 2-D: {first:.1f} s (includes numba compilation in this process); cached: {again * 1000:.1f} ms")


def bench_view(points: int, tmp: Path) -> None:
    import nbformat
    from playwright.sync_api import sync_playwright

    root = tmp / "lab"
    root.mkdir()
    cell = (
        "import numpy as np, polars as pl, mlnb\n"
        "from PIL import Image\n"
        f"n = {points}\n"
        "rng = np.random.default_rng(0)\n"
        "for i in range(10): Image.new('RGB', (32, 32), (i * 25, 80, 160)).save(f'img{i}.png')\n"
        "df = pl.DataFrame({'features': rng.normal(size=(n, 4)).astype('float32'), 'group': [str(i % 10) for i in range(n)],"
        " 'path': [f'img{i % 10}.png' for i in range(n)]}, schema_overrides={'features': pl.Array(pl.Float32, 4)})\n"
        "xy = rng.normal(size=(n, 2)) + rng.integers(0, 10, size=(n, 1)) * 3\n"
        "ex = mlnb.explore(df, features='features', color='group', image='path', coords=xy)\n"
        "ex"
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (root / "bench.ipynb").write_text(nbformat.writes(nb))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--IdentityProvider.token=", "--allow-root",
         f"--ServerApp.root_dir={root}", "--ServerApp.ip=127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "MLNB_WORKSPACE": str(root / ".mlnb")},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(180):
            try:
                urllib.request.urlopen(url + "/api/status", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.goto(f"{url}/lab/tree/bench.ipynb?reset")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            prompt = page.locator(".jp-Cell .jp-InputPrompt").first
            t0 = None
            for _ in range(60):
                page.locator(".jp-Cell .jp-InputArea-editor").first.click()
                t0 = time.perf_counter()
                page.keyboard.press("Shift+Enter")
                time.sleep(1)
                if prompt.inner_text().strip() not in ("[ ]:", ""):
                    break
            page.wait_for_selector(".mlnb-explorer canvas", timeout=300_000)
            page.wait_for_function(
                "() => { const c = document.querySelector('.mlnb-explorer canvas'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                " let n = 0; for (let i = 3; i < d.length; i += 64) if (d[i] > 0) { n++; if (n > 100) return true; } return false; }",
                timeout=300_000,
            )
            render = time.perf_counter() - t0
            print(f"{points:,} points: time to first render (Shift+Enter -> points on the canvas, kernel work included) {render:.2f} s")
            box = page.locator(".mlnb-explorer canvas").bounding_box()
            lat = []
            rng = np.random.default_rng(1)
            for _ in range(40):
                before = page.locator(".mlnb-explorer .hover .fields").inner_text() if page.locator(".mlnb-explorer .hover .fields").count() else ""
                x, y = box["x"] + rng.uniform(40, 600), box["y"] + rng.uniform(40, 440)
                t = time.perf_counter()
                page.mouse.move(x, y)
                try:
                    page.wait_for_function(
                        "(b) => { const f = document.querySelector('.mlnb-explorer .hover .fields'); return f && f.textContent !== b; }",
                        arg=before, timeout=3000, polling=5,
                    )
                    lat.append(time.perf_counter() - t)
                except Exception:  # no point under the cursor there
                    pass
            if lat:
                print(f"hover latency (mouse move -> thumbnail and fields shown), {len(lat)} hovers: median {statistics.median(lat) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms")
            page.screenshot(path=str(tmp / "explorer-100k.png"))
            print(f"screenshot: {tmp / 'explorer-100k.png'}")
            browser.close()
    finally:
        proc.terminate()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--umap-n", type=int, default=10_000)
    ap.add_argument("--points", type=int, default=100_000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mlnb-explorer-"))
    bench_view(args.points, tmp)
    bench_umap(args.umap_n, tmp)


if __name__ == "__main__":
    main()
