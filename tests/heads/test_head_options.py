"""WITH options and training data are checked before fitting; errors name the option or the class."""

from __future__ import annotations

import inspect

import numpy as np
import polars as pl
import pytest

import mlnb
from mlnb.heads import train_classifier
from mlnb.heads.algorithms import ALGORITHMS, OPTIONS, TorchHead_params


def _frame(counts=(12, 12, 12), dim=6, seed=0):
    rng = np.random.default_rng(seed)
    y = np.concatenate([[c] * n for c, n in zip("abc", counts)])
    X = rng.normal(size=(len(y), dim)).astype(np.float32)
    return pl.DataFrame({"features": X.tolist(), "label": y.tolist()})


def test_option_rules_match_the_algorithms():
    for algo, factory in ALGORITHMS.items():
        params = TorchHead_params() if algo == "torch" else list(inspect.signature(factory).parameters)
        assert list(OPTIONS[algo]) == params, algo


@pytest.mark.parametrize(
    "algo,options,message",
    [
        ("logistic", {"C": -1}, r"Option C for logistic must be a number above 0; got -1"),
        ("logistic", {"c": 0}, r"Option C for logistic must be a number above 0; got 0"),
        ("linear_svm", {"C": -1}, r"Option C for linear_svm must be a number above 0"),
        ("logistic", {"max_iter": 2.5}, r"Option max_iter for logistic must be a whole number of at least 1"),
        ("knn", {"k": 0}, r"Option k for knn must be a whole number of at least 1; got 0"),
        ("knn", {"k": True}, r"Option k for knn must be a whole number"),
        ("mlp", {"hidden": "abc"}, r"Option hidden for mlp must be a whole number of at least 1; got 'abc'"),
        ("torch", {"hidden": "abc"}, r"Option hidden for torch must be a whole number of at least 0; got 'abc'"),
        ("torch", {"dropout": 1}, r"Option dropout for torch must be a number from 0 to 1 \(excluded\)"),
        ("torch", {"lr": float("nan")}, r"Option lr for torch must be a number above 0"),
        ("linear_svm", {"cv": 1}, r"Option cv for linear_svm must be a whole number of at least 2"),
        ("logistic", {"gama": 1}, r"Unknown option 'gama' for logistic\. Options: C, max_iter"),
        ("knn", {"n_neighbors": 3}, r"Unknown option 'n_neighbors' for knn\. Options: k"),
        ("mlp", {"hiden": 3}, r"Unknown option 'hiden' for mlp\. Did you mean 'hidden'\?"),
    ],
)
def test_bad_options_are_refused_before_fitting(algo, options, message):
    with pytest.raises(mlnb.MlnbError, match=message):
        train_classifier(_frame(), algo=algo, options=options, folds=None)


def test_options_written_as_strings_or_floats_still_work():
    head = train_classifier(_frame(), algo="knn", options={"K": "3"}, folds=None)
    assert head.estimator.n_neighbors == 3
    head = train_classifier(_frame(), algo="mlp", options={"hidden": 8.0, "max_iter": 500}, folds=None)
    assert head.estimator[-1].hidden_layer_sizes == (8,)


def test_k_above_the_row_count():
    with pytest.raises(mlnb.MlnbError, match=r"Option k = 20 for knn is more than the 12 training rows: use k = 12 or fewer"):
        train_classifier(_frame(counts=(4, 4, 4)), algo="knn", options={"k": 20}, folds=None)
    # with cross-validation, each training fold has fewer rows
    with pytest.raises(mlnb.MlnbError, match=r"Option k = 30 for knn is more than the 24 training rows \(in each training fold of 3-fold"):
        train_classifier(_frame(), algo="knn", options={"k": 30}, folds=3)
    assert train_classifier(_frame(), algo="knn", options={"k": 24}, folds=3).meta["n_rows"] == 36


def test_k_above_the_row_count_for_a_users_estimator():
    from sklearn.neighbors import KNeighborsClassifier

    with pytest.raises(mlnb.MlnbError, match=r"Option n_neighbors = 50 for KNeighborsClassifier is more than the 28 training rows"):
        train_classifier(_frame(), algo=KNeighborsClassifier(n_neighbors=50))


def test_linear_svm_needs_three_rows_of_each_class():
    with pytest.raises(mlnb.MlnbError, match=r"linear_svm calibrates .* at least 3 rows of every class; too few for 'c' \(2\)"):
        train_classifier(_frame(counts=(10, 10, 2)), algo="linear_svm", folds=None)
    # 5-fold CV: 'c' has 5 rows, 4 in each training fold, too few for cv = 5
    with pytest.raises(mlnb.MlnbError, match=r"too few for 'c' \(4\)"):
        train_classifier(_frame(counts=(10, 10, 5)), algo="linear_svm", options={"cv": 5}, folds=5)
    head = train_classifier(_frame(counts=(10, 10, 2)), algo="linear_svm", options={"cv": 2}, folds=None)
    assert list(head.classes_) == ["a", "b", "c"]


def test_a_users_estimator_with_a_bad_parameter():
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(mlnb.MlnbError, match=r"Training LogisticRegression failed: .*'C' parameter"):
        train_classifier(_frame(), algo=LogisticRegression(C=-1), folds=None)
    with pytest.raises(mlnb.MlnbError, match=r"Unknown option 'gamma' for LogisticRegression"):
        train_classifier(_frame(), algo=LogisticRegression(), options={"gamma": 1}, folds=None)


def test_sql_create_classifier_reports_the_option():
    t = _frame()
    with pytest.raises(mlnb.MlnbError, match="Option hidden for mlp"):
        mlnb.sql("CREATE CLASSIFIER x USING mlp WITH (hidden = 'abc') AS SELECT features, label FROM t", t=t)
    with pytest.raises(mlnb.MlnbError, match="Option C for logistic"):
        mlnb.sql("CREATE CLASSIFIER x USING logistic WITH (C = -1) AS SELECT features, label FROM t", t=t)
    assert mlnb.classifiers().height == 0
