"""The skops allow-list: exactly what mlnb and scikit-learn's classifiers write, nothing that calls a function."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import mlnb
from mlnb.heads import load_classifier, store, train_classifier
from mlnb.heads.algorithms import make_estimator


def _data(n_classes):
    rng = np.random.default_rng(0)
    y = np.repeat(list("abc")[:n_classes], 12)
    X = np.abs(rng.normal(size=(len(y), 5))).astype(np.float32)
    return X, y


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("algo,options", [("logistic", {}), ("linear_svm", {}), ("knn", {"k": 3}), ("mlp", {"hidden": 8, "max_iter": 500})])
def test_allow_list_covers_what_mlnb_writes(algo, options, n_classes):
    import skops.io as sio

    X, y = _data(n_classes)
    est = make_estimator(algo, options).fit(X, y)
    untrusted = set(sio.get_untrusted_types(data=sio.dumps(est)))
    assert untrusted <= store.TRUSTED_TYPES


def _users_estimators():
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.gaussian_process import GaussianProcessClassifier
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    return [
        RandomForestClassifier(n_estimators=5, random_state=0),
        GradientBoostingClassifier(n_estimators=5),
        CalibratedClassifierCV(SVC(), ensemble=False, cv=3),
        GaussianNB(),
        KNeighborsClassifier(n_neighbors=3),
        KNeighborsClassifier(n_neighbors=3, algorithm="ball_tree", metric="manhattan"),
        GaussianProcessClassifier(),
    ]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("est", _users_estimators(), ids=lambda e: type(e).__name__)
def test_common_scikit_learn_classifiers_save_and_load(est):
    X, y = _data(3)
    df = pl.DataFrame({"features": X.tolist(), "label": y.tolist()})
    head = train_classifier(df, algo=est, name="user", folds=None)
    mlnb.heads.head._loaded.clear()
    again = load_classifier("user")
    assert np.allclose(again.predict_proba(X), head.predict_proba(X))


def test_hist_gradient_boosting_is_refused_when_saved():
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = _data(2)
    df = pl.DataFrame({"features": X.tolist(), "label": y.tolist()})
    with pytest.raises(mlnb.MlnbError, match="was not saved: HistGradientBoostingClassifier holds .*TreePredictor"):
        train_classifier(df, algo=HistGradientBoostingClassifier(max_iter=3), name="hgb", folds=None)
    assert store.versions("hgb") == []


def test_no_function_or_callable_type_is_trusted():
    assert not any(t.startswith(("builtins.", "numpy.")) for t in store.TRUSTED_TYPES)
    assert not any("Func" in t or "Transformer" in t or "Predictor" in t for t in store.TRUSTED_TYPES)
