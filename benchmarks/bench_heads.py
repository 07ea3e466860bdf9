"""5-fold accuracy and training time of every head on efficientnet_lite0 features,
next to logistic regression on raw pixels (the baseline), on data that ships
offline: scikit-learn's digits (1,797 images, 10 classes) and scikit-image's
lfw_subset (200 face / non-face patches). Then the regressors, 5-fold RMSE and R²
on scikit-learn's diabetes table (442 rows, 10 numeric columns as a row
expression), next to predicting the mean.

With ``--finetune``, then the fine-tuned rows: fixed features against fine-tuning
(``USING finetune``) on a held-out split of digits and lfw_subset, as
``benchmarks/bench_finetune.py`` measures them (fine-tuning trains on images, not
on the cached features, so it is scored on held-out rows instead of 5 folds).

    .venv/bin/python benchmarks/bench_heads.py [--heads gbdt,random_forest,logistic] [--finetune]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import polars as pl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--heads", default="", help="comma-separated head labels or algorithms to run (default: all)")
    ap.add_argument("--workdir", default=None, help="a folder to keep (images and the embedding cache) between runs")
    ap.add_argument("--finetune", action="store_true", help="then fixed features vs fine-tuning (bench_finetune.py's defaults)")
    args = ap.parse_args()
    wanted = {h.strip() for h in args.heads.split(",") if h.strip()}

    import mlnb
    from mlnb.heads import train_classifier

    tmp = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="mlnb-heads-"))
    mlnb.config.workspace = tmp / ".mlnb"
    sets = {"digits": mlnb.datasets.digits(tmp / "digits"), "lfw_subset": mlnb.datasets.faces(tmp / "faces")}
    heads = [
        ("logistic", "logistic", {}),
        ("linear_svm", "linear_svm", {}),
        ("knn (cosine, k=5)", "knn", {}),
        ("mlp (sklearn)", "mlp", {}),
        ("torch linear", "torch", {"hidden": 0}),
        ("torch mlp", "torch", {"hidden": 256}),
        ("gbdt (HistGradientBoosting)", "gbdt", {}),
        ("random_forest", "random_forest", {}),
    ]
    if wanted:
        heads = [h for h in heads if h[0] in wanted or h[1] in wanted]
    rows = []
    for ds_name, df in sets.items():
        t0 = time.perf_counter()
        feats = mlnb.embed_frame(df, "path", progress=False)
        embed_s = time.perf_counter() - t0
        print(f"{ds_name}: {df.height} images embedded in {embed_s:.1f}s ({df.height / embed_s:.0f} img/s)", flush=True)
        runs = [("baseline: logistic on raw pixels", "pixels", "logistic", {})] * (not wanted or "baseline" in wanted)
        runs += [(n, "features", a, o) for n, a, o in heads]
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
            print(rows[-1], flush=True)
    with pl.Config(tbl_rows=50, tbl_width_chars=200, tbl_hide_dataframe_shape=True):
        print(pl.DataFrame(rows))
        print(regressors())
    if args.finetune:
        import runpy
        import sys

        script = Path(__file__).with_name("bench_finetune.py")
        sys.argv = [str(script)]
        runpy.run_path(str(script), run_name="__main__")


def regressors() -> pl.DataFrame:
    """5-fold RMSE / MAE / R² of each regressor through CREATE REGRESSOR, on the diabetes table."""
    import numpy as np
    from sklearn.datasets import load_diabetes

    import mlnb

    diabetes = pl.from_pandas(load_diabetes(as_frame=True).frame)
    y = diabetes["target"].to_numpy()
    mean_rmse = float(np.sqrt(np.mean((y - y.mean()) ** 2)))  # in-sample: a lower bound for the mean's CV RMSE
    rows = [{"regressor": "baseline: the mean", "rmse": round(mean_rmse, 2), "mae": round(float(np.mean(np.abs(y - y.mean()))), 2), "r2": 0.0, "5-fold+fit_s": 0.0}]
    # Once untimed: the first CREATE of a process pays the session's start and mlnb.heads' imports (~10 s here).
    mlnb.sql("CREATE OR REPLACE REGRESSOR diabetes WITH (folds = 0) AS SELECT {* EXCLUDING(target)} AS features, target FROM diabetes", diabetes=diabetes)
    for algo in ("ridge", "gbdt", "random_forest", "knn"):
        t0 = time.perf_counter()
        out = mlnb.sql(f"CREATE OR REPLACE REGRESSOR diabetes USING {algo} AS SELECT {{* EXCLUDING(target)}} AS features, target FROM diabetes", diabetes=diabetes)
        total = time.perf_counter() - t0
        r = out.row(0, named=True)
        rows.append({"regressor": algo, "rmse": round(r["rmse"], 2), "mae": round(r["mae"], 2), "r2": round(r["r2"], 3), "5-fold+fit_s": round(total, 2)})
    return pl.DataFrame(rows)


if __name__ == "__main__":
    main()
