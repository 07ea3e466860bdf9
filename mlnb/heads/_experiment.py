"""Experiments (MLDB's ``classifier.experiment``): how a head is evaluated while it is trained,
and the record of it kept with the head.

A training run evaluates in one of four ways, and says which in ``evaluated_on``:

* ``k-fold CV`` — stratified k-fold cross-validation on the training rows (``folds = k``; the
  default when every class has at least 5 rows and no test set is given);
* ``test set (n rows)`` — the trained head on held-out rows (``test = (SELECT ...)``,
  ``test_where = '...'``, or ``test=`` in Python); with ``folds = k`` as well, the folds are
  kept too;
* ``training data`` — too few rows for the default cross-validation and no test set;
* ``none`` — ``folds = 0`` and no test set: nothing was measured and the metrics are null.

The record — one metrics row per fold (and for the test set or the training data) and the
nonzero cells of each fold's confusion matrix — is written to ``evaluation.json`` beside the
head's ``meta.json`` and read back by ``classifier_folds('name')`` /
``classifier_confusion('name')`` in SQL, ``Head.folds()`` / ``Head.confusion()`` in Python
(``regressor_folds('name')`` / ``Regressor.folds()`` for regressors). Confusion rows are
labelled with the fold number, ``cv`` (all out-of-fold predictions together), ``test`` or
``train``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from .._frames import to_polars
from ..exceptions import MlnbError
from . import store
from ._data import feature_matrix
from .evaluation import (
    CLASSIFIER_METRICS,
    REGRESSOR_METRICS,
    confusion_cells,
    confusion_table,
    evaluate_predictions,
    fold_table,
)


def check_folds(folds: Any) -> int | None:
    """``None`` (the default rule), 0 (no cross-validation) or k >= 2."""
    if folds is None:
        return None
    bad = isinstance(folds, bool) or not isinstance(folds, (int, float, str))
    try:
        k = int(float(folds)) if not bad else -1
        bad = bad or k != float(folds)
    except (TypeError, ValueError):
        bad = True
    if bad or k == 1 or k < 0:
        raise MlnbError(f"folds must be 0 (no cross-validation) or a whole number of at least 2; got {folds!r}.")
    return k


def check_kind(name: str, kind: str, replace: bool) -> None:
    """A name holds one kind of head: a new version of a classifier cannot be a regressor."""
    other = store.kind_of(name)
    if other is not None and other != kind and not replace:
        raise MlnbError(
            f"{name!r} is a {other}, not a {kind}: pick another name, or CREATE OR REPLACE {kind.upper()} {name} "
            f"to replace the {other}."
        )


def training_frame(frame: Any, *columns: str) -> Any:
    """``frame`` as Polars, once it has rows and every column named (else an error with close matches)."""
    df = to_polars(frame)
    for col in columns:
        if col not in df.columns:
            import difflib

            close = difflib.get_close_matches(col, df.columns, n=2)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise MlnbError(f"No column {col!r} in the training data.{hint} Columns: {', '.join(df.columns)}")
    if df.height == 0:
        raise MlnbError("The training data has no rows.")
    return df


def test_rows(test: Any, features: str, target: str, dim: int, *, regression: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """``(X, y, n)`` of a held-out frame with the training frame's column names; rows with
    null features or target are left out, with one warning."""
    df = to_polars(test)
    for col in (features, target):
        if col not in df.columns:
            raise MlnbError(f"The test set has no column {col!r} (it needs the training data's columns). Columns: {', '.join(df.columns)}")
    X, ok = feature_matrix(df.get_column(features), expect_dim=dim, what="test set's features")
    ycol = df.get_column(target)
    if regression:
        y = numeric_target(ycol, target, what="test set's target")
        ok &= np.isfinite(y)
    else:
        ok &= ~ycol.is_null().to_numpy()
        y = ycol.cast(str).to_numpy()
    skipped = int((~ok).sum())
    if skipped:
        warnings.warn(f"{skipped} of {df.height} test rows have null features or a missing target and were left out.", stacklevel=3)
    if not ok.any():
        raise MlnbError("The test set has no rows with both features and a target to evaluate on.")
    return X[ok], y[ok], int(ok.sum())


def numeric_target(series: Any, name: str, *, what: str = "target") -> np.ndarray:
    """A regression target as float64 (NaN where null); a clear error for text or other types."""
    dtype = series.dtype
    if dtype.is_numeric():
        import polars as pl

        return series.cast(pl.Float64).fill_null(float("nan")).to_numpy()
    raise MlnbError(
        f"The {what} column {name!r} has type {dtype}: a regressor needs numbers. Cast it in the query "
        f"(CAST({name} AS DOUBLE)), or train a classifier (CREATE CLASSIFIER) for labels."
    )


def _clean(value: Any) -> Any:
    """JSON has no NaN: a metric that could not be computed is null."""
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _metric_row(fold: str, metrics: Any, names: tuple[str, ...]) -> dict[str, Any]:
    m = metrics.row(0, named=True)
    return {"fold": fold, "rows": int(m["n"]), **{k: _clean(m[k]) for k in names}}


def classifier_outcome(
    estimator: Any, X: np.ndarray, y: np.ndarray, ok: np.ndarray, cv: Any, folds: int | None, test_set: Any
) -> tuple[Any, str, dict[str, Any]]:
    """After the final fit: the evaluation to keep with the head, what it was measured on,
    and the experiment record (fold metrics and confusion cells) to store."""
    classes = np.asarray(estimator.classes_)
    record: dict[str, Any] = {"folds": [], "confusion": []}
    evaluated_on = f"{folds}-fold CV" if cv is not None else "none"
    if cv is not None:
        record["folds"] = [_metric_row(str(r["fold"]), _one(r), CLASSIFIER_METRICS) for r in cv.folds.iter_rows(named=True)]
        for cells in (cv.fold_confusion or {}).values():
            record["confusion"] += cells
        record["confusion"] += confusion_cells(cv.predictions["true"], cv.predictions["predicted"], "cv")
    evaluation = cv
    if test_set is not None:
        TX, ty, n = test_set
        ev = evaluate_predictions(ty, estimator.predict_proba(TX), classes)
        record["folds"].append(_metric_row("test", ev.metrics, CLASSIFIER_METRICS))
        record["confusion"] += confusion_cells(ev.predictions["true"], ev.predictions["predicted"], "test")
        if cv is not None:
            ev.folds, ev.summary, ev.fold_confusion = cv.folds, cv.summary, cv.fold_confusion
        evaluation, evaluated_on = ev, f"test set ({n} rows)"
    elif cv is None and folds is None:
        ev = evaluate_predictions(y, estimator.predict_proba(X), classes)
        rows = np.flatnonzero(ok)
        ev.point_rows_at(rows)
        record["folds"].append(_metric_row("train", ev.metrics, CLASSIFIER_METRICS))
        record["confusion"] += confusion_cells(ev.predictions["true"], ev.predictions["predicted"], "train")
        evaluation, evaluated_on = ev, "training data"
    return evaluation, evaluated_on, record


def _one(row: dict[str, Any]) -> Any:
    import polars as pl

    return pl.DataFrame([row])


# -- reading the record back -------------------------------------------------------
def _head_of(ref: Any, kind: str) -> Any:
    from .head import load_head

    head = load_head(ref, kind) if isinstance(ref, str) else ref
    actual = head.meta.get("kind", "classifier")
    if actual != kind:
        fn = "regressor_folds" if actual == "regressor" else "classifier_folds"
        raise MlnbError(f"{head.ref} is a {actual}, not a {kind}: use {fn}({head.name!r}).")
    return head


def _record(head: Any) -> dict[str, Any]:
    """A saved head's record is read from its files (what SQL sees); an unsaved one's is in memory."""
    if head.name is not None:
        return store.read_evaluation(head.name, head.version)
    return getattr(head, "experiment", None) or {"folds": [], "confusion": []}


def folds_frame(ref: Any, kind: str = "classifier") -> Any:
    """The per-fold metrics of a head (a name such as ``'digit'`` / ``'digit@2'``, or a head),
    with mean / std / min / max rows, then ``test`` or ``train`` rows."""
    head = _head_of(ref, kind)
    return fold_table(_record(head)["folds"], REGRESSOR_METRICS if kind == "regressor" else CLASSIFIER_METRICS)


def confusion_frame(ref: Any) -> Any:
    """The nonzero cells of every confusion matrix of a classifier's experiment:
    fold (``0``, ``1``, ..., ``cv``, ``test`` or ``train``), actual, predicted, count."""
    head = _head_of(ref, "classifier")
    return confusion_table(_record(head)["confusion"])
