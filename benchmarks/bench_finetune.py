"""Fixed features vs fine-tuning, side by side, on the offline data: scikit-learn's digits
and scikit-image's lfw_subset (faces / not faces), efficientnet_lite0.

For each data set a stratified test split is held out (the same rows for both). Fixed
features: a logistic head on the pooled features of the frozen backbone. Fine-tuned:
``finetune_classifier`` (the last ``--blocks`` blocks and a new linear head, SGD with
momentum, step schedule, early stopping on a fifth of the training rows), then its head
on the fine-tuned backbone's features. Both are scored through SQL, as a user would:
``head(embed(path, model := ...))``.

On a CPU keep it small (the defaults: 300 digits, all 200 lfw_subset patches, 3 epochs).
The PyTorch tutorial's reference on ants/bees (153 validation images): fixed 0.948,
fine-tuned 0.935.

    .venv/bin/python benchmarks/bench_finetune.py [--digits 300] [--epochs 3] [--blocks 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl


def _split(df: pl.DataFrame, test: float, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    is_test = np.zeros(df.height, dtype=bool)
    labels = df["label"].to_numpy()
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        is_test[rows[: int(round(test * len(rows)))]] = True
    return df.filter(pl.Series(~is_test)), df.filter(pl.Series(is_test))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--digits", type=int, default=300, help="digits images used (stratified sample of 1,797)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--test", type=float, default=0.3, help="share of each class held out for testing")
    ap.add_argument("--augment", default=None, help="augment for every set (default: 'crop' for digits, 'flip,crop' for faces)")
    ap.add_argument("--sets", default="digits,lfw_subset")
    args = ap.parse_args()

    import torch

    import mlnb
    from mlnb.heads import finetune_classifier, train_classifier

    tmp = Path(tempfile.mkdtemp(prefix="mlnb-finetune-"))
    mlnb.config.workspace = tmp / ".mlnb"
    digits = mlnb.datasets.digits(tmp / "digits").select("path", "label")
    digits = digits.filter(pl.int_range(pl.len()).over("label") < args.digits // 10)
    sets = {
        # digits are not mirror-symmetric: random crops only
        "digits": (digits, "crop"),
        "lfw_subset": (mlnb.datasets.faces(tmp / "faces").select("path", "label"), "flip,crop"),
    }
    rows = []
    for name, (df, augment) in sets.items():
        if name not in args.sets.split(","):
            continue
        augment = args.augment if args.augment is not None else augment
        train, test = _split(df, args.test)
        t0 = time.perf_counter()
        feats = mlnb.sql("SELECT embed(path) AS features, label FROM train")
        train_classifier(feats, name=f"{name}_fixed", feature_model="efficientnet_lite0", folds=None)
        fixed_s = time.perf_counter() - t0
        fixed = mlnb.sql(f"SELECT avg(({name}_fixed(embed(path)) = label)::INT) AS acc FROM test")["acc"].item()

        t0 = time.perf_counter()
        head = finetune_classifier(
            train.rename({"path": "image"}), name=f"{name}_ft",
            options={"blocks": args.blocks, "epochs": args.epochs, "augment": augment, "batch_size": 16, "validation": 0.2},
            progress=False,
        )
        ft_s = time.perf_counter() - t0
        tuned = mlnb.sql(f"SELECT avg(({name}_ft(embed(path, model := '{name}_ft')) = label)::INT) AS acc FROM test")["acc"].item()
        ft = head.meta["finetune"]
        rows.append({
            "data": name, "augment": augment or "none", "classes": df["label"].n_unique(), "train": train.height, "test": test.height,
            "fixed_acc": round(fixed, 3), "finetuned_acc": round(tuned, 3),
            "probe_val_acc": round(ft["history"][0]["val_accuracy"], 3) if ft["history"][0]["epoch"] == 0 else None,
            "best_epoch": ft["best_epoch"], "epochs_run": ft["epochs_run"],
            "fixed_s": round(fixed_s, 1), "finetune_s": round(ft_s, 1),
        })
        print(rows[-1], flush=True)
    print(f"efficientnet_lite0, blocks={args.blocks}, epochs={args.epochs}, device {ft['device']}, "
          f"torch threads {torch.get_num_threads()}")
    with pl.Config(tbl_cols=-1, tbl_width_chars=200):
        print(pl.DataFrame(rows))


if __name__ == "__main__":
    main()
