"""``CREATE CLASSIFIER``, ``EVALUATE CLASSIFIER``, ``SHOW CLASSIFIERS``, ``DROP CLASSIFIER``.

::

    CREATE [OR REPLACE] CLASSIFIER name [USING algo] [WITH (option = value, ...)]
        AS SELECT <features>, <label> FROM ...
    EVALUATE CLASSIFIER name[@version] [ON (SELECT <features>, <label> FROM ...)]
    SHOW CLASSIFIERS
    DROP CLASSIFIER name

The training query's columns named ``features`` and ``label`` are used (else
its first and second columns). ``WITH`` takes the algorithm's options plus
``folds = k``. Training again under a name makes a new version; ``name``
always means the latest and ``"name@1"`` an older one. ``OR REPLACE`` trains
first and replaces the old versions only when the new head is saved: a failed
training leaves the old head as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from re import Match
from typing import Any

from ..config import DEFAULT_MODEL
from ..exceptions import QueryError
from ._parse import Statement, literal_value
from ._session import Session, statement

_NAME = r"(?P<name>[A-Za-z_]\w*)"


def _options(stmt: Statement, m: Match[str]) -> dict[str, Any]:
    """``WITH (C = 0.5, folds = 5, hidden = 'abc')`` → a dict, read from the statement's tokens."""
    out: dict[str, Any] = {}
    if m.group("opts") is None or not m.group("opts").strip():
        return out
    sub = stmt.sub(m.start("opts"), m.end("opts"))
    toks, base = sub.tokens, sub.offset - stmt.offset
    i = 0
    while i < len(toks):
        if toks[i].text == ",":
            i += 1
            continue
        if i + 2 >= len(toks) or not toks[i].is_name or toks[i + 1].text not in ("=", ":="):
            raise QueryError(
                "WITH takes options as name = value, e.g. WITH (C = 0.5, folds = 5).",
                statement=stmt.text, position=base + toks[i].start,
            )
        key = toks[i].name.lower()
        if toks[i + 2].text == "[":  # a list of values: a hyperparameter search (mlnb.heads._search)
            val, i = [], i + 3
            while i < len(toks) and toks[i].text != "]":
                if toks[i].text != ",":
                    item, i = _scalar(toks, i)
                    val.append(item)
                    continue
                i += 1
            if i >= len(toks):
                raise QueryError(f"The list for option {key} has no closing ].", statement=stmt.text, position=base + toks[-1].end)
            out[key], i = val, i + 1
            continue
        out[key], i = _scalar(toks, i + 2)
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
    elif not isinstance(val, (str, int, float)):
        val = v.text
    return (-val if negative else val), i + (2 if negative else 1)


def _provenance(query: Statement) -> tuple[str | None, str | None]:
    """The backbone and layer of the first ``embed()`` call in the training query, if any."""
    for call in query.calls_named(["embed"]):
        opts = query.literal_options(call) or {}
        return str(opts.get("model", DEFAULT_MODEL)), str(opts.get("layer", "pool"))
    return None, None


def _split_columns(df: Any, stmt: str) -> tuple[str, str]:
    if "features" in df.columns and "label" in df.columns:
        return "features", "label"
    if df.width < 2:
        raise QueryError("The training query must return a features column and a label column.", statement=stmt.text)
    return df.columns[0], df.columns[1]


@statement(
    r"CREATE\s+(?P<replace>OR\s+REPLACE\s+)?CLASSIFIER\s+" + _NAME + r"\s*(?:USING\s+(?P<algo>\w+)\s*)?"
    r"(?:WITH\s*\((?P<opts>[^)]*)\)\s*)?AS\s+(?P<query>.+)"
)
def _create(session: Session, m: Match[str], stmt: Statement, ns: Mapping[str, Any]) -> Any:
    import polars as pl

    from ..heads import train_classifier
    from ..heads._search import result_columns

    opts = _options(stmt, m)
    folds = opts.pop("folds", None)
    query = stmt.sub(m.start("query"))
    df = session._run_one(query, ns, lazy=False)
    feats, label = _split_columns(df, stmt)
    model, layer = _provenance(query)
    name = m.group("name")
    # OR REPLACE: the new head is trained first; the old versions go only once it is saved.
    head = train_classifier(
        df, features=feats, label=label, algo=(m.group("algo") or "logistic").lower(), name=name, folds=folds, options=opts,
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
        }
    )


@statement(r"EVALUATE\s+CLASSIFIER\s+(?P<ref>\"?[A-Za-z_]\w*(?:@\d+)?\"?)(?:\s+ON\s*\((?P<query>.+)\))?")
def _evaluate(session: Session, m: Match[str], stmt: Statement, ns: Mapping[str, Any]) -> Any:
    import polars as pl

    from ..heads import load_classifier

    head = load_classifier(m.group("ref").strip('"'))
    if m.group("query") is None:  # the metrics measured at training time
        met = head.meta["metrics"]
        return pl.DataFrame({"classifier": [head.ref], **{k: [v] for k, v in met.items()}})
    df = session._run_one(stmt.sub(m.start("query"), m.end("query")), ns, lazy=False)
    feats, label = _split_columns(df, stmt)
    ev = head.evaluate(df, features=feats, label=label)
    return ev.metrics.with_columns(pl.lit(head.ref).alias("classifier")).select("classifier", *ev.metrics.columns)


@statement(r"SHOW\s+CLASSIFIERS")
def _show(session: Session, m: Match[str], stmt: Statement, ns: Mapping[str, Any]) -> Any:
    from ..heads import classifiers

    return classifiers()


@statement(r"DROP\s+CLASSIFIER\s+(?P<ifexists>IF\s+EXISTS\s+)?" + _NAME)
def _drop(session: Session, m: Match[str], stmt: Statement, ns: Mapping[str, Any]) -> Any:
    import polars as pl

    from ..heads import drop_classifier
    from ..heads.store import versions

    name = m.group("name")
    if m.group("ifexists") and not versions(name):
        return pl.DataFrame({"dropped": [name], "versions": [0]})
    return pl.DataFrame({"dropped": [name], "versions": [drop_classifier(name)]})
