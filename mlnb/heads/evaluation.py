"""Metrics as Polars frames: accuracy, macro-F1, log-loss, per-class precision
and recall, the confusion matrix, and the misclassified rows; RMSE, MAE and R²
for regressors; and the experiment record (per-fold metrics and confusion
matrices) that is stored with a head and read back by ``classifier_folds()``
and ``classifier_confusion()``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


class _Shown:
    """Notebook display of an evaluation: its metrics, then the folds' summary when there is one."""

    metrics: Any
    summary: Any

    def _repr_html_(self) -> str:
        parts = [self.metrics._repr_html_()]
        if self.summary is not None:
            parts.append(self.summary._repr_html_())
        return "".join(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(\n{self.metrics}\n)"

    def point_rows_at(self, rows: Any) -> None:
        """Renumber ``errors``' rows (positions among the rows evaluated) as ``rows[position]``:
        the rows of the caller's frame they came from."""
        import polars as pl

        rows = np.asarray(rows)
        self.errors = self.errors.with_columns(pl.Series("row", rows[self.errors["row"].to_numpy()], dtype=pl.Int64))


@dataclass(repr=False)
class Evaluation(_Shown):
    """What a head got right and wrong on some labelled rows.

    ``metrics`` has one row (accuracy, macro_f1, log_loss, n); with
    cross-validation, ``folds`` has a row per fold and ``summary`` the
    mean/std/min/max of each metric. ``errors`` lists misclassified rows
    (``row`` indexes the input) with their confidence, worst first.
    """

    metrics: Any
    per_class: Any
    confusion: Any
    errors: Any
    predictions: Any
    folds: Any = None
    summary: Any = None
    #: Out-of-fold class probabilities (columns: the sorted classes), when cross-validated.
    proba: Any = None
    #: Per fold ("0", "1", ...): the nonzero cells of that fold's confusion matrix, when cross-validated.
    fold_confusion: Any = None


def evaluate_predictions(y_true: Any, proba: np.ndarray, classes: np.ndarray) -> Evaluation:
    import polars as pl
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, log_loss, precision_recall_fscore_support

    y_true = np.asarray(y_true).astype(str)
    cls = np.asarray(classes).astype(str)
    proba = np.asarray(proba, dtype=np.float64)
    sums = proba.sum(axis=1, keepdims=True)
    proba = np.divide(proba, sums, out=np.full_like(proba, 1.0 / max(1, proba.shape[1])), where=sums > 0)
    pred = cls[np.argmax(proba, axis=1)]
    labels = list(cls)
    known = np.isin(y_true, cls)
    if not known.all():
        import warnings

        unseen = sorted({str(v) for v in y_true[~known]})
        shown = ", ".join(map(repr, unseen[:5])) + (" ..." if len(unseen) > 5 else "")
        warnings.warn(
            f"{int((~known).sum())} of {len(y_true)} evaluated rows have a label the head was not trained on "
            f"({shown}): they count as errors, and log_loss is NaN (undefined for them).",
            stacklevel=3,
        )
    try:
        ll = float(log_loss(y_true[known], proba[known], labels=labels)) if known.all() and len(labels) > 1 else float("nan")
    except ValueError:
        ll = float("nan")
    metrics = pl.DataFrame(
        {
            "accuracy": [float(accuracy_score(y_true, pred))],
            "macro_f1": [float(f1_score(y_true, pred, average="macro", labels=sorted(set(y_true) | set(pred)), zero_division=0))],
            "log_loss": [ll],
            "n": [len(y_true)],
        }
    )
    all_labels = sorted(set(labels) | set(y_true))
    p, r, f, s = precision_recall_fscore_support(y_true, pred, labels=all_labels, zero_division=0)
    per_class = pl.DataFrame({"class": all_labels, "precision": p, "recall": r, "f1": f, "support": s.astype(np.int64)})
    cm = confusion_matrix(y_true, pred, labels=all_labels)
    confusion = pl.DataFrame({"true": all_labels, **{c: cm[:, j].astype(np.int64) for j, c in enumerate(all_labels)}})
    conf = proba.max(axis=1)
    wrong = np.flatnonzero(pred != y_true)
    wrong = wrong[np.argsort(-conf[wrong])]
    errors = pl.DataFrame(
        {"row": wrong.astype(np.int64), "true": y_true[wrong], "predicted": pred[wrong], "confidence": conf[wrong].astype(np.float64)},
        schema={"row": pl.Int64, "true": pl.String, "predicted": pl.String, "confidence": pl.Float64},
    )
    predictions = pl.DataFrame({"true": y_true, "predicted": pred, "confidence": conf.astype(np.float64)})
    return Evaluation(metrics=metrics, per_class=per_class, confusion=confusion, errors=errors, predictions=predictions)


def confusion_cells(y_true: Any, y_pred: Any, fold: str) -> list[dict[str, Any]]:
    """The nonzero cells of a confusion matrix as records (fold, actual, predicted, count)."""
    import polars as pl

    df = pl.DataFrame({"actual": np.asarray(y_true).astype(str), "predicted": np.asarray(y_pred).astype(str)})
    cells = df.group_by("actual", "predicted").len("count").sort("actual", "predicted")
    return [{"fold": fold, **r} for r in cells.iter_rows(named=True)]


#: The metrics of each kind of head, in the order the tables show them.
CLASSIFIER_METRICS = ("accuracy", "macro_f1", "log_loss")
REGRESSOR_METRICS = ("rmse", "mae", "r2")


def fold_table(records: list[dict[str, Any]], metrics: tuple[str, ...]) -> Any:
    """The experiment's per-fold rows, then mean / std / min / max over the numbered folds
    (MLDB's ``classifier.experiment`` summary), then held-out or training-data rows."""
    import polars as pl

    schema = {"fold": pl.String, "rows": pl.Int64, **{m: pl.Float64 for m in metrics}}
    numbered = [r for r in records if str(r.get("fold", "")).isdigit()]
    other = [r for r in records if not str(r.get("fold", "")).isdigit()]
    rows = [{k: (str(r.get(k)) if k == "fold" else r.get(k)) for k in schema} for r in numbered]
    if numbered:
        for stat in ("mean", "std", "min", "max"):
            row: dict[str, Any] = {"fold": stat, "rows": None}
            for m in metrics:
                col = pl.Series([r.get(m) for r in numbered], dtype=pl.Float64)
                row[m] = getattr(col, stat)()
            rows.append(row)
    rows += [{k: (str(r.get(k)) if k == "fold" else r.get(k)) for k in schema} for r in other]
    return pl.DataFrame(rows, schema=schema)


def confusion_table(records: list[dict[str, Any]]) -> Any:
    import polars as pl

    schema = {"fold": pl.String, "actual": pl.String, "predicted": pl.String, "count": pl.Int64}
    return pl.DataFrame([{k: r.get(k) for k in schema} for r in records], schema=schema)


@dataclass(repr=False)
class RegressionEvaluation(_Shown):
    """How far a regressor's predictions are from the targets.

    ``metrics`` has one row (rmse, mae, r2, n); with cross-validation, ``folds``
    has a row per fold and ``summary`` the mean/std/min/max of each metric.
    ``errors`` lists the rows with the largest absolute error first
    (``row`` indexes the input).
    """

    metrics: Any
    errors: Any
    predictions: Any
    folds: Any = None
    summary: Any = None


def evaluate_regression(y_true: Any, y_pred: Any) -> RegressionEvaluation:
    import polars as pl
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    r2 = float(r2_score(y_true, y_pred)) if len(y_true) > 1 and np.ptp(y_true) > 0 else float("nan")
    metrics = pl.DataFrame(
        {
            "rmse": [float(np.sqrt(mean_squared_error(y_true, y_pred)))],
            "mae": [float(mean_absolute_error(y_true, y_pred))],
            "r2": [r2],
            "n": [len(y_true)],
        }
    )
    err = np.abs(y_pred - y_true)
    order = np.argsort(-err, kind="stable")
    errors = pl.DataFrame(
        {"row": order.astype(np.int64), "target": y_true[order], "predicted": y_pred[order], "error": (y_pred - y_true)[order]}
    )
    predictions = pl.DataFrame({"target": y_true, "predicted": y_pred})
    return RegressionEvaluation(metrics=metrics, errors=errors, predictions=predictions)


def summarise_folds(folds: Any, metrics: tuple[str, ...] = CLASSIFIER_METRICS) -> Any:
    import polars as pl

    rows = []
    for m in metrics:
        col = folds[m]
        rows.append({"metric": m, "mean": col.mean(), "std": col.std(), "min": col.min(), "max": col.max()})
    return pl.DataFrame(rows)
