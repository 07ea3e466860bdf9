"""Regression heads: a number from a feature vector (``CREATE REGRESSOR``).

They live in the same workspace store as classifiers (one name, one kind), are
evaluated the same ways (k-fold CV, a test set, ``folds = 0``; see
:mod:`mlnb.heads._experiment`) with RMSE, MAE and R², and each is a SQL
function ``name(features) -> DOUBLE``.
"""

from __future__ import annotations

import datetime as _dt
import time
import warnings
from typing import Any

import numpy as np

from .._frames import to_polars
from .._version import __version__
from ..exceptions import MlnbError
from . import _experiment, store
from ._data import data_hash, feature_matrix
from .algorithms import make_estimator
from .evaluation import REGRESSOR_METRICS, RegressionEvaluation, evaluate_regression, summarise_folds
from .functions import model_weights


class Regressor:
    """A trained regression head: ``predict`` takes a feature matrix, a Series of vectors, or a
    frame plus ``features=``; ``evaluate`` scores rows with a known target; ``evaluation`` is what
    training measured. ``name`` and ``version`` are set once saved."""

    def __init__(self, estimator: Any, meta: dict[str, Any], evaluation: RegressionEvaluation | None = None) -> None:
        self.estimator = estimator
        self.meta = meta
        self.evaluation = evaluation

    name = property(lambda self: self.meta.get("name"))
    version = property(lambda self: self.meta.get("version"))

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def trials(self) -> Any:
        """The trials of the hyperparameter search that made this regressor, as a Polars frame
        (``None`` without one); SQL: ``SELECT * FROM trials('name')``."""
        from ._search import trials_frame

        return trials_frame(self.meta)

    def __repr__(self) -> str:
        m = self.meta.get("metrics", {})
        rmse = f", rmse={m['rmse']:.4g} ({m.get('evaluated_on')})" if m.get("rmse") is not None else ""
        return f"<Regressor {self.name or '(unsaved)'}@{self.version} {self.meta['algorithm']} on {self.meta['dim']}-d {self.meta.get('feature_model') or 'features'}{rmse}>"

    def _matrix(self, X: Any, features: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        from .head import Head

        return Head._matrix(self, X, features)  # type: ignore[arg-type] - the same reading of features

    def predict(self, X: Any, *, features: str | None = None) -> np.ndarray:
        """Predictions as float64; NaN where the features are null."""
        M, ok = self._matrix(X, features)
        out = np.full(len(M), np.nan)
        if ok.any():
            out[ok] = self.estimator.predict(M[ok])
        return out

    def evaluate(self, frame: Any, *, features: str | None = None, target: str = "target") -> RegressionEvaluation:
        """RMSE, MAE and R² on rows with a known target (rows with null features or target are left out)."""
        df = to_polars(frame)
        if target not in df.columns:
            raise MlnbError(f"No target column {target!r}: pass target='...'.")
        M, ok = self._matrix(df, features)
        y = _experiment.numeric_target(df.get_column(target), target)
        ok &= np.isfinite(y)
        if not ok.any():
            raise MlnbError("No rows with both features and a target to evaluate on.")
        if not ok.all():
            warnings.warn(f"{int((~ok).sum())} of {len(ok)} rows have null features or a null, NaN or infinite target "
                          "and were left out of the evaluation.", stacklevel=2)
        ev = evaluate_regression(y[ok], self.estimator.predict(M[ok]))
        rows = np.flatnonzero(ok)
        ev.point_rows_at(rows)
        return ev

    def folds(self) -> Any:
        """RMSE, MAE and R² per fold, with mean / std / min / max rows and a ``test`` (or ``train``)
        row; SQL: ``SELECT * FROM regressor_folds('name')``."""
        return _experiment.folds_frame(self, "regressor")


def train_regressor(
    frame: Any,
    *,
    features: str = "features",
    target: str = "target",
    algo: Any = "ridge",
    name: str | None = None,
    folds: int | None = None,
    options: dict[str, Any] | None = None,
    feature_model: str | None = None,
    layer: str | None = None,
    replace: bool = False,
    test: Any = None,
    search: Any = None,
) -> Regressor:
    """Train a regression head on a feature column; save it, and make ``name(features)`` a SQL
    function returning DOUBLE, when named.

    Parameters
    ----------
    frame : Polars/pandas/Arrow frame with a feature column and a numeric target column.
    algo : ``"ridge"`` (default), ``"gbdt"``, ``"random_forest"``, ``"knn"`` (see
        :mod:`mlnb.heads.algorithms`) or any scikit-learn regressor instance.
    folds : k for k-fold cross-validation; 0 for none. ``None``: 5 when there are at
        least 25 rows and no ``test``, otherwise the metrics are on the test set, or
        the training data.
    test : held-out rows with the same columns, evaluated on and not trained on.
    replace : the new head replaces every saved version of ``name`` (``CREATE OR REPLACE``),
        once it is trained and written.
    search : an option given as a list (``options={"alpha": [0.1, 1, 10]}``) is a grid search;
        ``search={"method": "random", "trials": 20, "seed": 0, "metric": "rmse"}`` a random one
        (metrics ``rmse``, ``mae``, ``r2``). Every trial is cross-validated (5 folds by default);
        the best trial's options are trained on all rows (see :mod:`mlnb.heads._search`).

    A target that is not numeric is an error; rows with a null or NaN target, or null
    features, are left out with one warning saying how many.

    Examples
    --------
    >>> import mlnb
    >>> reg = mlnb.train_regressor(df, features="features", target="age", name="age_of")  # doctest: +SKIP
    >>> mlnb.sql("SELECT age_of(embed(path)) FROM faces")  # doctest: +SKIP
    """
    from . import _search

    if name is not None:
        store.check_new_name(name, "regressor")
        _experiment.check_kind(name, "regressor", replace)
    plan = _search.plan_search(algo, options, search, task="regression")  # None: no search; checked before training
    df = _experiment.training_frame(frame, features, target)
    y_all = _experiment.numeric_target(df.get_column(target), target)
    X, ok = feature_matrix(df.get_column(features))
    bad_target = ~np.isfinite(y_all)
    ok &= ~bad_target
    skipped = int((~ok).sum())
    if skipped:
        why = f"{int(bad_target.sum())} with a null, NaN or infinite target" if bad_target.any() else "all with null features"
        warnings.warn(f"{skipped} of {df.height} training rows were left out ({why}).", stacklevel=2)
    X, y = X[ok], y_all[ok]
    if len(y) < 2:
        raise MlnbError(f"A regressor needs at least 2 rows with features and a numeric target; the training data has {len(y)}.")
    if plan is not None:
        folds = _search.search_folds(folds, np.array([len(y)]))
    folds = _experiment.check_folds(folds)
    test_set = None if test is None else _experiment.test_rows(test, features, target, int(X.shape[1]), regression=True)
    if folds is None and test_set is None and 25 <= len(y) <= 50_000:
        folds = 5
    if folds and folds > len(y):
        raise MlnbError(f"{folds}-fold cross-validation needs at least {folds} rows; there are {len(y)}. Use fewer folds.")
    algo_name = algo if isinstance(algo, str) else type(algo).__name__

    record: dict[str, Any] = {"folds": [], "confusion": []}
    evaluation: RegressionEvaluation | None = None
    evaluated_on = "none"
    if plan is not None:  # the best trial's options (and its CV evaluation) are what is trained below
        options, evaluation = _search.run_search(plan, X, y, folds, name=name, feature_model=feature_model)
    estimator = make_estimator(algo, options, task="regression")
    check_regression_data(estimator, algo_name, len(y), folds)
    try:
        if folds:
            if evaluation is None:
                evaluation = cross_validate_regressor(estimator, X, y, folds)
            evaluated_on = f"{folds}-fold CV"
            record["folds"] = [_row(str(r["fold"]), r) for r in evaluation.folds.iter_rows(named=True)]
        t0 = time.perf_counter()
        estimator.fit(X, y)
        train_seconds = time.perf_counter() - t0
    except ValueError as exc:  # scikit-learn's refusals
        if isinstance(exc, MlnbError):
            raise
        raise MlnbError(f"Training {algo_name} failed: {exc}") from exc
    rows = np.flatnonzero(ok)
    if evaluation is not None:
        evaluation.point_rows_at(rows)
    if test_set is not None:
        TX, ty, n = test_set
        ev = evaluate_regression(ty, estimator.predict(TX))
        record["folds"].append(_row("test", ev.metrics.row(0, named=True)))
        if evaluation is not None:
            ev.folds, ev.summary = evaluation.folds, evaluation.summary
        evaluation, evaluated_on = ev, f"test set ({n} rows)"
    elif folds is None:
        evaluation = evaluate_regression(y, estimator.predict(X))
        evaluation.point_rows_at(rows)
        record["folds"].append(_row("train", evaluation.metrics.row(0, named=True)))
        evaluated_on = "training data"
    m = evaluation.metrics.row(0, named=True) if evaluation is not None else dict.fromkeys(REGRESSOR_METRICS)
    meta = {
        "kind": "regressor",
        "algorithm": algo_name,
        "options": dict(options or {}),
        "classes": [],
        "target": target,
        "feature_model": feature_model,
        "feature_model_sha256": model_weights(feature_model),
        "layer": layer or ("pool" if feature_model else None),
        "dim": int(X.shape[1]),
        "features_column": features,
        "metrics": {**{k: _experiment._clean(m[k]) for k in REGRESSOR_METRICS}, "evaluated_on": evaluated_on},
        "n_rows": int(len(y)),
        "folds": int(folds or 0),
        "test_rows": 0 if test_set is None else test_set[2],
        "target_mean": float(np.mean(y)),
        "target_std": float(np.std(y)),
        "data_hash": data_hash(X, y),
        "train_seconds": round(train_seconds, 4),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "mlnb_version": __version__,
    }
    if plan is not None:
        meta["search"] = _search.search_meta(plan, folds)
    reg = Regressor(estimator, meta, evaluation)
    reg.experiment = record
    from .head import save_head

    # Saves a named head, and ends its MLflow run (the search's, or its own with config.mlflow = "all").
    _search.saving(reg, plan, None if name is None else lambda: save_head(reg, name, replace=replace))  # type: ignore[arg-type]
    return reg


def check_regression_data(estimator: Any, algo: str, n: int, folds: int | None) -> None:
    """Refuse, before fitting, more neighbours than the smallest training set (a fold's, or all rows)."""
    k = estimator.get_params().get("n_neighbors")
    smallest = n - (-(-n // folds) if folds else 0)
    if isinstance(k, int) and k > smallest:
        in_folds = f" (in each training fold of {folds}-fold cross-validation)" if folds else ""
        raise MlnbError(f"Option k = {k} for {algo} is more than the {smallest} training rows{in_folds}: use k = {smallest} or fewer.")


def _row(fold: str, m: dict[str, Any]) -> dict[str, Any]:
    return {"fold": fold, "rows": int(m["n"]), **{k: _experiment._clean(m[k]) for k in REGRESSOR_METRICS}}


def cross_validate_regressor(estimator: Any, X: np.ndarray, y: np.ndarray, folds: int) -> RegressionEvaluation:
    """k-fold (shuffled, seed 0) out-of-fold predictions, their metrics and one row per fold."""
    import polars as pl
    from sklearn.base import clone
    from sklearn.model_selection import KFold

    pred = np.zeros(len(y))
    fold_rows = []
    for i, (tr, te) in enumerate(KFold(folds, shuffle=True, random_state=0).split(X)):
        pred[te] = clone(estimator).fit(X[tr], y[tr]).predict(X[te])
        fold_rows.append({"fold": i, **evaluate_regression(y[te], pred[te]).metrics.row(0, named=True)})
    evaluation = evaluate_regression(y, pred)
    evaluation.folds = pl.DataFrame(fold_rows)
    evaluation.summary = summarise_folds(evaluation.folds, REGRESSOR_METRICS)
    return evaluation


def load_regressor(ref: str) -> Regressor:
    """A saved regressor: ``"name"`` (latest version) or ``"name@2"``."""
    from .head import load_head

    head = load_head(ref, "regressor")
    if not isinstance(head, Regressor):
        raise MlnbError(f"{head.ref} is a classifier, not a regressor: use mlnb.load_classifier({head.name!r}).")
    return head


def regressors() -> Any:
    """Every saved regressor version in the workspace, as a Polars frame (``SHOW REGRESSORS``)."""
    import polars as pl

    rows = []
    for n in store.names():
        for v in store.versions(n):
            try:
                m = store.check_files(n, v)
            except MlnbError:
                continue  # a damaged head is listed by SHOW CLASSIFIERS, with what is wrong
            if m.get("kind") != "regressor":
                continue
            met = m["metrics"]
            rows.append(
                {
                    "name": n, "version": v, "algorithm": m["algorithm"], "target": m.get("target"),
                    "feature_model": m.get("feature_model"), "dim": m["dim"], "rmse": met.get("rmse"), "mae": met.get("mae"),
                    "r2": met.get("r2"), "evaluated_on": met.get("evaluated_on"), "n_rows": m["n_rows"], "created": m.get("created"),
                }
            )
    schema = {
        "name": pl.String, "version": pl.Int64, "algorithm": pl.String, "target": pl.String, "feature_model": pl.String,
        "dim": pl.Int64, "rmse": pl.Float64, "mae": pl.Float64, "r2": pl.Float64, "evaluated_on": pl.String,
        "n_rows": pl.Int64, "created": pl.String,
    }
    return pl.DataFrame(rows, schema=schema)


def drop_regressor(name: str) -> int:
    from .head import drop_classifier

    return drop_classifier(name, kind="regressor")
