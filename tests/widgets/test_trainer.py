from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import mlnb
from mlnb.widgets import Trainer


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = mlnb.datasets.digits(tmp_path_factory.mktemp("digits"))
    d = d.filter(pl.col("label").is_in(["1", "7", "8"])).group_by("label", maintain_order=True).head(30)
    rng = np.random.default_rng(0)
    noisy = d["pixels"].to_numpy() + rng.normal(scale=6, size=(d.height, 64))
    return d.with_columns(pl.Series("noisy", noisy.astype(np.float32), dtype=pl.Array(pl.Float32, 64)))


def test_runs_compare_heads_and_persist_as_sql_table(data):
    tr = Trainer(data, features=["pixels", "noisy"], label="label", image="path", folds=3)
    points = []
    ids = tr.run_all(algorithms=["logistic", "knn"], progress=lambda i, k, m: points.append(m["accuracy"]))
    assert len(ids) == 4 and len(points) == 12  # one learning-curve point per fold, appended
    runs = mlnb.sql("SELECT features, algorithm, accuracy, macro_f1, log_loss, train_seconds FROM runs ORDER BY accuracy DESC")
    assert runs.height == 4 and runs["features"][0] == "pixels"
    assert set(runs["algorithm"]) == {"logistic", "knn"}


def test_confusion_cell_errors_and_register(data):
    tr = Trainer(data, features="noisy", label="label", image="path", folds=3)
    rid = tr.run("noisy", "logistic")
    cm = tr.confusion(rid)
    assert cm.columns == ["true", "1", "7", "8"]
    n = int(cm.filter(pl.col("true") == "1")["7"].item())
    behind = tr.cell(rid, "1", "7")
    assert behind.height == n and (behind["label"] == "1").all()
    worst = tr.worst_errors(rid)
    assert (worst["true"] != worst["predicted"]).all() and "path" in worst.columns
    assert set(tr.per_class(rid)["class"]) == {"1", "7", "8"}
    head = tr.register(rid, "noisy_head")
    assert head.ref == "noisy_head@1"
    out = mlnb.sql("SELECT avg((noisy_head(noisy) = label)::INT) AS acc FROM data", data=data)
    assert out.item() > 0.7


def test_stop_between_folds(data):
    tr = Trainer(data, features="pixels", label="label", folds=3)

    def press_stop(i, k, m):
        tr.stop()

    assert tr.run("pixels", "logistic", progress=press_stop) == ""
    assert tr.status == "stopped" and mlnb.sql("SELECT count(*) FROM runs").item() == 0


def test_bad_input(data):
    with pytest.raises(mlnb.MlnbError, match="empty"):
        Trainer(data.clear(), features="pixels")
    with pytest.raises(mlnb.MlnbError, match="No column 'feat'"):
        Trainer(data, features="feat")
    one = data.filter(pl.col("label") == "1")
    with pytest.raises(mlnb.MlnbError, match="two classes"):
        Trainer(one, features="pixels").run()


def test_the_tree_heads_are_offered_and_run(data):
    tr = Trainer(data, features="pixels", label="label", folds=3)
    assert {"logistic", "linear_svm", "knn", "mlp", "torch", "gbdt", "random_forest"} <= set(tr.algorithms)
    assert {"gbdt", "random_forest"} <= set(tr.widget._mlnb["algos"].options)
    ids = tr.run_all(algorithms=["gbdt", "random_forest"], options={"max_iter": 10, "n_estimators": 10})
    assert [tr.meta[r]["algorithm"] for r in ids] == ["gbdt", "random_forest"]
    assert all(tr.meta[r]["accuracy"] > 0.6 for r in ids)
    assert Trainer(data, features="pixels", algorithms=("knn",)).algorithms == ("knn",)


def test_view_runs_and_clicks_a_cell(data):
    tr = Trainer(data, features="pixels", label="label", image="path", folds=3)
    box = tr.widget
    ui = box._mlnb
    ui["algos"].value = ("logistic",)
    ui["work"]()  # what the Run button's thread does
    assert [r["algorithm"] for r in ui["runs"].rows] == ["logistic"] and ui["run_pick"].value
    assert len(ui["curve"].data[0].x) == 3
    rows = ui["matrix"].children
    assert len(rows) == 4  # header + 3 classes
    rows[1].children[2].click()  # true "1", predicted "7"
    assert "true 1, predicted 7" in ui["cell_view"].value
    ui["name"].value = "from_widget"
    ui["register"](None)
    assert "from_widget" in mlnb.classifiers()["name"].to_list()


def test_options_apply_to_the_heads_that_take_them(data):
    tr = Trainer(data, features="pixels", label="label", folds=3)
    ids = tr.run_all(algorithms=["logistic", "knn"], options={"C": 0.01, "k": 1})
    assert [tr.meta[i]["options"] for i in ids] == ['{"C": 0.01}', '{"k": 1}']
    from mlnb.widgets._trainer_view import _parse_options

    assert _parse_options("C=0.5, k=7, algo=x") == {"C": 0.5, "k": 7, "algo": "x"}
    with pytest.raises(mlnb.MlnbError, match="name=value"):
        _parse_options("C")


def test_view_picks_the_best_run_sorts_on_a_header_and_the_gallery_follows_the_run(data):
    tr = Trainer(data, features=["pixels", "noisy"], label="label", image="path", folds=3)
    ui = tr.widget._mlnb
    ui["feats"].value = ("pixels", "noisy")
    ui["algos"].value = ("logistic", "knn")
    ui["work"]()
    curve = ui["curve"]
    assert len(curve.data) == 4 and all(len(t.x) == 3 for t in curve.data)  # a trace per run, a point per fold
    best = max(tr.meta, key=lambda r: tr.meta[r]["accuracy"])
    assert tr.meta[ui["run_pick"].value]["accuracy"] == tr.meta[best]["accuracy"]
    table = ui["runs"]
    assert table.selected == ui["run_pick"].value
    table.sort_by, table.descending = "log_loss", False  # what a click on the header sends
    losses = [float(r["log_loss"]) for r in table.rows]
    assert losses == sorted(losses)
    table.descending = True
    assert [float(r["log_loss"]) for r in table.rows] == sorted(losses, reverse=True)
    # a cell of the first run, then another run is picked (a click on its row): the gallery follows
    first = ui["run_pick"].value
    ui["show_cell"](first, "1", "7")
    other = next(r for r in tr.evaluations if r != first)
    table.selected = other
    assert ui["run_pick"].value == other
    n = int(tr.confusion(other).filter(pl.col("true") == "1")["7"].item())
    assert f"predicted 7: {n} rows" in ui["cell_view"].value and tr.meta[other]["algorithm"] in ui["cell_view"].value


def test_register_without_a_run_is_said_in_the_widget(data):
    tr = Trainer(data, features="pixels", label="label", folds=3)
    ui = tr.widget._mlnb
    ui["register"](None)
    assert "no run to register" in ui["error_box"].value


def test_a_search_run_keeps_its_trials_and_the_view_shows_them(data, monkeypatch):
    monkeypatch.setattr(mlnb.config, "_mlflow", "off")
    tr = Trainer(data, features="noisy", label="label", folds=3)
    ui = tr.widget._mlnb
    ui["algos"].value = ("logistic", "knn")
    ui["options"].value = "C=[0.001, 1], k = [1, 5]"
    ui["work"]()
    ids = list(tr.meta)
    assert [tr.meta[r]["algorithm"] for r in ids] == ["logistic", "knn"]
    t = tr.trials(ids[0])
    assert t["C"].to_list() == [0.001, 1.0] and t["best"].sum() == 1
    best_c = t.filter(pl.col("best"))["C"].item()
    assert tr.meta[ids[0]]["options"] == f'{{"C": {best_c}}}'  # the run is the best trial; register retrains it
    assert tr.trials()["k"].to_list() == [1, 5]  # the latest search run
    assert len(ui["curve"].data) == 4 and ui["curve"].data[0].name.endswith("C=0.001")  # a trace per trial
    ui["run_pick"].value = ids[0]
    assert "trials of this search" in ui["trials"].value and "0.001" in ui["trials"].value
    # the trials are in the run's record, so a later session lists them too
    assert Trainer(data, features="noisy", label="label").trials(ids[1])["k"].to_list() == [1, 5]
    ui["options"].value = "C=[0.1, -1]"
    ui["work"]()
    assert "C = [0.1, -1]" in ui["error_box"].value and len(tr.meta) == 2
    with pytest.raises(mlnb.MlnbError, match="was not a search"):
        tr.trials(tr.run("noisy", "logistic"))


def test_options_text_takes_lists():
    from mlnb.widgets._trainer_view import _parse_options

    assert _parse_options("C=[0.01, 0.1, 1], search=random, trials=5, k='x'") == {"C": [0.01, 0.1, 1], "search": "random", "trials": 5, "k": "x"}
    with pytest.raises(mlnb.MlnbError, match="no closing"):
        _parse_options("C=[0.1, 1")
