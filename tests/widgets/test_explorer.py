from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import mlnb
from mlnb.widgets import Explorer


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    d = mlnb.datasets.digits(tmp_path_factory.mktemp("digits"))
    return d.filter(pl.col("label").is_in(["0", "1", "7"])).head(90)


def send(ex, **msg):
    ex.widget._on_msg(ex.widget, msg, [])


def test_umap_is_cached_and_separates_classes(digits, _workspace):
    ex = Explorer(digits, features="pixels", color="label", image="path", random_state=0)
    assert ex.coords.shape == (90, 2)
    assert len(list((_workspace / "umap").glob("*.npy"))) == 1
    again = Explorer(digits, features="pixels", color="label", image="path", random_state=0)
    assert np.array_equal(again.coords, ex.coords)
    # classes form clusters: each point's nearest neighbour in 2-D mostly shares its label
    d = ((ex.coords[:, None] - ex.coords[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    labels = np.array(digits["label"].to_list())
    assert (labels[d.argmin(1)] == labels).mean() > 0.9


def test_colours_hover_selection_and_labelling(digits):
    ex = Explorer(digits, features="pixels", color="label", image="path")
    w = ex.widget
    assert w.categories == ["0", "1", "7"] and len(w.codes) == 90 * 4 and len(w.xy) == 90 * 8
    send(ex, type="color", column="label")
    send(ex, type="hover", index=4)
    assert w.hover_thumb[:3] == b"\xff\xd8\xff" and w.hover_info["fields"]["path"] == digits["path"][4]
    send(ex, type="select", indices=[0, 1, 2, 10])
    sel = ex.selection
    assert isinstance(sel, pl.DataFrame) and sel["path"].to_list() == digits["path"][[0, 1, 2, 10]].to_list()
    assert w.n_selected == 4 and len(w.grid) == 4
    send(ex, type="label", label="zero-ish")
    cur = mlnb.sql("SELECT item, label, source FROM labels")
    assert cur.height == 4 and set(cur["source"]) == {"explorer"}


def test_box_and_lasso(digits):
    ex = Explorer(digits, features="pixels", image="path")
    x0, y0 = ex.coords.min(0)
    x1, y1 = ex.coords.max(0)
    ex.select_box(x0, x1, y0, y1)
    assert len(ex.selected) == 90
    ex.select_lasso([(x0 - 1, y0 - 1), (x1 + 1, y0 - 1), (x1 + 1, y1 + 1), (x0 - 1, y1 + 1)])
    assert len(ex.selected) == 90


def test_bad_input(digits, tmp_path):
    with pytest.raises(mlnb.MlnbError, match="empty"):
        Explorer(digits.clear(), features="pixels")
    with pytest.raises(mlnb.MlnbError, match="No column 'feats'"):
        Explorer(digits, features="feats")
    mixed = pl.DataFrame({"f": [[1.0, 2.0], [1.0]]})
    with pytest.raises(mlnb.MlnbError, match="mixes vector lengths"):
        Explorer(mixed, features="f")
    ex = Explorer(digits.with_columns(pl.lit(str(tmp_path / "gone.png")).alias("path")), features="pixels", image="path")
    send(ex, type="hover", index=0)
    assert ex.widget.hover_thumb == b"" and "file not found" in ex.widget.hover_info["fields"]["image error"]
    send(ex, type="label", label="x")
    assert "Nothing is selected" in ex.widget.error


def test_colour_by_prediction_confidence_and_error(digits):
    head = mlnb.train_classifier(digits, features="pixels", label="label", folds=None)
    ex = Explorer(digits, features="pixels", image="path", head=head, label="label", color="is_error")
    assert {"predicted", "confidence", "is_error"} <= set(ex.frame.columns)
    cats, values = ex.color_values("confidence")
    assert cats == [] and values.min() > 0
    cats, codes = ex.color_values("predicted")
    assert cats == ["0", "1", "7"]


def test_three_d_layout(digits):
    ex = Explorer(digits, features="pixels", image="path", n_components=3)
    assert ex.coords.shape == (90, 3) and ex.widget.dims == 3 and len(ex.widget.xy) == 90 * 12


def test_umap_says_nothing_in_the_cell(capsys):
    import warnings

    from mlnb.widgets.explorer import umap_coordinates

    X = np.random.default_rng(1).normal(size=(80, 8)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        coords = umap_coordinates(X, n_neighbors=10)
    out = capsys.readouterr()
    assert coords.shape == (80, 2) and out.out == "" and out.err == "" and not caught
