import polars as pl
import pytest

import mlnb


@pytest.fixture
def wide():
    return pl.DataFrame(
        {"id": [1, 2], "x1": [0.5, 1.5], "x2": [2, 3], "flag": [True, False], "note": ["a", "b"], "label": ["cat", "dog"]}
    )


def test_pack_remaining_numeric_columns(wide):
    out = mlnb.sql("SELECT {* EXCLUDING(label, id)} AS features, label FROM wide", wide=wide)
    assert out.schema["features"] == pl.Array(pl.Float32, 3)  # x1, x2, flag; text skipped
    assert out["features"].to_list() == [[0.5, 2.0, 1.0], [1.5, 3.0, 0.0]]
    assert out["label"].to_list() == ["cat", "dog"]


def test_prefix_patterns_inside_and_in_excluding(wide):
    out = mlnb.sql("SELECT {x*} AS f FROM wide", wide=wide)
    assert out["f"].to_list() == [[0.5, 2.0], [1.5, 3.0]]
    out = mlnb.sql("SELECT {* EXCLUDING(x*, id)} AS f FROM wide", wide=wide)
    assert out["f"].to_list() == [[1.0], [0.0]]


def test_explicit_list(wide):
    out = mlnb.sql("SELECT {x2, x1} AS f FROM wide WHERE id = 2", wide=wide)
    assert out["f"].to_list() == [[3.0, 1.5]]


def test_plain_excluding_outside_braces(wide):
    out = mlnb.sql("SELECT * EXCLUDING (note, x*) FROM wide", wide=wide)
    assert out.columns == ["id", "flag", "label"]


def test_row_expression_with_where_and_subquery(wide):
    out = mlnb.sql("SELECT label FROM (SELECT {* EXCLUDING(label, id)} AS f, label FROM wide WHERE id > 1) ORDER BY label", wide=wide)
    assert out["label"].to_list() == ["dog"]


def test_typo_in_excluding_fails_loudly(wide):
    with pytest.raises(mlnb.QueryError, match="'lable' in EXCLUDING not found") as e:
        mlnb.sql("SELECT {* EXCLUDING(lable)} AS f FROM wide", wide=wide)
    assert "label" in str(e.value)  # did-you-mean


def test_struct_literals_are_untouched():
    assert mlnb.sql("SELECT {'a': 1} AS s").item() == {"a": 1}
