from __future__ import annotations

import polars as pl
import pytest
from PIL import Image

import mlnb


def test_cell_magic_result_in_underscore_and_out(ip):
    ip.run_cell("import polars as pl\nt = pl.DataFrame({'a': [1, 2, 3]})")
    ip.run_cell("%%mlsql -o res\nSELECT sum(a) AS s FROM t")
    assert ip.user_ns["res"].item() == 6
    assert ip.user_ns["_"].item() == 6


def test_line_magic_and_params(ip):
    ip.run_cell("import polars as pl\nt = pl.DataFrame({'a': [1, 2, 3]})\nlo = 1")
    ip.run_cell("%mlsql -o n SELECT count(*) AS n FROM t WHERE a > $lo")
    assert ip.user_ns["n"].item() == 2


def test_lazy_flag(ip):
    ip.run_cell("import polars as pl\nt = pl.DataFrame({'a': [1, 2, 3]})")
    ip.run_cell("%%mlsql --lazy -o lf\nSELECT a FROM t")
    assert isinstance(ip.user_ns["lf"], pl.LazyFrame)


def test_injection_value_stays_data(ip):
    ip.run_cell("import polars as pl\nt = pl.DataFrame({'name': ['a']})\nname = \"x'; DROP TABLE t; --\"")
    ip.run_cell("%%mlsql -o r\nSELECT count(*) AS n FROM t WHERE name = $name")
    assert ip.user_ns["r"].item() == 0
    ip.run_cell("%%mlsql -o r2\nSELECT count(*) AS n FROM t")
    assert ip.user_ns["r2"].item() == 1


def test_several_statements(ip):
    ip.run_cell("%%mlsql -o r\nCREATE OR REPLACE TABLE m AS SELECT 1 AS a;\nINSERT INTO m VALUES (41);\nSELECT sum(a) AS s FROM m")
    assert ip.user_ns["r"].item() == 42


def test_errors_are_short_in_the_shell(ip, capsys):
    ip.run_cell("import polars as pl\nmy_table = pl.DataFrame({'a': [1]})")
    with pytest.raises(mlnb.QueryError) as e:
        ip.run_cell("%%mlsql\nSELECT * FROM my_tabel")
    assert "my_table" in str(e.value)
    # what IPython prints: one short message, no traceback frames
    ip.showtraceback = type(ip).showtraceback.__get__(ip)
    lines = e.value._render_traceback_()
    assert len("\n".join(lines).splitlines()) < 10 and not any("File " in ln for ln in lines)


def test_empty_cell_is_a_clear_error(ip):
    with pytest.raises(mlnb.QueryError, match="empty"):
        ip.run_cell("%%mlsql\n\n")


def test_comment_line_is_sql_not_an_option(ip):
    ip.run_cell("%mlsql -o r SELECT 1 AS one -- trailing comment")
    assert ip.user_ns["r"].item() == 1


def test_unknown_option(ip):
    with pytest.raises(mlnb.MlnbError, match="Unknown option"):
        ip.run_cell("%mlsql --fast SELECT 1")


def test_html_shows_thumbnails_for_image_paths(ip, tmp_path):
    p = tmp_path / "red.png"
    Image.new("RGB", (20, 10), (255, 0, 0)).save(p)
    ip.user_ns["imgs"] = pl.DataFrame({"path": [str(p), str(tmp_path / "missing.png")]})
    ip.run_cell("%%mlsql -o r\nSELECT path FROM imgs")
    fmt = ip.display_formatter.formatters["text/html"]
    html = fmt(ip.user_ns["r"])
    assert "data:image/jpeg;base64," in html and "missing.png" in html
    plain = fmt(pl.DataFrame({"a": [1]}))
    assert "data:image" not in plain and "<table" in plain
