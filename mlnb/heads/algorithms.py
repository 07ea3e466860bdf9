"""Head algorithms by name, each a scikit-learn estimator built from ``WITH (...)`` options.

========== ==========================================================================
name       estimator
========== ==========================================================================
logistic   standardise + LogisticRegression (options: C, max_iter)
linear_svm standardise + LinearSVC with calibrated probabilities (options: C, cv)
knn        k-nearest neighbours, cosine distance, distance-weighted (options: k)
mlp        scikit-learn MLPClassifier with early stopping (options: hidden, alpha, max_iter)
torch      :class:`TorchHead`, linear (hidden = 0) or MLP, GPU when there is one
           (options: hidden, epochs, lr, weight_decay, batch_size, dropout, patience)
gbdt       scikit-learn HistGradientBoostingClassifier: gradient-boosted trees on
           histograms (LightGBM's method), one tree per class and round
random_forest scikit-learn RandomForestClassifier, all cores
========== ==========================================================================

Regressors (``CREATE REGRESSOR``, :func:`mlnb.train_regressor`) by name:

============= ======================================================================
ridge         standardise + Ridge (option: alpha)
gbdt          HistGradientBoostingRegressor (options as for the classifier, plus loss)
random_forest RandomForestRegressor, all cores
knn           k-nearest neighbours, cosine distance, distance-weighted (option: k)
============= ======================================================================

Tree defaults, and why
----------------------
``gbdt`` keeps scikit-learn's defaults, which are LightGBM's: ``max_iter = 100``
boosting rounds, ``learning_rate = 0.1``, ``max_leaf_nodes = 31``, no depth
limit, ``min_samples_leaf = 20``, no L2 penalty, every feature at every split
(``max_features = 1.0``), 255 bins per feature; early stopping on a 10%
validation split (``n_iter_no_change = 10``) is on only above 10,000 rows
(``early_stopping = 'auto'``; ``true``/``false`` force it). 100 rounds at rate
0.1 is enough to fit, unlike few-round defaults (xgboost's tutorials train 2
to 10 rounds) that leave boosting underfitted. ``random_state = 0`` makes
results repeatable. On small sets (tens of rows per class) ``min_samples_leaf
= 20`` allows few splits: lower it (``WITH (min_samples_leaf = 5)``).

``random_forest`` keeps scikit-learn's defaults too: ``n_estimators = 100``
fully grown trees, ``min_samples_leaf = 1``, ``max_features = 'sqrt'`` of the
features per split for classifiers and all of them (``1.0``) for regressors,
bootstrap samples; ``random_state = 0``; trained on every core.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from ..exceptions import MlnbError


def _logistic(C: float = 1.0, max_iter: int = 2000) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=float(C), max_iter=int(max_iter)))


def _linear_svm(C: float = 0.1, cv: int = 3) -> Any:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    return make_pipeline(StandardScaler(), CalibratedClassifierCV(LinearSVC(C=float(C), max_iter=5000), cv=int(cv)))


def _knn(k: int = 5) -> Any:
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=int(k), metric="cosine", weights="distance", algorithm="brute")


def _mlp(hidden: int = 256, alpha: float = 1e-4, max_iter: int = 300) -> Any:
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(),
        MLPClassifier(
            hidden_layer_sizes=(int(hidden),), alpha=float(alpha), max_iter=int(max_iter),
            early_stopping=True, n_iter_no_change=25, random_state=0,
        ),
    )


def _gbdt(
    max_iter: int = 100, learning_rate: float = 0.1, max_leaf_nodes: int | None = 31, max_depth: int | None = None,
    min_samples_leaf: int = 20, l2_regularization: float = 0.0, max_features: float = 1.0, early_stopping: Any = "auto",
    validation_fraction: float = 0.1, n_iter_no_change: int = 10, class_weight: str | None = None, random_state: int | None = 0,
) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        max_iter=max_iter, learning_rate=learning_rate, max_leaf_nodes=max_leaf_nodes, max_depth=max_depth,
        min_samples_leaf=min_samples_leaf, l2_regularization=l2_regularization, max_features=max_features,
        early_stopping=early_stopping, validation_fraction=validation_fraction, n_iter_no_change=n_iter_no_change,
        class_weight=class_weight, random_state=random_state,
    )


def _random_forest(
    n_estimators: int = 100, max_depth: int | None = None, min_samples_leaf: int = 1, max_features: Any = "sqrt",
    class_weight: str | None = None, random_state: int | None = 0,
) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(
        n_estimators=n_estimators, max_depth=max_depth, min_samples_leaf=min_samples_leaf, max_features=max_features,
        class_weight=class_weight, random_state=random_state, n_jobs=-1,
    )


def _torch(**options: Any) -> Any:
    from .torch_head import TorchHead

    return TorchHead(**options)


ALGORITHMS: dict[str, Callable[..., Any]] = {
    "logistic": _logistic,
    "linear_svm": _linear_svm,
    "knn": _knn,
    "mlp": _mlp,
    "torch": _torch,
    "gbdt": _gbdt,
    "random_forest": _random_forest,
}


# -- regressors ------------------------------------------------------------
def _ridge(alpha: float = 1.0) -> Any:
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), Ridge(alpha=float(alpha)))


def _gbdt_regressor(
    loss: str = "squared_error", max_iter: int = 100, learning_rate: float = 0.1, max_leaf_nodes: int | None = 31,
    max_depth: int | None = None, min_samples_leaf: int = 20, l2_regularization: float = 0.0, max_features: float = 1.0,
    early_stopping: Any = "auto", validation_fraction: float = 0.1, n_iter_no_change: int = 10, random_state: int | None = 0,
) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(
        loss=loss, max_iter=max_iter, learning_rate=learning_rate, max_leaf_nodes=max_leaf_nodes, max_depth=max_depth,
        min_samples_leaf=min_samples_leaf, l2_regularization=l2_regularization, max_features=max_features,
        early_stopping=early_stopping, validation_fraction=validation_fraction, n_iter_no_change=n_iter_no_change,
        random_state=random_state,
    )


def _random_forest_regressor(
    n_estimators: int = 100, max_depth: int | None = None, min_samples_leaf: int = 1, max_features: Any = 1.0,
    random_state: int | None = 0,
) -> Any:
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(
        n_estimators=n_estimators, max_depth=max_depth, min_samples_leaf=min_samples_leaf, max_features=max_features,
        random_state=random_state, n_jobs=-1,
    )


def _knn_regressor(k: int = 5) -> Any:
    from sklearn.neighbors import KNeighborsRegressor

    return KNeighborsRegressor(n_neighbors=int(k), metric="cosine", weights="distance", algorithm="brute")


REGRESSION_ALGORITHMS: dict[str, Callable[..., Any]] = {
    "ridge": _ridge,
    "gbdt": _gbdt_regressor,
    "random_forest": _random_forest_regressor,
    "knn": _knn_regressor,
}


class _Rule:
    """What one option accepts: a number (whole or not) in a range, or a string; ``None`` when nullable."""

    def __init__(self, kind: str, low: float | None = None, *, low_open: bool = False, high: float | None = None,
                 high_open: bool = False, nullable: bool = False) -> None:
        self.kind, self.low, self.low_open, self.high, self.high_open, self.nullable = kind, low, low_open, high, high_open, nullable

    def describe(self) -> str:
        what = {"int": "a whole number", "float": "a number", "str": "a string", "bool": "true or false"}[self.kind]
        if self.low is not None and self.high is not None:
            what += f" from {self.low:g}{' (excluded)' if self.low_open else ''} to {self.high:g}{' (excluded)' if self.high_open else ''}"
        elif self.low is not None:
            what += f" {'above' if self.low_open else 'of at least'} {self.low:g}"
        return what + (" or null" if self.nullable else "")

    def __call__(self, value: Any) -> Any:
        """The value converted, or ``ValueError``."""
        if value is None and self.nullable:
            return None
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError
            return value
        if self.kind == "str":
            if not isinstance(value, str):
                raise ValueError
            return value
        if isinstance(value, bool):
            raise ValueError
        num = float(value)  # numbers, and numbers written as strings ('0.5'); 'abc' raises ValueError
        if num != num or num in (float("inf"), float("-inf")):
            raise ValueError
        if self.kind == "int":
            if num != int(num):
                raise ValueError
            num = int(num)
        if self.low is not None and (num < self.low or (self.low_open and num == self.low)):
            raise ValueError
        if self.high is not None and (num > self.high or (self.high_open and num == self.high)):
            raise ValueError
        return num


class _OneOf:
    """One of some words (``'sqrt'``), or what ``rule`` accepts."""

    def __init__(self, words: tuple[str, ...], rule: _Rule | None = None, *, nullable: bool = False) -> None:
        self.words, self.rule, self.nullable = words, rule, nullable

    def describe(self) -> str:
        parts = [" or ".join(repr(w) for w in self.words)]
        if self.rule is not None:
            parts.append(self.rule.describe())
        return ", or ".join(parts) + (" or null" if self.nullable else "")

    def __call__(self, value: Any) -> Any:
        if value is None and self.nullable:
            return None
        if isinstance(value, str) and value.lower() in self.words:
            return value.lower()
        if self.rule is None or isinstance(value, str) and not value.replace(".", "", 1).lstrip("-").isdigit():
            raise ValueError
        return self.rule(value)


_POSITIVE = _Rule("float", 0, low_open=True)
_AT_LEAST_1 = _Rule("int", 1)
_FRACTION = _Rule("float", 0, high=1, high_open=True)

_SHARE = _Rule("float", 0, low_open=True, high=1)


def _tree_rules(*, classifier: bool) -> dict[str, Any]:
    """HistGradientBoosting's options, in its factory's order."""
    rules: dict[str, Any] = {} if classifier else {"loss": _OneOf(("squared_error", "absolute_error", "poisson"))}
    rules.update({
        "max_iter": _AT_LEAST_1, "learning_rate": _POSITIVE, "max_leaf_nodes": _Rule("int", 2, nullable=True),
        "max_depth": _Rule("int", 1, nullable=True), "min_samples_leaf": _AT_LEAST_1, "l2_regularization": _Rule("float", 0),
        "max_features": _SHARE, "early_stopping": _OneOf(("auto",), _Rule("bool")),
        "validation_fraction": _Rule("float", 0, low_open=True, high=1, high_open=True), "n_iter_no_change": _AT_LEAST_1,
    })
    if classifier:
        rules["class_weight"] = _OneOf(("balanced",), nullable=True)
    rules["random_state"] = _Rule("int", 0, nullable=True)
    return rules


def _forest_rules(*, classifier: bool) -> dict[str, Any]:
    rules: dict[str, Any] = {
        "n_estimators": _AT_LEAST_1, "max_depth": _Rule("int", 1, nullable=True), "min_samples_leaf": _AT_LEAST_1,
        "max_features": _OneOf(("sqrt", "log2"), _SHARE),
    }
    if classifier:
        rules["class_weight"] = _OneOf(("balanced", "balanced_subsample"), nullable=True)
    rules["random_state"] = _Rule("int", 0, nullable=True)
    return rules


#: What each algorithm's options accept (checked before anything is fitted).
OPTIONS: dict[str, dict[str, _Rule]] = {
    "logistic": {"C": _POSITIVE, "max_iter": _AT_LEAST_1},
    "linear_svm": {"C": _POSITIVE, "cv": _Rule("int", 2)},
    "knn": {"k": _AT_LEAST_1},
    "mlp": {"hidden": _AT_LEAST_1, "alpha": _Rule("float", 0), "max_iter": _AT_LEAST_1},
    "torch": {
        "hidden": _Rule("int", 0), "epochs": _AT_LEAST_1, "lr": _POSITIVE, "weight_decay": _Rule("float", 0),
        "batch_size": _AT_LEAST_1, "dropout": _FRACTION, "patience": _AT_LEAST_1, "validation_fraction": _FRACTION,
        "random_state": _Rule("int", 0, nullable=True), "device": _Rule("str", nullable=True),
    },
    "gbdt": _tree_rules(classifier=True),
    "random_forest": _forest_rules(classifier=True),
}

#: The same for regressors.
REGRESSION_OPTIONS: dict[str, dict[str, Any]] = {
    "ridge": {"alpha": _Rule("float", 0)},
    "gbdt": _tree_rules(classifier=False),
    "random_forest": _forest_rules(classifier=False),
    "knn": {"k": _AT_LEAST_1},
}


def check_options(algo: str, options: dict[str, Any] | None, *, task: str = "classification") -> dict[str, Any]:
    """``options`` with their canonical names and converted values; an ``MlnbError`` naming the
    first unknown or bad option. SQL option names ignore case. ``task``: ``"classification"``
    or ``"regression"``."""
    rules = (REGRESSION_OPTIONS if task == "regression" else OPTIONS)[algo]
    by_lower = {k.lower(): k for k in rules}
    out: dict[str, Any] = {}
    for key, value in (options or {}).items():
        name = by_lower.get(str(key).lower())
        if name is None:
            close = difflib.get_close_matches(str(key).lower(), list(by_lower), n=1)
            hint = f" Did you mean {by_lower[close[0]]!r}?" if close else ""
            raise MlnbError(f"Unknown option {key!r} for {algo}.{hint} Options: {', '.join(rules)}.")
        try:
            out[name] = rules[name](value)
        except (TypeError, ValueError, OverflowError):
            raise MlnbError(f"Option {name} for {algo} must be {rules[name].describe()}; got {value!r}.") from None
    return out


def make_estimator(algo: Any, options: dict[str, Any] | None = None, *, task: str = "classification") -> Any:
    """An unfitted estimator for ``algo`` (a name above, or any scikit-learn classifier, or
    regressor with ``task="regression"``)."""
    regression = task == "regression"
    if not isinstance(algo, str):
        from sklearn.base import clone, is_classifier, is_regressor

        if not (is_regressor(algo) if regression else is_classifier(algo)):
            raise MlnbError(f"{type(algo).__name__} is not a scikit-learn {'regressor' if regression else 'classifier'}.")
        est = clone(algo)
        if not options:
            return est
        valid = est.get_params()
        unknown = [k for k in options if k not in valid]
        if unknown:
            raise MlnbError(f"Unknown option {unknown[0]!r} for {type(algo).__name__}. Options: {', '.join(sorted(valid))}.")
        return est.set_params(**options)
    key = algo.lower()
    table = REGRESSION_ALGORITHMS if regression else ALGORITHMS
    if key not in table:
        close = difflib.get_close_matches(key, table, n=2)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        what = "regression algorithm" if regression else "algorithm"
        raise MlnbError(f"Unknown {what} {algo!r}.{hint} Choose from: {', '.join(table)}.")
    return table[key](**check_options(key, options, task=task))


def check_data(estimator: Any, algo: str, y: Any, folds: int | None) -> None:
    """Refuse, before fitting, what scikit-learn would refuse midway: more neighbours than
    training rows, or fewer rows of a class than an inner calibration needs. ``algo`` is
    mlnb's name for the algorithm, or the estimator's class name."""
    import numpy as np
    from sklearn.calibration import CalibratedClassifierCV

    y = np.asarray(y)
    classes = np.unique(y)
    # Every training set the estimator is fitted on: each fold's, then all rows.
    sets = [np.arange(len(y))]
    if folds:
        from sklearn.model_selection import StratifiedKFold

        sets += [tr for tr, _ in StratifiedKFold(folds, shuffle=True, random_state=0).split(np.zeros(len(y)), y)]
    smallest = min(len(s) for s in sets)
    per_class = {c: min(int((y[s] == c).sum()) for s in sets) for c in classes}
    in_folds = f" (in each training fold of {folds}-fold cross-validation)" if folds else ""
    parts = [("", estimator), *((k + "__", v) for k, v in estimator.get_params().items() if hasattr(v, "get_params") and not isinstance(v, type))]
    for prefix, est in parts:
        params = est.get_params(deep=False)
        k = params.get("n_neighbors")
        if isinstance(k, int) and k > smallest:
            opt = "k" if algo == "knn" else f"{prefix}n_neighbors"
            raise MlnbError(f"Option {opt} = {k} for {algo} is more than the {smallest} training rows{in_folds}: use {opt} = {smallest} or fewer, or label more rows.")
        if isinstance(est, CalibratedClassifierCV) and (est.cv is None or isinstance(est.cv, int)):
            cv = 5 if est.cv is None else est.cv
            short = [(c, n) for c, n in per_class.items() if n < cv]
            if short:
                opt = "cv" if algo == "linear_svm" else f"{prefix}cv"
                listed = ", ".join(f"{c!r} ({n})" for c, n in short[:5])
                raise MlnbError(
                    f"{algo} calibrates its probabilities with {cv}-fold cross-validation inside training, so it needs at "
                    f"least {cv} rows of every class{in_folds}; too few for {listed}. Label more rows, lower option {opt} "
                    "(at least 2), or use logistic."
                )


def TorchHead_params() -> list[str]:  # noqa: N802 - named after the class it describes
    import inspect

    from .torch_head import TorchHead

    return list(inspect.signature(TorchHead).parameters)
