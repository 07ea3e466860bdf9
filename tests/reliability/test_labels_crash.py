"""The label log under crashes: a torn last line never swallows the next
label, and SIGKILL at random points loses no acknowledged label."""

from __future__ import annotations

import json
import random

import pytest

from mlnb.labels import LabelStore
from mlnb.workspace import read_jsonl

from ._sigkill import kill_loop


def test_torn_last_line_does_not_swallow_the_next_label(tmp_path):
    path = tmp_path / "labels.jsonl"
    store = LabelStore(path)
    store.add("d", ["a"], "cat")
    store.add("d", ["b"], "dog")
    with open(path, "ab") as fh:  # a crash in the middle of a third line
        fh.write(b'{"seq": 2, "ts": 1.0, "dataset": "d", "it')
    store.add("d", ["c"], "cow")  # the same process, after another one crashed
    assert store.history()["item"].to_list() == ["a", "b", "c"]
    with open(path, "ab") as fh:
        fh.write(b'{"seq": 3, "ts"')
    again = LabelStore(path)  # opening cuts the fragment off
    assert path.read_bytes().endswith(b"\n")
    again.add("d", ["e"], "eel")
    assert again.current()["item"].to_list() == ["a", "b", "c", "e"]
    assert [r["seq"] for r in read_jsonl(path)] == [0, 1, 2, 3]


def test_a_log_that_is_only_a_fragment(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_bytes(b'{"seq": 0, "ts": 1.0')
    store = LabelStore(path)
    store.add("d", ["a"], "cat")
    assert store.history()["item"].to_list() == ["a"]


_CHILD = """
import sys
from pathlib import Path
from mlnb.labels import LabelStore
path, start = Path(sys.argv[1]), int(sys.argv[2])
store = LabelStore(path)
print("ready", flush=True)
i = start
while True:
    store.add("crash", [f"item{i}"], "cat" if i % 2 else "dog")
    print(i, flush=True)  # acknowledged: the store has returned
    i += 1
"""


@pytest.mark.slow
def test_sigkill_while_labelling_loses_no_acknowledged_label(tmp_path):
    path = tmp_path / "labels.jsonl"
    rng = random.Random(13)
    torn = [0]

    def tear() -> None:
        if rng.random() < 0.4:  # as if a crash had cut the last write short
            line = json.dumps({"seq": 10**6, "ts": 1.0, "dataset": "crash", "item": "unacknowledged", "label": "x"})
            with open(path, "ab") as fh:
                fh.write(line[: rng.randrange(1, len(line) - 1)].encode())
            torn[0] += 1

    acknowledged = kill_loop(_CHILD, path, 25, rng, before=tear)
    items = set(LabelStore(path).history()["item"].to_list())
    lost = [i for i in acknowledged if f"item{i}" not in items]
    print(f"\nFIGURE labels: 25 SIGKILLs ({torn[0]} torn lines added), {len(acknowledged)} acknowledged, {len(lost)} lost")
    assert len(acknowledged) > 25
    assert lost == []
    assert "unacknowledged" not in items
