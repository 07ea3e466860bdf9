"""The labeler walks suspected label errors; the explorer colours by issue score and duplicate group."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from PIL import Image

import mlnb
from mlnb.exceptions import MlnbError
from mlnb.widgets import Labeler
from mlnb.widgets.explorer import Explorer


@pytest.fixture
def noisy(tmp_path):
    """18 images in two well separated classes; the labels of items 3 and 10 are flipped."""
    rng = np.random.default_rng(0)
    paths, truth = [], []
    for i in range(18):
        p = tmp_path / f"img{i:02d}.png"
        Image.new("RGB", (16, 16), (i * 12, 0, 0)).save(p)
        paths.append(str(p))
        truth.append("3" if i % 2 == 0 else "8")
    feats = np.array([[5.0, 0.0] if t == "3" else [0.0, 5.0] for t in truth]) + rng.normal(scale=0.5, size=(18, 2))
    given = list(truth)
    for i in (3, 10):
        given[i] = "3" if truth[i] == "8" else "8"
    return pl.DataFrame({"path": paths, "label": given, "truth": truth, "f": feats.astype(np.float32)})


def send(lab, **msg):
    lab.widget._on_msg(lab.widget, msg, [])


def test_labeler_walks_label_issues_and_writes_each_answer(noisy):
    issues = mlnb.label_issues(noisy, features="f", folds=3)
    assert set(issues.head(2).get_column("path")) == {noisy["path"][3], noisy["path"][10]}
    lab = mlnb.label(noisy, image="path", review=issues)
    # The walk is ordered by score, most suspicious first, and each tile says what is in question.
    first, second = lab.page_ids()[:2]
    assert {first, second} == {noisy["path"][3], noisy["path"][10]}
    item = lab.widget.items[0]
    assert item["item"] == first
    given = noisy.filter(pl.col("path") == first)["label"].item()
    suggested = "3" if given == "8" else "8"
    assert item["review"]["current"] == given and item["review"]["suggested"] == suggested
    assert "reviewing 18 suspected label errors" in lab.widget.status
    # Enter accepts the suggestion on the tile the view drew as selected; the walk moves on.
    send(lab, type="key", key="Enter", items=[first], cursor=first)
    assert lab.state[first].label == suggested
    assert lab.selected_items() == [second]
    # k keeps the current label (here: wrongly, to show it is written as given).
    send(lab, type="key", key="k", items=[second], cursor=second)
    kept = noisy.filter(pl.col("path") == second)["label"].item()
    assert lab.state[second].label == kept
    # A class key gives another label; everything is in the label store, in that order.
    third = lab.selected_items()[0]
    send(lab, type="key", key="8", items=[third], cursor=third)
    store = lab.labels.sort("item")
    assert dict(zip(store["item"], store["label"])) == {first: suggested, second: kept, third: "8"}
    # The decided tiles now show their label, the tag of the next one its review.
    items = {it["item"]: it for it in lab.widget.items}
    assert items[first]["kind"] == "label" and items[first]["review"]["current"] == suggested
    # Undo takes an answer back.
    send(lab, type="key", key="z", ctrl=True)
    assert third not in lab.state


def test_review_from_sql_result_and_bad_input(noisy):
    issues = mlnb.sql("SELECT path, given_label, suggested_label, label_quality FROM label_issues(noisy, features := 'f', folds := 3) WHERE rank <= 4", noisy=noisy)
    lab = Labeler(noisy, image="path")
    lab.review(issues)
    assert len(lab.reviews) == 4 and lab.page_ids()[:4] == issues.sort("label_quality")["path"].to_list()
    # k on an item not under review changes nothing and says why.
    other = lab.page_ids()[5]
    lab.key("k", items=[other], cursor=other)
    assert other not in lab.state and "not" in lab.status
    with pytest.raises(MlnbError, match="no column 'suggested_label'"):
        lab.review(issues.drop("suggested_label"))
    with pytest.raises(MlnbError, match="none of the issues"):
        lab.review(issues.with_columns(pl.lit("elsewhere.png").alias("path")))


def test_explorer_colours_by_issue_score_and_duplicate_group(noisy):
    issues = mlnb.label_issues(noisy, features="f", folds=3)
    ex = Explorer(issues, features="f", image="path", layout="pca")
    offered = ex.color_columns()
    assert {"label_quality", "is_issue", "suggested_label", "rank"} <= set(offered)
    ex.set_color("label_quality")
    assert ex.color_spec["kind"] == "continuous" and not ex.message
    # Duplicate groups: singletons are null, so colouring shows only the groups.
    wide = np.random.default_rng(1).standard_normal((18, 16)).astype(np.float32)
    wide[5] = wide[4] * 1.01
    dup = noisy.with_columns(pl.Series("f", wide))
    groups = mlnb.duplicate_groups(dup, features="f", threshold=0.99)
    ex = Explorer(groups, features="f", image="path", layout="pca", color="duplicate_group")
    assert "duplicate_group" in ex.color_columns()
    assert ex.color_spec["kind"] == "categorical" and ex.color_spec["categories"] == ["1"]
    assert ex.color_spec["nulls"] == 16 and ex.color_spec["counts"][0] == 2
    out = mlnb.outliers(noisy, features="f", k=3)
    ex = Explorer(out, features="f", image="path", layout="pca", color="outlier_score")
    assert ex.color_spec["kind"] == "continuous"
