"""Heads: train, evaluate, persist and score classifier heads on feature vectors."""

from __future__ import annotations

import datetime as _dt
import threading
import time
import warnings
from typing import Any

import numpy as np

from .._frames import to_polars
from .._version import __version__
from ..exceptions import MlnbError
from . import _experiment, store
from ._data import data_hash, feature_matrix
from .algorithms import check_data, make_estimator
from .evaluation import Evaluation, confusion_cells, evaluate_predictions, summarise_folds
from .functions import model_weights


class Head:
    """A trained classifier head.

    ``predict`` / ``predict_proba`` take a feature matrix, a Series of
    vectors, or a frame plus ``features=`` column; ``evaluate`` scores
    labelled rows; ``evaluation`` is what training measured (k-fold when
    there was enough data). ``name`` and ``version`` are set once saved.
    """

    def __init__(self, estimator: Any, meta: dict[str, Any], evaluation: Evaluation | None = None) -> None:
        self.estimator = estimator
        self.meta = meta
        self.evaluation = evaluation

    name = property(lambda self: self.meta.get("name"))
    version = property(lambda self: self.meta.get("version"))
    classes_ = property(lambda self: np.asarray(self.meta["classes"], dtype=object))

    @property
    def trials(self) -> Any:
        """The trials of the hyperparameter search that made this head, as a Polars frame
        (``None`` without one); SQL: ``SELECT * FROM trials('name')``."""
        from ._search import trials_frame

        return trials_frame(self.meta)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def folds(self) -> Any:
        """The experiment's metrics per fold, with mean / std / min / max rows and a ``test`` (or
        ``train``) row, as a Polars frame; SQL: ``SELECT * FROM classifier_folds('name')``."""
        return _experiment.folds_frame(self)

    def confusion(self) -> Any:
        """The nonzero cells of each fold's confusion matrix (fold, actual, predicted, count), plus
        ``cv`` (all folds together) and ``test`` / ``train``; SQL: ``classifier_confusion('name')``."""
        return _experiment.confusion_frame(self)

    def __repr__(self) -> str:
        m = self.meta.get("metrics", {})
        acc = f", accuracy={m['accuracy']:.3f} ({m.get('evaluated_on')})" if m.get("accuracy") is not None else ""
        return f"<Head {self.name or '(unsaved)'}@{self.version} {self.meta['algorithm']} on {self.meta['dim']}-d {self.meta.get('feature_model') or 'features'}, {len(self.meta['classes'])} classes{acc}>"

    # -- scoring -----------------------------------------------------------
    def _matrix(self, X: Any, features: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        import polars as pl

        if isinstance(X, np.ndarray):
            X = np.asarray(X, dtype=np.float32)
            if X.ndim == 1:
                X = X.reshape(1, -1)
            if X.shape[1] != self.meta["dim"]:
                raise MlnbError(f"The features have dimension {X.shape[1]}, but the head was trained on {self.meta['dim']}: score it with the model and layer it was trained on ({self.meta.get('feature_model') or 'unknown'}, {self.meta.get('layer') or 'pool'}).")
            return X, np.isfinite(X).all(axis=1)
        if not isinstance(X, pl.Series):
            df = to_polars(X)
            col = features or self.meta.get("features_column") or "features"
            if col not in df.columns:
                raise MlnbError(f"No column {col!r}: pass features='...' naming the feature column.")
            X = df.get_column(col)
        return feature_matrix(X, expect_dim=self.meta["dim"])

    def predict_proba(self, X: Any, *, features: str | None = None) -> np.ndarray:
        """Probabilities, one column per class of ``classes_``; NaN rows for null features."""
        M, ok = self._matrix(X, features)
        out = np.full((len(M), len(self.meta["classes"])), np.nan)
        if ok.any():
            out[ok] = self.estimator.predict_proba(M[ok])
        return out

    def predict(self, X: Any, *, features: str | None = None) -> np.ndarray:
        """Predicted labels (``None`` where the features are null)."""
        proba = self.predict_proba(X, features=features)
        cls = self.classes_
        return np.array([cls[i] if np.isfinite(p).all() else None for i, p in zip(np.nanargmax(np.nan_to_num(proba, nan=-1), axis=1), proba)], dtype=object)

    def evaluate(self, frame: Any, *, features: str | None = None, label: str = "label") -> Evaluation:
        """Metrics on labelled rows (rows with null features are skipped and counted)."""
        df = to_polars(frame)
        if label not in df.columns:
            raise MlnbError(f"No label column {label!r}: pass label='...'.")
        M, ok = self._matrix(df, features)
        y = df.get_column(label).cast(str).to_numpy()
        ok &= np.array([v is not None for v in y])
        if not ok.any():
            raise MlnbError("No rows with both features and a label to evaluate on.")
        if not ok.all():
            warnings.warn(f"{int((~ok).sum())} of {len(ok)} rows have null features or a null label and were left "
                          "out of the evaluation.", stacklevel=2)
        ev = evaluate_predictions(y[ok], self.estimator.predict_proba(M[ok]), self.classes_)
        ev.point_rows_at(np.flatnonzero(ok))
        return ev


def train_classifier(
    frame: Any,
    *,
    features: str = "features",
    label: str = "label",
    algo: Any = "logistic",
    name: str | None = None,
    folds: int | None = None,
    options: dict[str, Any] | None = None,
    feature_model: str | None = None,
    layer: str | None = None,
    progress: Any = None,
    replace: bool = False,
    test: Any = None,
    search: Any = None,
    training_query: str | None = None,
) -> Head:
    """Train a head on a feature column; save and register it as SQL functions when named.

    Parameters
    ----------
    frame : Polars/pandas/Arrow frame with a feature column (fixed-size array,
        list of numbers) and a label column.
    algo : ``"logistic"``, ``"linear_svm"``, ``"knn"``, ``"mlp"``, ``"torch"`` or
        any scikit-learn classifier instance.
    folds : k for k-fold cross-validation (stratified); 0 for none. ``None``: 5 when
        every class has at least 5 rows and no ``test`` is given, otherwise the
        metrics are on the test set, or the training data.
    test : held-out rows (a frame with the same feature and label columns): the
        trained head is evaluated on them, and they are not trained on. The
        per-fold metrics and confusion matrices are kept with the head
        (``head.folds()``, ``head.confusion()``; SQL ``classifier_folds('name')``,
        ``classifier_confusion('name')``); see :mod:`mlnb.heads._experiment`.
    name : saves the head in the workspace (a new version each time) and registers
        ``name(features)`` and ``name_proba(features)`` in SQL.
    replace : with ``name``, the new head replaces every saved version of that name
        and becomes version 1 (``CREATE OR REPLACE CLASSIFIER``). The old versions
        are removed only once the new head is trained and written: when training
        fails, they stay as they were.
    feature_model, layer : where the features came from (checked at scoring).
    training_query : the SQL the rows came from (``CREATE CLASSIFIER ... AS <query>``), kept in the
        head's meta so ``label_issues('name')`` can look at those rows again.
    search : a hyperparameter search: options given as lists (``options={"C": [0.1, 1, 10]}``) are a
        grid; ``search="random"`` or ``search={"method": "random", "trials": 20, "seed": 0,
        "metric": "accuracy"}`` draws trials instead. Every trial is cross-validated; the best one's
        options are trained on all rows and its trials kept in ``meta["search"]`` (``head.trials``,
        SQL ``trials('name')``). See :mod:`mlnb.heads._search`.

    Rows with a null label or null features are skipped, with one warning.

    Examples
    --------
    >>> import mlnb
    >>> head = mlnb.train_classifier(df, features="features", label="label", name="pets")  # doctest: +SKIP
    >>> mlnb.sql("SELECT pets(embed(path)) FROM new_photos")  # doctest: +SKIP
    """
    if name is not None:
        store.check_new_name(name)
        _experiment.check_kind(name, "classifier", replace)
    from . import _search

    plan = _search.plan_search(algo, options, search)  # None: no search; checked before any training
    df = _experiment.training_frame(frame, features, label)
    X, ok = feature_matrix(df.get_column(features))
    y_all = df.get_column(label)
    ok &= ~y_all.is_null().to_numpy()
    skipped = int((~ok).sum())
    if skipped:
        warnings.warn(f"{skipped} of {df.height} training rows have null features or a null label and were skipped.", stacklevel=2)
    X, y = X[ok], y_all.cast(str).to_numpy()[ok]
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) == 0:
        raise MlnbError(
            f"None of the {df.height} training rows has both features and a label (every {label!r} or "
            f"{features!r} is null): check the training query's label column."
        )
    if len(classes) < 2:
        raise MlnbError(f"A classifier needs at least two classes; the training data has only {', '.join(map(repr, classes)) or 'none'}.")
    if plan is not None:
        folds = _search.search_folds(folds, counts)
    folds = _experiment.check_folds(folds)  # None: the rule below; 0: no cross-validation
    test_set = None if test is None else _experiment.test_rows(test, features, label, int(X.shape[1]))
    if folds is None and test_set is None and counts.min() >= 5 and len(y) <= 50_000:
        folds = 5
    if folds:
        small = [(c, n) for c, n in zip(classes, counts) if n < folds]
        if small:
            listed = ", ".join(f"{c!r} ({n})" for c, n in small[:5])
            raise MlnbError(f"{folds}-fold cross-validation needs at least {folds} rows per class; too few for {listed}. Use fewer folds or label more rows.")
    algo_name = algo if isinstance(algo, str) else type(algo).__name__
    evaluation: Evaluation | None = None
    if plan is not None:  # the best trial's options (and its CV evaluation) are what is trained below
        options, evaluation = _search.run_search(plan, X, y, folds, progress=progress, name=name, feature_model=feature_model)
        evaluated_on = f"{folds}-fold CV"
    estimator = make_estimator(algo, options)
    check_data(estimator, algo_name, y, folds)

    try:
        if folds and evaluation is None:
            evaluation = cross_validate(estimator, X, y, folds, progress=progress)
            evaluated_on = f"{folds}-fold CV"
        t0 = time.perf_counter()
        fit_classifier(estimator, X, y)
        train_seconds = time.perf_counter() - t0
    except ValueError as exc:  # scikit-learn's refusals (a user estimator's bad parameter, too little data)
        if isinstance(exc, MlnbError):
            raise
        raise MlnbError(f"Training {algo_name} failed: {exc}") from exc
    if evaluation is not None:  # cross-validated: the errors' rows index the input frame
        rows = np.flatnonzero(ok)
        evaluation.point_rows_at(rows)
    evaluation, evaluated_on, record = _experiment.classifier_outcome(estimator, X, y, ok, evaluation, folds, test_set)
    m = evaluation.metrics.row(0, named=True) if evaluation is not None else dict.fromkeys(("accuracy", "macro_f1", "log_loss"))
    meta = {
        "algorithm": algo_name,
        "options": {k: v for k, v in (options or {}).items()},
        "classes": [str(c) for c in estimator.classes_],
        "feature_model": feature_model,
        "feature_model_sha256": model_weights(feature_model),
        "layer": layer or ("pool" if feature_model else None),
        "dim": int(X.shape[1]),
        "features_column": features,
        "metrics": {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "log_loss": m["log_loss"], "evaluated_on": evaluated_on},
        "n_rows": int(len(y)),
        "folds": int(folds or 0),
        "test_rows": 0 if test_set is None else test_set[2],
        "data_hash": data_hash(X, y),
        "train_seconds": round(train_seconds, 4),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "mlnb_version": __version__,
    }
    if training_query:
        meta["training_query"] = training_query
    if plan is not None:
        meta["search"] = _search.search_meta(plan, folds)
    head = Head(estimator, meta, evaluation)
    head.experiment = record
    # Saves a named head, and ends its MLflow run (the search's, or its own with config.mlflow = "all").
    _search.saving(head, plan, None if name is None else lambda: save_head(head, name, replace=replace))
    return head


def fit_classifier(estimator: Any, X: np.ndarray, y: np.ndarray) -> Any:
    """``estimator.fit(X, y)``. A random forest's ``class_weight = 'balanced'`` is passed as the sample
    weights it stands for: scikit-learn looks the weights of labels such as '0', '1' up as the
    integers 0, 1 and fails ("The classes, [0, 1], are not in class_weight"); the fit is the same."""
    from sklearn.ensemble import RandomForestClassifier

    if not (isinstance(estimator, RandomForestClassifier) and estimator.class_weight == "balanced"):
        return estimator.fit(X, y)
    from sklearn.utils.class_weight import compute_sample_weight

    estimator.set_params(class_weight=None)
    try:
        estimator.fit(X, y, sample_weight=compute_sample_weight("balanced", y))
    finally:
        estimator.set_params(class_weight="balanced")  # as the user set it (it only matters to fit)
    return estimator


def cross_validate(estimator: Any, X: np.ndarray, y: np.ndarray, folds: int, *, progress: Any = None) -> Evaluation:
    import polars as pl
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold

    classes = np.unique(y)
    proba = np.zeros((len(y), len(classes)))
    fold_rows = []
    fold_confusion: dict[str, list[dict[str, Any]]] = {}
    for i, (tr, te) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=0).split(X, y)):
        est = fit_classifier(clone(estimator), X[tr], y[tr])
        p = est.predict_proba(X[te])
        cols = np.searchsorted(classes, np.asarray(est.classes_).astype(str))
        proba[np.ix_(te, cols)] = p
        ev = evaluate_predictions(y[te], proba[te], classes)
        fold_rows.append({"fold": i, **ev.metrics.row(0, named=True)})
        fold_confusion[str(i)] = confusion_cells(ev.predictions["true"], ev.predictions["predicted"], str(i))
        if progress is not None:
            progress(i + 1, folds, fold_rows[-1])
    evaluation = evaluate_predictions(y, proba, classes)
    evaluation.folds = pl.DataFrame(fold_rows)
    evaluation.summary = summarise_folds(evaluation.folds)
    evaluation.fold_confusion = fold_confusion
    evaluation.proba = proba
    return evaluation


# -- persistence and SQL registration --------------------------------------
# (workspace, name, version) -> (what was on disk when loaded, the head)
_loaded: dict[tuple[str, str, int], tuple[Any, Head]] = {}
_loaded_lock = threading.Lock()


def save_head(head: Head, name: str, *, replace: bool = False) -> Head:
    """Save ``head`` as a new version of ``name`` (with ``replace``: as the only version).
    Its SQL functions are found in the workspace by the next statement that calls them."""
    store.check_new_name(name)
    version = store.save(name, head.estimator, head.meta, replace=replace, evaluation=getattr(head, "experiment", None))
    head.meta = {**head.meta, "name": name, "version": version}
    root = str(store.heads_root())
    with _loaded_lock:
        if replace:
            for k in [k for k in _loaded if k[:2] == (root, name)]:
                del _loaded[k]
        _loaded[(root, name, version)] = (store.stamp(name, version), head)
    return head


def load_classifier(ref: str) -> Head:
    """A saved head: ``"name"`` (latest version) or ``"name@2"``.

    A head whose files are missing, damaged, edited or hold types mlnb does not
    trust gives an ``MlnbError`` naming it.
    """
    head = load_head(ref)
    if head.meta.get("kind") == "regressor":
        raise MlnbError(f"{head.ref} is a regressor, not a classifier: use mlnb.load_regressor({head.name!r}).")
    return head


def load_head(ref: str, what: str = "classifier") -> Any:
    """A saved classifier :class:`Head` or :class:`~mlnb.heads.regressor.Regressor`, whichever
    ``ref`` is (``what`` names the kind in a not-found error)."""
    # CREATE OR REPLACE in another thread or process may move or replace the version between
    # resolving the name and reading its files: the stamp taken before and after the read tells,
    # and the name is resolved again (the old head or the new one, never files of both).
    tries = 20
    for attempt in range(tries):
        if attempt:
            time.sleep(min(0.005 * attempt, 0.05))
        name, version = store.resolve(ref, what)
        key = (str(store.heads_root()), name, version)
        stamp = store.stamp(name, version)
        with _loaded_lock:
            hit = _loaded.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        try:
            estimator, meta = store.load(name, version)
        except MlnbError:
            # stamp None: the version's folder was gone before we looked (moved by a replace)
            if attempt < tries - 1 and (stamp is None or store.stamp(name, version) != stamp):
                continue
            raise
        if store.stamp(name, version) == stamp:
            break
    else:
        raise MlnbError(f"Classifier {ref!r} was replaced {tries} times while it was being loaded; try again.")
    if meta.get("kind") == "regressor":
        from .regressor import Regressor

        head: Any = Regressor(estimator, meta)
    else:
        head = Head(estimator, meta)
    with _loaded_lock:
        _loaded[key] = (stamp, head)
    return head


def classifiers() -> Any:
    """Every saved head version in the workspace, as a Polars frame.

    A version whose files cannot be read is listed too, with what is wrong in
    ``error`` (null for good heads).
    """
    import polars as pl

    rows = []
    for n in store.names():
        for v in store.versions(n):
            try:
                m = store.check_files(n, v)
            except MlnbError as exc:
                rows.append({"name": n, "version": v, "error": str(exc)})
                continue
            if m.get("kind") == "regressor":  # listed by regressors()
                continue
            rows.append(
                {
                    "name": n,
                    "version": v,
                    "algorithm": m["algorithm"],
                    "classes": len(m["classes"]),
                    "feature_model": m.get("feature_model"),
                    "dim": m["dim"],
                    "accuracy": m["metrics"].get("accuracy"),
                    "macro_f1": m["metrics"].get("macro_f1"),
                    "evaluated_on": m["metrics"].get("evaluated_on"),
                    "n_rows": m["n_rows"],
                    "created": m.get("created"),
                    "error": None,
                }
            )
    schema = {
        "name": pl.String, "version": pl.Int64, "algorithm": pl.String, "classes": pl.Int64, "feature_model": pl.String,
        "dim": pl.Int64, "accuracy": pl.Float64, "macro_f1": pl.Float64, "evaluated_on": pl.String, "n_rows": pl.Int64,
        "created": pl.String, "error": pl.String,
    }
    return pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema)


def drop_classifier(name: str, *, kind: str = "classifier") -> int:
    if store.is_name(name):
        name = store.stored_name(name)  # DROP CLASSIFIER pixup drops PixUp: its loaded copies go too
    other = store.kind_of(name)
    if other is not None and other != kind:
        raise MlnbError(f"{name!r} is a {other}, not a {kind}: DROP {other.upper()} {name}.")
    if not store.versions(name):
        store.resolve(name, kind)  # the not-found error, with suggestions
    n = store.drop(name)
    with _loaded_lock:
        for k in [k for k in _loaded if k[1] == name]:
            del _loaded[k]
    from ..sql._persisted import warn_dependents

    warn_dependents(name, kind)
    return n
