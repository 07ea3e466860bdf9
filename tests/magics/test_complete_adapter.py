"""The IPython side of %%mlsql completion: where the SQL is, and what the shell's completer returns."""

from __future__ import annotations

import polars as pl
from IPython.core.completer import provisionalcompleter

from mlnb.magics._complete import sql_at


def test_sql_at_finds_the_query_around_the_cursor():
    cell = "%%mlsql -o out --lazy\nSELECT a\nFROM t"
    assert sql_at(cell, 1, 8) == ("SELECT a\nFROM t", 8)
    assert sql_at(cell, 2, 3) == ("SELECT a\nFROM t", 12)
    assert sql_at(cell, 0, 5) is None  # in the magic's own line: its options, not SQL
    line = "x = 1\nr = %mlsql -o r --lazy SELECT a FROM t"
    assert sql_at(line, 1, len("r = %mlsql -o r --lazy SELECT a")) == ("SELECT a FROM t", 8)
    assert sql_at(line, 0, 3) is None
    assert sql_at("print('%%mlsql')\nSELECT", 1, 6) is None  # not a cell magic
    assert sql_at("y = 10 %mlsql_other", 0, 18) is None


def completions(ip, code, cursor=None):
    cursor = len(code) if cursor is None else cursor
    with provisionalcompleter():
        return list(ip.Completer.completions(code, cursor))


def test_shell_completes_sql_and_only_sql(ip):
    ip.user_ns["images"] = pl.DataFrame({"path": ["a"], "label": ["cat"]})
    got = completions(ip, "%%mlsql\nSELECT la FROM images", len("%%mlsql\nSELECT la"))
    assert [c.text for c in got][:1] == ["label"]
    assert got[0].start == len("%%mlsql\nSELECT ") and got[0].type.startswith("column")
    assert not any(c.text == "lambda" for c in got)  # Python's keyword is not offered in SQL
    # a path inside a string: IPython's own file completion is left on
    got = completions(ip, "%%mlsql\nSELECT * FROM read_images('/us")
    assert any(c.text.startswith("/usr") or c.text.startswith("usr") for c in got)
    # Python cells are untouched
    assert "images" in [c.text for c in completions(ip, "imag")]


def test_loading_twice_keeps_one_matcher(ip):
    ip.run_line_magic("reload_ext", "mlnb")
    names = [getattr(m, "__name__", "") for m in ip.Completer.custom_matchers]
    assert names.count("mlsql_matcher") == 1


def test_no_python_names_where_sql_has_nothing_to_offer(ip):
    ip.user_ns["lo"] = 1
    ip.run_line_magic("load_ext", "mlnb")
    for code in ["%%mlsql\nCREATE CLASSIFIER x USING knn WITH (k = ", "%%mlsql\nCREATE CLASSIFIER ", "%%mlsql\nSELECT 1 -- a comment "]:
        got = [c.text for c in completions(ip, code)]
        assert got == [""], (code, got[:5])  # one completion that changes nothing: IPython's 300 builtins stay out
    # $ offers the notebook's variables, not IPython's own In / Out
    assert [c.text for c in completions(ip, "%mlsql SELECT $")] == ["$lo"]
