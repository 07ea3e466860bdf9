"""Functions another engine can take: the session dry-runs their statements, rolled back."""

from __future__ import annotations

import contextlib

import polars as pl
import pyarrow.compute as pc

import mlnb
from mlnb.functions import function


def test_offload_dry_run_is_rolled_back_and_sees_every_row():
    seen: list[list[int]] = []
    runs: list[str] = []

    @contextlib.contextmanager
    def runner(dry_run):
        runs.append("dry")
        with _collect(seen):
            assert dry_run() is True
        runs.append("real")
        yield True

    @function(returns="BIGINT", offload=runner, replace=True)
    def twice_offloaded(x: int):
        "Doubles x; offloadable."
        if _collecting:
            seen.append(x.to_pylist())
        return pc.multiply(x, 2)

    t = pl.DataFrame({"x": [1, 2, 3]})
    mlnb.sql("CREATE TABLE offload_out AS SELECT twice_offloaded(x) AS y FROM t", t=t)
    # The dry run's CREATE TABLE was rolled back: the real one ran once, with the real values.
    assert mlnb.sql("SELECT y FROM offload_out ORDER BY y")["y"].to_list() == [2, 4, 6]
    assert runs == ["dry", "real"] and sorted(sum(seen, [])) == [1, 2, 3]
    # A statement that does not call the function is not dry-run.
    mlnb.sql("SELECT 1")
    assert runs == ["dry", "real"]
    mlnb.sql("DROP TABLE offload_out")


def test_python_twin_takes_engine_only_where_offloadable():
    @function(returns="BIGINT", replace=True)
    def plain_fn(x: int):
        "Identity."
        return x

    import pytest

    with pytest.raises(mlnb.MlnbError, match="no option 'engine'"):
        plain_fn(1, engine="ray")
    with pytest.raises(mlnb.MlnbError, match="Unknown engine 'spark'"):
        mlnb.embed("a.jpg", engine="spark")


_collecting = False


@contextlib.contextmanager
def _collect(seen):
    global _collecting
    _collecting = True
    try:
        yield
    finally:
        _collecting = False
