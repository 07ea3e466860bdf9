"""5-fold accuracy and training time of every head on efficientnet_lite0 features,
next to logistic regression on raw pixels (the baseline), on data that ships
offline: scikit-learn's digits (1,797 images, 10 classes) and scikit-image's
lfw_subset (200 face / non-face patches).

    .venv/bin/python benchmarks/bench_heads.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import polars as pl


def main() -> None:
    import mlnb
    from mlnb.heads import train_classifier

    tmp = Path(tempfile.mkdtemp(prefix="mlnb-heads-"))
    mlnb.config.workspace = tmp / ".mlnb"
    sets = {"digits": mlnb.datasets.digits(tmp / "digits"), "lfw_subset": mlnb.datasets.faces(tmp / "faces")}
    heads = [
        ("logistic", "logistic", {}),
        ("linear_svm", "linear_svm", {}),
        ("knn (cosine, k=5)", "knn", {}),
        ("mlp (sklearn)", "mlp", {}),
        ("torch linear", "torch", {"hidden": 0}),
        ("torch mlp", "torch", {"hidden": 256}),
    ]
    rows = []
    for ds_name, df in sets.items():
        t0 = time.perf_counter()
        feats = mlnb.embed_frame(df, "path", progress=False)
        embed_s = time.perf_counter() - t0
        print(f"{ds_name}: {df.height} images embedded in {embed_s:.1f}s ({df.height / embed_s:.0f} img/s)")
        runs = [("baseline: logistic on raw pixels", "pixels", "logistic", {})] + [(n, "features", a, o) for n, a, o in heads]
        for label, col, algo, opts in runs:
            t0 = time.perf_counter()
            head = train_classifier(feats, features=col, algo=algo, options=opts, folds=5)
            total = time.perf_counter() - t0
            s = head.evaluation.summary.filter(pl.col("metric") == "accuracy").row(0, named=True)
            rows.append(
                {
                    "data": ds_name,
                    "head": label,
                    "features": "pixels" if col == "pixels" else "efficientnet_lite0",
                    "acc_mean": round(s["mean"], 4),
                    "acc_std": round(s["std"], 4),
                    "macro_f1": round(head.evaluation.metrics["macro_f1"].item(), 4),
                    "fit_s (all rows)": head.meta["train_seconds"],
                    "5-fold+fit_s": round(total, 2),
                }
            )
    with pl.Config(tbl_rows=50, tbl_width_chars=200, tbl_hide_dataframe_shape=True):
        print(pl.DataFrame(rows))


if __name__ == "__main__":
    main()
