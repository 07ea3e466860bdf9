"""Hyperparameter search: grids and random trials, the trials table, bad grids, MLflow runs."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

import mlnb
from mlnb.heads import _search, store, train_classifier


@pytest.fixture(autouse=True)
def _no_mlflow(monkeypatch):
    """Searches log to MLflow by default; only the MLflow tests here turn it on (into tmp_path)."""
    monkeypatch.setattr(mlnb.config, "_mlflow", "off")


@pytest.fixture(scope="module")
def df():
    """Three classes, 15 rows each, 6-d: separable enough that C matters."""
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b", "c"], 15)
    X = rng.normal(size=(len(y), 6)).astype(np.float32)
    X[:, 0] += (y == "a") * 1.5
    X[:, 1] += (y == "b") * 1.5
    return pl.DataFrame({"features": X.tolist(), "label": y.tolist()})


def test_sql_grid_writes_trials_and_keeps_the_best(df):
    out = mlnb.sql("CREATE CLASSIFIER g USING logistic WITH (C = [0.001, 0.1, 10], folds = 3) AS SELECT features, label FROM df")
    assert out["classifier"].item() == "g@1"
    assert out["search"].item().startswith("grid: 3 trials, best #") and out["trials"].item() == "SELECT * FROM trials('g@1')"
    t = mlnb.sql("SELECT * FROM trials('g') ORDER BY trial")
    assert t.columns[:3] == ["trial", "params", "C"] and {"accuracy", "accuracy_std", "log_loss", "seconds", "best", "error"} <= set(t.columns)
    assert t["C"].to_list() == [0.001, 0.1, 10.0] and t["folds"].to_list() == [3, 3, 3]
    assert t["params"].struct.field("C").to_list() == t["C"].to_list()
    assert t["best"].sum() == 1 and t["error"].null_count() == 3 and (t["seconds"] > 0).all()
    best = t.filter(pl.col("best"))
    assert best["accuracy"].item() == t["accuracy"].max()
    head = mlnb.load_classifier("g")
    # the best trial's options are trained again on every row and are the head's options
    assert head.meta["options"] == {"C": best["C"].item()} and head.estimator[-1].C == best["C"].item()
    assert head.meta["n_rows"] == 45 and head.meta["metrics"]["evaluated_on"] == "3-fold CV"
    assert json.loads(out["best_params"].item()) == {"C": best["C"].item()}
    # the trials persist with the head: in its meta.json, read by SQL and Python alike
    on_disk = json.loads((store.heads_root() / "g" / "v1" / "meta.json").read_text())["search"]
    assert on_disk["method"] == "grid" and on_disk["n_trials"] == 3 and len(on_disk["trials"]) == 3
    assert mlnb.trials("g").equals(t) and head.trials.equals(t)
    # the scorer is the best head
    pred = mlnb.sql("SELECT g(features::FLOAT[6]) AS p FROM df")["p"].to_numpy()
    assert (pred == head.predict(np.array(df["features"].to_list(), dtype=np.float32))).all()


def test_several_lists_are_their_product_and_a_version_keeps_its_trials(df):
    head = train_classifier(df, algo="mlp", options={"hidden": [4, 8], "alpha": [1e-4, 1e-2], "max_iter": 50}, folds=2, name="p")
    t = head.trials
    assert t.height == 4 and set(zip(t["hidden"], t["alpha"])) == {(4, 1e-4), (4, 1e-2), (8, 1e-4), (8, 1e-2)}
    assert head.meta["options"]["max_iter"] == 50 and head.meta["search"]["fixed"] == {"max_iter": 50}
    train_classifier(df, algo="knn", options={"k": 3}, folds=3, name="p")  # a version without a search
    with pytest.raises(mlnb.MlnbError, match=r"p@2 was trained without a search.*Versions with trials: p@1"):
        mlnb.sql("SELECT * FROM trials('p')")
    assert mlnb.sql("SELECT count(*) FROM trials('p@1')").item() == 4
    with pytest.raises(mlnb.MlnbError, match="No classifier named 'nope'"):
        mlnb.sql("SELECT * FROM trials('nope')")


def test_random_search_ranges_choices_and_seed(df):
    opts = {"C": [0.001, 100], "max_iter": [100, 300]}
    head = train_classifier(df, options=opts, search={"method": "random", "trials": 6, "seed": 3}, folds=3)
    t = head.trials
    assert t.height == 6 and t["C"].is_unique().all()
    assert ((t["C"] >= 0.001) & (t["C"] <= 100)).all() and t["max_iter"].dtype == pl.Int64
    assert ((t["max_iter"] >= 100) & (t["max_iter"] <= 300)).all()
    # log-uniform: the draws spread over the decades, not bunched near 100
    assert t["C"].min() < 1
    assert head.meta["search"]["space"] == {"C": {"low": 0.001, "high": 100.0, "scale": "log"}, "max_iter": {"low": 100, "high": 300, "scale": "int"}}
    again = train_classifier(df, options=opts, search={"method": "random", "trials": 6, "seed": 3}, folds=3)
    assert again.trials["C"].to_list() == t["C"].to_list()  # the seed makes it repeatable
    # strings / booleans / three or more numbers are choices; a small space gives fewer distinct trials
    out = mlnb.sql("CREATE CLASSIFIER r USING knn WITH (search = 'random', trials = 10, k = [1, 3, 5]) AS SELECT features, label FROM df")
    assert out["search"].item().startswith("random: 3 trials")
    assert sorted(mlnb.sql("SELECT k FROM trials('r')")["k"].to_list()) == [1, 3, 5]


def test_metric_log_loss_picks_the_lowest(df):
    head = train_classifier(df, options={"C": [0.001, 1, 100]}, search={"metric": "log_loss"}, folds=3)
    t = head.trials
    assert t.filter(pl.col("best"))["log_loss"].item() == t["log_loss"].min()
    assert head.meta["search"]["metric"] == "log_loss"


@pytest.mark.parametrize(
    "with_,message",
    [
        ("C = [0.1, -1]", r"In the search list C = \[0.1, -1\]: Option C for logistic must be a number above 0; got -1"),
        ("C = ['a']", r"In the search list C = \['a'\]: Option C for logistic must be a number above 0; got 'a'"),
        ("gama = [1, 2]", r"Unknown option 'gama' for logistic"),
        ("C = []", r"Option C is an empty list"),
        ("C = [0.1, 1], search = 'bayes'", r"search must be 'grid' or 'random', not 'bayes'"),
        ("C = [0.1, 1], trials = 5", r"trials and seed belong to search = 'random'"),
        ("search = 'random', trials = 5", r"needs at least one option given as a list"),
        ("search = 'random', trials = 0, C = [0.1, 1]", r"trials must be a whole number from 1 to 200, not 0"),
        ("C = [0.1, 1], metric = 'auc'", r"metric must be one of accuracy, macro_f1, log_loss"),
        ("search = 'random', C = [10, 0.1]", r"The range C = \[10, 0.1\] must go from a lower to a higher value"),
        ("C = [0.1, 1], folds = 1", r"folds must be at least 2, not 1"),
        (
            "C = [0.001, 0.01, 0.1, 1, 10, 100, 1000, 2, 3, 4, 5, 6, 7, 8, 9], max_iter = [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1100, 1200, 1300, 1400]",
            r"The grid has 15 × 14 = 210 combinations, more than 200",
        ),
    ],
)
def test_bad_grids_are_refused_before_any_training(df, monkeypatch, with_, message):
    def no_training(*a, **k):
        raise AssertionError("trained before the grid was checked")

    monkeypatch.setattr("mlnb.heads.head.cross_validate", no_training)
    with pytest.raises(mlnb.MlnbError, match=message):
        mlnb.sql(f"CREATE CLASSIFIER bad USING logistic WITH ({with_}) AS SELECT features, label FROM df")
    assert "bad" not in mlnb.classifiers()["name"].to_list()


def test_data_dependent_bad_value_and_python_errors(df, monkeypatch):
    monkeypatch.setattr("mlnb.heads.head.cross_validate", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(mlnb.MlnbError, match=r"Search trial k = 100: Option k = 100 for knn is more than the 30 training rows"):
        train_classifier(df, algo="knn", options={"k": [3, 100]}, folds=3)
    with pytest.raises(mlnb.MlnbError, match=r"In the search list k = \['a'\]: Option k for knn must be a whole number"):
        train_classifier(df, algo="knn", options={"k": ["a"]})
    with pytest.raises(mlnb.MlnbError, match="search= takes method, trials, seed and metric"):
        train_classifier(df, options={"C": [1, 2]}, search={"n_iter": 3})


def test_failed_search_with_or_replace_keeps_the_old_head(df):
    mlnb.sql("CREATE CLASSIFIER keep USING logistic AS SELECT features, label FROM df")
    before = (store.heads_root() / "keep" / "v1" / "meta.json").read_bytes()
    with pytest.raises(mlnb.MlnbError, match=r"C = \[1, -1\]"):
        mlnb.sql("CREATE OR REPLACE CLASSIFIER keep USING logistic WITH (C = [1, -1]) AS SELECT features, label FROM df")
    with pytest.raises(mlnb.MlnbError, match="Search trial k = 60"):
        mlnb.sql("CREATE OR REPLACE CLASSIFIER keep USING knn WITH (k = [1, 60]) AS SELECT features, label FROM df")
    assert store.versions("keep") == [1] and (store.heads_root() / "keep" / "v1" / "meta.json").read_bytes() == before


def test_a_failing_trial_is_recorded_and_the_others_still_run(df):
    from sklearn.linear_model import LogisticRegression

    # lbfgs refuses an L1 penalty when fitting (scikit-learn's own parameter check lets it through)
    head = train_classifier(df, algo=LogisticRegression(max_iter=500), options={"l1_ratio": [0.0, 1.0]}, folds=3)
    t = head.trials
    assert t["error"].to_list()[0] is None and "lbfgs supports only" in t["error"].to_list()[1]
    assert t["best"].to_list() == [True, False] and t["accuracy"].to_list()[1] is None
    assert head.estimator.l1_ratio == 0.0
    with pytest.raises(mlnb.MlnbError, match="Every trial of the search failed; the first: ValueError: Solver lbfgs"):
        train_classifier(df, algo=LogisticRegression(max_iter=500), options={"l1_ratio": [1.0, 0.5]}, folds=3)


def test_an_estimator_option_named_like_a_search_setting_stays_the_estimators(df):
    from sklearn.neighbors import KNeighborsClassifier

    head = train_classifier(df, algo=KNeighborsClassifier(), options={"n_neighbors": [3, 5], "metric": "cosine"},
                            search={"metric": "macro_f1"}, folds=3)
    assert head.estimator.metric == "cosine" and head.meta["search"]["metric"] == "macro_f1"
    assert head.meta["search"]["fixed"] == {"metric": "cosine"}


def test_unknown_sklearn_parameter_value_is_refused_before_training(df):
    from sklearn.neighbors import KNeighborsClassifier

    with pytest.raises(mlnb.MlnbError, match="KNeighborsClassifier: The 'weights' parameter"):
        train_classifier(df, algo=KNeighborsClassifier(), options={"weights": ["uniform", "bogus"]}, folds=3)


def test_plan_and_draws():
    plan = _search.plan_search("torch", {"lr": [1e-4, 1e-1], "dropout": [0.0, 0.5], "hidden": [0, 64], "epochs": 3}, "random")
    assert plan.space["lr"]["scale"] == "log" and plan.space["dropout"]["scale"] == "uniform" and plan.space["hidden"]["scale"] == "int"
    lrs = [c["lr"] for c in plan.candidates]
    assert len(plan.candidates) == 10 and all(1e-4 <= v <= 1e-1 for v in lrs)
    # log-uniform: about as many draws below 3e-3 (the geometric middle) as above
    many = _search._draw({"lr": plan.space["lr"]}, 200, 0)
    below = sum(c["lr"] < math.sqrt(1e-4 * 1e-1) for c in many)
    assert 60 < below < 140
    assert _search.plan_search("logistic", {"C": 1.0}) is None


# -- MLflow ---------------------------------------------------------------------------
@pytest.fixture
def mlruns(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses its file store otherwise
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.setattr(mlnb.config, "_mlflow", "search")
    return tmp_path / "mlruns"


def _runs():
    from mlflow.tracking import MlflowClient

    c = MlflowClient()
    return c, c.search_runs(["0"])


def test_search_is_logged_as_parent_and_child_runs(df, mlruns):
    mlnb.sql("CREATE CLASSIFIER m USING logistic WITH (C = [0.01, 1, 100], folds = 3) AS SELECT features, label FROM df")
    client, runs = _runs()
    parents = [r for r in runs if r.data.tags.get("mlnb.kind") == "search"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 3 and all(r.info.status == "FINISHED" for r in children)
    t = mlnb.sql("SELECT * FROM trials('m')")
    for row in t.iter_rows(named=True):
        child = next(r for r in children if r.data.tags["mlnb.trial"] == str(row["trial"]))
        assert float(child.data.params["C"]) == row["C"]
        assert child.data.metrics["accuracy"] == pytest.approx(row["accuracy"])
        assert child.data.metrics["log_loss_std"] == pytest.approx(row["log_loss_std"])
    best = t.filter(pl.col("best")).row(0, named=True)
    assert parent.info.status == "FINISHED" and parent.data.tags["mlnb.head"] == "m@1"
    assert parent.data.params["search"] == "grid" and parent.data.params["algorithm"] == "logistic"
    assert float(parent.data.params["best.C"]) == best["C"]
    assert parent.data.metrics["best_accuracy"] == pytest.approx(best["accuracy"])
    files = {a.path for a in client.list_artifacts(parent.info.run_id, "head")}
    assert {"head/meta.json", "head/model.skops"} <= files


def test_mlflow_switch(df, mlruns, monkeypatch):
    monkeypatch.setattr(mlnb.config, "_mlflow", "off")
    train_classifier(df, options={"C": [0.1, 1]}, folds=3, name="quiet")
    assert not mlruns.exists() or not _runs()[1]
    monkeypatch.setattr(mlnb.config, "_mlflow", "all")  # a head trained without a search is one run
    train_classifier(df, options={"C": 0.5}, folds=3, name="plain")
    (run,) = _runs()[1]
    assert run.data.tags["mlnb.head"] == "plain@1" and run.data.params["C"] == "0.5" and "accuracy" in run.data.metrics
    with pytest.raises(mlnb.MlnbError, match="Unknown mlflow setting 'sometimes'"):
        mlnb.config.mlflow = "sometimes"


def test_an_unreachable_tracking_store_warns_and_the_head_is_saved(df, mlruns, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:" + str(mlruns))
    monkeypatch.setattr(_search, "_warned", set())
    with pytest.warns(UserWarning, match="not logging to MLflow.*MLFLOW_ALLOW_FILE_STORE=true"):
        train_classifier(df, options={"C": [0.1, 1]}, folds=3, name="saved")
    assert store.versions("saved") == [1]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per process, not at every search
        train_classifier(df, options={"C": [0.1, 1]}, folds=3, name="saved")


# -- regressors ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def reg_df():
    """60 rows, 5-d, a linear target with noise: ridge's alpha matters."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 5)).astype(np.float32)
    y = X @ np.array([2.0, -1.0, 0.5, 0.0, 0.0]) + rng.normal(scale=0.3, size=60)
    return pl.DataFrame({"id": list(range(60)), "features": X.tolist(), "target": y.tolist()})


def test_a_regressor_search_keeps_the_best_trial_by_rmse(reg_df):
    """CREATE REGRESSOR ... WITH (alpha = [...]) was refused: 'alpha must be a number; got [0.1, 10]'."""
    out = mlnb.sql("CREATE REGRESSOR r WITH (alpha = [0.01, 1000], folds = 3) AS SELECT features, target FROM reg_df", reg_df=reg_df)
    row = out.row(0, named=True)
    assert row["search"].startswith("grid: 2 trials, best #1 by rmse") and json.loads(row["best_params"]) == {"alpha": 0.01}
    t = mlnb.sql("SELECT trial, alpha, rmse, rmse_std, mae, r2, folds, best FROM trials('r')")
    assert t["alpha"].to_list() == [0.01, 1000.0] and t["best"].to_list() == [True, False] and t["folds"].to_list() == [3, 3]
    mean = mlnb.sql("SELECT rmse FROM regressor_folds('r') WHERE fold = 'mean'").item()
    assert t["rmse"][0] < t["rmse"][1] and mean == pytest.approx(t["rmse"][0])  # the best trial's folds are kept
    reg = mlnb.load_regressor("r")
    assert reg.meta["options"] == {"alpha": 0.01} and reg.estimator.get_params()["ridge__alpha"] == 0.01
    assert reg.trials.height == 2 and mlnb.sql("SELECT typeof(r(features)) AS t FROM reg_df LIMIT 1", reg_df=reg_df).item() == "DOUBLE"

    out = mlnb.sql("CREATE REGRESSOR k USING knn WITH (search = 'random', trials = 3, k = [1, 10], metric = 'r2', "
                   "test_where = 'id % 4 = 0') AS SELECT features, target FROM reg_df", reg_df=reg_df)
    t = mlnb.sql("SELECT * FROM trials('k')")
    assert t.height == 3 and t.filter(pl.col("best"))["r2"].item() == t["r2"].max()
    assert out["evaluated_on"].item() == "test set (15 rows)"
    folds = mlnb.sql("SELECT fold FROM regressor_folds('k')")["fold"].to_list()
    assert folds[-1] == "test" and "mean" in folds

    reg = mlnb.train_regressor(reg_df, algo="gbdt", options={"max_iter": 5, "loss": ["squared_error", "absolute_error"]}, folds=2)
    assert [r["loss"] for r in reg.meta["search"]["trials"]] == ["squared_error", "absolute_error"]


def test_bad_regressor_searches_are_refused_before_training(reg_df):
    mlnb.sql("CREATE REGRESSOR r WITH (alpha = 1) AS SELECT features, target FROM reg_df", reg_df=reg_df)
    for options, message in [
        ("alpha = [1, -1]", r"In the search list alpha = \[1, -1\]: Option alpha for ridge must be a number of at least 0; got -1"),
        ("alpha = [1, 2], metric = 'accuracy'", "metric must be one of rmse, mae, r2, not 'accuracy'"),
        ("alpha = [1, 2], folds = 0", "folds must be at least 2, not 0"),
        ("alpha = []", "Option alpha is an empty list"),
    ]:
        with pytest.raises(mlnb.MlnbError, match=message):
            mlnb.sql(f"CREATE OR REPLACE REGRESSOR r WITH ({options}) AS SELECT features, target FROM reg_df", reg_df=reg_df)
    with pytest.raises(mlnb.MlnbError, match=r"Search trial k = 200: Option k = 200 for knn is more than the 48 training rows"):
        mlnb.sql("CREATE OR REPLACE REGRESSOR r USING knn WITH (k = [1, 200]) AS SELECT features, target FROM reg_df", reg_df=reg_df)
    assert store.versions("r") == [1] and mlnb.load_regressor("r").meta["options"] == {"alpha": 1}
    with pytest.raises(mlnb.MlnbError, match=r"Regressor r@1 was trained without a search.*CREATE REGRESSOR \.\.\. WITH \(alpha"):
        mlnb.sql("SELECT * FROM trials('r')")


def test_a_regressor_search_is_logged_to_mlflow(reg_df, mlruns):
    mlnb.sql("CREATE REGRESSOR m WITH (alpha = [0.1, 10], folds = 3) AS SELECT features, target FROM reg_df", reg_df=reg_df)
    _, runs = _runs()
    (parent,) = [r for r in runs if r.data.tags.get("mlnb.kind") == "search"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and {"rmse", "mae", "r2", "rmse_std"} <= set(children[0].data.metrics)
    assert parent.data.tags["mlnb.head"] == "m@1" and parent.data.params["metric"] == "rmse" and "best_rmse" in parent.data.metrics


def test_a_random_range_over_an_option_that_is_a_word_or_a_number(df):
    """max_features takes 'sqrt' or a share: a random range over it crashed with
    "AttributeError: '_OneOf' object has no attribute 'kind'"."""
    head = train_classifier(df, algo="random_forest", folds=2, options={"n_estimators": 5, "max_features": [0.2, 0.8]},
                            search={"method": "random", "trials": 3, "seed": 1})
    drawn = [r["max_features"] for r in head.meta["search"]["trials"]]
    assert len(drawn) == 3 and all(0.2 <= v <= 0.8 for v in drawn) and len(set(drawn)) == 3
