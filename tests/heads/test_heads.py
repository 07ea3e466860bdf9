from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import polars as pl
import pytest
from sklearn.ensemble import RandomForestClassifier

import mlnb
from mlnb.heads import load_classifier, train_classifier


@pytest.fixture
def small(digits_frame):
    # 4 classes, 60 rows each: quick to train
    df = digits_frame.filter(pl.col("label").is_in(["0", "1", "2", "3"]))
    return df.group_by("label", maintain_order=True).head(60).rename({"pixels": "features"})


@pytest.mark.parametrize(
    "algo,options",
    [
        ("logistic", {}),
        ("linear_svm", {}),
        ("knn", {"k": 3}),
        ("mlp", {"hidden": 64}),
        ("torch", {"hidden": 0}),
        ("torch", {"hidden": 64}),
        (RandomForestClassifier(n_estimators=30, random_state=0), {}),
    ],
)
def test_each_algorithm(small, algo, options):
    head = train_classifier(small, algo=algo, options=options, folds=3)
    m = head.evaluation.metrics.row(0, named=True)
    assert m["accuracy"] > 0.8 and m["n"] == small.height  # chance is 0.25
    assert head.evaluation.folds.height == 3 and set(head.evaluation.summary["metric"]) == {"accuracy", "macro_f1", "log_loss"}
    proba = head.predict_proba(small)
    assert proba.shape == (small.height, 4) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert list(head.classes_) == ["0", "1", "2", "3"]


def test_metrics_frames_and_errors_point_at_rows(small):
    head = train_classifier(small, algo="knn", options={"k": 1}, folds=3)
    ev = head.evaluation
    assert ev.confusion.columns == ["true", "0", "1", "2", "3"]
    assert ev.confusion.select(pl.exclude("true")).sum_horizontal().sum() == small.height
    assert set(ev.per_class.columns) == {"class", "precision", "recall", "f1", "support"}
    for row in ev.errors.iter_rows(named=True):
        assert small["label"][row["row"]] == row["true"] != row["predicted"]


def test_create_classifier_versions_and_scoring(small):
    t = small
    out = mlnb.sql("CREATE CLASSIFIER digit USING logistic WITH (C = 0.5, folds = 3) AS SELECT features, label FROM t", t=t)
    assert out["classifier"].item() == "digit@1" and out["evaluated_on"].item() == "3-fold CV"
    mlnb.sql("CREATE CLASSIFIER digit USING knn AS SELECT features, label FROM t", t=t)
    res = mlnb.sql('SELECT label, digit(features) AS latest, "digit@1"(features) AS v1, digit_proba(features) AS p FROM t', t=t)
    assert (res["latest"] == res["label"]).mean() > 0.9 and (res["v1"] == res["label"]).mean() > 0.9
    p = res["p"][0]
    assert isinstance(p, (list, dict, pl.Series)) or p is not None
    shown = mlnb.sql("SHOW CLASSIFIERS")
    assert shown.filter(pl.col("name") == "digit")["version"].to_list() == [1, 2]
    ev = mlnb.sql("EVALUATE CLASSIFIER digit ON (SELECT features, label FROM t)", t=t)
    assert ev["classifier"].item() == "digit@2" and ev["accuracy"].item() > 0.9
    train_metrics = mlnb.sql('EVALUATE CLASSIFIER "digit@1"')
    assert train_metrics["evaluated_on"].item() == "3-fold CV"
    mlnb.sql("CREATE OR REPLACE CLASSIFIER digit AS SELECT features, label FROM t", t=t)
    assert mlnb.classifiers().filter(pl.col("name") == "digit")["version"].to_list() == [1]
    assert mlnb.sql("DROP CLASSIFIER digit")["versions"].item() == 1
    with pytest.raises(mlnb.MlnbError):
        mlnb.sql("SELECT digit(features) FROM t", t=t)
    assert mlnb.sql("DROP CLASSIFIER IF EXISTS digit")["versions"].item() == 0


def test_head_names_that_sql_cannot_call_are_refused(small, _workspace):
    # REAL, TIME, SELECT ... are SQL keywords or type names: real(features) would not parse, so no head takes them.
    for sql in (
        "CREATE CLASSIFIER real AS SELECT features, label FROM t",
        "CREATE OR REPLACE CLASSIFIER time USING knn AS SELECT features, label FROM t",
        "CREATE REGRESSOR real AS SELECT features, label::DOUBLE AS target FROM t",
    ):
        with pytest.raises(mlnb.MlnbError, match=r"'(real|time)' is a SQL keyword.*choose another name \(e\.g\. (real|time)_(clf|reg)\)"):
            mlnb.sql(sql, t=small)
    with pytest.raises(mlnb.MlnbError, match="'real' is a SQL keyword"):
        train_classifier(small, algo="knn", name="real")
    with pytest.raises(mlnb.MlnbError, match="'select' is a SQL keyword"):
        mlnb.train_regressor(small.with_columns(target=pl.col("label").cast(pl.Float64)), name="select")
    assert not (_workspace / "heads").exists() or not list((_workspace / "heads").iterdir())
    # A name that is one of DuckDB's functions would hide it: a head "left" broke left('abc', 2).
    with pytest.raises(mlnb.MlnbError, match="'left' is one of DuckDB's scalar functions"):
        train_classifier(small, algo="knn", name="left")
    # Names used elsewhere, and ones DuckDB knows as words that still parse as calls, are fine.
    for name in ("digit", "face", "c", "pets", "semi", "real_clf"):
        train_classifier(small, algo="knn", options={"k": 1}, folds=0, name=name)
        assert (mlnb.sql(f"SELECT {name}(features) AS p, label FROM t", t=small)["p"] == small["label"]).all()


def test_row_expression_and_list_features():
    rng = np.random.default_rng(0)
    n = 80
    y = np.array(["a", "b"] * (n // 2))
    shift = (y == "b").astype(float) * 3
    tab = pl.DataFrame({"id": np.arange(n), "x1": rng.normal(size=n) + shift, "x2": rng.normal(size=n) - shift, "label": y})
    out = mlnb.sql("CREATE CLASSIFIER tab USING logistic AS SELECT {* EXCLUDING(label, id)} AS features, label FROM tab", tab=tab)
    assert out["accuracy"].item() > 0.95
    scored = mlnb.sql("SELECT tab({x1, x2}) AS p, label FROM tab", tab=tab)
    assert (scored["p"] == scored["label"]).mean() > 0.95
    lists = tab.select(pl.concat_list("x1", "x2").alias("features"), "label")
    head = train_classifier(lists, algo="logistic")
    assert head.meta["dim"] == 2


def test_persistence_across_processes(small, tmp_path, _workspace):
    path = tmp_path / "t.parquet"
    small.write_parquet(path)
    train = (
        "import mlnb, polars as pl\n"
        f"mlnb.config.workspace = {str(_workspace)!r}\n"
        f"df = pl.read_parquet({str(path)!r})\n"
        "mlnb.train_classifier(df, algo='torch', options={'epochs': 40}, name='persist')\n"
        "mlnb.train_classifier(df, algo='logistic', name='persist')\n"
    )
    score = (
        "import mlnb\n"
        f"mlnb.config.workspace = {str(_workspace)!r}\n"
        f"r = mlnb.sql(\"SELECT avg((persist(features) = label)::INT) AS a, avg(('persist@1'(features) = label)::INT) AS b FROM '{path}'\")\n"
        "print('RESULT', r['a'].item(), r['b'].item())\n"
    ).replace("'persist@1'", '\\"persist@1\\"')
    subprocess.run([sys.executable, "-c", train], check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-c", score], check=True, capture_output=True, text=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT")).split()
    assert float(line[1]) > 0.95 and float(line[2]) > 0.9
    files = sorted(p.name for p in (_workspace / "heads" / "persist").rglob("*") if p.is_file())
    assert files == ["evaluation.json", "evaluation.json", "meta.json", "meta.json", "model.safetensors", "model.skops"]


def test_single_class_and_too_few_per_fold(small):
    with pytest.raises(mlnb.MlnbError, match="at least two classes"):
        train_classifier(small.filter(pl.col("label") == "0"))
    few = pl.concat([small.filter(pl.col("label") == "0"), small.filter(pl.col("label") == "1").head(2)])
    with pytest.raises(mlnb.MlnbError, match=r"too few for '1' \(2\)"):
        train_classifier(few, folds=5)


def test_null_features_are_skipped_in_training_and_null_at_scoring(small):
    df = small.with_columns(pl.when(pl.int_range(pl.len()) < 3).then(None).otherwise(pl.col("features")).alias("features"))
    with pytest.warns(UserWarning, match="3 of 240 training rows"):
        head = train_classifier(df, name="nulls")
    assert head.meta["n_rows"] == 237
    out = mlnb.sql("SELECT nulls(features) AS p FROM df", df=df)
    assert out["p"].null_count() == 3


def test_wrong_dimension_at_scoring(small):
    train_classifier(small, name="dims")
    other = pl.DataFrame({"f": [[1.0, 2.0, 3.0]]})
    with pytest.raises(mlnb.MlnbError, match="dimension 3, but the head was trained on 64"):
        mlnb.sql("SELECT dims(f) FROM other", other=other)
    with pytest.raises(mlnb.MlnbError, match="dimension 3"):
        load_classifier("dims").predict(np.zeros((1, 3)))


def test_head_on_another_backbone_is_refused(small):
    head = train_classifier(small, feature_model="efficientnet_lite0", layer="pool")
    mlnb.heads.save_head(head, "lite_head")
    with pytest.raises(mlnb.QueryError, match="trained on efficientnet_lite0 features .* called on efficientnet_b0"):
        mlnb.sql("SELECT lite_head(embed('x.jpg', model := 'efficientnet_b0'))")
    # The same rule where Python scores the head (embed_frame on either engine): before any image is read.
    with pytest.raises(mlnb.QueryError, match="trained on efficientnet_lite0 features .* called on efficientnet_lite0 \\(layer _blocks.5"):
        mlnb.embed_frame(pl.DataFrame({"p": ["x.jpg"]}), "p", layer="_blocks.5", heads=["lite_head"])


def test_unsafe_skops_types_are_not_loaded(small, _workspace):
    import skops.io as sio

    from mlnb.heads import store

    class Sneaky(RandomForestClassifier):
        pass

    head = train_classifier(small, algo=RandomForestClassifier(n_estimators=5), folds=2, name="sneaky")
    path = _workspace / "heads" / "sneaky" / f"v{head.version}" / "model.skops"
    sio.dump(Sneaky(n_estimators=2).fit(np.zeros((4, 64)), ["0", "1", "0", "1"]), path)
    mlnb.heads.head._loaded.clear()
    with pytest.raises(mlnb.MlnbError, match="does not load automatically"):
        store.load("sneaky", head.version)


def test_unknown_algorithm_and_option(small):
    with pytest.raises(mlnb.MlnbError, match="Did you mean 'logistic'"):
        train_classifier(small, algo="logistc")
    with pytest.raises(mlnb.MlnbError, match="Options: C, max_iter"):
        train_classifier(small, algo="logistic", options={"gamma": 1})


def test_torch_head_contract():
    from sklearn.base import clone

    from mlnb.heads.torch_head import TorchHead

    h = TorchHead(hidden=8, epochs=3)
    assert clone(h).get_params() == h.get_params()
    X = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    y = np.array(["x", "y"] * 20)
    assert h.fit(X, y) is h and list(h.classes_) == ["x", "y"] and h.n_features_in_ == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert h.predict(X).shape == (40,)


def test_torch_head_is_not_thrown_by_a_unit_silent_in_training():
    """CNN features are sparse: a unit never active in the training rows must not dominate a new row."""
    from mlnb.heads.torch_head import TorchHead

    rng = np.random.default_rng(0)
    n, d = 200, 64
    y = np.repeat(["a", "b"], n // 2)
    X = np.abs(rng.normal(0, 0.1, (n, d))).astype(np.float32)
    X[y == "a", 0] += 1.0
    X[y == "b", 1] += 1.0
    X[:, 10:] = 0.0  # units that never fire in training (ReLU features)
    head = TorchHead(hidden=0, epochs=50).fit(X, y)
    new = X.copy()
    new[:, 10:] = rng.uniform(0, 0.5, (n, d - 10))  # ...but do, mildly, on new images
    assert (head.predict(new) == y).mean() > 0.9
