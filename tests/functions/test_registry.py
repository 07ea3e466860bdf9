from __future__ import annotations

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import mlnb
from mlnb.functions import registry


@pytest.fixture
def scale():
    calls = []

    @mlnb.function(returns="DOUBLE", replace=True)
    def scale_by(x: float, *, factor: float = 2.0, shift: float = 0.0):
        """Multiply a column by a factor.

        More details that the summary does not show.
        """
        calls.append(len(x))
        return pc.add(pc.multiply(x, factor), shift)

    yield scale_by, calls
    registry.remove("scale_by")


def test_python_twin_scalar_and_column(scale):
    fn, _ = scale
    assert fn(3.0) == 6.0
    assert fn(3.0, factor=10) == 30.0
    out = fn(pl.Series([1.0, 2.0]), shift=1)
    assert isinstance(out, pl.Series) and out.to_list() == [3.0, 5.0]


def test_sql_call_with_named_options_is_vectorised(scale):
    fn, calls = scale
    t = pl.DataFrame({"v": [float(i) for i in range(5000)]})
    out = mlnb.sql("SELECT sum(scale_by(v, factor := 3)) AS s, min(scale_by(v)) AS m FROM t", t=t)
    assert out["s"].item() == pytest.approx(3 * sum(range(5000)))
    # whole batches, not rows: DuckDB hands over up to 2048 rows per call
    assert max(calls) > 1000


def test_options_that_vary_by_row(scale):
    t = pl.DataFrame({"v": [1.0, 1.0, 1.0], "f": [1.0, 2.0, 3.0]})
    out = mlnb.sql("SELECT scale_by(v, factor := f) AS y FROM t", t=t)
    assert out["y"].to_list() == [1.0, 2.0, 3.0]


def test_show_functions_and_python_listing(scale):
    listed = mlnb.functions("scale*")
    row = listed.row(0, named=True)
    assert row["signature"] == "scale_by(x DOUBLE, factor := 2.0, shift := 0.0) -> DOUBLE"
    assert row["doc"] == "Multiply a column by a factor."
    sql_listing = mlnb.sql("SHOW FUNCTIONS LIKE 'scale%'")
    assert sql_listing.equals(listed)
    assert "read_images" in mlnb.sql("SHOW FUNCTIONS")["name"].to_list()


def test_duplicate_name_is_an_error(scale):
    with pytest.raises(mlnb.MlnbError, match="already registered"):

        @mlnb.function(returns="DOUBLE")
        def scale_by(x: float):
            return x


def test_unknown_option_suggests(scale):
    fn, _ = scale
    with pytest.raises(mlnb.MlnbError, match="Did you mean 'factor'"):
        fn(1.0, facter=2)


def test_error_inside_a_function_surfaces_as_its_own_message():
    @mlnb.function(returns="DOUBLE", replace=True)
    def always_fails(x: float):
        raise mlnb.MlnbError("this function refuses")

    try:
        with pytest.raises(mlnb.MlnbError, match="this function refuses"):
            mlnb.sql("SELECT always_fails(1.0)")
    finally:
        registry.remove("always_fails")


def test_untyped_parameter_is_rejected():
    with pytest.raises(mlnb.MlnbError, match="needs a type"):

        @mlnb.function(returns="DOUBLE")
        def untyped(x):
            return x


def test_list_returning_function():
    @mlnb.function(returns="FLOAT[]", replace=True)
    def pair(x: float):
        return pa.array([[v, v] for v in x.to_pylist()], pa.list_(pa.float32()))

    try:
        assert mlnb.sql("SELECT pair(2.0) AS p").item().to_list() == [2.0, 2.0]
        assert list(pair(3.0)) == [3.0, 3.0]
    finally:
        registry.remove("pair")
