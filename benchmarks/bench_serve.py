"""``mlnb serve`` under load: requests/s and p50/p99 latency for one image per request
(PNG bytes POSTed to a head trained on efficientnet_lite0 features), at concurrency
1, 8 and 32, with micro-batching on and off in the same run.

The server runs as ``python -m mlnb serve`` in its own process (as a user runs it);
the clients are threads of this process, each with its own HTTP connection. Every
request carries an image the server has not seen (digits, 1,797 of them), so each
one goes through decode and the model, not the embedding cache. A few requests at
each level first warm the server (not counted). The machine's load average is printed: on a
shared machine the absolute numbers move, the on/off ratio less.

    .venv/bin/python benchmarks/bench_serve.py [--levels 1,8,32] [--requests 40,160,320] [--features]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np


def start_server(workspace: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlnb", "serve", "--workspace", str(workspace), "--port", "0", "--log-level", "warning",
         "--warmup", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if " at http://" in line:
            url = line.strip().rsplit(" at ", 1)[1]
            break
    else:
        raise RuntimeError("the server did not start")
    # Keep reading its output so that it never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    deadline = time.time() + 300
    while time.time() < deadline:  # --warmup loads the model before the app answers
        try:
            if httpx.get(f"{url}/v1/health", timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("the server did not answer")


def load(url: str, bodies: list[tuple[bytes, str]], concurrency: int) -> dict[str, float]:
    """Send every body once, ``concurrency`` at a time; latency per request, throughput overall."""
    it = iter(bodies)
    lock = threading.Lock()
    latencies: list[float] = []
    errors = 0

    def worker() -> None:
        nonlocal errors
        with httpx.Client(base_url=url, timeout=120) as c:
            while True:
                with lock:
                    nxt = next(it, None)
                if nxt is None:
                    return
                body, ctype = nxt
                t0 = time.perf_counter()
                r = c.post("/v1/functions/digit/application", content=body, headers={"content-type": ctype})
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    errors += r.status_code != 200

    before = httpx.get(f"{url}/v1/health").json()
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(worker) for _ in range(concurrency)]:
            f.result()
    wall = time.perf_counter() - t0
    after = httpx.get(f"{url}/v1/health").json()
    lat = np.array(latencies) * 1000
    batches = after["batches"] - before["batches"]
    return {
        "requests": len(latencies),
        "errors": errors,
        "req_per_s": len(latencies) / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "mean_batch": (after["batched_items"] - before["batched_items"]) / batches if batches else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", default="1,8,32")
    ap.add_argument("--requests", default="40,160,320", help="requests per level (one image each)")
    ap.add_argument("--features", action="store_true", help="also JSON feature vectors (HTTP + batching cost without the model)")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    counts = [int(x) for x in args.requests.split(",")]

    import polars as pl

    import mlnb

    tmp = Path(tempfile.mkdtemp(prefix="mlnb-serve-"))
    ws = tmp / ".mlnb"
    mlnb.config.workspace = ws
    digits = mlnb.datasets.digits(tmp / "digits")
    train = digits[::6]
    t0 = time.perf_counter()
    mlnb.sql("CREATE CLASSIFIER digit WITH (folds = 2) AS SELECT embed(path) AS features, label FROM train")
    print(f"head trained on {train.height} images in {time.perf_counter() - t0:.1f}s")
    paths = digits["path"].to_list()
    feats = None
    if args.features:
        feats = np.asarray(mlnb.embed_frame(train, "path", progress=False)["features"].to_numpy(), dtype=np.float32)

    need = sum(counts)
    warm = sum(2 * c for c in levels)
    rows = []
    for mode, flags in (("on", ()), ("off", ("--no-batching",))):
        proc, url = start_server(ws, *flags)
        try:
            # Each mode gets images the other has not sent (the server caches features by content).
            offset = 0 if mode == "on" else need + warm
            pool = [paths[(offset + i) % len(paths)] for i in range(need + warm)]
            # Warm-up, not counted: a few requests at each level, so that the model has seen the batch
            # sizes that level makes (oneDNN prepares each new input shape once).
            start = need
            for c in levels:
                load(url, [(Path(p).read_bytes(), "image/png") for p in pool[start : start + 2 * c]], c)
                start += 2 * c
            start = 0
            for c, n in zip(levels, counts):
                bodies = [(Path(p).read_bytes(), "image/png") for p in pool[start : start + n]]
                start += n
                la = os.getloadavg()[0]
                r = load(url, bodies, c)
                rows.append({"input": "image", "batching": mode, "concurrency": c, **r, "load_avg": la})
                print(rows[-1], flush=True)
            if feats is not None:
                import json

                for c in (1, 32):
                    bodies = [(json.dumps({"features": feats[i % len(feats)].tolist()}).encode(), "application/json") for i in range(200)]
                    la = os.getloadavg()[0]
                    rows.append({"input": "features", "batching": mode, "concurrency": c, **load(url, bodies, c), "load_avg": la})
                    print(rows[-1], flush=True)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)

    df = pl.DataFrame(rows).with_columns(pl.col(pl.Float64).round(1))
    on = df.filter(pl.col("batching") == "on").select("input", "concurrency", pl.col("req_per_s").alias("on"))
    off = df.filter(pl.col("batching") == "off").select("input", "concurrency", pl.col("req_per_s").alias("off"))
    ratio = on.join(off, on=["input", "concurrency"]).with_columns((pl.col("on") / pl.col("off")).round(2).alias("on/off"))
    with pl.Config(tbl_rows=50, tbl_cols=-1, tbl_width_chars=200, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print(f"\n{os.cpu_count()} CPUs, load average now {' '.join(f'{x:.1f}' for x in os.getloadavg())}; model efficientnet_lite0")
        print(df)
        print("requests/s, micro-batching on vs off:")
        print(ratio)


if __name__ == "__main__":
    main()
