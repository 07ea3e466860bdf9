"""Hostile and broken head files: no code runs, every failure is an MlnbError naming the head."""

from __future__ import annotations

import builtins
import json

import numpy as np
import polars as pl
import pytest

import mlnb
from mlnb.heads import classifiers, load_classifier, train_classifier
from mlnb.heads import head as head_module


def _frame(n_per_class: int = 12, dim: int = 6, classes: tuple[str, ...] = ("a", "b", "c"), seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    y = np.repeat(classes, n_per_class)
    X = rng.normal(size=(len(y), dim)).astype(np.float32) + np.repeat(np.eye(len(classes), dim) * 3, n_per_class, axis=0)
    return pl.DataFrame({"features": X.tolist(), "label": y.tolist()}).with_columns(pl.col("features").cast(pl.Array(pl.Float32, dim)))


def _version_dir(workspace, name, version=1):
    return workspace / "heads" / name / f"v{version}"


def _forget_loaded():
    """What a new kernel would see: nothing in memory."""
    head_module._loaded.clear()


def _exec_payload(path, marker, X, y):
    """The issue's payload: np.full_like fills the input with code, np.vectorize(exec) runs it on scoring.
    A real classifier at the end keeps classes_ and n_features_in_ consistent with meta.json."""
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    code = f"open({str(marker)!r}, 'w').write('pwned')"
    pipe = Pipeline(
        [
            ("fill", FunctionTransformer(np.full_like, kw_args={"fill_value": code, "dtype": object})),
            ("run", FunctionTransformer(np.vectorize(builtins.exec))),
            ("clf", LogisticRegression().fit(X, y)),
        ]
    )
    sio.dump(pipe, path)


# -- item 1: a tampered head runs no code ------------------------------------------------------
def test_exec_payload_in_a_head_folder_is_refused_and_runs_nothing(_workspace, tmp_path):
    t = _frame()
    train_classifier(t, name="victim", folds=None)
    marker = tmp_path / "pwned"
    X = np.asarray(t["features"].to_list(), dtype=np.float32)
    _exec_payload(_version_dir(_workspace, "victim") / "model.skops", marker, X, t["label"].to_numpy())
    _forget_loaded()

    with pytest.raises(mlnb.MlnbError, match=r"victim@1 .*(builtins\.exec|numpy\.vectorize|numpy\.full_like)"):
        mlnb.sql("SELECT victim(features) AS p FROM t", t=t)
    with pytest.raises(mlnb.MlnbError, match=r"victim@1 .*builtins\.exec"):
        load_classifier("victim")
    with pytest.raises(mlnb.MlnbError, match="victim@1"):
        mlnb.sql("SELECT victim_proba(features) AS p FROM t", t=t)
    assert not marker.exists()


def test_function_transformer_is_refused_even_with_a_function_skops_trusts(_workspace):
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    t = _frame()
    train_classifier(t, name="sine", folds=None)
    X = np.asarray(t["features"].to_list(), dtype=np.float32)
    pipe = make_pipeline(FunctionTransformer(np.sin), LogisticRegression()).fit(X, t["label"].to_numpy())
    path = _version_dir(_workspace, "sine") / "model.skops"
    sio.dump(pipe, path)
    assert sio.get_untrusted_types(file=path) == []  # skops alone would load it
    _forget_loaded()
    with pytest.raises(mlnb.MlnbError, match="sine@1 .*FunctionTransformer"):
        load_classifier("sine")


def test_an_estimator_holding_a_function_is_refused_when_saved_not_later():
    from sklearn.neighbors import KNeighborsClassifier

    def my_metric(a, b):
        return float(np.abs(a - b).sum())

    with pytest.raises(mlnb.MlnbError, match="'custom' was not saved: KNeighborsClassifier holds .*my_metric"):
        train_classifier(_frame(), algo=KNeighborsClassifier(n_neighbors=3, metric=my_metric, algorithm="brute"), name="custom", folds=None)
    assert classifiers().height == 0
    # unsaved, it is still usable
    head = train_classifier(_frame(), algo=KNeighborsClassifier(n_neighbors=3, metric=my_metric, algorithm="brute"), folds=None)
    assert head.predict(_frame()).shape == (36,)


# -- item 7: meta.json is checked against the model ---------------------------------------------
@pytest.mark.parametrize("algo", ["logistic", "torch"])
def test_swapped_classes_in_meta_are_refused(_workspace, algo):
    train_classifier(_frame(), algo=algo, name="swapped", folds=None, options={"epochs": 3} if algo == "torch" else None)
    meta_path = _version_dir(_workspace, "swapped") / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["classes"] = ["b", "a", "c"]
    if algo == "torch":  # the torch head's own copy, edited the same way
        meta["torch_head"]["classes"] = ["b", "a", "c"]
    meta_path.write_text(json.dumps(meta))
    _forget_loaded()
    with pytest.raises(mlnb.MlnbError, match="swapped@1 is damaged: .*classes"):
        load_classifier("swapped")


def test_dimension_in_meta_is_checked(_workspace):
    train_classifier(_frame(), name="dims", folds=None)
    meta_path = _version_dir(_workspace, "dims") / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["dim"] = 5
    meta_path.write_text(json.dumps(meta))
    _forget_loaded()
    with pytest.raises(mlnb.MlnbError, match="dims@1 is damaged: meta.json says 5-d features, the model takes 6-d"):
        load_classifier("dims")


# -- item 8: missing and truncated files ---------------------------------------------------------
def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _edit_torch_hidden(path):
    meta = json.loads(path.read_text())
    meta["torch_head"]["params"]["hidden"] = 7  # the tensors were saved for hidden = 4
    path.write_text(json.dumps(meta))


DAMAGE = {
    "meta_missing": ("logistic", lambda d: (d / "meta.json").unlink()),
    "meta_truncated": ("logistic", lambda d: _truncate(d / "meta.json")),
    "meta_not_an_object": ("logistic", lambda d: (d / "meta.json").write_text("[1, 2]")),
    "skops_missing": ("logistic", lambda d: (d / "model.skops").unlink()),
    "skops_truncated": ("logistic", lambda d: _truncate(d / "model.skops")),
    "safetensors_truncated": ("torch", lambda d: _truncate(d / "model.safetensors")),
    "safetensors_missing": ("torch", lambda d: (d / "model.safetensors").unlink()),
    "torch_size_mismatch": ("torch", lambda d: _edit_torch_hidden(d / "meta.json")),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_head_gives_an_error_naming_it_and_show_lists_the_rest(_workspace, case):
    algo, damage = DAMAGE[case]
    t = _frame()
    opts = {"epochs": 3, "hidden": 4} if algo == "torch" else None
    train_classifier(t, algo=algo, name="broken", folds=None, options=opts)
    train_classifier(t, name="good", folds=None)
    damage(_version_dir(_workspace, "broken"))
    _forget_loaded()

    with pytest.raises(mlnb.MlnbError, match="broken@1"):
        load_classifier("broken")
    with pytest.raises(mlnb.MlnbError, match="broken@1"):
        mlnb.sql("SELECT broken(features) FROM t", t=t)
    shown = classifiers()
    assert shown["name"].to_list() == ["broken", "good"]
    good = shown.row(1, named=True)
    assert good["error"] is None and good["algorithm"] == "logistic"
    if case != "torch_size_mismatch":  # found only by loading the weights
        assert "broken@1 is damaged" in shown.row(0, named=True)["error"]
    assert mlnb.sql("SHOW CLASSIFIERS").height == 2
    assert (load_classifier("good").predict(t) == t["label"].to_numpy()).mean() > 0.8
