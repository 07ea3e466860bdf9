"""The parsed statement: split, offsets, params, names, calls and kinds, on DuckDB's tokenizer."""

from __future__ import annotations

import threading
import time
import warnings

import polars as pl
import pyarrow as pa
import pytest

import mlnb
from mlnb.sql._parse import Statement, parse


def test_split_ignores_semicolons_in_nested_comments_and_e_strings():
    stmts = parse("SELECT 1 /* a /* b */ ; */ AS x; SELECT 2")
    assert [s.text for s in stmts] == ["SELECT 1 /* a /* b */ ; */ AS x", "SELECT 2"]
    assert stmts[1].offset == 33 and (stmts[0].number, stmts[1].number, stmts[1].count) == (1, 2, 2)
    (one,) = parse("SELECT E'\\'; SELECT 2 AS hidden --' AS s")
    assert one.text.endswith("AS s")
    (dollar,) = parse("SELECT $$a;b$$, $tag$x;y$tag$ AS d")
    assert dollar.tokens[1].kind == "string"


def test_comment_only_statements_are_dropped():
    assert [s.text for s in parse("-- nothing\n; SELECT 1; /* x */")] == ["SELECT 1"]
    assert parse("  ") == []


def test_comments_around_a_statement_are_not_its_text():
    # A cell "-- export it" + "EXPORT CLASSIFIER ..." was sent to DuckDB ("syntax error at or near CLASSIFIER").
    first, second = parse("-- export it\nEXPORT CLASSIFIER h TO 'h.onnx' -- done\n; /* list */ SHOW CLASSIFIERS /* end */")
    assert (first.text, first.kind, first.offset) == ("EXPORT CLASSIFIER h TO 'h.onnx'", "export_classifier", 13)
    assert (second.text, second.kind) == ("SHOW CLASSIFIERS", "show_classifiers")
    assert Statement.of("SELECT 1 -- inner\n AS x -- after").text == "SELECT 1 -- inner\n AS x"
    assert mlnb.sql("-- which heads\nSHOW CLASSIFIERS").columns[:2] == ["name", "version"]


def test_params_names_and_calls():
    s = Statement.of("SELECT flower({* EXCLUDING(label)}) AS p, '$no' FROM iris WHERE x = $lab -- $neither")
    assert [p.text for p in s.params] == ["$lab"]
    assert s.params[0].start == s.text.index("$lab")
    assert {"iris", "x", "label"} <= s.names
    assert [c.name for c in s.calls if c.name == "flower"] == ["flower"]
    assert len(s.row_exprs) == 1 and s.row_exprs[0].braces


def test_offsets_are_characters_not_bytes():
    s = Statement.of('SELECT "名前", \'é\' FROM t WHERE a = $p')
    assert s.text[s.params[0].start : s.params[0].end] == "$p"
    assert s.tokens[-1].text == "$p"


def test_literal_options_and_quoted_names():
    s = Statement.of("SELECT embed(path, model := 'resnet18', layer := 'layer3'), \"digit@2\"(f) FROM t")
    embed = s.calls_named(["embed"])[0]
    assert s.literal_options(embed) == {"model": "resnet18", "layer": "layer3"}
    assert "digit@2" in [c.name for c in s.calls]
    dyn = Statement.of("SELECT embed(path, model := m) FROM t")
    assert dyn.literal_options(dyn.calls[0]) is None


@pytest.mark.parametrize(
    "text,kind",
    [
        ("CREATE OR REPLACE CLASSIFIER c AS SELECT 1", "create_classifier"),
        ("create classifier c as select 1", "create_classifier"),
        ("EVALUATE CLASSIFIER c", "evaluate_classifier"),
        ("SHOW CLASSIFIERS", "show_classifiers"),
        ("DROP CLASSIFIER IF EXISTS c", "drop_classifier"),
        ("SHOW FUNCTIONS LIKE 'e%'", "show_functions"),
        ("CREATE OR REPLACE FUNCTION f(x) AS x", "create_function"),
        ("DROP FUNCTION IF EXISTS f", "drop_function"),
        ("CREATE TEMP FUNCTION f(x) AS x", "sql"),
        ("CREATE MACRO m(x) AS x", "sql"),
        ("CREATE MODEL m FROM 'w.pth'", "create_model"),
        ("SHOW MODELS", "show_models"),
        ("DROP MODEL m", "drop_model"),
        ("EXPORT OR REPLACE CLASSIFIER c TO 'c.onnx'", "export_classifier"),
        ("SET mlnb_engine = 'ray'", "setting"),
        ("RESET mlnb_engine", "setting"),
        ("SET threads = 2", "sql"),
        ("CREATE TABLE classifier AS SELECT 1", "sql"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "sql"),
    ],
)
def test_kinds(text, kind):
    assert Statement.of(text).kind == kind


def test_struct_literals_and_strings_are_not_row_expressions():
    s = Statement.of("SELECT {'k': 1}, '{* EXCLUDING(x)}', {a: 1} FROM t")
    assert s.row_exprs == []


def test_sub_statement_shares_tokens():
    s = Statement.of("CREATE CLASSIFIER c AS WITH w AS (SELECT 1 AS a) SELECT a FROM w")
    sub = s.sub(s.text.index("WITH"))
    assert sub.text == "WITH w AS (SELECT 1 AS a) SELECT a FROM w"
    assert sub.tokens[0].start == 0 and sub.offset == s.text.index("WITH")


# -- bad input: one short message, with the statement and a caret --------------------
@pytest.fixture
def wide():
    return pl.DataFrame({"id": [1, 2], "x1": [0.5, 1.5], "note": ["a", "b"], "label": ["cat", "dog"]})


def _caret_under(err: mlnb.QueryError, word: str) -> None:
    assert err.position is not None and err.statement[err.position :].startswith(word), (err.position, str(err))
    assert "Traceback" not in str(err)


def test_unknown_column_in_excluding_inside_a_cte(wide):
    with pytest.raises(mlnb.QueryError, match="'lable' in EXCLUDING not found") as e:
        mlnb.sql("WITH w AS (SELECT * FROM wide) SELECT {* EXCLUDING(lable)} AS f FROM w", wide=wide)
    _caret_under(e.value, "lable")


def test_row_expression_with_no_numeric_column(wide):
    with pytest.raises(mlnb.QueryError, match="no numeric column") as e:
        mlnb.sql("SELECT {* EXCLUDING(id, x1)} AS f FROM wide", wide=wide)
    _caret_under(e.value, "{*")


def test_row_expression_over_an_unbindable_table_function(tmp_path):
    with pytest.raises(mlnb.QueryError) as e:
        mlnb.sql(f"SELECT {{*}} AS f FROM read_csv('{tmp_path}/missing.csv')")
    assert "missing.csv" in str(e.value) and "Traceback" not in str(e.value)


def test_undefined_param(wide):
    with pytest.raises(mlnb.QueryError, match=r"\$nope is not defined") as e:
        mlnb.sql("SELECT count(*) FROM wide WHERE id = $nope", wide=wide)
    _caret_under(e.value, "$nope")


def test_a_cell_with_a_syntax_error_runs_nothing(wide):
    with pytest.raises(mlnb.QueryError, match="Statement 3 of 3") as e:
        mlnb.sql("CREATE TABLE made AS SELECT 1 AS a; SELECT 2; SELEC oops", wide=wide)
    _caret_under(e.value, "SELEC")
    with pytest.raises(mlnb.QueryError, match="made"):
        mlnb.sql("SELECT * FROM made")


def test_a_cell_stops_at_the_failing_statement(wide):
    with pytest.raises(mlnb.QueryError, match="Statement 2 of 3 failed; the ones before it ran, the rest did not run"):
        mlnb.sql("CREATE TABLE first AS SELECT 1 AS a; SELECT nope FROM wide; CREATE TABLE third AS SELECT 3", wide=wide)
    assert mlnb.sql("SELECT a FROM first").item() == 1
    with pytest.raises(mlnb.QueryError):
        mlnb.sql("SELECT * FROM third")


def test_frames_and_tables_of_the_same_name(wide):
    with pytest.raises(mlnb.QueryError, match="notebook frame, not a DuckDB view"):
        mlnb.sql("DROP VIEW wide", wide=wide)
    with pytest.raises(mlnb.QueryError, match="frame wins"):
        mlnb.sql("CREATE TABLE wide AS SELECT 1 AS a", wide=wide)
    assert mlnb.sql("SELECT count(*) FROM wide", wide=wide).item() == 2
    with pytest.raises(mlnb.QueryError) as e:
        mlnb.sql("SELECT * FROM wdie", wide=wide)
    assert "closest first: wide" in str(e.value)


def test_line_magic_binds_dollar_names(ip):
    ip.user_ns["feats"] = pl.DataFrame({"label": ["rocket", "cat", "rocket"]})
    ip.user_ns["lab"] = "rocket"
    ip.run_cell("_r = %mlsql SELECT count(*) AS n FROM feats WHERE label = $lab")
    assert ip.user_ns["_r"].item() == 2


# -- per-statement state ----------------------------------------------------------------
def test_a_query_reports_exactly_its_own_failures_while_a_background_thread_reports_others():
    from mlnb._report import collecting, report_failure

    @mlnb.function(returns="DOUBLE", replace=True)
    def slow_bad(x: str):
        "Reports each row as bad, slowly."
        for v in x.to_pylist():
            report_failure(v, "bad on purpose")
            time.sleep(0.01)
        return pa.array([None] * len(x), type=pa.float64())

    stop = threading.Event()
    background: list[list[tuple]] = []

    def retrain_loop() -> None:  # what the labeler's retraining thread does: its own collecting block
        while not stop.is_set():
            with collecting() as c:
                report_failure("background.png", "background reason")
                time.sleep(0.005)
            background.append(list(c.rows))

    t = threading.Thread(target=retrain_loop)
    t.start()
    try:
        rows = pl.DataFrame({"p": [f"q{i}.png" for i in range(30)]})
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            mlnb.sql("SELECT slow_bad(p) FROM rows", rows=rows)
    finally:
        stop.set()
        t.join()
    # (warnings are process-wide: the background's own warnings are recorded here too)
    msgs = [str(w.message) for w in got if issubclass(w.category, mlnb.ImageLoadWarning)]
    mine = [m for m in msgs if "q0.png" in m]
    assert len(mine) == 1 and "30 images could not be used" in mine[0]
    assert "background.png" not in mine[0]
    assert all("q" not in m.split(":", 1)[1].replace("background", "") for m in msgs if m not in mine)
    assert background and all(rows == [("background.png", "background reason", True)] for rows in background)
