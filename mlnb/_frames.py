"""Frames: the bottom layer every other layer may import.

mlnb takes Polars, pandas and Arrow tables wherever it takes a frame, and
gives Polars back. These two functions are the one place that knows which
objects count as frames and how to turn them into Polars.
"""

from __future__ import annotations

from typing import Any

from .exceptions import MlnbError


def is_frame(obj: Any) -> bool:
    """Polars, pandas and Arrow tabular objects that DuckDB can scan without copying."""
    mod = type(obj).__module__.split(".")[0]
    name = type(obj).__name__
    if mod == "polars":
        return name in ("DataFrame", "LazyFrame")
    if mod == "pandas":
        return name == "DataFrame"
    if mod == "pyarrow":
        return name in ("Table", "RecordBatchReader", "Dataset", "FileSystemDataset", "RecordBatch")
    return False


def to_polars(frame: Any) -> Any:
    """A Polars DataFrame for any frame :func:`is_frame` accepts (LazyFrames are collected)."""
    import polars as pl

    if isinstance(frame, pl.DataFrame):
        return frame
    if isinstance(frame, pl.LazyFrame):
        return frame.collect()
    if not is_frame(frame):
        raise MlnbError(f"Expected a Polars, pandas or Arrow frame, got {type(frame).__name__}.")
    return pl.from_pandas(frame) if type(frame).__module__.startswith("pandas") else pl.from_arrow(frame)
