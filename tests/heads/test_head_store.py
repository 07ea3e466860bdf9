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
@pytest.mark.parametrize(
    "algo,options",
    [
        ("logistic", {}), ("linear_svm", {}), ("knn", {"k": 3}), ("mlp", {"hidden": 8, "max_iter": 500}),
        ("gbdt", {"max_iter": 5, "min_samples_leaf": 2}), ("random_forest", {"n_estimators": 5}),
    ],
)
def test_allow_list_covers_what_mlnb_writes(algo, options, n_classes):
    import skops.io as sio

    X, y = _data(n_classes)
    est = make_estimator(algo, options).fit(X, y)
    untrusted = set(sio.get_untrusted_types(data=sio.dumps(est)))
    assert untrusted <= store.TRUSTED_TYPES


@pytest.mark.parametrize(
    "algo,options", [("ridge", {}), ("gbdt", {"max_iter": 5, "min_samples_leaf": 2}), ("random_forest", {"n_estimators": 5}), ("knn", {"k": 3})]
)
def test_allow_list_covers_the_regressors(algo, options):
    import skops.io as sio

    X, _ = _data(3)
    est = make_estimator(algo, options, task="regression").fit(X, X[:, 0] * 2 + 1)
    assert set(sio.get_untrusted_types(data=sio.dumps(est))) <= store.TRUSTED_TYPES


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
    head = train_classifier(df, algo=est, name="user_est", folds=None)
    mlnb.heads.head._loaded.clear()
    again = load_classifier("user_est")
    assert np.allclose(again.predict_proba(X), head.predict_proba(X))


@pytest.mark.parametrize("regression", [False, True])
def test_gbdt_saves_loads_and_a_tampered_tree_is_refused(regression, _workspace):
    """TreePredictor is trusted only with its nodes checked: indexes that point outside the tree,
    or back up it (a loop), would send the compiled predict out of bounds."""
    import skops.io as sio

    X, y = _data(3)
    opts = {"max_iter": 5, "min_samples_leaf": 2}
    if regression:
        df = pl.DataFrame({"features": X.tolist(), "target": X[:, 0] * 2.0})
        head = mlnb.train_regressor(df, algo="gbdt", options=opts, name="hgb", folds=0)
        load, out = mlnb.load_regressor, lambda h: h.predict(X)
    else:
        df = pl.DataFrame({"features": X.tolist(), "label": y.tolist()})
        head = train_classifier(df, algo="gbdt", options=opts, name="hgb", folds=None)
        load, out = load_classifier, lambda h: h.predict_proba(X)
    mlnb.heads.head._loaded.clear()
    assert np.allclose(out(load("hgb")), out(head))
    path = _workspace / "heads" / "hgb" / "v1" / "model.skops"
    good = path.read_bytes()
    est = sio.loads(good, trusted=sio.get_untrusted_types(data=good))
    for field, value, message in [("left", 10_000, "point outside it or backwards"), ("right", 0, "point outside it or backwards"),
                                  ("feature_idx", 99, "splits on a feature outside the 5")]:
        bad = sio.loads(good, trusted=sio.get_untrusted_types(data=good))
        nodes = bad._predictors[0][0].nodes
        inner = np.flatnonzero(~nodes["is_leaf"].astype(bool))
        assert len(inner), "the test needs a tree with a split"
        nodes[field][inner[0]] = value
        path.write_bytes(sio.dumps(bad))
        mlnb.heads.head._loaded.clear()
        with pytest.raises(mlnb.MlnbError, match=f"hgb@1 is damaged: a gradient-boosted tree.*{message}"):
            load("hgb")
    path.write_bytes(sio.dumps(est))
    mlnb.heads.head._loaded.clear()
    assert np.allclose(out(load("hgb")), out(head))


def test_no_function_or_callable_type_is_trusted():
    assert not any(t.startswith(("builtins.", "numpy.")) for t in store.TRUSTED_TYPES)
    # TreePredictor (gbdt) is the one predictor trusted, and only with its nodes checked on load (above).
    checked = {"sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"}
    assert not any("Func" in t or "Transformer" in t or "Predictor" in t for t in store.TRUSTED_TYPES - checked)


def test_a_head_is_found_whatever_the_case_of_its_name_as_sql_names_are(tmp_path):
    """CREATE CLASSIFIER PixUp could not be called at all: mlnb's parser lowers unquoted calls
    (PixUp(f) is pixup(f)) and the store looked for a folder named pixup. SQL names ignore case;
    the head keeps the case it was created with, and another case names the same head."""
    import os

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    df = pl.DataFrame({"f": x, "label": np.where(x[:, 0] > 0, "a", "b")})
    mlnb.sql("CREATE CLASSIFIER PixUp AS SELECT f AS features, label FROM df", df=df)
    want = mlnb.sql("SELECT PixUp(f) AS p FROM df", df=df)["p"]
    assert (want == df["label"]).mean() > 0.8
    for call in ("pixup(f)", "PIXUP(f)", '"pixup@1"(f)'):
        assert mlnb.sql(f"SELECT {call} AS p FROM df", df=df)["p"].to_list() == want.to_list(), call
    assert mlnb.load_classifier("PIXUP").name == "PixUp"
    # another case is the same head: a new version in the same folder, OR REPLACE replaces it
    mlnb.sql("CREATE CLASSIFIER pixup AS SELECT f AS features, label FROM df", df=df)
    assert os.listdir(store.heads_root()) == ["PixUp"] and store.versions("PIXUP") == [1, 2]
    mlnb.sql("CREATE OR REPLACE CLASSIFIER PIXUP USING knn AS SELECT f AS features, label FROM df", df=df)
    shown = mlnb.sql("SHOW CLASSIFIERS")
    assert shown["name"].to_list() == ["PixUp"] and shown["algorithm"].to_list() == ["knn"]
    mlnb.sql("DROP CLASSIFIER pixup")
    assert store.names() == []
