"""Experiments in one statement: folds = 0, a test set, a test_where split, per-fold metrics and
confusion matrices as SQL tables, EVALUATE with the confusion matrix."""

from __future__ import annotations

import json
import warnings

import numpy as np
import polars as pl
import pytest

import mlnb
from mlnb.heads import classifier_confusion, classifier_folds, load_classifier, store


@pytest.fixture
def t():
    """150 rows, 3 classes, 8-d features that separate them well (not perfectly), and a path column."""
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b", "c"], 50)
    centres = rng.normal(scale=2.0, size=(3, 8))
    X = centres[np.searchsorted(["a", "b", "c"], y)] + rng.normal(size=(150, 8))
    return pl.DataFrame({"path": [f"img/{i:03d}.jpg" for i in range(150)], "features": X.astype(np.float32).tolist(), "label": y})


def _fresh(ref):
    mlnb.heads.head._loaded.clear()
    return load_classifier(ref)


def test_folds_zero_trains_without_evaluation(t):
    out = mlnb.sql("CREATE CLASSIFIER c WITH (folds = 0) AS SELECT features, label FROM t", t=t)
    row = out.row(0, named=True)
    assert row["evaluated_on"] == "none" and row["accuracy"] is None and row["rows"] == 150
    assert out.schema["accuracy"] == pl.Float64
    assert mlnb.sql("SELECT * FROM classifier_folds('c')", t=t).height == 0
    assert mlnb.sql("SELECT * FROM classifier_confusion('c')", t=t).height == 0
    # still a working head
    res = mlnb.sql("SELECT avg((c(features) = label)::INT) AS acc FROM t", t=t)
    assert res["acc"].item() > 0.9


def test_test_subquery_is_what_evaluate_measures(t):
    held = t.filter(pl.int_range(pl.len()) % 4 == 0)
    train = t.filter(pl.int_range(pl.len()) % 4 != 0)
    # Parentheses and a ')' inside a string in the subquery: the option parser balances tokens, not characters.
    out = mlnb.sql(
        "CREATE CLASSIFIER c USING logistic WITH (C = 0.5, test = (SELECT features, label FROM held "
        "WHERE path <> ')' AND (label = 'a' OR label IN ('b', 'c')))) AS SELECT features, label FROM train",
        held=held, train=train,
    )
    row = out.row(0, named=True)
    assert row["evaluated_on"] == f"test set ({held.height} rows)" and row["rows"] == train.height
    ev = mlnb.sql("EVALUATE CLASSIFIER c ON (SELECT features, label FROM held)", held=held)
    assert ev["accuracy"].item() == pytest.approx(row["accuracy"]) and ev["n"].item() == held.height
    folds = mlnb.sql("SELECT * FROM classifier_folds('c')")
    assert folds["fold"].to_list() == ["test"] and folds["rows"].item() == held.height
    assert folds["accuracy"].item() == pytest.approx(row["accuracy"])
    # The stored confusion and EVALUATE's agree, and add up to the test rows.
    conf = mlnb.sql("SELECT actual, predicted, count FROM classifier_confusion('c') WHERE fold = 'test' ORDER BY ALL")
    assert conf["count"].sum() == held.height
    cells = pl.DataFrame(ev["confusion"].item().to_list()).sort("actual", "predicted")
    assert cells.equals(conf)
    correct = conf.filter(pl.col("actual") == pl.col("predicted"))["count"].sum()
    assert correct / held.height == pytest.approx(row["accuracy"])


def test_test_as_a_table_name(t):
    held = t.head(30)
    out = mlnb.sql("CREATE CLASSIFIER c WITH (test = held) AS SELECT features, label FROM t", t=t, held=held)
    assert out["evaluated_on"].item() == "test set (30 rows)"


def test_test_where_split_on_a_column_outside_the_select_list(t):
    n_test = mlnb.sql("SELECT count(*) AS n FROM t WHERE hash(path) % 5 = 0", t=t)["n"].item()
    assert 0 < n_test < 150
    out = mlnb.sql(
        "CREATE CLASSIFIER c USING knn WITH (k = 3, folds = 3, test_where = 'hash(path) % 5 = 0') "
        "AS SELECT features, label FROM t",
        t=t,
    )
    row = out.row(0, named=True)
    assert row["rows"] == 150 - n_test  # the test rows were not trained on
    assert row["evaluated_on"] == f"test set ({n_test} rows)"
    folds = mlnb.sql("SELECT * FROM classifier_folds('c')")
    assert folds["fold"].to_list() == ["0", "1", "2", "mean", "std", "min", "max", "test"]
    numbered = folds.filter(pl.col("fold").str.contains(r"^\d$"))
    assert numbered["rows"].sum() == 150 - n_test
    stats = {r["fold"]: r for r in folds.iter_rows(named=True)}
    for m in ("accuracy", "macro_f1", "log_loss"):
        assert stats["mean"][m] == pytest.approx(numbered[m].mean())
        assert stats["std"][m] == pytest.approx(numbered[m].std())
        assert stats["min"][m] == pytest.approx(numbered[m].min()) and stats["max"][m] == pytest.approx(numbered[m].max())
    assert stats["test"]["rows"] == n_test and stats["test"]["accuracy"] == pytest.approx(row["accuracy"])
    conf = mlnb.sql("SELECT fold, sum(count) AS n FROM classifier_confusion('c') GROUP BY fold ORDER BY fold")
    sums = dict(conf.iter_rows())
    assert sums == {"0": numbered["rows"][0], "1": numbered["rows"][1], "2": numbered["rows"][2], "cv": 150 - n_test, "test": n_test}
    # The test rows scored by the head give the stored test accuracy.
    acc = mlnb.sql("SELECT avg((c(features) = label)::INT) AS a FROM t WHERE hash(path) % 5 = 0", t=t)["a"].item()
    assert acc == pytest.approx(row["accuracy"])


def test_test_where_on_a_query_that_is_not_a_plain_select(t):
    out = mlnb.sql(
        "CREATE CLASSIFIER c WITH (folds = 0, test_where = 'label = ''a''') AS "
        "SELECT features, label FROM t WHERE label <> 'c' UNION ALL SELECT features, label FROM t WHERE label = 'c'",
        t=t,
    )
    assert out["rows"].item() == 100 and out["evaluated_on"].item() == "test set (50 rows)"


def test_folds_and_confusion_tables_python_twins_and_versions(t):
    mlnb.sql("CREATE CLASSIFIER c WITH (folds = 4) AS SELECT features, label FROM t", t=t)
    mlnb.sql("CREATE CLASSIFIER c WITH (folds = 0, test_where = 'hash(path) % 3 = 0') AS SELECT features, label FROM t", t=t)
    v1 = mlnb.sql("SELECT * FROM classifier_folds('c@1')")
    assert v1["fold"].to_list()[:4] == ["0", "1", "2", "3"] and v1.columns == ["fold", "rows", "accuracy", "macro_f1", "log_loss"]
    assert classifier_folds("c@1").equals(v1) and _fresh("c@1").folds().equals(v1)
    latest = mlnb.sql("SELECT * FROM classifier_folds('c')")
    assert latest["fold"].to_list() == ["test"]
    conf = mlnb.sql("SELECT * FROM classifier_confusion('c@1')")
    assert conf.columns == ["fold", "actual", "predicted", "count"] and set(conf["fold"]) == {"0", "1", "2", "3", "cv"}
    assert classifier_confusion("c@1").equals(conf) and _fresh("c@1").confusion().equals(conf)
    assert conf.filter(pl.col("fold") == "cv")["count"].sum() == 150
    # The pooled CV matrix is what EVALUATE without ON reports with the training-time metrics.
    ev = mlnb.sql('EVALUATE CLASSIFIER "c@1"')
    assert ev["evaluated_on"].item() == "4-fold CV"
    assert sum(c["count"] for c in ev["confusion"].item().to_list()) == 150


def test_unknown_head_and_wrong_kind(t):
    mlnb.sql("CREATE CLASSIFIER digit WITH (folds = 0) AS SELECT features, label FROM t", t=t)
    with pytest.raises(mlnb.ModelNotFoundError, match="No classifier named 'digt'.*Did you mean 'digit'"):
        mlnb.sql("SELECT * FROM classifier_folds('digt')")
    with pytest.raises(mlnb.ModelNotFoundError, match="has no version '7'"):
        mlnb.sql("SELECT * FROM classifier_confusion('digit@7')")
    with pytest.raises(mlnb.MlnbError, match="is a classifier, not a regressor"):
        mlnb.sql("SELECT * FROM regressor_folds('digit')")


def test_evaluate_confusion_is_a_matrix(t):
    mlnb.sql("CREATE CLASSIFIER c WITH (folds = 3) AS SELECT features, label FROM t", t=t)
    m = mlnb.sql("EVALUATE CLASSIFIER c CONFUSION ON (SELECT features, label FROM t WHERE label <> 'c')", t=t)
    assert m.columns == ["actual", "a", "b", "c"] and m["actual"].to_list() == ["a", "b"]
    assert m.select(pl.exclude("actual")).sum_horizontal().to_list() == [50, 50]
    ev = mlnb.sql("EVALUATE CLASSIFIER c ON (SELECT features, label FROM t WHERE label <> 'c')", t=t)
    assert (m["a"][0] + m["b"][1]) / 100 == pytest.approx(ev["accuracy"].item())
    training = mlnb.sql("EVALUATE CLASSIFIER c CONFUSION")  # the pooled out-of-fold matrix
    assert training["actual"].to_list() == ["a", "b", "c"] and training.select(pl.exclude("actual")).sum().sum_horizontal().item() == 150


@pytest.mark.parametrize(
    "with_,message",
    [
        ("test_where = 'hash(path) % 5'", r"test_where must be a condition.*gives UInt64"),
        ("test_where = 'path = ''nothing'''", r"matched none of the 150 rows"),
        ("test_where = 'true'", r"matched all of the 150 rows"),
        ("test_where = 'x = 1; DROP TABLE t'", r"test_where must be one SQL condition"),
        ("test_where = 'no_such_column > 1'", r"no_such_column"),
        ("test = (SELECT features FROM t), folds = 0", r"test query must return a features column and a label column"),
        ("test = (SELECT features, label FROM t), test_where = 'true'", r"not both"),
        ("test = ()", r"empty parentheses"),
        ("k = (SELECT 3)", r"Option k takes a value, not a query"),
        ("test = 5", r"test takes a query in parentheses"),
        ("folds = 1", r"folds must be 0 \(no cross-validation\) or a whole number of at least 2; got 1"),
        ("folds = 2.5", r"folds must be 0"),
        ("C = 1, C = 2", r"Option c is given twice"),
        ("C = 1 folds = 2", r"Expected a comma after option c"),
        ("test = (SELECT features, label FROM t", r"The \( after WITH has no closing \)"),
    ],
)
def test_bad_experiments_are_refused_and_keep_the_old_head(t, with_, message):
    mlnb.sql("CREATE CLASSIFIER c WITH (folds = 0) AS SELECT features, label FROM t", t=t)
    with pytest.raises(mlnb.MlnbError, match=message):
        mlnb.sql(f"CREATE OR REPLACE CLASSIFIER c USING knn WITH ({with_}) AS SELECT features, label FROM t", t=t)
    assert store.versions("c") == [1] and _fresh("c").meta["algorithm"] == "logistic"


def test_test_set_with_null_rows_and_unseen_classes(t):
    held = pl.concat([
        t.head(20),
        pl.DataFrame({"path": ["x"], "features": [None], "label": ["a"]}, schema=t.schema),
        t.head(5).with_columns(pl.lit("zebra").alias("label")),
    ])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = mlnb.sql("CREATE CLASSIFIER c WITH (test = (SELECT features, label FROM held)) AS SELECT features, label FROM t", t=t, held=held)
    assert any("1 of 26 test rows" in str(w.message) for w in caught)
    assert out["evaluated_on"].item() == "test set (25 rows)"
    conf = mlnb.sql("SELECT * FROM classifier_confusion('c') WHERE actual = 'zebra'")
    assert conf["count"].sum() == 5  # a class the head never saw is reported, not dropped


def test_damaged_evaluation_record(t, _workspace):
    mlnb.sql("CREATE CLASSIFIER c WITH (folds = 3) AS SELECT features, label FROM t", t=t)
    path = _workspace / "heads" / "c" / "v1" / "evaluation.json"
    record = json.loads(path.read_text())
    assert len(record["folds"]) == 3 and all(isinstance(r["accuracy"], float) for r in record["folds"])
    path.write_text('{"folds": 3}')
    with pytest.raises(mlnb.MlnbError, match=r"Classifier c@1 is damaged: evaluation.json does not hold"):
        mlnb.sql("SELECT * FROM classifier_folds('c')")
    path.unlink()  # a head saved before experiments were recorded: empty tables, no error
    assert mlnb.sql("SELECT * FROM classifier_folds('c')").height == 0
    assert mlnb.sql("SELECT c(features) FROM t LIMIT 1", t=t).height == 1


def test_python_train_classifier_with_test_frame(t):
    train, held = t.head(120), t.tail(30)
    head = mlnb.train_classifier(train, test=held, name="py", folds=3)
    assert head.meta["metrics"]["evaluated_on"] == "test set (30 rows)" and head.meta["folds"] == 3
    assert head.evaluation.folds.height == 3 and head.evaluation.metrics["n"].item() == 30
    assert head.folds()["fold"].to_list()[-1] == "test"
    with pytest.raises(mlnb.MlnbError, match="test set has no column 'label'"):
        mlnb.train_classifier(train, test=held.drop("label"))
    with pytest.raises(mlnb.MlnbError, match="dimension 2, but the head was trained on 8"):
        mlnb.train_classifier(train, test=held.with_columns(pl.lit([1.0, 2.0]).alias("features")))


def test_bad_experiments_found_by_an_outside_check(t):
    """Each was answered badly: an all-zero confusion matrix for a head that was never evaluated, a
    parser error at EVALUATE, 'has only none', the rewritten query shown for a test_where typo,
    a grid of '[' strings, and a silent NaN log-loss for labels the head never saw."""
    mlnb.sql("CREATE CLASSIFIER c WITH (folds = 0) AS SELECT features, label FROM t", t=t)
    with pytest.raises(mlnb.QueryError, match=r"c@1 was trained without an evaluation.*CONFUSION ON \(SELECT"):
        mlnb.sql("EVALUATE CLASSIFIER c CONFUSION")
    matrix = mlnb.sql("EVALUATE CLASSIFIER c CONFUSION ON (SELECT features, label FROM t)", t=t)
    assert matrix.drop("actual").to_numpy().sum() == 150
    for wrong in ("EVALUATE CLASSIFIER c CONFUSE", "EVALUATE REGRESSOR c CONFUSION"):
        with pytest.raises(mlnb.QueryError, match="EVALUATE takes a head's name.*a regressor has no confusion matrix"):
            mlnb.sql(wrong)

    with pytest.raises(mlnb.MlnbError, match="None of the 150 training rows has both features and a label"):
        mlnb.sql("CREATE CLASSIFIER d AS SELECT features, NULL AS label FROM t", t=t)
    with pytest.raises(mlnb.QueryError, match="test_where 'nosuch > 3' does not work: .*nosuch") as err:
        mlnb.sql("CREATE CLASSIFIER d WITH (test_where = 'nosuch > 3') AS SELECT features, label FROM t", t=t)
    assert "__mlnb_test" not in str(err.value)
    with pytest.raises(mlnb.QueryError, match=r"training query \(with test_where 'true' added as a column\) failed: .*labl"):
        mlnb.sql("CREATE CLASSIFIER d WITH (test_where = 'true') AS SELECT features, labl FROM t", t=t)
    for grid in ("[[1, 2], [3]]", "[1 2]", "[1, 1 + 2]"):
        with pytest.raises(mlnb.QueryError, match=r"Option C's list holds plain values separated by commas"):
            mlnb.sql(f"CREATE CLASSIFIER d WITH (C = {grid}) AS SELECT features, label FROM t", t=t)
    assert store.versions("d") == []

    with pytest.warns(UserWarning, match=r"50 of 50 evaluated rows have a label the head was not trained on \('c'\)"):
        out = mlnb.sql("CREATE CLASSIFIER e WITH (test = (SELECT features, label FROM t WHERE label = 'c')) "
                       "AS SELECT features, label FROM t WHERE label <> 'c'", t=t)
    assert out["accuracy"].item() == 0.0


def test_test_tables_and_test_where_over_a_with_query(t):
    """test = <table> took the table's first two columns (path, features) when it lacked the training
    query's names, failing with 'features have dimension 1'; test_where could not see a CTE's columns
    when the training query began with WITH."""
    held = t.rename({"features": "f"}).with_columns(pl.col("label").alias("y"))
    with pytest.raises(mlnb.QueryError, match=r"test = held: the table has no 'features' and 'label' columns.*only path, f, label, y"):
        mlnb.sql("CREATE CLASSIFIER c WITH (test = held) AS SELECT features, label FROM t", t=t, held=held)
    out = mlnb.sql("CREATE CLASSIFIER c WITH (test = held) AS SELECT features AS f, label FROM t", t=t, held=held)
    assert out["evaluated_on"].item() == "test set (150 rows)"

    out = mlnb.sql("CREATE CLASSIFIER d WITH (folds = 3, test_where = 'path < ''img/030.jpg''') AS "
                   "WITH x AS (SELECT path, features, label FROM t) SELECT features, label FROM x", t=t)
    assert out["rows"].item() == 150 - 30 and out["evaluated_on"].item() == "test set (30 rows)"
    with pytest.raises(mlnb.QueryError, match=r"(?s)test_where 'path IS NULL' does not work.*sees only its output columns"):
        mlnb.sql("CREATE CLASSIFIER d WITH (test_where = 'path IS NULL') AS "
                 "SELECT features, label FROM t UNION ALL SELECT features, label FROM t", t=t)


def test_a_balanced_forest_over_digit_labels(t):
    """USING random_forest WITH (class_weight = 'balanced') failed on labels '0', '1', ... (the digits):
    scikit-learn looked their weights up as integers ('The classes, [0, 1, 2], are not in class_weight')."""
    digits = t.with_columns(pl.col("label").replace({"a": "0", "b": "1", "c": "2"}))
    out = mlnb.sql("CREATE CLASSIFIER f USING random_forest WITH (n_estimators = 10, class_weight = 'balanced', folds = 3) "
                   "AS SELECT features, label FROM digits", digits=digits)
    assert out["accuracy"].item() > 0.8
    head = load_classifier("f")
    assert head.estimator.get_params()["class_weight"] == "balanced" and list(head.classes_) == ["0", "1", "2"]


def test_evaluate_reports_left_out_rows_and_the_right_statement(t):
    """EVALUATE left rows with a null label or target out without a word, and EVALUATE CLASSIFIER of a
    regressor answered with the Python call mlnb.load_regressor(...)."""
    mlnb.sql("CREATE CLASSIFIER c WITH (folds = 0) AS SELECT features, label FROM t", t=t)
    with pytest.warns(UserWarning, match="75 of 150 rows have null features or a null label and were left out"):
        out = mlnb.sql("EVALUATE CLASSIFIER c ON (SELECT features, CASE WHEN right(path, 5) < '5.jpg' "
                       "THEN NULL ELSE label END AS label FROM t)", t=t)
    assert out["n"].item() == 75
    y = t.with_columns(pl.int_range(150).cast(pl.Float64).alias("y"))
    mlnb.sql("CREATE REGRESSOR r WITH (folds = 0) AS SELECT features, y AS target FROM y", y=y)
    with pytest.warns(UserWarning, match="50 of 150 rows have null features or a null, NaN or infinite target"):
        out = mlnb.sql("EVALUATE REGRESSOR r ON (SELECT features, CASE WHEN y % 3 = 0 THEN 'nan'::DOUBLE ELSE y END AS target FROM y)", y=y)
    assert out["n"].item() == 100
    with pytest.raises(mlnb.QueryError, match="r is a regressor, not a classifier: EVALUATE REGRESSOR r"):
        mlnb.sql("EVALUATE CLASSIFIER r")
    with pytest.raises(mlnb.QueryError, match="c is a classifier, not a regressor: EVALUATE CLASSIFIER c@1"):
        mlnb.sql("EVALUATE REGRESSOR c@1")
