"""CREATE REGRESSOR: ridge, gbdt, random_forest, knn; RMSE/MAE/R2 with CV, folds = 0 and test sets;
a DOUBLE scorer in SQL; SHOW / EVALUATE / DROP; bad targets."""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl
import pytest

import mlnb
from mlnb.heads import load_regressor, regressor_folds, store


@pytest.fixture
def t():
    """160 rows of 6-d features; the target is a smooth function of them plus a little noise."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(160, 6)).astype(np.float32)
    y = 3 * X[:, 0] - 2 * X[:, 1] + np.tanh(X[:, 2]) + 0.1 * rng.normal(size=160)
    return pl.DataFrame({"path": [f"p{i}" for i in range(160)], "features": X.tolist(), "target": y, "label": np.where(y > 0, "up", "down")})


@pytest.mark.parametrize(
    "algo,with_,min_r2",
    [
        ("ridge", "", 0.95),
        ("gbdt", "WITH (max_iter = 30, min_samples_leaf = 5)", 0.7),
        ("random_forest", "WITH (n_estimators = 20)", 0.6),
        ("knn", "WITH (k = 5)", 0.5),
    ],
)
def test_each_algorithm_cross_validated(t, algo, with_, min_r2):
    out = mlnb.sql(f"CREATE REGRESSOR price USING {algo} {with_} AS SELECT features, target FROM t", t=t)
    row = out.row(0, named=True)
    assert row["regressor"] == "price@1" and row["algorithm"] == algo and row["evaluated_on"] == "5-fold CV"
    assert row["r2"] > min_r2 and 0 < row["mae"] <= row["rmse"]
    folds = mlnb.sql("SELECT * FROM regressor_folds('price')")
    assert folds.columns == ["fold", "rows", "rmse", "mae", "r2"]
    assert folds["fold"].to_list() == ["0", "1", "2", "3", "4", "mean", "std", "min", "max"]
    assert folds["rows"].head(5).sum() == 160
    assert folds.filter(pl.col("fold") == "mean")["r2"].item() == pytest.approx(folds["r2"].head(5).mean())
    assert regressor_folds("price").equals(folds)


def test_scorer_returns_double_and_matches_python(t):
    mlnb.sql("CREATE REGRESSOR price AS SELECT features, target FROM t", t=t)
    res = mlnb.sql("SELECT typeof(price(features)) AS ty, price(features) AS p, target FROM t", t=t)
    assert res["ty"][0] == "DOUBLE" and res.schema["p"] == pl.Float64
    mlnb.heads.head._loaded.clear()
    reg = load_regressor("price")
    assert np.allclose(res["p"].to_numpy(), reg.predict(t), atol=1e-5)
    assert np.corrcoef(res["p"].to_numpy(), res["target"].to_numpy())[0, 1] > 0.97
    # NULL features give NULL; a regressor has no _proba function
    nulls = mlnb.sql("SELECT price(CAST(NULL AS FLOAT[6])) AS p")
    assert nulls["p"][0] is None
    with pytest.raises(mlnb.MlnbError, match="price_proba"):
        mlnb.sql("SELECT price_proba(features) FROM t", t=t)


def test_folds_zero_test_set_and_test_where(t):
    out = mlnb.sql("CREATE REGRESSOR r WITH (folds = 0) AS SELECT features, target FROM t", t=t)
    assert out["evaluated_on"].item() == "none" and out["rmse"].item() is None and out.schema["rmse"] == pl.Float64
    held = t.tail(40)
    out = mlnb.sql(
        "CREATE REGRESSOR r USING gbdt WITH (max_iter = 20, min_samples_leaf = 5, test = (SELECT features, target FROM held)) "
        "AS SELECT features, target FROM t WHERE path NOT IN (SELECT path FROM held)",
        t=t, held=held,
    )
    row = out.row(0, named=True)
    assert row["rows"] == 120 and row["evaluated_on"] == "test set (40 rows)"
    ev = mlnb.sql("EVALUATE REGRESSOR r ON (SELECT features, target FROM held)", held=held)
    assert ev["rmse"].item() == pytest.approx(row["rmse"]) and ev["n"].item() == 40
    n_test = mlnb.sql("SELECT count(*) AS n FROM t WHERE hash(path) % 4 = 0", t=t)["n"].item()
    out = mlnb.sql("CREATE REGRESSOR r WITH (folds = 3, test_where = 'hash(path) % 4 = 0') AS SELECT features, target FROM t", t=t)
    assert out["rows"].item() == 160 - n_test and out["evaluated_on"].item() == f"test set ({n_test} rows)"
    folds = mlnb.sql("SELECT * FROM regressor_folds('r')")
    assert folds["fold"].to_list() == ["0", "1", "2", "mean", "std", "min", "max", "test"]
    assert folds.filter(pl.col("fold") == "test")["rmse"].item() == pytest.approx(out["rmse"].item())
    assert mlnb.sql('EVALUATE REGRESSOR "r@1"')["evaluated_on"].item() == "none"


def test_show_drop_and_one_kind_per_name(t):
    mlnb.sql("CREATE REGRESSOR price AS SELECT features, target FROM t", t=t)
    mlnb.sql("CREATE REGRESSOR price USING knn AS SELECT features, target FROM t", t=t)
    mlnb.sql("CREATE CLASSIFIER trend WITH (folds = 0) AS SELECT features, label FROM t", t=t)
    shown = mlnb.sql("SHOW REGRESSORS")
    assert shown["name"].to_list() == ["price", "price"] and shown["version"].to_list() == [1, 2]
    assert {"rmse", "mae", "r2", "target", "evaluated_on"} <= set(shown.columns)
    assert mlnb.sql("SHOW CLASSIFIERS")["name"].to_list() == ["trend"]
    with pytest.raises(mlnb.MlnbError, match="'price' is a regressor, not a classifier: pick another name, or CREATE OR REPLACE"):
        mlnb.sql("CREATE CLASSIFIER price AS SELECT features, label FROM t", t=t)
    with pytest.raises(mlnb.MlnbError, match="'trend' is a classifier, not a regressor"):
        mlnb.sql("CREATE REGRESSOR trend AS SELECT features, target FROM t", t=t)
    with pytest.raises(mlnb.MlnbError, match="DROP REGRESSOR price"):
        mlnb.sql("DROP CLASSIFIER price")
    with pytest.raises(mlnb.MlnbError, match="is a regressor, not a classifier"):
        mlnb.sql("EVALUATE CLASSIFIER price")
    with pytest.raises(mlnb.MlnbError, match="is a classifier, not a regressor"):
        mlnb.sql("EVALUATE REGRESSOR trend")
    with pytest.raises(mlnb.ModelNotFoundError, match="No regressor named 'prise'.*Did you mean 'price'"):
        mlnb.sql("EVALUATE REGRESSOR prise")
    # OR REPLACE may change the kind
    mlnb.sql("CREATE OR REPLACE CLASSIFIER price WITH (folds = 0) AS SELECT features, label FROM t", t=t)
    assert mlnb.sql("SHOW REGRESSORS").height == 0
    assert mlnb.sql("SELECT price(features) AS p FROM t LIMIT 1", t=t).schema["p"] == pl.String
    assert mlnb.sql("DROP REGRESSOR IF EXISTS nothing")["versions"].item() == 0
    mlnb.sql("CREATE REGRESSOR r2 AS SELECT features, target FROM t", t=t)
    assert mlnb.sql("DROP REGRESSOR r2")["versions"].item() == 1 and store.versions("r2") == []


def test_bad_targets(t):
    with pytest.raises(mlnb.MlnbError, match=r"target column 'target' has type String: a regressor needs numbers.*CAST\(target AS DOUBLE\)"):
        mlnb.sql("CREATE REGRESSOR r AS SELECT features, label AS target FROM t", t=t)
    assert store.versions("r") == []
    with pytest.raises(mlnb.MlnbError, match="has type Boolean"):
        mlnb.sql("CREATE REGRESSOR r AS SELECT features, target > 0 AS target FROM t", t=t)
    bad = t.with_columns(
        pl.when(pl.int_range(pl.len()) < 3).then(None).when(pl.int_range(pl.len()) < 7).then(float("nan")).otherwise(pl.col("target")).alias("target")
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = mlnb.sql("CREATE REGRESSOR r AS SELECT features, target FROM bad", bad=bad)
    assert any("7 of 160 training rows were left out (7 with a null, NaN or infinite target)" in str(w.message) for w in caught)
    assert out["rows"].item() == 153 and np.isfinite(out["rmse"].item())
    with pytest.raises(mlnb.MlnbError, match="Option alpha for ridge must be a number of at least 0; got -1"):
        mlnb.sql("CREATE REGRESSOR r2 WITH (alpha = -1) AS SELECT features, target FROM t", t=t)
    with pytest.raises(mlnb.MlnbError, match="Unknown regression algorithm 'rige'. Did you mean 'ridge'"):
        mlnb.sql("CREATE REGRESSOR r2 USING rige AS SELECT features, target FROM t", t=t)
    with pytest.raises(mlnb.MlnbError, match="Option loss for gbdt must be"):
        mlnb.sql("CREATE REGRESSOR r2 USING gbdt WITH (loss = 'hinge') AS SELECT features, target FROM t", t=t)
    with pytest.raises(mlnb.MlnbError, match="k = 200 .* more than the 128 training rows"):
        mlnb.sql("CREATE REGRESSOR r2 USING knn WITH (k = 200) AS SELECT features, target FROM t", t=t)


def test_python_api_and_first_two_columns(t):
    reg = mlnb.train_regressor(t, features="features", target="target", algo="ridge", options={"alpha": 10}, folds=4, name="py")
    assert reg.meta["kind"] == "regressor" and reg.evaluation.folds.height == 4 and reg.ref == "py@1"
    assert reg.folds()["fold"].to_list()[:4] == ["0", "1", "2", "3"]
    ev = reg.evaluate(t.head(50))
    assert set(ev.metrics.columns) == {"rmse", "mae", "r2", "n"} and ev.errors["row"].max() < 50
    # columns not named features / target: the first two
    out = mlnb.sql("CREATE REGRESSOR anon AS SELECT features AS x, target * 2 AS y FROM t", t=t)
    assert out["rows"].item() == 160
    from sklearn.linear_model import HuberRegressor

    own = mlnb.train_regressor(t, algo=HuberRegressor(), name="huber", folds=0)
    mlnb.heads.head._loaded.clear()
    assert np.allclose(load_regressor("huber").predict(t), own.predict(t))
    with pytest.raises(mlnb.MlnbError, match="is not a scikit-learn regressor"):
        mlnb.train_regressor(t, algo=mlnb.heads.algorithms.make_estimator("logistic"))
