"""The label store: an append-only log in the workspace (``labels/labels.jsonl``),
shared by every widget and exposed to SQL.

Every call to :meth:`LabelStore.add` appends one JSON line, flushes it and
fsyncs it before returning: when a widget shows a label as saved, a killed
kernel cannot lose it. Nothing is ever rewritten; undo appends the previous
state. In SQL, ``labels`` is the current state (one row per dataset and item)
and ``label_history`` every event.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .exceptions import MlnbError
from .workspace import durable_append, per_workspace, read_jsonl, repair_log

#: What an event says about an item.
KINDS = ("label", "unsure", "skip", "clear")

class LabelStore:
    """Append-only labels for one workspace; safe across threads and processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seq: tuple[int, int] | None = None  # (file size, next seq) after our last write
        repair_log(path)  # a line cut by a crash must not swallow the next label

    def add(
        self,
        dataset: str,
        items: Iterable[str],
        label: str | list[str] | None,
        *,
        kind: str = "label",
        source: str = "user",
    ) -> int:
        """Record ``label`` for each item (``None`` with kind ``clear``/``skip``/``unsure``);
        durable on disk when this returns. Returns the number of events written."""
        if kind not in KINDS:
            raise MlnbError(f"Unknown label kind {kind!r}: use one of {', '.join(KINDS)}.")
        items = [str(i) for i in items]
        if not items:
            return 0
        multi = list(label) if isinstance(label, (list, tuple, set)) else None
        single = None if multi is not None else label
        now = time.time()
        lines = []
        for item in items:
            lines.append({"ts": now, "dataset": dataset, "item": item, "label": single, "labels": multi, "kind": kind, "source": source})
        def payload(size: int) -> tuple[str, int]:
            seq = self._seq[1] if self._seq and self._seq[0] == size else self._next_seq()
            text = "".join(json.dumps({"seq": seq + i, **ev}, ensure_ascii=False) + "\n" for i, ev in enumerate(lines))
            self._seq = (size + len(text.encode("utf-8")), seq + len(lines))
            return text, seq

        with self._lock:
            durable_append(self.path, payload)
        return len(lines)

    def _next_seq(self) -> int:
        # Sequence numbers continue across processes: count the lines on disk.
        try:
            with open(self.path, "rb") as fh:
                return sum(1 for _ in fh)
        except FileNotFoundError:
            return 0

    def history(self, dataset: str | None = None) -> Any:
        """Every event, oldest first, as a Polars frame."""
        import polars as pl

        rows = read_jsonl(self.path)
        schema = {"seq": pl.Int64, "ts": pl.Float64, "dataset": pl.String, "item": pl.String, "label": pl.String, "labels": pl.List(pl.String), "kind": pl.String, "source": pl.String}
        df = pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)
        if dataset is not None:
            df = df.filter(pl.col("dataset") == dataset)
        return df.with_columns(pl.from_epoch(pl.col("ts"), time_unit="s").alias("time"))

    def current(self, dataset: str | None = None) -> Any:
        """The latest state of each (dataset, item); cleared items are dropped."""
        import polars as pl

        h = self.history(dataset)
        latest = h.sort("seq").group_by("dataset", "item", maintain_order=True).last()
        return latest.filter(pl.col("kind") != "clear").sort("seq")


def get_label_store() -> LabelStore:
    return per_workspace("labels/labels.jsonl", LabelStore)
