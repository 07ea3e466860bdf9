"""train_classifier(replace=True): what CREATE OR REPLACE CLASSIFIER calls. The old head goes only
when the new one is trained and written."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import mlnb
from mlnb.heads import load_classifier, store, train_classifier


def _frame(seed=0, n=10, dim=5):
    rng = np.random.default_rng(seed)
    y = np.repeat(["a", "b", "c"], n)
    X = rng.normal(size=(len(y), dim)).astype(np.float32) + np.repeat(np.eye(3, dim) * 3, n, axis=0)
    return pl.DataFrame({"features": X.tolist(), "label": y.tolist()})


def _leftovers(workspace, name):
    return sorted(p.name for p in (workspace / "heads" / name).iterdir() if p.name.startswith("."))


@pytest.mark.parametrize(
    "bad",
    [
        {"options": {"C": -1}},
        {"options": {"gamma": 1}},
        {"algo": "knn", "options": {"k": 1000}},
        {"label": "no_such_column"},
    ],
)
def test_a_failed_replace_keeps_the_old_head(bad, _workspace):
    t = _frame()
    train_classifier(t, name="keep", folds=3)
    train_classifier(t, algo="knn", name="keep", folds=3)
    with pytest.raises(mlnb.MlnbError):
        train_classifier(t, name="keep", folds=3, replace=True, **bad)
    assert store.versions("keep") == [1, 2]
    assert load_classifier("keep").meta["algorithm"] == "knn"
    res = mlnb.sql('SELECT label, keep(features) AS latest, "keep@1"(features) AS v1 FROM t', t=t)
    assert (res["latest"] == res["label"]).mean() > 0.8 and (res["v1"] == res["label"]).mean() > 0.8
    assert mlnb.classifiers()["version"].to_list() == [1, 2]
    assert _leftovers(_workspace, "keep") == []


def test_a_replace_refused_at_save_keeps_the_old_head(_workspace):
    from sklearn.neighbors import KNeighborsClassifier

    def dist(a, b):
        return float(np.abs(a - b).sum())

    t = _frame()
    train_classifier(t, name="keep", folds=3)
    with pytest.raises(mlnb.MlnbError, match="was not saved"):
        train_classifier(t, algo=KNeighborsClassifier(3, metric=dist, algorithm="brute"), name="keep", folds=3, replace=True)
    assert store.versions("keep") == [1] and load_classifier("keep").meta["algorithm"] == "logistic"


def test_a_replace_that_fails_while_writing_keeps_the_old_head(_workspace, monkeypatch):
    t = _frame()
    train_classifier(t, name="keep", folds=3)

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m, pytest.raises(OSError):
        m.setattr(store.os, "fsync", full_disk)
        train_classifier(t, algo="knn", name="keep", folds=3, replace=True)
    assert store.versions("keep") == [1] and load_classifier("keep").meta["algorithm"] == "logistic"
    assert _leftovers(_workspace, "keep") == []


def test_replace_leaves_only_the_new_head_as_version_1(_workspace):
    t = _frame()
    train_classifier(t, name="swap", folds=3)
    train_classifier(t, name="swap", folds=3)
    old = load_classifier("swap@1")
    head = train_classifier(t, algo="knn", name="swap", folds=3, replace=True)
    assert head.ref == "swap@1" and store.versions("swap") == [1]
    new = load_classifier("swap")
    assert new is not old and new.meta["algorithm"] == "knn" and new.ref == "swap@1"
    with pytest.raises(mlnb.ModelNotFoundError):
        load_classifier("swap@2")
    assert mlnb.sql("SELECT swap(features) AS p FROM t", t=t)["p"].null_count() == 0
    assert _leftovers(_workspace, "swap") == []
    # replace on a name with no head yet is an ordinary first save
    assert train_classifier(t, name="fresh", folds=3, replace=True).ref == "fresh@1"


def test_a_head_replaced_by_another_process_is_not_served_from_memory(_workspace):
    t = _frame()
    train_classifier(t, name="shared", folds=3)
    assert load_classifier("shared").meta["algorithm"] == "logistic"  # now cached in this process
    # what another process does: write straight to the store, this process's cache untouched
    other = train_classifier(t, algo="knn", folds=3)
    store.save("shared", other.estimator, other.meta, replace=True)
    assert load_classifier("shared").meta["algorithm"] == "knn"


def test_sql_create_or_replace_with_a_typo_keeps_the_old_head():
    t = _frame()
    mlnb.sql("CREATE CLASSIFIER kept AS SELECT features, label FROM t", t=t)
    with pytest.raises(mlnb.MlnbError, match="Unknown option 'hiden' for mlp"):
        mlnb.sql("CREATE OR REPLACE CLASSIFIER kept USING mlp WITH (hiden = 8) AS SELECT features, label FROM t", t=t)
    assert mlnb.sql("SHOW CLASSIFIERS")["name"].to_list() == ["kept"]
    assert mlnb.sql("SELECT kept(features) AS p FROM t", t=t)["p"].null_count() == 0
    mlnb.sql("CREATE OR REPLACE CLASSIFIER kept USING knn AS SELECT features, label FROM t", t=t)
    assert mlnb.classifiers()[["version", "algorithm"]].rows() == [(1, "knn")]
