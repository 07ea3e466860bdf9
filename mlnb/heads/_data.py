"""Feature matrices from frame columns: Array, List or numeric columns."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ..exceptions import MlnbError


def feature_matrix(series: Any, *, expect_dim: int | None = None, what: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """``(X[n, d] float32, ok[n])``: rows with null features have ``ok = False``.

    Mixed dimensions, or a dimension other than ``expect_dim``, are errors.
    """
    import polars as pl

    dtype = series.dtype
    n = len(series)
    ok = ~series.is_null().to_numpy()
    if isinstance(dtype, pl.Array):
        dim = dtype.size
        X = np.zeros((n, dim), dtype=np.float32)
        if ok.any():
            X[ok] = series.filter(pl.Series(ok)).cast(pl.Array(pl.Float32, dim)).to_numpy()
    elif isinstance(dtype, pl.List):
        lens = series.list.len().fill_null(0).to_numpy().astype(np.int64)
        dims = set(lens[ok].tolist())
        if len(dims) > 1:
            raise MlnbError(f"The {what} column mixes vector lengths {sorted(dims)[:5]}: all rows need the same dimension.")
        dim = dims.pop() if dims else 0
        X = np.zeros((n, dim), dtype=np.float32)
        if ok.any() and dim:
            # One flat buffer (explode), not a Python list per row.
            flat = series.filter(pl.Series(ok)).explode().cast(pl.Float32).to_numpy()
            X[ok] = flat.reshape(-1, dim)
    elif dtype.is_numeric():
        dim = 1
        X = series.cast(pl.Float32).fill_null(0).to_numpy().reshape(-1, 1)
    else:
        raise MlnbError(f"The {what} column has type {dtype}: use an embed() array, a list of numbers or a {{* EXCLUDING(...)}} row expression.")
    nan_rows = ok & ~np.isfinite(X).all(axis=1)
    ok = ok & ~nan_rows
    if expect_dim is not None and dim != expect_dim and ok.any():
        raise MlnbError(f"The {what} have dimension {dim}, but the head was trained on {expect_dim}: score it with the same model and layer it was trained on.")
    return X, ok


def data_hash(X: np.ndarray, y: np.ndarray) -> str:
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(X).tobytes())
    h.update("\x00".join(map(str, y)).encode())
    return h.hexdigest()[:16]
