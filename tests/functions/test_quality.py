"""label_issues, near_duplicates, duplicate_groups and outliers: in SQL and from Python."""

from __future__ import annotations

import sys

import numpy as np
import polars as pl
import pytest

import mlnb
from mlnb.exceptions import MissingDependencyError, MlnbError, QueryError
from mlnb.quality import components, knn_mean_distance, pairs_above


@pytest.fixture(scope="module")
def noisy_digits():
    """scikit-learn's digits as raw pixels, 5% of the labels flipped (seed 0)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(0)
    y = d.target.copy()
    flipped = np.sort(rng.choice(len(y), int(round(0.05 * len(y))), replace=False))
    y[flipped] = (y[flipped] + rng.integers(1, 10, len(flipped))) % 10
    df = pl.DataFrame({"id": np.arange(len(y)), "pixels": d.data.astype(np.float32), "label": y.astype(str)})
    return df, flipped


def test_label_issues_finds_flipped_labels(noisy_digits):
    df, flipped = noisy_digits
    out = mlnb.sql("SELECT * FROM label_issues(df, features := 'pixels') ORDER BY rank", df=df)
    assert out.height == df.height
    assert out.columns[-6:] == ["row", "given_label", "suggested_label", "label_quality", "is_issue", "rank"]
    assert {"id", "pixels", "label"} <= set(out.columns)
    top = out.head(len(flipped)).get_column("id").to_numpy()
    recall = np.isin(top, flipped).mean()
    assert recall >= 0.7, recall
    # cleanlab's verdict: most flagged rows are flipped ones, most flipped ones are flagged.
    flagged = out.filter(pl.col("is_issue")).get_column("id").to_numpy()
    assert np.isin(flagged, flipped).mean() > 0.6 and np.isin(flipped, flagged).mean() > 0.6
    # Ranks follow the quality score; the given label is the input's.
    assert out.get_column("label_quality").is_sorted()
    assert (out.get_column("given_label") == out.get_column("label")).all()
    # A flipped row's suggestion is mostly its true digit.
    from sklearn.datasets import load_digits

    truth = load_digits().target
    hits = out.filter(pl.col("id").is_in(flipped.tolist()) & pl.col("is_issue"))
    assert (hits.get_column("suggested_label").cast(int).to_numpy() == truth[hits.get_column("id").to_numpy()]).mean() > 0.8


def test_label_issues_python_twin_and_query_forms(noisy_digits):
    df, _ = noisy_digits
    small = df.head(400)
    py = mlnb.label_issues(small, features="pixels", folds=3)
    sql = mlnb.sql("SELECT * FROM label_issues(small, features := 'pixels', folds := $k)", small=small, k=3)
    assert py.equals(sql)
    # A subquery as input, joined back on the id; the rest of the statement is plain DuckDB.
    joined = mlnb.sql(
        "SELECT d.id, i.suggested_label, i.rank FROM label_issues((SELECT id, pixels AS features, label FROM small WHERE id < 300), folds := 3) AS i "
        "JOIN small d USING (id) WHERE i.is_issue ORDER BY i.rank",
        small=small,
    )
    assert joined.height > 0 and joined.get_column("id").max() < 300
    # Without an alias the result is named after the function.
    named = mlnb.sql("SELECT label_issues.rank FROM label_issues(small, features := 'pixels', folds := 3) LIMIT 1", small=small)
    assert named.item() == 1


def test_label_issues_on_a_head_reruns_its_training_query(noisy_digits):
    df, _ = noisy_digits
    small = df.head(300)
    mlnb.sql("CREATE CLASSIFIER px USING knn WITH (k = 3) AS SELECT pixels AS features, label FROM small", small=small)
    out = mlnb.sql("SELECT * FROM label_issues('px', folds := 3)", small=small)
    assert out.height == 300 and out.get_column("rank").to_list() == list(range(1, 301))
    # A head trained from Python has no query to run again: the error says what to do.
    mlnb.train_classifier(small, features="pixels", label="label", name="pyhead")
    with pytest.raises(QueryError, match="trained from Python"):
        mlnb.sql("SELECT * FROM label_issues('pyhead')")
    with pytest.raises(MlnbError, match="No classifier named 'nohead'"):
        mlnb.sql("SELECT * FROM label_issues('nohead')")


def test_label_issues_refuses_what_it_cannot_do(noisy_digits):
    df, _ = noisy_digits
    one = pl.DataFrame({"features": [[1.0, 0.0]] * 6 + [[0.0, 1.0]], "label": ["a"] * 6 + ["b"]})
    with pytest.raises(QueryError, match=r"5-fold training needs at least 5 rows of every class; too few for 'b' \(1\)"):
        mlnb.sql("SELECT * FROM label_issues(one)", one=one)
    tiny = pl.DataFrame({"features": [[1.0, 0.0], [0.0, 1.0]], "label": ["a", "b"]})
    with pytest.raises(MlnbError, match="at least 5 rows"):
        mlnb.label_issues(tiny)
    single = pl.DataFrame({"features": [[1.0, 0.0]] * 6, "label": ["a"] * 6})
    with pytest.raises(MlnbError, match="at least two classes"):
        mlnb.label_issues(single)
    with pytest.raises(QueryError, match="no label column 'lable'.*Did you mean 'label'"):
        mlnb.sql("SELECT * FROM label_issues(df, features := 'pixels', label := 'lable')", df=df)
    with pytest.raises(QueryError, match="folds must be a whole number of at least 2"):
        mlnb.sql("SELECT * FROM label_issues(df, features := 'pixels', folds := 1)", df=df)
    with pytest.raises(QueryError, match="has no option 'fold'"):
        mlnb.sql("SELECT * FROM label_issues(df, features := 'pixels', fold := 3)", df=df)


def test_label_issues_without_cleanlab_names_the_extra(noisy_digits, monkeypatch):
    df, _ = noisy_digits
    monkeypatch.setitem(sys.modules, "cleanlab.filter", None)
    with pytest.raises(MissingDependencyError, match=r'pip install "mlnb\[quality\]"'):
        mlnb.label_issues(df.head(100), features="pixels", folds=2)


def test_null_and_nan_rows_are_left_out_and_counted(noisy_digits):
    df, _ = noisy_digits
    small = df.head(200).with_columns(
        pl.when(pl.col("id") == 3).then(None).otherwise(pl.col("pixels")).alias("pixels"),
        pl.when(pl.col("id") == 4).then(None).otherwise(pl.col("label")).alias("label"),
    )
    bad = small.get_column("pixels").to_list()
    bad[5] = [float("nan")] * 64
    small = small.with_columns(pl.Series("pixels", bad, dtype=pl.Array(pl.Float32, 64)))
    with pytest.warns(UserWarning, match="3 of 200 rows have null, NaN or all-zero features or a null label and were left out"):
        out = mlnb.label_issues(small, features="pixels", folds=2)
    assert out.height == 197 and not set(out.get_column("id").to_list()) & {3, 4, 5}
    with pytest.warns(UserWarning, match="2 of 200 rows"):
        out = mlnb.outliers(small, features="pixels")
    assert out.height == 198


def _brute_pairs(X, t):
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = Xn @ Xn.T
    i, j = np.nonzero(np.triu(S >= t, 1))
    return set(zip(i.tolist(), j.tolist()))


@pytest.mark.parametrize("d", [32, 800])  # 800: the first pass runs on the projection
def test_pairs_above_equals_brute_force(d):
    rng = np.random.default_rng(1)
    n = 1500
    centers = np.maximum(rng.standard_normal((8, d)), 0) + 0.3
    X = np.maximum(centers[rng.integers(0, 8, n)] + rng.standard_normal((n, d)) * 0.6, 0).astype(np.float32)
    X[1400:] = X[:100] * (1 + 0.05 * rng.standard_normal((100, d))).astype(np.float32)  # planted near-copies
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    for t in (0.9, 0.97):
        i, j, sim = pairs_above(Xn, t, block=512)
        assert set(zip(i.tolist(), j.tolist())) == _brute_pairs(X, t)
        assert (sim >= t).all() and (i < j).all()
        if t == 0.97:
            found = set(zip(i.tolist(), j.tolist()))
    assert {(k, 1400 + k) for k in range(100)} <= {(int(a), int(b)) for a, b in found}


def test_near_duplicates_pairs_groups_and_columns():
    X = np.array([[1, 0, 0], [0.99, 0.05, 0], [0.98, 0.1, 0], [0, 1, 0], [0, 0, 1], [0, 0.02, 1]], dtype=np.float32)
    df = pl.DataFrame({"path": [f"img{k}.jpg" for k in range(6)], "f": X})
    out = mlnb.sql("SELECT * FROM near_duplicates(df, features := 'f', threshold := 0.99)", df=df)
    assert out.columns == ["i", "j", "similarity", "duplicate_group", "path_i", "path_j"]
    pairs = set(zip(out.get_column("i").to_list(), out.get_column("j").to_list()))
    assert pairs == {(0, 1), (0, 2), (1, 2), (4, 5)}
    assert out.get_column("similarity").is_sorted(descending=True)
    groups = dict(zip(zip(out.get_column("i").to_list(), out.get_column("j").to_list()), out.get_column("duplicate_group").to_list()))
    assert groups[(0, 1)] == groups[(1, 2)] == 1 and groups[(4, 5)] == 2
    assert out.filter(pl.col("i") == 4).get_column("path_j").item() == "img5.jpg"
    per_row = mlnb.sql("SELECT path, duplicate_group, group_size FROM duplicate_groups(df, features := 'f', threshold := 0.99)", df=df)
    assert per_row.get_column("duplicate_group").to_list() == [1, 1, 1, None, 2, 2]
    assert per_row.get_column("group_size").to_list() == [3, 3, 3, 1, 2, 2]
    none = mlnb.near_duplicates(df, features="f", threshold=1.0)
    assert none.height == 0 and "path_i" in none.columns


def test_components_chain():
    g = components(7, np.array([0, 2, 5]), np.array([2, 4, 6]))
    assert g.tolist() == [1, 0, 1, 0, 1, 2, 2]


def test_duplicates_refuse_bad_input():
    df = pl.DataFrame({"f": [[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]]})
    for t in (0, -0.5, 1.5, "high"):
        with pytest.raises(MlnbError, match="threshold must be a cosine similarity above 0 and at most 1"):
            mlnb.near_duplicates(df, features="f", threshold=t)
    with pytest.raises(QueryError, match="threshold must be"):
        mlnb.sql("SELECT * FROM near_duplicates(df, features := 'f', threshold := 95)", df=df)
    mixed = pl.DataFrame({"f": [[1.0, 0.0], [1.0, 0.1, 0.2]]})
    with pytest.raises(MlnbError, match="mixes vector lengths"):
        mlnb.near_duplicates(mixed, features="f")
    with pytest.raises(QueryError, match="no features column 'features'"):
        mlnb.sql("SELECT * FROM near_duplicates(df)", df=df)
    with pytest.raises(QueryError, match="must be constants"):
        mlnb.sql("SELECT * FROM near_duplicates(df, features := 'f', threshold := 0.5 + 0.4)", df=df)
    with pytest.raises(QueryError, match="a view or macro cannot keep it"):
        mlnb.sql("CREATE VIEW v AS SELECT * FROM near_duplicates(df, features := 'f')", df=df)
    with pytest.raises(QueryError, match="needs its input"):
        mlnb.sql("SELECT * FROM outliers()")
    with pytest.raises(QueryError, match="could not run: Unknown table 'nosuch'"):
        mlnb.sql("SELECT * FROM outliers(nosuch)")
    with pytest.raises(MlnbError, match="not the string"):
        mlnb.outliers("df")


def test_a_table_keeps_the_result():
    df = pl.DataFrame({"f": [[1.0, 0.0], [1.0, 0.001], [0.0, 1.0]]})
    mlnb.sql("CREATE OR REPLACE TABLE dups AS SELECT * FROM near_duplicates(df, features := 'f')", df=df)
    assert mlnb.sql("SELECT i, j FROM dups").rows() == [(0, 1)]
    mlnb.sql("DROP TABLE dups")


def test_outliers_finds_planted_outliers():
    rng = np.random.default_rng(2)
    base = rng.standard_normal(16)
    X = base + 0.2 * rng.standard_normal((300, 16))
    planted = [17, 123, 250]
    X[planted] = rng.standard_normal((3, 16)) * 2
    df = pl.DataFrame({"id": np.arange(300), "features": X.astype(np.float32)})
    out = mlnb.sql("SELECT id, outlier_score, rank FROM outliers(df, k := 5)", df=df)
    assert sorted(out.head(3).get_column("id").to_list()) == planted
    assert out.get_column("rank").to_list() == list(range(1, 301))
    # The score is the mean cosine distance to the k nearest other rows.
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = Xn @ Xn.T
    np.fill_diagonal(S, -np.inf)
    want = (1 - np.sort(S, axis=1)[:, -5:]).mean(axis=1)
    np.testing.assert_allclose(knn_mean_distance(Xn.astype(np.float32), 5), want, atol=1e-5)
    with pytest.raises(QueryError, match="k = 300 neighbours needs more than 300 rows"):
        mlnb.sql("SELECT * FROM outliers(df, k := 300)", df=df)
    with pytest.raises(MlnbError, match="k must be a whole number of at least 1"):
        mlnb.outliers(df, k=0)


def test_functions_are_listed():
    names = set(mlnb.functions().get_column("name").to_list())
    assert {"label_issues", "near_duplicates", "duplicate_groups", "outliers"} <= names
    sig = mlnb.functions("near_duplicates").get_column("signature").item()
    assert "threshold := 0.95" in sig


@pytest.mark.slow
def test_near_duplicates_finds_planted_copies_of_real_photographs(tmp_path):
    """Each bundled photograph, re-encoded as JPEG at quality 75 and cropped by 3% on every side,
    embedded with the default model: exactly the copies pair up (8 groups of 3), nothing else,
    beside 10 unrelated scikit-image pictures."""
    import skimage.data
    from PIL import Image

    rows = []
    for name, src in sorted(mlnb.datasets.photograph_files().items()):
        im = Image.open(src).convert("RGB")
        stem = name.rsplit(".", 1)[0]
        w, h = im.size
        im.save(tmp_path / f"{stem}.png")
        im.save(tmp_path / f"{stem}_q75.jpg", quality=75)
        im.crop((int(0.03 * w), int(0.03 * h), w - int(0.03 * w), h - int(0.03 * h))).save(tmp_path / f"{stem}_crop.png")
        rows += [(f"{stem}.png", stem), (f"{stem}_q75.jpg", stem), (f"{stem}_crop.png", stem)]
    for name in ["brick", "camera", "clock", "coins", "grass", "gravel", "horse", "moon", "page", "text"]:
        a = getattr(skimage.data, name)()
        Image.fromarray(a if a.dtype == np.uint8 else (a * 255).astype(np.uint8)).convert("RGB").save(tmp_path / f"{name}.png")
        rows.append((f"{name}.png", name))
    photos = pl.DataFrame({"path": [str(tmp_path / p) for p, _ in rows], "source": [s for _, s in rows]})
    out = mlnb.sql(
        "SELECT source_i, source_j, path_i, path_j, similarity, duplicate_group "
        "FROM near_duplicates((SELECT path, source, embed(path) AS features FROM photos), threshold := 0.9)",
        photos=photos,
    )
    assert out.height == 24, out
    assert (out.get_column("source_i") == out.get_column("source_j")).all()
    groups = out.group_by("duplicate_group").agg(pl.col("source_i").unique())
    assert groups.height == 8 and all(len(s) == 1 for s in groups.get_column("source_i").to_list())


def test_in_a_cell_magic_and_lazy(ip):
    ip.run_cell("import numpy as np, polars as pl\nrng = np.random.default_rng(0)\n"
                "df = pl.DataFrame({'id': range(40), 'f': rng.standard_normal((40, 8)).astype('float32')})")
    ip.run_cell("%%mlsql -o top\nSELECT id, outlier_score FROM outliers(df, features := 'f', k := 3) ORDER BY rank LIMIT 5")
    assert ip.user_ns["top"].height == 5
    ip.run_cell("%%mlsql --lazy -o lf\nSELECT * FROM outliers(df, features := 'f')")
    ip.run_cell("%%mlsql\nSELECT 1")  # a later statement drops the computed result; the lazy frame still reads
    assert ip.user_ns["lf"].collect().height == 40


def test_input_may_be_a_with_table_or_a_query_over_one():
    rng = np.random.default_rng(3)
    df = pl.DataFrame({"id": np.arange(30), "f": rng.standard_normal((30, 6)).astype(np.float32), "y": np.arange(30) % 2})
    out = mlnb.sql("WITH s AS (SELECT id, f FROM df WHERE id < 12) SELECT id, rank FROM outliers(s, features := 'f', k := 3)", df=df)
    assert sorted(out.get_column("id").to_list()) == list(range(12))
    # a chain of WITH tables, read by a subquery; a call inside a WITH table sees the ones before it
    n = mlnb.sql("WITH a AS (SELECT * FROM df WHERE id < 20), b AS (SELECT * FROM a WHERE id >= 5) "
                 "SELECT count(*) FROM near_duplicates((SELECT f FROM b), features := 'f', threshold := 0.1)", df=df).item()
    assert n == len(pairs_above(_unit(df.get_column("f").to_numpy()[5:20]), 0.1)[0])
    assert mlnb.sql("WITH a AS (SELECT * FROM df WHERE id < 20), b AS (SELECT * FROM outliers(a, features := 'f', k := 3)) "
                    "SELECT count(*) FROM b", df=df).item() == 20
    assert mlnb.sql("SELECT count(*) FROM (WITH a AS (SELECT * FROM df WHERE id < 9) SELECT * FROM outliers(a, features := 'f', k := 3))",
                    df=df).item() == 9
    assert mlnb.sql("WITH q AS (SELECT f AS features, y AS label FROM df) SELECT count(*) FROM label_issues(q, folds := 2)", df=df).item() == 30
    # an input that has a WITH of its own: one list, its own names first
    assert mlnb.sql("WITH a AS (SELECT * FROM df WHERE id < 20), c AS (SELECT * FROM df WHERE id < 3) SELECT count(*) FROM "
                    "outliers((WITH a AS (SELECT * FROM df WHERE id < 7) SELECT * FROM a UNION ALL SELECT * FROM c), features := 'f', k := 2)",
                    df=df).item() == 10


def _unit(X):
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def test_row_expressions_inside_and_around_the_call():
    df = pl.DataFrame({"name": list("abcdef"), "a": [1.0, 2, 3, 4, 5, 60], "b": [1.0, 2.1, 2.9, 4, 5, -1]})
    pairs = mlnb.sql("SELECT name_i, name_j FROM near_duplicates((SELECT {* EXCLUDING(name)} AS f, name FROM df), "
                     "features := 'f', threshold := 0.999)", df=df)
    assert ("a", "d") in pairs.rows() and ("a", "e") in pairs.rows()
    top = mlnb.sql("SELECT {* EXCLUDING(name, f, row, outlier_score, rank)} AS v, name FROM "
                   "outliers((SELECT {* EXCLUDING(name)} AS f, name, a FROM df), features := 'f', k := 2) ORDER BY rank LIMIT 1", df=df)
    assert top.rows() == [([60.0], "f")]


def test_threshold_one_finds_exact_copies():
    df = pl.DataFrame({"f": [[0.1, 0.2, 0.3], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1], [0.2, 0.4, 0.6]]})
    out = mlnb.near_duplicates(df, features="f", threshold=1.0)
    assert out.select("i", "j").rows() == [(0, 1), (0, 3), (1, 3)]  # float32 gives them 1 - 2e-7
    rng = np.random.default_rng(0)
    X = np.abs(rng.standard_normal((300, 1280))).astype(np.float32)
    X[150:] = X[:150] * rng.uniform(0.1, 10, (150, 1)).astype(np.float32)  # copies, rescaled
    i, j, sim = pairs_above(_unit(X), 1.0, block=128)
    assert set(zip(i.tolist(), j.tolist())) == {(k, 150 + k) for k in range(150)} and (sim <= 1.0).all()


def test_cosine_of_one_number_per_row_is_refused():
    df = pl.DataFrame({"id": [1, 2, 3, 4], "one": [[1.0], [2.0], [3.0], [4.0]]})
    with pytest.raises(QueryError, match="features column 'id' holds one number per row"):
        mlnb.sql("SELECT * FROM near_duplicates(df, features := 'id')", df=df)
    for fn in (mlnb.outliers, mlnb.duplicate_groups):
        with pytest.raises(MlnbError, match="cosine similarity needs vectors"):
            fn(df, features="one", **({"k": 1} if fn is mlnb.outliers else {}))


def test_input_columns_named_like_the_result_are_kept():
    df = pl.DataFrame({"rank": [7, 8, 9], "row": [1, 2, 3], "f": [[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]]})
    with pytest.warns(UserWarning, match="the input's are kept as 'row' as 'row_1', 'rank' as 'rank_1'"):
        out = mlnb.outliers(df, features="f", k=1)
    assert out.columns == ["rank_1", "row_1", "f", "row", "outlier_score", "rank"]
    assert out.sort("row").get_column("rank_1").to_list() == [7, 8, 9] and out.get_column("rank").to_list() == [1, 2, 3]


def test_a_logistic_head_left_at_its_defaults_is_ranked_as_the_rows_are(noisy_digits):
    """label_issues('head') uses the head's algorithm and the options it chose; for what it left to
    defaults, label_issues' own (logistic C = 0.01): the same ranking as over the same rows."""
    df, _ = noisy_digits
    small = df.head(240)
    mlnb.sql("CREATE CLASSIFIER plain AS SELECT pixels AS features, label, id FROM small", small=small)
    by_head = mlnb.sql("SELECT id, rank, suggested_label FROM label_issues('plain', folds := 3) ORDER BY rank", small=small)
    by_rows = mlnb.sql("SELECT id, rank, suggested_label FROM label_issues((SELECT pixels AS features, label, id FROM small), folds := 3) "
                       "ORDER BY rank", small=small)
    assert by_head.equals(by_rows)


def test_columns_are_named_as_sql_does_and_options_once():
    df = pl.DataFrame({"F": [[1.0, 0.0], [1.0, 0.001], [0.0, 1.0]], "Tag": ["a", "a", "b"]})
    assert mlnb.sql("SELECT i, j FROM near_duplicates(df, features := 'f')", df=df).rows() == [(0, 1)]  # F, as DuckDB reads f
    assert mlnb.near_duplicates(df, features="f").columns[-2:] == ["Tag_i", "Tag_j"]  # the features are not repeated
    with pytest.raises(QueryError, match="given features twice"):
        mlnb.sql("SELECT * FROM outliers(df, features := 'F', features := 'G')", df=df)
    lists = pl.DataFrame({"f": np.eye(4, dtype=np.float32)[[0, 1] * 4], "label": [[1], [2]] * 4})
    with pytest.raises(MlnbError, match=r"the label column 'label' has type List\(Int64\): a label is one value per row"):
        mlnb.label_issues(lists, features="f", folds=2)


def test_input_may_be_a_file_or_a_table_function(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    df = pl.DataFrame({"id": np.arange(20), "f": rng.standard_normal((20, 6)).astype(np.float32), "y": np.arange(20) % 2})
    df.write_parquet(tmp_path / "feats.parquet")
    monkeypatch.chdir(tmp_path)
    assert mlnb.sql("SELECT count(*) FROM outliers('feats.parquet', features := 'f', k := 2)").item() == 20
    assert mlnb.sql("SELECT count(*) FROM outliers(read_parquet('*.parquet'), features := 'f', k := 2)").item() == 20
    # another quality function's result as the input: both ranks kept
    with pytest.warns(UserWarning, match="kept as 'row' as 'row_1', 'rank' as 'rank_1'"):
        out = mlnb.sql("SELECT rank, rank_1 FROM outliers(label_issues(df, features := 'f', label := 'y', folds := 2), features := 'f', k := 2)",
                       df=df)
    assert sorted(out.get_column("rank").to_list()) == sorted(out.get_column("rank_1").to_list()) == list(range(1, 21))
    with pytest.raises(QueryError, match="could not run: IO Error: No files found"):
        mlnb.sql("SELECT * FROM outliers('nofile.parquet', features := 'f')")
