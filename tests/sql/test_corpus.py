"""Every ordinary SQL shape, with mlnb's row expressions and head functions inside.

Each case is an mlnb statement and, where one exists, its plain equivalent
(the row expression written out as ``array_value(...)``); both run and the
results must be equal.
"""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import mlnb

R = "{* EXCLUDING(label, id)}"
E = "array_value(f0::FLOAT, f1::FLOAT, f2::FLOAT, f3::FLOAT)"
EI = "array_value(i.f0::FLOAT, i.f1::FLOAT, i.f2::FLOAT, i.f3::FLOAT)"
EA = "array_value(a.f0::FLOAT, a.f1::FLOAT, a.f2::FLOAT, a.f3::FLOAT)"

CASES = [
    # SELECT list, CTEs, derived tables
    (f"SELECT id, {R} AS f FROM iris ORDER BY id", f"SELECT id, {E} AS f FROM iris ORDER BY id"),
    (f"WITH w AS (SELECT * FROM iris) SELECT id, {R} AS f FROM w ORDER BY id", f"SELECT id, {E} AS f FROM iris ORDER BY id"),
    (f"SELECT id, {R} AS f FROM (SELECT * FROM iris WHERE f0 > 5) AS s ORDER BY id", f"SELECT id, {E} AS f FROM iris WHERE f0 > 5 ORDER BY id"),
    (f"WITH w AS (SELECT id, {R} AS f FROM iris), v AS (SELECT id, list_sum(f) AS s FROM w) SELECT * FROM v ORDER BY id",
     f"SELECT id, list_sum({E}) AS s FROM iris ORDER BY id"),
    (f"WITH w AS (SELECT * FROM iris WHERE id < 50) SELECT count(*) AS n FROM w WHERE flower({R}) = 'setosa'",
     f"SELECT count(*) AS n FROM iris WHERE id < 50 AND flower({E}) = 'setosa'"),
    # function arguments, nested
    (f"SELECT id, flower({R}) AS p FROM iris ORDER BY id", f"SELECT id, flower({E}) AS p FROM iris ORDER BY id"),
    (f"SELECT id, upper(flower({R})) AS p FROM iris ORDER BY id", f"SELECT id, upper(flower({E})) AS p FROM iris ORDER BY id"),
    (f"SELECT id, list_sum({R}) AS s FROM iris ORDER BY id", f"SELECT id, list_sum({E}) AS s FROM iris ORDER BY id"),
    (f"SELECT id, round(flower_proba({R})['setosa'], 4) AS p FROM iris ORDER BY id",
     f"SELECT id, round(flower_proba({E})['setosa'], 4) AS p FROM iris ORDER BY id"),
    (f"SELECT id, list_transform({R}, lambda x: x + 1) AS f FROM iris ORDER BY id", f"SELECT id, list_transform({E}, lambda x: x + 1) AS f FROM iris ORDER BY id"),
    (f"SELECT id, [x * 2 FOR x IN {R}] AS f FROM iris ORDER BY id", f"SELECT id, [x * 2 FOR x IN {E}] AS f FROM iris ORDER BY id"),
    (f"SELECT id, {{'f': {R}}} AS s FROM iris ORDER BY id", f"SELECT id, {{'f': {E}}} AS s FROM iris ORDER BY id"),
    # WHERE, GROUP BY, ORDER BY, HAVING, CASE, DISTINCT ON
    (f"SELECT count(*) AS n FROM iris WHERE flower({R}) = label", f"SELECT count(*) AS n FROM iris WHERE flower({E}) = label"),
    (f"SELECT flower({R}) AS p, count(*) AS n FROM iris GROUP BY flower({R}) ORDER BY p",
     f"SELECT flower({E}) AS p, count(*) AS n FROM iris GROUP BY flower({E}) ORDER BY p"),
    (f"SELECT flower({R}) AS p, count(*) AS n FROM iris GROUP BY ALL ORDER BY ALL", f"SELECT flower({E}) AS p, count(*) AS n FROM iris GROUP BY ALL ORDER BY ALL"),
    (f"SELECT id FROM iris ORDER BY flower_proba({R})['setosa'] DESC, id LIMIT 7",
     f"SELECT id FROM iris ORDER BY flower_proba({E})['setosa'] DESC, id LIMIT 7"),
    (f"SELECT label, count(*) AS n FROM iris GROUP BY label HAVING sum((flower({R}) = label)::INT) > 45 ORDER BY label",
     f"SELECT label, count(*) AS n FROM iris GROUP BY label HAVING sum((flower({E}) = label)::INT) > 45 ORDER BY label"),
    (f"SELECT id, CASE WHEN flower({R}) = label THEN 'ok' ELSE 'wrong' END AS v FROM iris ORDER BY id",
     f"SELECT id, CASE WHEN flower({E}) = label THEN 'ok' ELSE 'wrong' END AS v FROM iris ORDER BY id"),
    (f"SELECT DISTINCT ON (flower({R})) flower({R}) AS p, id FROM iris ORDER BY flower({R}), id",
     f"SELECT DISTINCT ON (flower({E})) flower({E}) AS p, id FROM iris ORDER BY flower({E}), id"),
    # windows and QUALIFY
    (f"SELECT id, rank() OVER (PARTITION BY flower({R}) ORDER BY id) AS r FROM iris ORDER BY id",
     f"SELECT id, rank() OVER (PARTITION BY flower({E}) ORDER BY id) AS r FROM iris ORDER BY id"),
    (f"SELECT id, flower({R}) AS p FROM iris QUALIFY row_number() OVER (PARTITION BY flower({R}) ORDER BY id) = 1 ORDER BY id",
     f"SELECT id, flower({E}) AS p FROM iris QUALIFY row_number() OVER (PARTITION BY flower({E}) ORDER BY id) = 1 ORDER BY id"),
    # joins: USING, ON, aliases, one side's columns
    (f"SELECT i.id, m.grp, {{i.f*}} AS f FROM iris i JOIN meta m USING (id) ORDER BY i.id",
     f"SELECT i.id, m.grp, {EI} AS f FROM iris i JOIN meta m USING (id) ORDER BY i.id"),
    ("SELECT a.id, flower({a.f*}) AS p FROM iris a JOIN meta b ON a.id = b.id WHERE b.grp = 1 ORDER BY a.id",
     f"SELECT a.id, flower({EA}) AS p FROM iris a JOIN meta b ON a.id = b.id WHERE b.grp = 1 ORDER BY a.id"),
    ("SELECT i.id FROM iris i JOIN iris j USING (id) WHERE flower({i.f*}) = flower({j.f*}) ORDER BY i.id",
     "SELECT id FROM iris ORDER BY id"),
    ("SELECT v.x, flower({i.f*}) AS p FROM (VALUES (0), (60)) v(x) JOIN iris i ON i.id = v.x ORDER BY v.x",
     f"SELECT v.x, flower({EI}) AS p FROM (VALUES (0), (60)) v(x) JOIN iris i ON i.id = v.x ORDER BY v.x"),
    ("SELECT i.id, l.x FROM iris i, LATERAL (SELECT i.f0 * 2 AS x) l WHERE flower({i.f*}) = 'setosa' ORDER BY i.id",
     f"SELECT i.id, i.f0 * 2 AS x FROM iris i WHERE flower({EI}) = 'setosa' ORDER BY i.id"),
    # set operations
    (f"SELECT id, {R} AS f FROM iris WHERE id < 5 UNION ALL SELECT id, {R} FROM iris WHERE id >= 145 ORDER BY id",
     f"SELECT id, {E} AS f FROM iris WHERE id < 5 OR id >= 145 ORDER BY id"),
    (f"SELECT id FROM iris WHERE flower({R}) = 'setosa' EXCEPT SELECT id FROM iris WHERE id > 10 ORDER BY id",
     f"SELECT id FROM iris WHERE flower({E}) = 'setosa' AND id <= 10 ORDER BY id"),
    (f"SELECT id FROM iris WHERE flower({R}) = 'virginica' INTERSECT SELECT id FROM iris WHERE id % 2 = 0 ORDER BY id",
     f"SELECT id FROM iris WHERE flower({E}) = 'virginica' AND id % 2 = 0 ORDER BY id"),
    # subqueries: scalar, IN, EXISTS (correlated)
    (f"SELECT (SELECT count(*) FROM iris WHERE flower({R}) = 'setosa') AS n", f"SELECT (SELECT count(*) FROM iris WHERE flower({E}) = 'setosa') AS n"),
    (f"SELECT count(*) AS n FROM iris WHERE id IN (SELECT id FROM iris WHERE flower({R}) = label)",
     f"SELECT count(*) AS n FROM iris WHERE flower({E}) = label"),
    ("SELECT count(*) AS n FROM iris o WHERE EXISTS (SELECT 1 FROM iris i WHERE i.id = o.id AND flower({i.f*}) = 'setosa')",
     f"SELECT count(*) AS n FROM iris WHERE flower({E}) = 'setosa'"),
    # recursive CTE, PIVOT
    ("WITH RECURSIVE r(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT r.n, flower({i.f*}) AS p FROM r JOIN iris i ON i.id = r.n ORDER BY r.n",
     f"SELECT i.id AS n, flower({EI}) AS p FROM iris i WHERE i.id <= 3 ORDER BY n"),
    (f"PIVOT (SELECT flower({R}) AS p, label FROM iris) ON p USING count(*) ORDER BY label",
     f"PIVOT (SELECT flower({E}) AS p, label FROM iris) ON p USING count(*) ORDER BY label"),
    # literals and comments next to row expressions are never touched
    (f"SELECT '{R}' AS s, list_sum({R}) AS t FROM iris ORDER BY id LIMIT 3", f"SELECT '{R}' AS s, list_sum({E}) AS t FROM iris ORDER BY id LIMIT 3"),
    (f"SELECT /* {{* EXCLUDING(nothing)}} ; */ flower({R}) AS p FROM iris ORDER BY id LIMIT 3",
     f"SELECT flower({E}) AS p FROM iris ORDER BY id LIMIT 3"),
    (f"SELECT $$a;{{*}}$$ AS s, list_sum({R}) AS t FROM iris ORDER BY id LIMIT 2", f"SELECT 'a;{{*}}' AS s, list_sum({E}) AS t FROM iris ORDER BY id LIMIT 2"),
    (f"SELECT E'x\\'{{*}}' AS s, flower({R}) AS p FROM iris ORDER BY id LIMIT 1", f"SELECT 'x''{{*}}' AS s, flower({E}) AS p FROM iris ORDER BY id LIMIT 1"),
    (f"SELECT {{'k': id}} AS s, list_sum({R}) AS t FROM iris ORDER BY id LIMIT 3", f"SELECT {{'k': id}} AS s, list_sum({E}) AS t FROM iris ORDER BY id LIMIT 3"),
    # $params, patterns, plain EXCLUDING
    (f"SELECT count(*) AS n FROM iris WHERE flower({R}) = $want", f"SELECT count(*) AS n FROM iris WHERE flower({E}) = 'setosa'"),
    ("SELECT * EXCLUDING (f*, id) FROM iris ORDER BY label LIMIT 3", "SELECT label FROM iris ORDER BY label LIMIT 3"),
    # DuckDB's FROM-first form
    (f"FROM iris SELECT id, flower({R}) AS p WHERE id % 7 = 0 ORDER BY id", f"SELECT id, flower({E}) AS p FROM iris WHERE id % 7 = 0 ORDER BY id"),
    ("SELECT {f1, f0} AS f FROM iris ORDER BY id", "SELECT array_value(f1::FLOAT, f0::FLOAT) AS f FROM iris ORDER BY id"),
    ("SELECT {f*} AS f FROM iris ORDER BY id", f"SELECT {E} AS f FROM iris ORDER BY id"),
    ("SELECT {* EXCLUDING(f2*, f3)} AS f FROM iris ORDER BY id", "SELECT array_value(f0::FLOAT, f1::FLOAT, id::FLOAT) AS f FROM iris ORDER BY id"),
]

MULTI = [
    # INSERT ... SELECT, CREATE TABLE AS, COPY (...) TO
    ([f"CREATE OR REPLACE TABLE preds (id BIGINT, p VARCHAR)", f"INSERT INTO preds SELECT id, flower({R}) FROM iris",
      "SELECT * FROM preds ORDER BY id"], f"SELECT id, flower({E}) AS p FROM iris ORDER BY id"),
    ([f"CREATE OR REPLACE TABLE t2 AS SELECT id, {R} AS f FROM iris", "SELECT * FROM t2 ORDER BY id"],
     f"SELECT id, {E} AS f FROM iris ORDER BY id"),
    ([f"CREATE OR REPLACE VIEW pv AS SELECT id, flower({R}) AS p FROM iris", "SELECT * FROM pv ORDER BY id"],
     f"SELECT id, flower({E}) AS p FROM iris ORDER BY id"),
    ([f"COPY (SELECT id, flower({R}) AS p FROM iris) TO '{{tmp}}/p.csv' (HEADER)", "SELECT * FROM read_csv('{tmp}/p.csv') ORDER BY id"],
     f"SELECT id, flower({E}) AS p FROM iris ORDER BY id"),
]


@pytest.fixture
def tables():
    """Iris as a frame, and a head ``flower`` trained on it in the test's workspace."""
    from sklearn.datasets import load_iris

    d = load_iris()
    iris = pl.DataFrame(d.data.astype("float32"), schema=["f0", "f1", "f2", "f3"]).with_columns(
        label=pl.Series([str(d.target_names[i]) for i in d.target]), id=pl.int_range(150, dtype=pl.Int64)
    )
    meta = pl.DataFrame({"id": list(range(150)), "grp": [i % 3 for i in range(150)]})
    ns = {"iris": iris, "meta": meta, "want": "setosa"}
    mlnb.sql("CREATE OR REPLACE CLASSIFIER flower AS SELECT {* EXCLUDING(label, id)} AS features, label FROM iris", **ns)
    return ns


def _same(a: pl.DataFrame, b: pl.DataFrame) -> None:
    assert a.shape == b.shape, (a, b)
    assert_frame_equal(a, b.rename(dict(zip(b.columns, a.columns))), check_dtypes=False)


def test_corpus_is_large_enough():
    assert len(CASES) + len(MULTI) >= 40


@pytest.mark.parametrize("query,plain", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_statement(tables, query, plain):
    got = mlnb.sql(query, **tables)
    _same(got, mlnb.sql(plain, **tables))


@pytest.mark.parametrize("statements,plain", MULTI, ids=["insert", "ctas", "view", "copy"])
def test_writing_statements(tables, tmp_path, statements, plain):
    cell = ";\n".join(s.replace("{tmp}", str(tmp_path)) for s in statements)
    _same(mlnb.sql(cell, **tables), mlnb.sql(plain, **tables))


def test_classifier_statements_take_any_query_shape(tables):
    out = mlnb.sql(
        "CREATE OR REPLACE CLASSIFIER flower2 AS WITH w AS (SELECT * FROM iris) "
        "SELECT {* EXCLUDING(label, id)} AS features, label FROM w",
        **tables,
    )
    assert out["rows"].item() == 150
    out = mlnb.sql(
        "CREATE OR REPLACE CLASSIFIER flower3 WITH (C = 0.5) AS SELECT {* EXCLUDING(label, id)} AS features, label "
        "FROM (SELECT * FROM iris) s WHERE hash(id) % 5 <> 0",
        **tables,
    )
    assert 100 < out["rows"].item() < 150
    ev = mlnb.sql(
        "EVALUATE CLASSIFIER flower ON (WITH w AS (SELECT * FROM iris WHERE id % 2 = 0) "
        "SELECT {* EXCLUDING(label, id)} AS features, label FROM w)",
        **tables,
    )
    assert ev["accuracy"].item() > 0.9


def test_row_expression_spread_into_columns(tables):
    """MLDB's ``SELECT inception({url}) AS *``: DuckDB's unnest of a struct made from the array."""
    out = mlnb.sql(
        "SELECT id, unnest(struct_pack(x0 := f[1], x1 := f[2], x2 := f[3], x3 := f[4])) "
        "FROM (SELECT id, {* EXCLUDING(label, id)} AS f FROM iris) ORDER BY id LIMIT 2",
        **tables,
    )
    assert out.columns == ["id", "x0", "x1", "x2", "x3"]
    assert out.row(0)[1] == pytest.approx(5.1)
    spread = mlnb.sql("SELECT id, f[1] AS x0 FROM (SELECT id, {* EXCLUDING(label, id)} AS f FROM iris) ORDER BY id LIMIT 1", **tables)
    assert spread["x0"].item() == pytest.approx(5.1)


def test_heads_follow_the_workspace(tables, tmp_path):
    """After switching workspace, its heads are callable (one saved by another process too)
    and the old workspace's are not."""
    import subprocess
    import sys

    other = tmp_path / "other"
    code = (
        "import mlnb, polars as pl, numpy as np\n"
        f"mlnb.config.workspace = {str(other)!r}\n"
        "X = np.random.default_rng(0).normal(size=(40, 4)).astype('float32'); y = ['a'] * 20 + ['b'] * 20\n"
        "X[20:] += 3\n"
        "mlnb.train_classifier(pl.DataFrame({'features': X, 'label': y}), name='elsewhere')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    before = mlnb.config.workspace
    try:
        mlnb.sql("SET mlnb_workspace = '" + str(other) + "'")
        assert mlnb.sql("SHOW CLASSIFIERS")["name"].to_list() == ["elsewhere"]
        assert mlnb.sql("SELECT elsewhere([3.0, 3.0, 3.0, 3.0]) AS p").item() == "b"
        with pytest.raises(mlnb.QueryError, match="flower"):
            mlnb.sql(f"SELECT flower({R}) FROM iris", **tables)
    finally:
        mlnb.config.workspace = before
    assert mlnb.sql(f"SELECT flower({R}) AS p FROM iris WHERE id = 0", **tables).item() == "setosa"
    with pytest.raises(mlnb.QueryError, match="elsewhere"):
        mlnb.sql("SELECT elsewhere([3.0, 3.0, 3.0, 3.0])")
