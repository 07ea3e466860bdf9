"""Result tables a person can read (mlnb.sql._display)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from PIL import Image

import mlnb
from mlnb.sql._display import format_number, html_formatter, image_columns, to_html


def test_floats_keep_four_significant_digits():
    assert format_number(0.00044450530549511313) == "0.0004445"
    assert format_number(0.3412345) == "0.3412"
    assert format_number(12.3456) == "12.35"
    assert format_number(2.0e9) == "2.000e+09"
    assert "0.00044450530549511313" not in to_html(pl.DataFrame({"p": [0.00044450530549511313]}))


def test_arrays_and_topk_structs_are_summarised():
    feats = pl.DataFrame({"f": [np.linspace(0, 1, 1280, dtype=np.float32)]}, schema={"f": pl.Array(pl.Float32, 1280)})
    html = to_html(feats)
    assert "FLOAT[1280] [0, 0.0007819, 0.001564, …]" in html and html.count(",") < 20
    top = pl.DataFrame(
        {"top": [[{"label": "Egyptian cat", "probability": 0.3412}, {"label": "tabby", "probability": 0.2134},
                  {"label": "tiger cat", "probability": 0.1}, {"label": "lynx", "probability": 0.05}]]}
    )  # fmt: skip
    assert "Egyptian cat 0.34, tabby 0.21, tiger cat 0.1, …" in to_html(top)


def test_bare_file_names_are_text_and_urls_are_not_fetched(tmp_path, monkeypatch):
    names = pl.DataFrame({"file": ["a.jpg", "b.png", "c.jpg"]})
    assert image_columns(names) == []
    assert "⚠" not in to_html(names) and "not found" not in to_html(names)

    def no_fetch(*_a, **_k):
        raise AssertionError("a URL was fetched while a table was drawn")

    monkeypatch.setattr("mlnb.images.thumbnail", no_fetch)
    urls = pl.DataFrame({"url": [f"https://example.org/{i}.jpg" for i in range(50)]})
    html = to_html(urls, limit=50)
    assert html.count("<a href='https://example.org/") == 50 and "remote_thumbnails = True" in html


def test_display_limit_holds_for_every_frame(monkeypatch):
    monkeypatch.setattr(mlnb.config, "display_limit", 7)
    html = html_formatter(pl.DataFrame({"a": list(range(100))}))
    assert html.count("<tr>") == 1 + 7 and "93 more rows" in html


def test_displaylimit_config_is_mirrored(ip, monkeypatch):
    monkeypatch.setattr(mlnb.config, "display_limit", 20)
    ip.run_cell("%config MlsqlMagic.displaylimit = 3")
    try:
        assert mlnb.config.display_limit == 3
        ip.user_ns["t"] = pl.DataFrame({"a": list(range(10))})
        html = ip.display_formatter.formatters["text/html"](ip.user_ns["t"])
        assert html.count("<tr>") == 4
    finally:
        ip.run_cell("%config MlsqlMagic.displaylimit = 20")


@pytest.mark.parametrize("missing_first", [False, True])
def test_image_column_with_a_missing_file_warns_only_there(tmp_path, missing_first):
    p = tmp_path / "red.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(p)
    paths = [str(tmp_path / "gone.png"), str(p)] if missing_first else [str(p), str(tmp_path / "gone.png")]
    html = to_html(pl.DataFrame({"path": paths}))
    assert html.count("data:image/jpeg;base64,") == 1 and html.count("⚠") == 1
