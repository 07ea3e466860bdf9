"""The explorer's controller, driven the way the browser drives it: traits read, messages sent."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import mlnb
from mlnb.widgets import Explorer


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    d = mlnb.datasets.digits(tmp_path_factory.mktemp("digits"))
    return d.filter(pl.col("label").is_in(["0", "1", "7"])).head(90)


class Sent(list):
    """What the view sent to the browser as custom messages."""


def view(ex):
    w = ex.widget
    if not hasattr(w, "sent"):
        w.sent = Sent()
        w.send = lambda content, buffers=None: w.sent.append((content, buffers or []))
    return w


def send(ex, buffers=(), **msg):
    w = view(ex)
    w._on_msg(w, msg, list(buffers))
    return w


def f32(b):
    return np.frombuffer(b, dtype=np.float32)


def test_pca_at_once_then_umap_in_the_background_and_cached(digits, _workspace):
    ex = Explorer(digits, features="pixels", color="label", image="path", random_state=0)
    w = view(ex)
    assert w.layout == "PCA" and len(w.xy) == 90 * 8  # PCA drawn at once, before UMAP is done
    ex.wait(120)
    assert ex.layout == "umap" and w.layout == "UMAP" and w.progress == ""
    assert np.array_equal(f32(w.xy).reshape(-1, 2), ex.coords[:, :2])  # the browser got the UMAP layout
    # classes form clusters: each point's nearest neighbour in 2-D mostly shares its label
    d = ((ex.coords[:, None] - ex.coords[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    labels = np.array(digits["label"].to_list())
    assert (labels[d.argmin(1)] == labels).mean() > 0.9
    again = Explorer(digits, features="pixels", color="label", image="path", random_state=0)
    assert again.layout == "umap" and np.array_equal(again.coords, ex.coords)  # from the workspace cache, no wait


def test_layout_switching_from_the_browser(digits):
    ex = Explorer(digits, features="pixels", image="path", layout="pca")
    w = view(ex)
    assert ex.layout == "pca" and w.layouts == ["PCA", "UMAP", "t-SNE"]
    send(ex, type="layout", method="t-SNE")
    ex.wait(120)
    assert ex.layout == "tsne" and w.layout == "t-SNE" and np.isfinite(ex.coords).all()
    send(ex, type="layout", method="PCA")
    assert ex.layout == "pca" and w.layout == "PCA"
    send(ex, type="layout", method="spiral")
    assert "No layout 'spiral'" in w.error


def test_colours_offered_and_encoded(digits):
    df = digits.with_columns(
        pl.int_range(pl.len()).alias("row_id"),
        pl.col("path").alias("other_path"),
        (pl.int_range(pl.len()) % 3 == 0).alias("flag"),
        pl.int_range(pl.len()).cast(pl.String).alias("many"),
        (pl.int_range(pl.len()).cast(pl.Float64) / 7).alias("score"),
    )
    ex = Explorer(df, features="pixels", color="label", image="path", layout="pca")
    w = view(ex)
    offered = w.color_columns
    assert {"label", "flag", "row_id", "score", "label store"} <= set(offered)
    assert not {"pixels", "path", "other_path"} & set(offered)  # arrays and paths are never colours
    assert "many" not in offered  # 90 distinct strings: no legend can show them

    spec = w.color_spec
    assert spec["kind"] == "categorical" and spec["categories"] == ["0", "1", "7"] and sum(spec["counts"]) == 90
    codes = f32(w.codes)
    assert len(codes) == 90 and set(codes.tolist()) == {0.0, 1.0, 2.0}
    assert [spec["categories"][int(c)] for c in codes] == df["label"].to_list()

    send(ex, type="color", column="score")
    spec, codes = w.color_spec, f32(w.codes)
    assert spec["kind"] == "continuous" and spec["min"] == 0 and spec["max"] == pytest.approx(89 / 7)
    assert codes[0] == 0 and codes[-1] == spec["bins"] - 1 and (np.diff(codes) >= 0).all()

    send(ex, type="color", column="many")  # asked for by name: a message in the widget, one colour
    assert "90 distinct values" in w.message and w.color_spec["kind"] == "none"
    send(ex, type="color", column="")
    assert w.color_spec["kind"] == "none" and w.message == ""


def test_colour_with_nulls_nan_and_a_huge_category_column():
    rng = np.random.default_rng(0)
    n = 100_000
    df = pl.DataFrame({
        "f": rng.normal(size=(n, 4)).astype(np.float32),
        "id": [f"x{i}" for i in range(n)],
        "v": np.where(np.arange(n) % 10 == 0, np.nan, rng.normal(size=n)),
        "c": pl.Series(["a", None, "b", "a"] * (n // 4)),
    })  # fmt: skip
    ex = Explorer(df, features="f", color="id", layout="pca")
    w = view(ex)
    assert "100,000 distinct values" in w.message and "id" not in w.color_columns
    ex.set_color("v")
    spec, codes = ex.color_spec, ex.codes
    assert spec["nulls"] == n // 10 and (codes[::10] == spec["bins"]).all()
    ex.set_color("c")
    assert ex.color_spec["categories"] == ["a", "b"] and ex.color_spec["counts"] == [n // 2, n // 4, n // 4]
    assert (ex.codes[1::4] == 2).all()  # nulls: the grey category after the named ones


def test_hover_fields_and_thumbnail(digits):
    ex = Explorer(digits, features="pixels", color="label", image="path", layout="pca")
    w = send(ex, type="hover", index=4)
    content, buffers = w.sent[-1]
    assert content["type"] == "hover" and content["index"] == 4
    assert buffers[0][:3] == b"\xff\xd8\xff"  # a JPEG thumbnail
    fields = content["fields"]
    assert fields["item"] == Path(digits["path"][4]).name  # the file name, not the full path
    assert fields["label"] == digits["label"][4] and fields["row"] == 4


def test_selection_from_the_browser_from_python_and_from_sql(digits):
    ex = Explorer(digits, features="pixels", color="label", image="path", layout="pca")
    w = send(ex, [np.array([10, 2, 1, 0], dtype=np.int32).tobytes()], type="select", n=4)
    sel = ex.selection
    assert isinstance(sel, pl.DataFrame) and sel["path"].to_list() == digits["path"][[0, 1, 2, 10]].to_list()
    assert sel.columns == digits.columns and w.status.startswith("4 selected")
    # the grid asks for thumbnails as tiles come into view
    send(ex, type="thumbs", indices=[0, 1, 2, 10])
    content, buffers = w.sent[-1]
    assert content["indices"] == [0, 1, 2, 10] and all(b[:3] == b"\xff\xd8\xff" for b in buffers)
    # from Python: the browser is told
    assert ex.select([5, 6]) == 2
    content, buffers = w.sent[-1]
    assert content["type"] == "select" and np.frombuffer(buffers[0], dtype=np.int32).tolist() == [5, 6]
    # from SQL: a condition, or a whole query over the table `explorer`
    assert ex.select(query="label = '7'") == (digits["label"] == "7").sum()
    assert set(ex.selection["label"]) == {"7"}
    assert ex.select(query="SELECT _row FROM explorer WHERE _row < $lo", lo=3) == 3
    with pytest.raises(mlnb.MlnbError, match="_row"):
        ex.select(query="SELECT label FROM explorer")
    with pytest.raises(mlnb.MlnbError, match="out of range"):
        ex.select([90])
    # Esc in the browser: an empty selection
    send(ex, [b""], type="select", n=0)
    assert ex.selection.height == 0 and w.status == ""


def test_label_selection_is_on_disk_and_colours_by_labels(digits):
    ex = Explorer(digits, features="pixels", image="path", layout="pca")
    w = send(ex, [np.arange(4, dtype=np.int32).tobytes()], type="select", n=4)
    send(ex, type="color", column="label store")
    assert w.color_spec["kind"] == "categorical" and w.color_spec["categories"] == []
    send(ex, type="label", label="zero-ish")
    assert w.status == "labelled 4 points as 'zero-ish'" and w.error == ""
    cur = mlnb.sql("SELECT item, label, source FROM labels")
    assert cur.height == 4 and set(cur["source"]) == {"explorer"} and set(cur["label"]) == {"zero-ish"}
    assert w.color_spec["categories"] == ["zero-ish"] and w.color_spec["counts"] == [4, 86]  # recoloured
    send(ex, type="label", label="  ")
    assert "Type a label" in w.error


def test_saved_selection_is_a_sql_table(digits, _workspace):
    ex = Explorer(digits, features="pixels", color="label", image="path", layout="pca")
    ex.select(query="label = '1'")
    send(ex, type="save", name="ones")
    assert ex.widget.status.startswith("saved") and (_workspace / "selections" / "ones.parquet").exists()
    out = mlnb.sql("SELECT count(*) AS n, min(label) AS l FROM ones")
    assert out["n"][0] == (digits["label"] == "1").sum() and out["l"][0] == "1"
    from mlnb.sql import Session

    later = Session()  # as in a later kernel: the table comes from the workspace
    assert later.run("SELECT count(*) AS n FROM ones", {}, lazy=False)["n"][0] == out["n"][0]
    send(ex, type="save", name="drop table x")
    assert "not a table name" in ex.widget.error


def test_box_and_lasso_in_layout_coordinates(digits):
    ex = Explorer(digits, features="pixels", image="path", layout="pca")
    x0, y0 = ex.coords.min(0)
    x1, y1 = ex.coords.max(0)
    assert ex.select_box(x0, x1, y0, y1) == 90
    assert ex.select_lasso([(x0 - 1, y0 - 1), (x1 + 1, y0 - 1), (x1 + 1, y1 + 1), (x0 - 1, y1 + 1)]) == 90
    mid = (x0 + x1) / 2
    assert ex.select_box(x0, mid, y0, y1) == (ex.coords[:, 0] <= mid).sum()


def test_bad_input_is_a_message_in_the_widget(digits, tmp_path):
    # whole-frame problems: a message in the widget's own area, no plot
    for frame, what in [
        (digits.clear(), "0 rows"),
        (digits.head(2), "2 rows"),
        (digits.with_columns(pl.lit(None, dtype=pl.List(pl.Float32)).alias("pixels")), "90 rows without features"),
    ]:
        ex = Explorer(frame, features="pixels")
        w = view(ex)
        assert what in w.problem and "at least 3" in w.problem and w.xy == b""
    nan = np.ones((4, 3), dtype=np.float32)
    nan[1, 0], nan[3, 2] = np.nan, np.inf
    ex = Explorer(pl.DataFrame({"f": nan}), features="f")
    assert "at least 3" in view(ex).problem and "2 rows with NaN/inf" in view(ex).problem
    # rows left out and counted
    X = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    X[5] = np.nan
    df = pl.DataFrame({"f": X}).with_columns(pl.when(pl.int_range(pl.len()) == 7).then(None).otherwise(pl.col("f")).alias("f"))
    ex = Explorer(df, features="f", layout="pca")
    assert view(ex).problem == "" and ex.frame.height == 38 and ex.rows.tolist() == [i for i in range(40) if i not in (5, 7)]
    assert "1 row without features" in view(ex).status and "1 row with NaN/inf" in view(ex).status
    # constant features: drawn (all in one place), said
    ex = Explorer(pl.DataFrame({"f": np.ones((10, 4), dtype=np.float32)}), features="f")
    assert np.isfinite(ex.coords).all() and "same features" in view(ex).status
    # argument mistakes are errors at the call
    with pytest.raises(mlnb.MlnbError, match="No column 'feats'"):
        Explorer(digits, features="feats")
    with pytest.raises(mlnb.MlnbError, match="layout="):
        Explorer(digits, features="pixels", layout="spiral")
    with pytest.raises(mlnb.MlnbError, match="coords"):
        Explorer(digits, features="pixels", coords=np.zeros((3, 2)))
    # unreadable images: the hover says why, the grid tile names it
    ex = Explorer(digits.with_columns(pl.lit(str(tmp_path / "gone.png")).alias("path")), features="pixels", image="path", layout="pca")
    w = send(ex, type="hover", index=0)
    content, buffers = w.sent[-1]
    assert buffers == [b""] and "cannot be read" in content["fields"]["image"]
    send(ex, type="thumbs", indices=[0])
    assert "cannot be read" in w.sent[-1][0]["titles"][0]
    send(ex, type="label", label="x")
    assert "Nothing is selected" in w.error


def test_colour_by_prediction_confidence_and_error(digits):
    head = mlnb.train_classifier(digits, features="pixels", label="label", folds=None)
    ex = Explorer(digits, features="pixels", image="path", head=head, label="label", color="is_error", layout="pca")
    assert {"predicted", "confidence", "is_error"} <= set(ex.frame.columns)
    assert {"predicted", "confidence", "is_error"} <= set(view(ex).color_columns)
    assert ex.color_spec["kind"] == "categorical" and set(ex.color_spec["categories"]) <= {"false", "true"}
    ex.set_color("confidence")
    assert ex.color_spec["kind"] == "continuous" and 0 < ex.color_spec["min"] <= ex.color_spec["max"] <= 1
    ex.set_color("predicted")
    assert ex.color_spec["categories"] == ["0", "1", "7"]
    # the input's own column of that name is not replaced behind the person's back
    with pytest.raises(mlnb.MlnbError, match="own predicted column"):
        Explorer(digits.with_columns(pl.lit("mine").alias("predicted")), features="pixels", head=head, layout="pca")


def test_given_coords_and_three_d(digits):
    rng = np.random.default_rng(0)
    ex = Explorer(digits, features="pixels", coords=rng.normal(size=(90, 3)))
    w = view(ex)
    assert ex.layout == "given" and w.layouts[0] == "given" and len(w.xy) == 90 * 8  # drawn by its first two axes
    given = ex.coords.copy()
    send(ex, type="layout", method="PCA")
    send(ex, type="layout", method="given")  # offered in the menu, so it can be chosen again
    assert w.error == "" and ex.layout == "given" and w.layout == "given" and np.array_equal(ex.coords, given)
    ex = Explorer(digits, features="pixels", layout="pca", n_components=3)
    assert ex.coords.shape == (90, 3)


def test_bundle_is_built_from_the_current_source():
    """js/build.sh stamps a hash of the source into the built file: edit the source, rebuild."""
    root = Path(__file__).resolve().parents[2]
    built = (root / "mlnb" / "widgets" / "explorer.js").read_text()
    stamp = re.search(r"source hash ([0-9a-f]{16})", built.splitlines()[0]).group(1)
    src = b"".join((root / "js" / p).read_bytes() for p in ("src/explorer.js", "package-lock.json", "patches/regl-scatterplot.mjs"))
    assert stamp == hashlib.sha256(src).hexdigest()[:16], "mlnb/widgets/explorer.js is stale: run `bash dev js`"


def test_features_of_another_length_empty_or_not_numbers():
    # rows whose vector is not the common length are left out and counted (like NaN rows)
    rows = [[float(i), float(i % 3)] for i in range(10)] + [[1.0], [1.0, 2.0, 3.0], None]
    ex = Explorer(pl.DataFrame({"f": rows, "k": range(13)}), features="f", layout="pca")
    w = view(ex)
    assert w.problem == "" and ex.frame["k"].to_list() == list(range(10)) and len(w.xy) == 10 * 8
    assert "2 rows with features of another length (not 2) left out" in w.status and "1 row without features" in w.status
    # empty vectors: a message in the widget, not a numpy error
    ex = Explorer(pl.DataFrame({"f": [[] for _ in range(5)]}, schema={"f": pl.List(pl.Float32)}), features="f")
    assert "empty vectors" in view(ex).problem and view(ex).xy == b""
    # strings or nested lists where numbers should be: a short MlnbError, not Polars' own
    for bad in ([["1", "2"], ["a", "b"], ["3", "4"]], [[[1.0]], [[2.0]], [[3.0]]]):
        with pytest.raises(mlnb.MlnbError, match="cannot be read as vectors of numbers"):
            Explorer(pl.DataFrame({"f": bad}), features="f")


def test_back_to_the_shown_layout_drops_the_one_running(monkeypatch):
    import threading

    from mlnb.widgets import _layout

    gate = threading.Event()

    def slow(job, X, p):
        gate.wait(30)
        return np.full((len(X), 2), 7.0, np.float32)

    monkeypatch.setitem(_layout._COMPUTE, "umap", slow)
    X = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    ex = Explorer(pl.DataFrame({"f": X}), features="f")  # PCA now, UMAP in the background
    w = view(ex)
    assert w.layout == "PCA" and w.pending == "UMAP"  # the menu shows what is coming
    pca = ex.coords.copy()
    send(ex, type="layout", method="PCA")  # the person changes their mind
    assert w.pending == "" and w.progress == "" and w.error == ""
    gate.set()
    ex.wait(30)
    ex._job = None
    import time

    time.sleep(0.2)
    assert ex.layout == "pca" and w.layout == "PCA" and np.array_equal(ex.coords, pca)  # UMAP did not land


def test_labels_go_where_the_labeler_on_the_same_frame_reads_them(digits):
    d = digits.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("pixels")).alias("pixels"))
    ex = Explorer(d, features="pixels", image="path", layout="pca")  # row 3 has no features: left out
    ex.select([0, 1])
    ex.label_selection("seen")
    lab = mlnb.label(d, image="path")
    assert {lab.items[i] for i in (0, 1)} == {k for k, v in lab.state.items() if v.label == "seen"}


def test_hover_values_that_are_not_json(digits):
    import json

    d = digits.with_columns(pl.Series("v", [float("nan"), float("inf")] + [0.5] * 88))
    ex = Explorer(d, features="pixels", image="path", color="v", layout="pca")
    for i, want in ((0, None), (1, None), (2, 0.5)):
        content, _ = send(ex, type="hover", index=i).sent[-1]
        assert content["fields"]["v"] == want
        json.dumps(content, allow_nan=False)  # what Jupyter's message packer insists on


def test_select_by_sql_in_every_shape():
    rng = np.random.default_rng(0)
    df = pl.DataFrame({"f": rng.normal(size=(20, 3)).astype(np.float32), "c": ["a", "b"] * 10,
                       "o": pl.Series([object()] * 20, dtype=pl.Object)})  # fmt: skip
    ex = Explorer(df, features="f", layout="pca")
    assert ex.select(query="-- the a's\nSELECT _row FROM explorer WHERE c = 'a'") == 10  # Python objects left out of SQL
    assert ex.select(query="(SELECT _row FROM explorer WHERE c = 'b' LIMIT 3)") == 3
    assert ex.select(query="(c = 'a') AND _row < 6") == 3
    assert ex.select(query="WITH t AS (SELECT * FROM explorer WHERE c = 'a') SELECT _row FROM t WHERE _row IN (SELECT _row FROM explorer WHERE _row > 10)") == 4
    assert ex.select(query="c = 'zzz'") == 0 and ex.selection.height == 0 and ex.selection.columns == df.columns
    with pytest.raises(mlnb.MlnbError, match="_row column holds String"):
        ex.select(query="SELECT 'x' AS _row")
    ex = Explorer(df.drop("o").with_columns(pl.int_range(pl.len()).alias("_row")), features="f", layout="pca")
    assert ex.select([1]) == 1  # the frame opens; only the SQL table needs the name
    with pytest.raises(mlnb.MlnbError, match="own _row column"):
        ex.select(query="c = 'a'")


def test_saved_selection_names(_workspace):
    rng = np.random.default_rng(0)
    df = pl.DataFrame({"f": rng.normal(size=(20, 3)).astype(np.float32), "c": ["a", "b"] * 10,
                       "o": pl.Series([object()] * 20, dtype=pl.Object)})  # fmt: skip
    ex = Explorer(df, features="f", layout="pca")
    ex.select(query="c = 'a'")
    for name, why in (("labels", "mlnb's own tables"), ("runs", "mlnb's own tables"), ("order", "SQL keyword")):
        send(ex, type="save", name=name)
        assert why in ex.widget.error
        assert not (_workspace / "selections" / f"{name}.parquet").exists()
    send(ex, type="save", name="x" * 300)  # was the file system's 'File name too long', uncaught
    assert "not a table name" in ex.widget.error
    send(ex, type="save", name="Cats")
    assert ex.widget.error == "" and "without o" in ex.widget.status
    assert mlnb.sql("SELECT count(*) AS n FROM cats")["n"][0] == 10  # SQL names ignore case
    ex.select(query="c = 'b' AND _row < 5")
    ex.save_selection("CATS")  # the same SQL name: replaces it
    assert mlnb.sql("SELECT count(*) AS n FROM Cats")["n"][0] == 2
    assert [p.name for p in (_workspace / "selections").iterdir()] == ["CATS.parquet"]


def test_selection_of_a_filtered_pandas_frame_keeps_its_index(digits):
    pdf = digits.to_pandas()
    sub = pdf[pdf["label"] != "0"]  # a filtered frame: its index has gaps
    ex = Explorer(sub, features="pixels", image="path", layout="pca")
    ex.select([0, 1, 2])
    sel = ex.selection
    assert isinstance(sel, pl.DataFrame) and sel["index"].to_list() == sub.index[:3].tolist()
    assert sel["path"].to_list() == sub["path"].iloc[:3].tolist()
    named = pdf.set_index(pd_index := pdf["path"].rename("file"))
    ex = Explorer(named, features="pixels", image="path", layout="pca")
    ex.select([5])
    assert ex.selection["file"].to_list() == [pd_index.iloc[5]]
    plain = Explorer(pdf, features="pixels", layout="pca")  # 0, 1, 2 ...: nothing added
    assert plain.frame.columns == digits.columns


def test_colour_edge_values():
    X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    ex = Explorer(pl.DataFrame({"f": X, "b": [1e308, -1e308] + [1.0] * 18}), features="f", layout="pca", color="b")
    assert np.isfinite(ex.codes).all() and ex.codes[0] == ex.color_spec["bins"] - 1 and ex.codes[1] == 0
    ex.set_color("nope")
    assert ex.message == "No column 'nope' to colour by; choose from b."
    ex = Explorer(pl.DataFrame({"f": X}), features="f", layout="pca", color="nope")
    assert "none that can be a colour" in ex.message
    # what the menu offers can be chosen: 50 values and a null are offered, 51 values are not
    Y = np.random.default_rng(1).normal(size=(60, 3)).astype(np.float32)
    df = pl.DataFrame({"f": Y, "k50": [f"v{i % 50}" if i < 59 else None for i in range(60)], "k51": [f"v{i % 51}" for i in range(60)]})
    ex = Explorer(df, features="f", layout="pca")
    assert "k50" in ex.color_columns() and "k51" not in ex.color_columns()
    ex.set_color("k50")
    assert ex.message == "" and len(ex.color_spec["categories"]) == 50 and ex.color_spec["nulls"] == 1


def test_a_selection_made_before_the_widget_is_shown_is_drawn(digits):
    ex = Explorer(digits, features="pixels", image="path", layout="pca")
    n = ex.select(query="label = '7'")  # in the same cell, before `ex` is shown
    w = view(ex)
    assert n > 0 and np.frombuffer(w.selected, dtype=np.int32).tolist() == ex.selected.tolist()
    send(ex, [np.array([3, 1], dtype=np.int32).tobytes()], type="select", n=2)
    assert np.frombuffer(w.selected, dtype=np.int32).tolist() == [1, 3]  # a view drawn later starts from it


def test_select_takes_a_mask_like_numpy_and_polars():
    X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    X[4] = np.nan  # left out: 19 points
    df = pl.DataFrame({"f": X, "c": ["a", "b"] * 10})
    ex = Explorer(df, features="f", layout="pca")
    assert ex.select(df["c"] == "a") == 9  # a mask over the input's rows (was read as points 0 and 1)
    assert set(ex.selection["c"]) == {"a"}
    assert ex.select((ex.frame["c"] == "b").to_numpy()) == 10  # or over the explorer's points
    assert ex.select([3, 3, 1]) == 2  # the count selected, not the count given
    with pytest.raises(mlnb.MlnbError, match="one value per point"):
        ex.select([True, False])
    with pytest.raises(mlnb.MlnbError, match="integers"):
        ex.select([1.5])


def test_layout_options_for_one_method_do_not_block_the_other(monkeypatch):
    from mlnb.widgets import _layout

    seen = {}

    def fake(method):
        def compute(job, X, p):
            seen[method] = p
            return np.zeros((len(X), 2), np.float32) + len(seen)

        return compute

    for m in ("umap", "tsne"):
        monkeypatch.setitem(_layout._COMPUTE, m, fake(m))
    X = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    ex = Explorer(pl.DataFrame({"f": X}), features="f", layout="pca", n_neighbors=5, perplexity=8.0, metric="euclidean")
    send(ex, type="layout", method="t-SNE")
    ex.wait(30)
    assert ex.widget.error == "" and ex.layout == "tsne"  # was: t-SNE has no option n_neighbors
    send(ex, type="layout", method="UMAP")
    ex.wait(30)
    assert ex.layout == "umap"
    assert seen["tsne"]["perplexity"] == 8.0 and seen["umap"]["n_neighbors"] == 5
    assert seen["tsne"]["metric"] == seen["umap"]["metric"] == "euclidean"
    with pytest.raises(mlnb.MlnbError, match="No layout option bogus"):
        Explorer(pl.DataFrame({"f": X}), features="f", layout="pca", bogus=1)  # was accepted silently


def test_grid_thumbnails_load_in_parallel(digits, monkeypatch):
    import time

    import mlnb.images

    real = mlnb.images.thumbnail

    def slow(src, size=64):  # as an image behind a URL: a round trip each
        time.sleep(0.2)
        return real(src, size)

    monkeypatch.setattr(mlnb.images, "thumbnail", slow)
    ex = Explorer(digits, features="pixels", image="path", layout="pca")
    t0 = time.perf_counter()
    w = send(ex, type="thumbs", indices=list(range(40)))
    took = time.perf_counter() - t0
    content, buffers = w.sent[-1]
    assert content["indices"] == list(range(40)) and all(b[:3] == b"\xff\xd8\xff" for b in buffers)
    assert took < 4, took  # one after another: 8 s, the kernel deaf to everything else meanwhile


def test_a_failed_write_is_said_in_the_widget(digits, monkeypatch):
    import errno

    from mlnb import labels as labels_mod

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/ws/labels.jsonl")

    ex = Explorer(digits, features="pixels", image="path", layout="pca")
    w = send(ex, [np.arange(3, dtype=np.int32).tobytes()], type="select", n=3)
    monkeypatch.setattr(labels_mod.LabelStore, "add", full)
    send(ex, type="label", label="x")
    assert "No space left on device" in w.error and "Nothing was saved" in w.error
    assert not w.status.startswith("labelled")
