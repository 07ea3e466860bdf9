"""The store of trainer and experiment runs: ``.mlnb/runs/runs.jsonl``, beside the
label store, exposed as the SQL table ``runs``.

Each run is one JSON line, appended and fsync'ed before the caller goes on
(the same durable append as the label store).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .workspace import durable_append, get_workspace, read_jsonl

#: The columns of the ``runs`` table, in order.
SCHEMA_NAMES = (
    "run", "created", "features", "algorithm", "options", "folds", "n", "accuracy", "accuracy_std", "macro_f1",
    "log_loss", "train_seconds", "status",
)


def runs_path() -> Path:
    return get_workspace().path("runs", "runs.jsonl")


def append_run(record: dict[str, Any]) -> None:
    """Add one run; on disk (fsync'ed) when this returns."""
    durable_append(runs_path(), lambda _size: (json.dumps(record) + "\n", None))


def read_runs() -> list[dict[str, Any]]:
    """Every run record, oldest first, as written (extra keys included)."""
    return read_jsonl(runs_path())


def runs_frame() -> Any:
    """Every run recorded in the workspace (the SQL table ``runs``)."""
    import polars as pl

    rows = read_runs()
    schema = {
        "run": pl.String, "created": pl.String, "features": pl.String, "algorithm": pl.String, "options": pl.String,
        "folds": pl.Int64, "n": pl.Int64, "accuracy": pl.Float64, "accuracy_std": pl.Float64, "macro_f1": pl.Float64,
        "log_loss": pl.Float64, "train_seconds": pl.Float64, "status": pl.String,
    }
    return pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema) if rows else pl.DataFrame(schema=schema)
