"""Head names never leave the workspace; processes writing one head name wait for each other."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import mlnb
from mlnb.heads import drop_classifier, load_classifier, store, train_classifier


def _frame(seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(["a", "b"], 10)
    X = rng.normal(size=(20, 4)).astype(np.float32) + np.repeat(np.eye(2, 4) * 3, 10, axis=0)
    return pl.DataFrame({"features": X.tolist(), "label": y.tolist()})


BAD_NAMES = ["../../outside", "../outside", "a/b", "/etc/passwd", "..", "", "x.y", "1abc", "a b", "x" * 101]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_names_that_are_not_identifiers_are_refused_everywhere(bad):
    with pytest.raises(mlnb.MlnbError, match="Classifier names are SQL identifiers"):
        load_classifier(bad)
    with pytest.raises(mlnb.MlnbError, match="Classifier names are SQL identifiers"):
        train_classifier(_frame(), name=bad)
    with pytest.raises(mlnb.MlnbError, match="Classifier names are SQL identifiers"):
        drop_classifier(bad)


def test_a_head_outside_the_workspace_is_not_loaded(_workspace, tmp_path):
    train_classifier(_frame(), name="outside", folds=None)
    shutil.move(_workspace / "heads" / "outside", tmp_path / "outside")  # now at heads/../../outside
    mlnb.heads.head._loaded.clear()
    for ref in ("../../outside", "../../outside@1"):
        with pytest.raises(mlnb.MlnbError, match="SQL identifiers"):
            load_classifier(ref)
    assert mlnb.classifiers().height == 0


_WRITER = textwrap.dedent(
    """
    import pathlib, sys, time
    import numpy as np, polars as pl
    import mlnb
    from mlnb.heads import store, train_classifier

    mlnb.config.workspace = sys.argv[1]
    rng = np.random.default_rng(int(sys.argv[2]))
    y = np.repeat(["a", "b"], 10)
    df = pl.DataFrame({"features": rng.normal(size=(20, 4)).tolist(), "label": y.tolist()})
    head = train_classifier(df, name="shared", folds=None, replace=True)
    # start together, so that the writes overlap
    ready = pathlib.Path(sys.argv[1]).parent / "ready"
    ready.mkdir(exist_ok=True)
    (ready / sys.argv[2]).touch()
    while len(list(ready.iterdir())) < 2:
        time.sleep(0.01)
    for i in range(40):  # what CREATE OR REPLACE and CREATE write, without the training in between
        store.save("shared", head.estimator, head.meta, replace=(i % 2 == 0))
    train_classifier(df, name="shared", folds=None, replace=True)
    train_classifier(df, name="shared", folds=None)
    """
)


def test_two_processes_replacing_one_head(_workspace, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    env = {**os.environ, "PYTHONPATH": str(Path(mlnb.__file__).parents[1])}  # the mlnb under test
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(_workspace), str(seed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for seed in (1, 2)
    ]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    vs = store.versions("shared")
    assert vs == list(range(1, len(vs) + 1)) and 1 <= len(vs) <= 4
    for v in vs:
        assert load_classifier(f"shared@{v}").meta["n_rows"] == 20
    assert [p.name for p in (_workspace / "heads" / "shared").iterdir() if p.name.startswith(".")] == []


def _two_class_frame(classes, seed):
    rng = np.random.default_rng(seed)
    y = np.repeat(classes, 10)
    X = rng.normal(size=(20, 4)).astype(np.float32) + np.repeat(np.eye(2, 4) * 3, 10, axis=0)
    return pl.DataFrame({"features": X.tolist(), "label": y.tolist()})


def test_readers_see_the_old_or_the_new_head_while_it_is_replaced(_workspace):
    """CREATE OR REPLACE of a head while other threads resolve, load and score it (SQL and Python):
    every reader gets one complete head — old or new — never 'no classifier named', a damaged
    head, or a model from one and meta.json from the other (the two heads have different classes)."""
    import threading

    frames = {"ab": _two_class_frame(["a", "b"], 1), "cd": _two_class_frame(["c", "d"], 2)}
    heads = {k: train_classifier(f, name=f"src_{k}", folds=None) for k, f in frames.items()}
    train_classifier(frames["ab"], name="hot", folds=None)
    probe = frames["ab"].head(4)
    failures: list[str] = []
    done = threading.Event()
    loads = [0]

    def reader(mode):
        while not done.is_set():
            try:
                if mode == "sql":
                    got = set(mlnb.sql('SELECT hot(features) AS c, "hot@1"(features) AS d FROM probe', probe=probe)["c"].to_list())
                else:
                    mlnb.heads.head._loaded.clear()  # read the files each time, not the cache
                    head = load_classifier(mode)
                    got = {str(c) for c in head.predict(probe, features="features")}
                if not (got <= {"a", "b"} or got <= {"c", "d"}):
                    failures.append(f"mixed classes {got}")
                loads[0] += 1
            except Exception as exc:  # noqa: BLE001 - every failure is what the test counts
                failures.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=reader, args=(mode,)) for mode in ("sql", "hot", "hot@1")]
    for t in threads:
        t.start()
    try:
        for i in range(30):
            h = heads["cd" if i % 2 == 0 else "ab"]
            store.save("hot", h.estimator, h.meta, replace=True)
    finally:
        done.set()
        for t in threads:
            t.join(timeout=60)
    assert failures == [], failures[:5]
    assert loads[0] > 0
    assert store.versions("hot") == [1] and load_classifier("hot").meta["classes"] == ["a", "b"]
    assert [p.name for p in (_workspace / "heads" / "hot").iterdir() if p.name.startswith(".")] == []
