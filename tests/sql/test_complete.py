"""complete(): what Tab offers in a %%mlsql cell, without IPython."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from mlnb.heads.algorithms import ALGORITHMS, OPTIONS
from mlnb.sql._complete import complete, forget_functions
from mlnb.sql._session import Session


@pytest.fixture(scope="module")
def session():
    s = Session()
    yield s
    s.close()


@pytest.fixture
def ns():
    return {
        "images": pl.DataFrame({"path": ["a.jpg"], "label": ["cat"], "My Col": [1], "order": [2]}),
        "meta": pd.DataFrame({"path": ["a.jpg"], "width": [640], "height": [480]}),
        "arrow_t": pa.table({"score": [0.5], "split": ["train"]}),
        "lazy": pl.LazyFrame({"lz_a": [1], "lz_b": [2]}),
        "lo": 3,
        "name": "cat",
        "ids": [1, 2],
        "threshold": np.float32(0.5),
        "not_a_param": object(),
        "_hidden": 1,
    }


def texts(text, ns, session, cursor=None, **kw):
    return [c.text for c in complete(text, cursor, ns, session=session, **kw)]


def at(text, marker="|"):
    """A cell with the cursor written as ``|``: (text without it, cursor)."""
    i = text.index(marker)
    return text[:i] + text[i + 1 :], i


def test_columns_of_the_table_in_from(ns, session):
    text, cur = at("SELECT pa| FROM images")
    got = complete(text, cur, ns, session=session)
    assert got[0].text == "path" and got[0].type == "column"
    assert (got[0].start, got[0].end) == (7, 9)  # replaces what was typed
    assert "String" in got[0].detail


def test_every_column_of_every_table_when_not_qualified(ns, session):
    text, cur = at("SELECT | FROM images i JOIN meta m ON i.path = m.path")
    got = texts(text, ns, session, cur)
    for col in ["path", "label", '"My Col"', '"order"', "width", "height"]:
        assert col in got
    # columns first, then the tables' names for qualifying
    assert got.index("height") < got.index("i") and "m" in got


def test_alias_dot_completes_that_tables_columns(ns, session):
    text, cur = at("SELECT m.| FROM images AS i JOIN meta m ON i.path = m.path")
    assert texts(text, ns, session, cur) == ["path", "width", "height"]
    text, cur = at("SELECT i.| FROM images AS i, meta m")
    assert texts(text, ns, session, cur) == ["path", "label", '"My Col"', '"order"']
    text, cur = at("SELECT images.la| FROM images")
    assert texts(text, ns, session, cur) == ["label"]


def test_quoted_names_are_completed_quoted(ns, session):
    text, cur = at('SELECT "My| FROM images')  # the quote is still open
    assert texts(text, ns, session, cur) == ['"My Col"']
    text, cur = at("SELECT or| FROM images")
    assert '"order"' in texts(text, ns, session, cur)  # a reserved word as a column name


def test_pandas_arrow_and_lazy_frames_give_their_schema(ns, session):
    assert texts("SELECT x.| FROM arrow_t x".replace("|", ""), ns, session, 9) == ["score", "split"]
    assert texts("SELECT lz FROM lazy", ns, session, 9) == ["lz_a", "lz_b"]


def test_tables_after_from_and_join(ns, session):
    got = complete("SELECT * FROM ", None, ns, session=session)
    names = [c.text for c in got]
    for t in ["images", "meta", "arrow_t", "lazy", "labels", "runs"]:
        assert t in names
    assert "lo" not in names and "_hidden" not in names
    assert {c.type for c in got} == {"table"}
    assert texts("SELECT * FROM images JOIN me", ns, session) == ["meta"]
    assert texts("SELECT * FROM images, ar", ns, session)[0] == "arrow_t"  # frames before table functions
    assert "read_parquet" in texts("SELECT * FROM read_pa", ns, session)
    assert "read_images" in texts("SELECT * FROM read_im", ns, session)


def test_duckdb_tables_and_their_columns(ns, session):
    session.con.execute("CREATE OR REPLACE TABLE crops AS SELECT 1 AS crop_id, 'x' AS crop_path")
    assert "crops" in texts("SELECT * FROM cr", ns, session)
    assert texts("SELECT crop_| FROM crops".replace("|", ""), ns, session, 12) == ["crop_id", "crop_path"]
    assert texts("SELECT c. FROM crops c", ns, session, 9) == ["crop_id", "crop_path"]


def test_builtin_tables_and_saved_selections(ns, session, _workspace):
    from mlnb.workspace import get_workspace

    path = get_workspace().path("selections", "picked.parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"sel_path": ["a"], "sel_x": [1.0]}).write_parquet(path)
    assert "picked" in texts("SELECT * FROM pi", ns, session)
    assert texts("SELECT p. FROM picked p", ns, session, 9) == ["sel_path", "sel_x"]
    assert "item" in texts("SELECT l. FROM labels l", ns, session, 9)


def test_table_function_columns(ns, session):
    assert texts("SELECT r. FROM read_images('x/*.jpg') r", ns, session, 9) == ["path", "size", "label", "last_modified"]


def test_functions_with_signatures(ns, session):
    got = complete("SELECT emb", None, ns, session=session)
    assert got[0].text == "embed" and got[0].type == "function"
    assert got[0].detail.startswith("embed(image") and "model :=" in got[0].detail
    cos = [c for c in complete("SELECT array_cos", None, ns, session=session) if c.text == "array_cosine_similarity"]
    assert cos and "array1" in cos[0].detail and "->" in cos[0].detail


def test_user_macros_appear_after_forget(ns, session):
    session.con.execute("CREATE OR REPLACE MACRO zz_double(x) AS x * 2")
    forget_functions()
    got = [c for c in complete("SELECT zz_d", None, ns, session=session)]
    assert [c.text for c in got] == ["zz_double"] and got[0].detail == "zz_double(x)"


def test_heads_as_functions_and_versions(ns, session):
    from mlnb.heads import train_classifier

    rng = np.random.default_rng(0)
    frame = pl.DataFrame({"features": rng.normal(size=(12, 4)).astype(np.float32).tolist(), "label": list("ab" * 6)})
    train_classifier(frame, name="pets", folds=None)
    train_classifier(frame, name="pets", folds=None)
    got = texts("SELECT pe", ns, session)
    assert "pets" in got and "pets_proba" in got and '"pets@1"' in got and '"pets@2_proba"' in got
    assert texts("EVALUATE CLASSIFIER ", ns, session) == ["pets", '"pets@1"', '"pets@2"']
    assert "pets" in texts("DROP CLASSIFIER ", ns, session)


def test_model_and_layer_strings(ns, session):
    import mlnb.features.zoo  # noqa: F401 - the zoo loaded (in a notebook the first Tab starts loading it)

    got = complete("SELECT embed(path, model := 'eff", None, ns, session=session)
    assert got[0].text == "efficientnet_lite0" and got[0].type == "model"  # offline models first
    assert got[0].start == len("SELECT embed(path, model := '")  # inside the quotes
    assert all(c.text.startswith("eff") for c in got)
    layers = texts("SELECT embed(path, model := 'efficientnet_lite0', layer := '", ns, session)
    assert layers[0] == "pool" and "_blocks.5" in layers
    # the layer of the model named later in the same call
    text, cur = at("SELECT embed(path, layer := '|', model := 'efficientnet_lite0')")
    assert "_conv_head" in texts(text, ns, session, cur)
    # default model when none is named
    assert "_conv_head" in texts("SELECT embed(path, layer := '", ns, session)
    # the model a $variable names
    import mlnb.features.zoo as zoo

    other = next(n for n in zoo.list_models().get_column("name").to_list() if zoo.get_spec(n).layers != zoo.get_spec("efficientnet_lite0").layers)
    got = texts("SELECT embed(path, model := $m, layer := '", {**ns, "m": other}, session)
    assert got == list(zoo.get_spec(other).layers)
    # before the quote: quoted names
    assert "'efficientnet_lite0'" in texts("SELECT embed(path, model := ", ns, session)
    # option names inside the call
    assert texts("SELECT embed(path, mo", ns, session)[0] == "model := "


def test_other_strings_are_left_alone(ns, session):
    got = complete("SELECT * FROM read_images('photos/", None, ns, session=session)
    assert list(got) == [] and got.context == "string"
    got = complete("SELECT 1 -- a comment ", None, ns, session=session)
    assert list(got) == [] and got.context == "comment"


def test_dollar_variables(ns, session):
    got = complete("SELECT * FROM images WHERE label = $", None, ns, session=session)
    assert [c.text for c in got] == ["$ids", "$lo", "$name", "$threshold"]
    assert got[0].start == len("SELECT * FROM images WHERE label = ")
    assert texts("SELECT $na", ns, session) == ["$name"]


def test_create_classifier_algorithms_and_options(ns, session):
    assert texts("CREATE CLASSIFIER pets USING ", ns, session) == [*ALGORITHMS, "finetune"]
    assert texts("CREATE OR REPLACE CLASSIFIER pets USING k", ns, session) == ["knn"]
    got = texts("CREATE CLASSIFIER pets USING mlp WITH (", ns, session)
    assert got == [*OPTIONS["mlp"], "folds", "test", "test_where"]
    assert texts("CREATE CLASSIFIER pets USING torch WITH (epochs = 3, lr = 0.1, pat", ns, session) == ["patience"]
    assert texts("CREATE CLASSIFIER pets WITH (", ns, session) == [*OPTIONS["logistic"], "folds", "test", "test_where"]
    assert texts("CREATE CLASSIFIER pets ", ns, session) == ["USING", "WITH", "AS"]
    assert "folds" in texts("CREATE CLASSIFIER pets WITH (C = 1, ", ns, session)
    # the training query is plain SQL again
    text, cur = at("CREATE CLASSIFIER pets USING knn AS SELECT | FROM meta")
    assert "width" in texts(text, ns, session, cur)


def test_statement_keywords(ns, session):
    got = texts("", ns, session)
    for kw in ["SELECT", "CREATE CLASSIFIER", "EVALUATE CLASSIFIER", "SHOW CLASSIFIERS", "DROP CLASSIFIER"]:
        assert kw in got
    got = texts("sh", ns, session)
    assert {"show classifiers", "show functions", "show models", "show tables"} <= set(got)  # typed case kept
    # statements follow the parser's list: a new mlnb statement is offered as soon as it parses
    from mlnb.sql._parse import _KIND_PATTERNS

    for kind, pattern in _KIND_PATTERNS:
        if kind != "setting":
            first_two = " ".join(pattern.pattern.replace(r"\s+", " ").replace(r"\b", "").split()[:2])
            if "(" not in first_two:
                assert first_two in texts("", ns, session), first_two
    assert texts("CREATE OR REPLACE ", ns, session)[:2] == ["CLASSIFIER", "REGRESSOR"]
    assert texts("SELECT 1; CREATE CL", ns, session) == ["CLASSIFIER"]
    assert "mlnb_engine" in texts("SET mlnb_e", ns, session)
    assert "WHERE" in texts("SELECT * FROM images WH", ns, session)


def test_cursor_in_the_second_statement(ns, session):
    text, cur = at("SELECT * FROM meta; SELECT | FROM images")
    got = texts(text, ns, session, cur)
    assert "label" in got and "width" not in got


def test_subquery_scope(ns, session):
    text, cur = at("SELECT * FROM meta WHERE path IN (SELECT | FROM images)")
    got = texts(text, ns, session, cur)
    assert "label" in got and "width" not in got


def test_wide_frame_is_fast(session):
    import time

    wide = pl.DataFrame({f"feat_{i}": [0.0] for i in range(1000)})
    ns = {"wide": wide}
    complete("SELECT f FROM wide", 8, ns, session=session)  # caches warm
    t = time.perf_counter()
    for _ in range(20):
        got = complete("SELECT feat_99 FROM wide", 14, ns, session=session)
    per = (time.perf_counter() - t) / 20
    assert [c.text for c in got][:2] == ["feat_99", "feat_990"]
    assert per < 0.05, f"{per * 1000:.1f} ms a completion"


def test_incomplete_sql_never_raises(ns, session):
    for text in ["SELECT (", "SELECT * FROM (SELECT", "SELECT 'unterminated", 'SELECT "x', "SELECT /* open", "WITH a AS (",
                 "CREATE CLASSIFIER", "EVALUATE", ";;;", "SELECT a.b.c.", "$", "SELECT $", "SELECT * FROM t WHERE x IN (1, 2"]:
        for cur in range(len(text) + 1):
            complete(text, cur, ns, session=session)


def test_columns_of_the_notebooks_frames_before_from_is_typed(ns, session):
    got = complete("SELECT wi", None, ns, session=session)
    assert got[0].text == "width" and "meta" in got[0].detail
    assert {"lz_a", "lz_b", "score", "label"} <= set(texts("SELECT ", ns, session))
    # once there is a FROM, only its tables count
    assert "width" not in texts("SELECT wi FROM images", ns, session, 9)


def test_regressors(ns, session):
    from mlnb.heads.algorithms import REGRESSION_ALGORITHMS, REGRESSION_OPTIONS

    assert texts("CREATE REGRESSOR price USING ", ns, session) == list(REGRESSION_ALGORITHMS)
    algo = next(iter(REGRESSION_OPTIONS))
    got = texts(f"CREATE REGRESSOR price USING {algo} WITH (", ns, session)
    assert got[: len(REGRESSION_OPTIONS[algo])] == list(REGRESSION_OPTIONS[algo]) and "folds" in got


def test_columns_of_subqueries_and_with_tables(ns, session):
    text, cur = at("WITH recent AS (SELECT path, label AS tag FROM images) SELECT r.| FROM recent r")
    assert texts(text, ns, session, cur) == ["path", "tag"]
    text, cur = at("SELECT s.| FROM (SELECT width * 2 AS w2, height FROM meta) AS s")
    assert texts(text, ns, session, cur) == ["w2", "height"]
    text, cur = at("WITH recent AS (SELECT path, label AS tag FROM images) SELECT ta| FROM recent")
    assert texts(text, ns, session, cur)[0] == "tag"
    # a body that does not bind alone gives nothing, and no error
    text, cur = at("SELECT s.| FROM (SELECT nope FROM images) s")
    assert texts(text, ns, session, cur) == []


def test_columns_of_files_and_duckdb_table_functions(ns, session, tmp_path):
    path = tmp_path / "scores.parquet"
    pl.DataFrame({"file_id": [1], "file_score": [0.5]}).write_parquet(path)
    text, cur = at(f"SELECT f.| FROM read_parquet('{path}') f")
    assert texts(text, ns, session, cur) == ["file_id", "file_score"]
    text, cur = at(f"SELECT file_| FROM '{path}'")
    assert texts(text, ns, session, cur)[:2] == ["file_id", "file_score"]


def test_schema_qualified_tables_and_their_columns(ns, session):
    session.con.execute("CREATE SCHEMA IF NOT EXISTS shelf")
    session.con.execute("CREATE OR REPLACE TABLE shelf.books AS SELECT 1 AS book_id, 'x' AS book_title")
    assert texts("SELECT * FROM shelf.", ns, session) == ["books"]
    assert texts("SELECT * FROM images JOIN shelf.bo", ns, session) == ["books"]
    assert "shelf.books" in texts("SELECT * FROM sh", ns, session)  # another schema's table, named with it
    assert "books" not in texts("SELECT * FROM ", ns, session)  # 'FROM books' would not find it
    assert texts("SELECT b.| FROM shelf.books b".replace("|", ""), ns, session, 9) == ["book_id", "book_title"]
    text, cur = at("SELECT b| FROM images JOIN shelf.books ON true")
    assert texts(text, ns, session, cur)[:2] == ["book_id", "book_title"]
    text, cur = at("SELECT books.| FROM shelf.books")
    assert texts(text, ns, session, cur) == ["book_id", "book_title"]


def test_an_alias_means_the_table_of_the_innermost_query(ns, session):
    # the same alias in a WITH table and in the main query
    text, cur = at("WITH c AS (SELECT * FROM images t) SELECT t.| FROM meta t")
    assert texts(text, ns, session, cur) == ["path", "width", "height"]
    text, cur = at("WITH c AS (SELECT t.| FROM images t) SELECT * FROM meta t")
    assert texts(text, ns, session, cur) == ["path", "label", '"My Col"', '"order"']
    # a correlated subquery's own t hides the outer one; the outer one is still seen when not hidden
    text, cur = at("SELECT * FROM images t WHERE EXISTS (SELECT 1 FROM meta t WHERE t.|)")
    assert texts(text, ns, session, cur) == ["path", "width", "height"]
    text, cur = at("SELECT * FROM images o WHERE EXISTS (SELECT 1 FROM meta t WHERE o.|)")
    assert texts(text, ns, session, cur) == ["path", "label", '"My Col"', '"order"']
    # a call's parentheses are no query: the columns of the query around it
    text, cur = at("SELECT upper(| FROM meta")
    assert texts(text, ns, session, cur)[:3] == ["path", "width", "height"]


def test_quoted_table_names(ns, session):
    session.con.execute('CREATE OR REPLACE TABLE "Shelf Life" AS SELECT 1 AS "days left"')
    assert texts('SELECT * FROM "Shelf', ns, session) == ['"Shelf Life"']
    text, cur = at('SELECT | FROM "Shelf Life"')
    assert '"Shelf Life"' in texts(text, ns, session, cur)  # offered as a qualifier, quoted
    text, cur = at('SELECT i."My|" FROM images i')  # the quote already closed after the cursor
    assert texts(text, ns, session, cur) == ['"My Col"']


def test_quality_functions_arguments(ns, session, tmp_path):
    from mlnb.heads import train_classifier

    frame = pl.DataFrame({"features": np.eye(4, dtype=np.float32)[[0, 1] * 6].tolist(), "label": list("ab" * 6)})
    train_classifier(frame, name="digit", folds=None)
    got = complete("SELECT * FROM near_duplicates(", None, ns, session=session)
    assert {"images", "meta"} <= {c.text for c in got} and {c.type for c in got} == {"table"}
    assert texts("SELECT * FROM near_duplicates(im", ns, session) == ["images"]
    assert texts("SELECT * FROM near_duplicates(images, ", ns, session)[:2] == ["features := ", "threshold := "]
    assert "i" not in texts("SELECT * FROM near_duplicates(images, ", ns, session)  # not its own result's columns
    # features := '...' and label := '...': the input's columns, however it is given
    got = complete("SELECT * FROM outliers(meta, features := '", None, ns, session=session)
    assert [c.text for c in got] == ["path", "width", "height"] and got[0].start == len("SELECT * FROM outliers(meta, features := '")
    assert texts("SELECT * FROM label_issues(images, features := 'path', label := 'la", ns, session) == ["label"]
    assert texts("SELECT * FROM label_issues((SELECT width AS w FROM meta), features := '", ns, session) == ["w"]
    assert texts("WITH q AS (SELECT height AS h FROM meta) SELECT * FROM outliers(q, features := '", ns, session) == ["h"]
    path = tmp_path / "scores.parquet"
    pl.DataFrame({"file_f": [[1.0]], "file_y": [1]}).write_parquet(path)
    assert texts(f"SELECT * FROM outliers('{path}', features := '", ns, session) == ["file_f", "file_y"]
    assert texts(f"SELECT * FROM outliers(read_parquet('{path}'), features := 'file_f', label := 'file_", ns, session) == ["file_f", "file_y"]
    # label_issues('<head>')
    assert texts("SELECT * FROM label_issues('", ns, session) == ["digit", "digit@1"]
    assert texts("SELECT * FROM read_images('", ns, session) == []  # a path: left to the notebook


def test_each_select_of_a_union_has_its_own_tables(ns, session):
    text, cur = at("SELECT path FROM images UNION ALL SELECT | FROM meta")
    got = texts(text, ns, session, cur)
    assert "width" in got and "label" not in got
    text, cur = at("SELECT | FROM images EXCEPT SELECT path FROM meta")
    got = texts(text, ns, session, cur)
    assert "label" in got and "width" not in got
    text, cur = at("SELECT * FROM (SELECT path FROM meta UNION SELECT x.| FROM images x) u")
    assert texts(text, ns, session, cur) == ["path", "label", '"My Col"', '"order"']


def test_options_already_given_are_not_offered_again(ns, session):
    got = texts("CREATE CLASSIFIER pets USING knn WITH (k = 3, ", ns, session)
    assert got == ["folds", "test", "test_where"]
    assert "folds" not in texts("CREATE CLASSIFIER pets WITH (folds = 3, C = 1, ", ns, session)


def test_create_classifier_using_finetune(ns, session):
    import mlnb.features.zoo  # noqa: F401 - the zoo loaded (in a notebook the first Tab starts loading it)
    from mlnb.heads._finetune import DEFAULTS

    assert texts("CREATE CLASSIFIER pets USING fi", ns, session) == ["finetune"]
    assert "finetune" not in texts("CREATE REGRESSOR price USING ", ns, session)
    got = texts("CREATE CLASSIFIER pets USING finetune WITH (epochs = 3, ", ns, session)
    assert got == [k for k in DEFAULTS if k not in ("device", "epochs")] and "folds" not in got
    assert texts("CREATE CLASSIFIER pets USING finetune WITH (model = 'efficientnet_l", ns, session)[0] == "efficientnet_lite0"
