from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlnb
from mlnb.labels import get_label_store


def test_append_only_history_and_current_in_sql():
    s = get_label_store()
    s.add("pets", ["a.jpg", "b.jpg"], "cat")
    s.add("pets", ["a.jpg"], "dog")
    s.add("pets", ["b.jpg"], None, kind="clear")
    s.add("pets", ["c.jpg"], ["cat", "indoor"])
    cur = mlnb.sql("SELECT item, label, labels FROM labels WHERE dataset = 'pets' ORDER BY item")
    assert cur.to_dicts() == [{"item": "a.jpg", "label": "dog", "labels": None}, {"item": "c.jpg", "label": None, "labels": ["cat", "indoor"]}]
    hist = mlnb.sql("SELECT seq, item, kind FROM label_history ORDER BY seq")
    assert hist["seq"].to_list() == [0, 1, 2, 3, 4] and hist["kind"].to_list()[3] == "clear"


def test_a_frame_named_labels_wins_over_the_store():
    import polars as pl

    labels = pl.DataFrame({"x": [1]})  # noqa: F841
    assert mlnb.sql("SELECT x FROM labels").item() == 1


def test_a_variable_named_labels_that_is_no_frame_does_not_hide_the_store():
    get_label_store().add("pets", ["a.jpg"], "cat")
    labels = ["cat", "dog"]  # noqa: F841 - a list of class names, as notebooks often have
    assert mlnb.sql("SELECT label FROM labels WHERE item = 'a.jpg'").item() == "cat"


def test_acknowledged_labels_survive_sigkill(tmp_path, _workspace):
    code = (
        "import mlnb, sys\n"
        f"mlnb.config.workspace = {str(_workspace)!r}\n"
        "from mlnb.labels import get_label_store\n"
        "s = get_label_store()\n"
        "for i in range(50):\n"
        "    s.add('d', [f'img{i}.png'], 'x')\n"
        "    print(i, flush=True)\n"  # the acknowledgement: printed only after add() returned
        "import time; time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    acked = []
    deadline = time.time() + 60
    while len(acked) < 50 and time.time() < deadline:
        line = p.stdout.readline()
        if line:
            acked.append(int(line))
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    cur = get_label_store().current("d")
    assert set(cur["item"]) >= {f"img{i}.png" for i in acked} and len(acked) == 50


def test_torn_last_line_is_ignored(_workspace):
    s = get_label_store()
    s.add("d", ["a"], "x")
    with open(s.path, "a") as fh:
        fh.write('{"seq": 1, "dataset": "d", "item": "b"')  # a crash mid-write: never acknowledged
    assert get_label_store().current("d")["item"].to_list() == ["a"]
