"""A head called from SQL against the estimator's own predict on the same NumPy array.

20,000 feature vectors of dimension 1,280 (a FLOAT[1280] column, as embed() gives),
a logistic head trained on 2,000 of them; prints the medians and the ratio
(target: SQL within 1.5x of predict_proba + argmax).

    .venv/bin/python benchmarks/bench_scorer.py [--rows 20000] [--dim 1280] [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import polars as pl

import mlnb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    mlnb.config.workspace = tempfile.mkdtemp()

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, args.dim)).astype(np.float32)
    y = rng.integers(0, 10, args.rows)
    X = (centres[y] + rng.normal(scale=2.0, size=(args.rows, args.dim))).astype(np.float32)
    X = np.maximum(X, 0)  # sparse-ish, like pooled ReLU features
    feats = pl.DataFrame({"features": pl.Series(X, dtype=pl.Array(pl.Float32, args.dim)), "label": [f"c{v}" for v in y]})
    head = mlnb.train_classifier(feats.head(2000), name="bench", folds=2)
    est = head.estimator
    classes = np.array(head.meta["classes"], dtype=object)

    def direct() -> np.ndarray:
        return classes[np.argmax(est.predict_proba(X), axis=1)]

    def sql() -> pl.DataFrame:
        return mlnb.sql("SELECT bench(features) AS p FROM feats", feats=feats)

    assert (sql()["p"].to_numpy() == direct()).all()
    t_d, t_s = [], []
    for _ in range(args.repeat):
        for fn, acc in ((direct, t_d), (sql, t_s)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    md, ms = statistics.median(t_d), statistics.median(t_s)
    print(f"rows={args.rows:,} dim={args.dim} repeat={args.repeat}")
    print(f"estimator predict_proba+argmax : {md * 1000:8.1f} ms (median)")
    print(f"SELECT bench(features)         : {ms * 1000:8.1f} ms (median)")
    print(f"ratio                          : {ms / md:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
