"""``CREATE CLASSIFIER`` / ``REGRESSOR``, ``EVALUATE``, ``SHOW``, ``DROP``.

::

    CREATE [OR REPLACE] CLASSIFIER name [USING algo] [WITH (option = value, ...)]
        AS SELECT <features>, <label> FROM ...
    EVALUATE CLASSIFIER name[@version] [CONFUSION] [ON (SELECT <features>, <label> FROM ...)]
    SHOW CLASSIFIERS
    DROP CLASSIFIER [IF EXISTS] name

    CREATE [OR REPLACE] REGRESSOR name [USING ridge|gbdt|random_forest|knn] [WITH (...)]
        AS SELECT <features>, <target> FROM ...
    EVALUATE REGRESSOR name[@version] [ON (SELECT <features>, <target> FROM ...)]
    SHOW REGRESSORS
    DROP REGRESSOR [IF EXISTS] name

The training query's columns named ``features`` and ``label`` (``target`` for a
regressor) are used, else its first and second columns. ``WITH`` takes the
algorithm's options plus the experiment's (MLDB's ``classifier.experiment``):

* ``folds = k`` — k-fold cross-validation; ``folds = 0`` trains without it;
* ``test = (SELECT ...)`` (or ``test = table``) — a held-out set, evaluated on
  and not trained on; its columns are read like the training query's;
* ``test_where = 'hash(path) % 5 = 0'`` — a split: the training query's rows
  for which DuckDB finds the condition true are the test set and are not
  trained on. The condition may use any column of the query's FROM tables
  (it is added to the query's own SELECT list).

With a test set and no ``folds``, only the test set is evaluated. Per-fold
metrics and confusion matrices are kept with the head: ``SELECT * FROM
classifier_folds('name')`` (fold, rows, accuracy, macro_f1, log_loss, then
mean / std / min / max rows like MLDB, then ``test`` or ``train``) and
``classifier_confusion('name')`` (fold, actual, predicted, count; ``cv`` is every
out-of-fold prediction together); ``regressor_folds('name')`` for regressors.

``EVALUATE CLASSIFIER`` returns BigQuery ML's ``ML.EVALUATE`` row (accuracy,
macro_f1, log_loss, n) with MLDB's confusion matrix in a ``confusion`` column
(a list of (actual, predicted, count)); ``EVALUATE CLASSIFIER name CONFUSION
...`` returns the matrix itself as ``ML.CONFUSION_MATRIX`` does: one row per
actual class, one column per predicted class. Without ``ON``, both come from
training time (test set, else cross-validation, else training data).

Training again under a name makes a new version; ``name`` always means the
latest and ``"name@1"`` an older one. ``OR REPLACE`` trains first and replaces
the old versions only when the new head is saved: a failed training leaves
the old head as it was. A name holds one kind: a classifier's name cannot get
a regressor version (except with ``OR REPLACE``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from re import Match
from typing import Any

from ..config import DEFAULT_MODEL
from ..exceptions import QueryError
from ._errors import quote
from ._parse import Statement, literal_value, parse
from ._session import Session, statement

_NAME = r"(?P<name>[A-Za-z_]\w*)"


@dataclass(frozen=True)
class Subquery:
    """An option value in parentheses: ``test = (SELECT ...)``."""

    statement: Statement


def _with_as(stmt: Statement, m: Match[str]) -> tuple[dict[str, Any], Statement]:
    """``[WITH (...)] AS <query>`` after the head's name and algorithm: the options and the query,
    read from the statement's tokens (parentheses balanced by the tokenizer, so an option may be
    a subquery)."""
    toks = stmt.tokens
    i = next((k for k, t in enumerate(toks) if t.start >= m.start("rest")), len(toks))
    opts: dict[str, Any] = {}
    if i < len(toks) and toks[i].upper == "WITH":
        if i + 1 >= len(toks) or toks[i + 1].text != "(":
            raise QueryError("WITH takes its options in parentheses: WITH (C = 0.5, folds = 5).", statement=stmt.text, position=toks[i].start)
        if stmt.match[i + 1] < 0:
            raise QueryError("The ( after WITH has no closing ).", statement=stmt.text, position=toks[i + 1].start)
        close = stmt.match[i + 1]
        opts = _options(stmt, i + 2, close)
        i = close + 1
    if i >= len(toks) or toks[i].upper != "AS" or i + 1 >= len(toks):
        where = toks[i].start if i < len(toks) else len(stmt.text)
        raise QueryError("Expected AS SELECT <features>, <label> FROM ... (the training query) here.", statement=stmt.text, position=where)
    return opts, stmt.sub(toks[i + 1].start)


def _options(stmt: Statement, first: int, last: int) -> dict[str, Any]:
    """The tokens between WITH's parentheses (``first`` to ``last``, excluded) → a dict:
    ``C = 0.5, folds = 5, hidden = 'abc'``, lists ``C = [0.1, 1]`` (a hyperparameter search,
    :mod:`mlnb.heads._search`) and subqueries ``test = (SELECT ...)`` (a :class:`Subquery`)."""
    toks, match = stmt.tokens, stmt.match
    out: dict[str, Any] = {}
    i = first
    while i < last:
        if toks[i].text == ",":
            i += 1
            continue
        if i + 2 >= last or not toks[i].is_name or toks[i + 1].text not in ("=", ":="):
            raise QueryError("WITH takes options as name = value, e.g. WITH (C = 0.5, folds = 5).", statement=stmt.text, position=toks[i].start)
        key, written = toks[i].name.lower(), toks[i].name
        if key in out:
            raise QueryError(f"Option {key} is given twice.", statement=stmt.text, position=toks[i].start)
        v = toks[i + 2]
        if v.text in ("(", "[") and (match[i + 2] < 0 or match[i + 2] >= last):
            raise QueryError(f"The value of option {key} has no closing {')' if v.text == '(' else ']'}.", statement=stmt.text, position=v.start)
        if v.text == "(":
            close = match[i + 2]
            if close == i + 3:
                raise QueryError(f"Option {key} has empty parentheses: write a query, e.g. {key} = (SELECT features, label FROM held_out).", statement=stmt.text, position=v.start)
            out[key], i = Subquery(stmt.sub(toks[i + 3].start, toks[close - 1].end)), close + 1
        elif v.text == "[":
            close, val, i = match[i + 2], [], i + 3
            while i < close:
                if toks[i].text == ",":
                    i += 1
                    continue
                start = toks[i].start
                item, i = _scalar(toks, i)
                if toks[i - 1].text in ("[", "(") or (i < close and toks[i].text != ","):
                    raise QueryError(
                        f"Option {written}'s list holds plain values separated by commas (numbers, strings, TRUE/FALSE), "
                        f"e.g. {written} = [0.1, 1, 10]; this item is not one.",
                        statement=stmt.text, position=start,
                    )
                val.append(item)
            out[key], i = val, close + 1
        else:
            out[key], i = _scalar(toks, i + 2)
        if i < last and toks[i].text != ",":
            raise QueryError(f"Expected a comma after option {key}.", statement=stmt.text, position=toks[i].start)
    return out


def _scalar(toks: list[Any], i: int) -> tuple[Any, int]:
    """The literal at ``toks[i]`` (a number, maybe negative, a string, TRUE/FALSE) and the index after it."""
    v = toks[i]
    negative = v.text == "-" and i + 1 < len(toks) and toks[i + 1].kind == "number"
    if negative:
        v = toks[i + 1]
    val = literal_value(v)
    if v.upper in ("TRUE", "FALSE"):
        val = v.upper == "TRUE"
    elif v.upper == "NULL" and not negative:
        val = None
    elif not isinstance(val, (str, int, float)):
        val = v.text
    return (-val if negative else val), i + (2 if negative else 1)


def _provenance(query: Statement) -> tuple[str | None, str | None]:
    """The backbone and layer of the first ``embed()`` call in the training query, if any."""
    for call in query.calls_named(["embed"]):
        opts = query.literal_options(call) or {}
        return str(opts.get("model", DEFAULT_MODEL)), str(opts.get("layer", "pool"))
    return None, None


def _split_columns(df: Any, stmt: Statement, second: tuple[str, ...] = ("label",), what: str = "training query") -> tuple[str, str]:
    for name in second:
        if "features" in df.columns and name in df.columns:
            return "features", name
    if df.width < 2:
        raise QueryError(f"The {what} must return a features column and a {second[0]} column.", statement=stmt.text)
    return df.columns[0], df.columns[1]


_TEST = "__mlnb_test"


def _experiment_data(
    session: Session, stmt: Statement, opts: dict[str, Any], query: Statement, ns: Mapping[str, Any], second: tuple[str, ...]
) -> tuple[Any, Any, str, str, Any]:
    """The experiment's options taken out of ``opts`` and its rows: (training rows, test rows or
    None, feature column, label column, folds)."""
    import polars as pl

    folds = opts.pop("folds", None)
    test = opts.pop("test", None)
    where = opts.pop("test_where", None)
    if test is not None and where is not None:
        raise QueryError("Give test = (SELECT ...) or test_where = '...', not both.", statement=stmt.text)
    for key, value in opts.items():
        if isinstance(value, Subquery):
            raise QueryError(f"Option {key} takes a value, not a query in parentheses (only test does).", statement=stmt.text)
    test_df = None
    if where is not None:
        split = _with_test_column(stmt, query, where)
        try:
            df = session._run_one(split, ns, lazy=False)
        except QueryError as exc:
            # Said of the query with the condition added (its statement is that query, not the user's).
            at = split.text.find(f"({where}) AS {_TEST}")
            inside = exc.position is not None and at >= 0 and at <= exc.position - split.offset < at + len(where) + 2
            wrapped = "AS __mlnb_query" in split.text
            raise QueryError(
                f"test_where {where!r} does not work: {exc.message}" if inside
                else f"The training query (with test_where {where!r} added as a column) failed: {exc.message}",
                statement=stmt.text,
                hint="The training query is not one SELECT ... FROM (a UNION, or no FROM), so test_where sees only "
                "its output columns: add the column the condition needs to its SELECT list."
                if inside and wrapped else exc.hint,
            ) from None
        mask = df.get_column(_TEST)
        if mask.dtype != pl.Boolean:
            raise QueryError(
                f"test_where must be a condition, true for the test rows (e.g. 'hash(path) % 5 = 0'); {where!r} gives {mask.dtype}.",
                statement=stmt.text,
            )
        mask = mask.fill_null(False)
        n_test = int(mask.sum())
        if n_test == 0 or n_test == df.height:
            what = "none" if n_test == 0 else "all"
            raise QueryError(
                f"test_where {where!r} matched {what} of the {df.height} rows: it must leave rows to train on and rows to test on.",
                statement=stmt.text,
            )
        test_df, df = df.filter(mask).drop(_TEST), df.filter(~mask).drop(_TEST)
    else:
        df = session._run_one(query, ns, lazy=False)
    feats, label = _split_columns(df, stmt, second)
    if test is not None:
        if isinstance(test, Subquery):
            tq = test.statement
        elif isinstance(test, str) and test.strip():
            tq = parse(f"SELECT * FROM {quote(test.strip())}")[0]
        else:
            raise QueryError(f"test takes a query in parentheses, test = (SELECT features, {second[0]} FROM held_out), or a table name; got {test!r}.", statement=stmt.text)
        test_df = session._run_one(tq, ns, lazy=False)
        if not isinstance(test, Subquery) and feats in test_df.columns and label in test_df.columns:
            tf, tl = feats, label  # a table with the training query's columns
        elif not isinstance(test, Subquery) and not ("features" in test_df.columns and any(n in test_df.columns for n in second)):
            shown = ", ".join(test_df.columns[:8]) + (" ..." if test_df.width > 8 else "")
            raise QueryError(
                f"test = {test}: the table has no {feats!r} and {label!r} columns (the training query's), only {shown}. "
                f"Give the test rows as a query that names them: test = (SELECT <features> AS {feats}, <{second[0]}> AS "
                f"{label} FROM {test}).",
                statement=stmt.text,
            )
        else:
            tf, tl = _split_columns(test_df, stmt, second, what="test query")
        test_df = test_df.select(pl.col(tf).alias(feats), pl.col(tl).alias(label))
    return df, test_df, feats, label, folds


def _with_test_column(stmt: Statement, query: Statement, where: Any) -> Statement:
    """The training query with one more column, ``(<where>) AS __mlnb_test``: in its own SELECT
    list when it is one plain SELECT ... FROM (so the condition sees the FROM tables' columns),
    else around it (the condition sees the query's columns)."""
    if not isinstance(where, str) or not where.strip():
        raise QueryError("test_where takes a SQL condition in quotes, e.g. test_where = 'hash(path) % 5 = 0'.", statement=stmt.text)
    cond = parse(where)
    if len(cond) != 1 or any(query_tok.text == ";" for query_tok in cond[0].tokens) or any(
        t.text in ("(", ")", "[", "]") and cond[0].match[k] < 0 for k, t in enumerate(cond[0].tokens)
    ):
        raise QueryError(f"test_where must be one SQL condition with balanced parentheses; got {where!r}.", statement=stmt.text)
    toks, group = query.tokens, query.group
    column = f"({where}) AS {_TEST}"
    at = None
    if toks and toks[0].upper in ("SELECT", "WITH") and not any(
        group[k] == -1 and t.upper in ("UNION", "INTERSECT", "EXCEPT") for k, t in enumerate(toks)
    ):
        # The main SELECT (after a WITH's CTEs, which are in parentheses) and its FROM.
        sel = next((k for k, t in enumerate(toks) if group[k] == -1 and t.upper == "SELECT"), None)
        if sel is not None:
            at = next((t.start for k, t in enumerate(toks) if k > sel and group[k] == -1 and t.upper == "FROM"), None)
    if at is not None:
        text = f"{query.text[:at].rstrip()}, {column} {query.text[at:]}"
    else:
        text = f"SELECT *, {column} FROM ({query.text}) AS __mlnb_query"
    out = parse(text)
    if len(out) != 1:
        raise QueryError(f"test_where must be one SQL condition; got {where!r}.", statement=stmt.text)
    return out[0]


@statement(
    r"CREATE\s+(?P<replace>OR\s+REPLACE\s+)?CLASSIFIER\s+" + _NAME + r"\s*(?:USING\s+(?P<algo>\w+)\s*)?"
    r"(?P<rest>(?:WITH|AS)\b.+)"
)
def _create(session: Session, m: Match[str], stmt: Statement, ns: Mapping[str, Any]) -> Any:
    import polars as pl

    from ..heads import store, train_classifier
    from ..heads._search import result_columns

    store.check_new_name(m.group("name"))  # before the training query runs (it may embed many images)
    opts, query = _with_as(stmt, m)
    if (m.group("algo") or "").lower() == "finetune":  # trains on images, not features
        from ..heads._finetune import create_statement

        return create_statement(session, stmt, m.group("name"), opts, query, ns, replace=bool(m.group("replace")))
    df, test, feats, label, folds = _experiment_data(session, stmt, opts, query, ns, ("label",))
    model, layer = _provenance(query)
    name = m.group("name")
    # OR REPLACE: the new head is trained first; the old versions go only once it is saved.
    head = train_classifier(
        df, features=feats, label=label, algo=(m.group("algo") or "logistic").lower(), name=name, folds=folds, options=opts, test=test,
        feature_model=model, layer=layer, replace=bool(m.group("replace")), training_query=query.text,
    )
    met = head.meta["metrics"]
    return pl.DataFrame(
        {
            "classifier": [head.ref],
            "algorithm": [head.meta["algorithm"]],
            "classes": [len(head.meta["classes"])],
            "rows": [head.meta["n_rows"]],
            "evaluated_on": [met["evaluated_on"]],
            "accuracy": [met["accuracy"]],
            "macro_f1": [met["macro_f1"]],
            "log_loss": [met["log_loss"]],
            "train_seconds": [head.meta["train_seconds"]],
            **result_columns(head),  # a search: the best trial and where to see every trial
        },
        # null after folds = 0 with no test set: still numbers in type
        schema_overrides={"accuracy": pl.Float64, "macro_f1": pl.Float64, "log_loss": pl.Float64},
    )


_REF = r"(?P<ref>\"?[A-Za-z_]\w*(?:@\d+)?\"?)"


@statement(r"EVALUATE\s+CLASSIFIER\s+" + _REF + r"(?P<confusion>\s+CONFUSION)?(?:\s+ON\s*\((?P<query>.+)\))?")
def _evaluate(session: Session, m: Match[str], stmt: Statement, ns: Mapping[str, Any]) -> Any:
    import polars as pl

    from ..heads import load_classifier
    from ..heads.evaluation import confusion_cells

    _check_evaluate_kind(m.group("ref").strip('"'), "classifier", stmt)
    head = load_classifier(m.group("ref").strip('"'))
    if m.group("query") is None:  # what was measured at training time
        met = head.meta["metrics"]
        cells = _training_confusion(head)
        if m.group("confusion") and not cells:
            raise QueryError(
                f"{head.ref} was trained without an evaluation (folds = 0 and no test set), so it has no confusion "
                f"matrix to show: give rows to evaluate on, EVALUATE CLASSIFIER {head.ref.split('@')[0]} CONFUSION "
                "ON (SELECT features, label FROM ...).",
                statement=stmt.text,
            )
        metrics = pl.DataFrame({"classifier": [head.ref], **{k: [v] for k, v in met.items()}})
    else:
        df = session._run_one(stmt.sub(m.start("query"), m.end("query")), ns, lazy=False)
        feats, label = _split_columns(df, stmt)
        ev = head.evaluate(df, features=feats, label=label)
        cells = confusion_cells(ev.predictions["true"], ev.predictions["predicted"], "")
        metrics = ev.metrics.with_columns(pl.lit(head.ref).alias("classifier")).select("classifier", *ev.metrics.columns)
    if m.group("confusion"):
        return _matrix(cells, [str(c) for c in head.meta["classes"]])
    cell_type = pl.List(pl.Struct({"actual": pl.String, "predicted": pl.String, "count": pl.Int64}))
    listed = [{"actual": c["actual"], "predicted": c["predicted"], "count": c["count"]} for c in cells]
    return metrics.with_columns(pl.Series("confusion", [listed], dtype=cell_type))


def _check_evaluate_kind(ref: str, kind: str, stmt: Statement) -> None:
    """EVALUATE CLASSIFIER of a regressor (or the other way round) says which statement it needs."""
    from ..heads import store

    name = ref.split("@")[0]
    other = store.kind_of(name) if name.isidentifier() else None
    if other is not None and other != kind:
        raise QueryError(f"{name} is a {other}, not a {kind}: EVALUATE {other.upper()} {ref} ...", statement=stmt.text)


def _training_confusion(head: Any) -> list[dict[str, Any]]:
    """The confusion cells of what ``evaluated_on`` names: the test set, else every CV fold
    together, else the training data (none after ``folds = 0``)."""
    cells = head.confusion()
    on = str(head.meta["metrics"].get("evaluated_on") or "")
    fold = "test" if on.startswith("test") else "cv" if "CV" in on else "train"
    return cells.filter(cells["fold"] == fold).to_dicts()


def _matrix(cells: list[dict[str, Any]], classes: list[str]) -> Any:
    """ML.CONFUSION_MATRIX's shape: ``actual``, then one count column per predicted class."""
    import polars as pl

    labels = sorted(set(classes) | {c["actual"] for c in cells} | {c["predicted"] for c in cells})
    counts = {(c["actual"], c["predicted"]): int(c["count"]) for c in cells}
    actual = [a for a in labels if any(k[0] == a for k in counts)] or labels
    return pl.DataFrame({"actual": actual, **{p: [counts.get((a, p), 0) for a in actual] for p in labels}})


@statement(
    r"EXPORT\s+(?P<replace>OR\s+REPLACE\s+)?CLASSIFIER\s+" + _REF + r"\s+TO\s+'(?P<path>(?:[^']|'')*)'(?:\s+FORMAT\s+(?P<fmt>\w+))?"
    r"(?:\s+CHECK\s+ON\s*\((?P<query>.+)\))?"
)
def _export(session: Session, m: Match[str], stmt: Statement, ns: Mapping[str, Any]) -> Any:
    """``EXPORT [OR REPLACE] CLASSIFIER name[@v] TO 'file.onnx' [FORMAT onnx|torchscript] [CHECK ON (SELECT image FROM ...)]``:
    see :mod:`mlnb.heads._export` (an existing file is overwritten only with OR REPLACE)."""
    import os

    import polars as pl

    from ..heads._export import export_classifier

    images = None
    if m.group("query") is not None:
        df = session._run_one(stmt.sub(m.start("query"), m.end("query")), ns, lazy=False)
        images = df.get_column(df.columns[0]).drop_nulls().to_list()
    path = m.group("path").replace("''", "'")
    card = export_classifier(m.group("ref").strip('"'), path, format=m.group("fmt"), check_images=images, replace=bool(m.group("replace")))
    check = card["check"]
    return pl.DataFrame(
        {
            "classifier": [card["classifier"]], "path": [path], "format": [card["format"]], "card": [path + ".card.json"],
            "classes": [len(card["classes"])], "checked_images": [check["images"]], "same_class": [check["same_class"]],
            "max_abs_diff": [check["max_abs_diff"]], "bytes": [os.path.getsize(path)],
        }
    )


@statement(r"EXPORT\s+(?:OR\s+REPLACE\s+)?CLASSIFIER\b.*")
def _export_malformed(session: Session, m: Match[str], stmt: Statement, ns: Mapping[str, Any]) -> Any:
    """An EXPORT CLASSIFIER the statement above did not match: say its syntax (DuckDB's own
    'syntax error at or near CLASSIFIER' said nothing of it)."""
    from ..exceptions import QueryError

    raise QueryError(
        "EXPORT CLASSIFIER is written EXPORT [OR REPLACE] CLASSIFIER name[@version] TO 'file.onnx' "
        "[FORMAT onnx | torchscript] [CHECK ON (SELECT image FROM ...)], the file name in single quotes.",
        statement=stmt.text,
    )


@statement(r"SHOW\s+CLASSIFIERS")
def _show(session: Session, m: Match[str], stmt: Statement, ns: Mapping[str, Any]) -> Any:
    from ..heads import classifiers

    return classifiers()


@statement(r"DROP\s+(?P<kind>CLASSIFIER|REGRESSOR)\s+(?P<ifexists>IF\s+EXISTS\s+)?" + _NAME)
def _drop(session: Session, m: Match[str], stmt: Statement, ns: Mapping[str, Any]) -> Any:
    import polars as pl

    from ..heads import drop_classifier
    from ..heads.store import versions

    name = m.group("name")
    if m.group("ifexists") and not versions(name):
        return pl.DataFrame({"dropped": [name], "versions": [0]})
    return pl.DataFrame({"dropped": [name], "versions": [drop_classifier(name, kind=m.group("kind").lower())]})


# -- regressors ----------------------------------------------------------------------
@statement(
    r"CREATE\s+(?P<replace>OR\s+REPLACE\s+)?REGRESSOR\s+" + _NAME + r"\s*(?:USING\s+(?P<algo>\w+)\s*)?"
    r"(?P<rest>(?:WITH|AS)\b.+)"
)
def _create_regressor(session: Session, m: Match[str], stmt: Statement, ns: Mapping[str, Any]) -> Any:
    import polars as pl

    from ..heads import store, train_regressor
    from ..heads._search import result_columns

    store.check_new_name(m.group("name"), "regressor")  # before the training query runs
    opts, query = _with_as(stmt, m)
    df, test, feats, target, folds = _experiment_data(session, stmt, opts, query, ns, ("target", "label"))
    model, layer = _provenance(query)
    reg = train_regressor(
        df, features=feats, target=target, algo=(m.group("algo") or "ridge").lower(), name=m.group("name"), folds=folds,
        options=opts, test=test, feature_model=model, layer=layer, replace=bool(m.group("replace")),
    )
    met = reg.meta["metrics"]
    return pl.DataFrame(
        {
            "regressor": [reg.ref], "algorithm": [reg.meta["algorithm"]], "rows": [reg.meta["n_rows"]],
            "evaluated_on": [met["evaluated_on"]], "rmse": [met["rmse"]], "mae": [met["mae"]], "r2": [met["r2"]],
            "train_seconds": [reg.meta["train_seconds"]],
            **result_columns(reg),  # a search: the best trial and where to see every trial
        },
        schema_overrides={"rmse": pl.Float64, "mae": pl.Float64, "r2": pl.Float64},
    )


@statement(r"EVALUATE\s+REGRESSOR\s+" + _REF + r"(?:\s+ON\s*\((?P<query>.+)\))?")
def _evaluate_regressor(session: Session, m: Match[str], stmt: Statement, ns: Mapping[str, Any]) -> Any:
    import polars as pl

    from ..heads import load_regressor

    _check_evaluate_kind(m.group("ref").strip('"'), "regressor", stmt)
    reg = load_regressor(m.group("ref").strip('"'))
    if m.group("query") is None:
        met = reg.meta["metrics"]
        return pl.DataFrame({"regressor": [reg.ref], **{k: [v] for k, v in met.items()}})
    df = session._run_one(stmt.sub(m.start("query"), m.end("query")), ns, lazy=False)
    feats, target = _split_columns(df, stmt, ("target", "label"), what="query")
    ev = reg.evaluate(df, features=feats, target=target)
    return ev.metrics.with_columns(pl.lit(reg.ref).alias("regressor")).select("regressor", *ev.metrics.columns)


_evaluate_usage = (
    "EVALUATE takes a head's name and, to evaluate on new rows, ON (SELECT ...): "
    "EVALUATE CLASSIFIER name [CONFUSION] [ON (SELECT features, label FROM ...)], "
    "EVALUATE REGRESSOR name [ON (SELECT features, target FROM ...)] (a regressor has no confusion matrix)."
)


@statement(r"EVALUATE\s+(?:CLASSIFIER|REGRESSOR)\b.*")
def _evaluate_written_wrong(session: Session, m: Match[str], stmt: Statement, ns: Mapping[str, Any]) -> Any:
    """Registered after the EVALUATE statements: one written wrong is told how it is written
    (DuckDB would answer a syntax error at EVALUATE)."""
    raise QueryError(_evaluate_usage, statement=stmt.text)


@statement(r"SHOW\s+REGRESSORS")
def _show_regressors(session: Session, m: Match[str], stmt: Statement, ns: Mapping[str, Any]) -> Any:
    from ..heads import regressors

    return regressors()
