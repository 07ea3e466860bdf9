from __future__ import annotations

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import mlnb
from mlnb.sql import Session


@pytest.fixture
def frames():
    return {
        "sales": pl.DataFrame({"id": [1, 2, 3, 4], "shop": ["a", "b", "a", "c"], "amount": [10.0, 20.0, 5.0, None]}),
        "shops": pl.DataFrame({"shop": ["a", "b"], "city": ["Montréal", "Québec"]}),
    }


def test_polars_frames_join_and_aggregate(frames):
    out = mlnb.sql(
        "SELECT s.city, sum(x.amount) AS total FROM sales x JOIN shops s USING (shop) GROUP BY ALL ORDER BY total DESC",
        **frames,
    )
    assert isinstance(out, pl.DataFrame)
    assert out.to_dicts() == [{"city": "Québec", "total": 20.0}, {"city": "Montréal", "total": 15.0}]


def test_frames_from_the_callers_variables():
    local_frame = pl.DataFrame({"x": [1, 2]})  # noqa: F841 - found by name from SQL
    assert mlnb.sql("SELECT count(*) AS n FROM local_frame").item() == 2


def test_lazy_pandas_and_arrow_inputs():
    lf = pl.LazyFrame({"x": [1, 2, 3]})
    pdf = pd.DataFrame({"x": [4]})
    tbl = pa.table({"x": [5, 6]})
    out = mlnb.sql("SELECT x FROM lf UNION ALL SELECT x FROM pdf UNION ALL SELECT x FROM tbl ORDER BY x", lf=lf, pdf=pdf, tbl=tbl)
    assert out["x"].to_list() == [1, 2, 3, 4, 5, 6]


def test_lazy_result():
    t = pl.DataFrame({"x": [1, 2, 3]})
    out = mlnb.sql("SELECT x * 2 AS y FROM t", t=t, _lazy=True)
    assert isinstance(out, pl.LazyFrame)
    assert out.collect()["y"].to_list() == [2, 4, 6]


def test_files_by_path(tmp_path):
    p = tmp_path / "d.parquet"
    pl.DataFrame({"a": [1, 2]}).write_parquet(p)
    c = tmp_path / "d.csv"
    c.write_text("a,b\n1,x\n2,y\n")
    assert mlnb.sql(f"SELECT sum(a) AS s FROM '{p}'").item() == 3
    assert mlnb.sql(f"SELECT b FROM '{c}' WHERE a = 2").item() == "y"


def test_parameters_are_bound_never_pasted():
    t = pl.DataFrame({"name": ["bob", "x'; DROP TABLE t; --"]})
    evil = "x'; DROP TABLE t; --"
    out = mlnb.sql("SELECT name FROM t WHERE name = $evil", t=t, evil=evil)
    assert out["name"].to_list() == [evil]
    # The value went in as data: a $ inside a string literal is not a parameter either.
    assert mlnb.sql("SELECT '$evil' AS s").item() == "$evil"


def test_undefined_parameter_is_a_clear_error():
    with pytest.raises(mlnb.QueryError, match=r"Parameter \$missing is not defined") as e:
        mlnb.sql("SELECT $missing")
    assert "^" in str(e.value)


@pytest.fixture
def session():
    s = Session()
    yield s
    s.close()


def test_several_statements_last_result_wins(session):
    s = session
    out = s.run("CREATE TABLE t AS SELECT 1 AS a; INSERT INTO t VALUES (2); SELECT sum(a) AS s FROM t;")
    assert out.item() == 3


def test_empty_query_is_a_clear_error():
    with pytest.raises(mlnb.QueryError, match="empty"):
        mlnb.sql("  -- only a comment\n ; ")


def test_zero_rows_nulls_unicode_and_spaced_names():
    t = pl.DataFrame({"prix unitaire": [1.5, None], "名前": ["é", None]}).clear()
    out = mlnb.sql('SELECT "prix unitaire", "名前" FROM t', t=t)
    assert out.shape == (0, 2) and out.columns == ["prix unitaire", "名前"]
    t2 = pl.DataFrame({"prix unitaire": [1.5, None], "名前": ["é", None]})
    out2 = mlnb.sql('SELECT "prix unitaire" * 2 AS p, "名前" FROM t2', t2=t2)
    assert out2.to_dicts() == [{"p": 3.0, "名前": "é"}, {"p": None, "名前": None}]


def test_syntax_error_is_short_with_a_caret():
    with pytest.raises(mlnb.QueryError) as e:
        mlnb.sql("SELECT 1,\nFROM WHERE")
    msg = str(e.value)
    assert "syntax error" in msg and "Traceback" not in msg
    lines = msg.splitlines()
    caret = next(ln for ln in lines if ln.strip() == "^")
    above = lines[lines.index(caret) - 1]
    assert above[caret.index("^")] in "FW"  # the caret points into the statement


def test_unknown_table_lists_frames_closest_first():
    customers = pl.DataFrame({"a": [1]})  # noqa: F841
    custom_orders = pl.DataFrame({"a": [1]})  # noqa: F841
    zebra = pl.DataFrame({"a": [1]})  # noqa: F841
    with pytest.raises(mlnb.QueryError) as e:
        mlnb.sql("SELECT * FROM customer")
    msg = str(e.value)
    assert "Unknown table 'customer'" in msg
    listed = msg.split("closest first: ")[1]
    assert listed.index("customers") < listed.index("zebra")


def test_unknown_column_points_at_it():
    t = pl.DataFrame({"amount": [1]})
    with pytest.raises(mlnb.QueryError) as e:
        mlnb.sql("SELECT amout FROM t", t=t)
    assert "amout" in str(e.value) and "amount" in str(e.value)


def test_error_renders_without_traceback_in_ipython():
    err = mlnb.QueryError("bad", statement="SELECT x", position=7)
    assert err._render_traceback_() == ["QueryError: " + str(err)]


def test_rebinding_a_name_and_mutating_pandas_are_seen(session):
    s = session
    ns = {"t": pl.DataFrame({"a": [1]})}
    assert s.run("SELECT sum(a) AS s FROM t", ns).item() == 1
    ns["t"] = pl.DataFrame({"a": [5, 5]})
    assert s.run("SELECT sum(a) AS s FROM t", ns).item() == 10
    pdf = pd.DataFrame({"a": [1]})
    ns["p"] = pdf
    assert s.run("SELECT count(*) AS n FROM p", ns).item() == 1
    pdf["b"] = [2]
    assert s.run("SELECT b FROM p", ns).item() == 2
    del ns["t"]
    with pytest.raises(mlnb.QueryError, match="Unknown table 't'"):
        s.run("SELECT * FROM t", ns)
