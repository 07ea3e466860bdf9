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
always means the latest and ``"name@1"`` an older one. ``OR REPLACE`` drops
the old versions first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from re import Match
from typing import Any

from ..exceptions import QueryError
from ._lexer import significant, tokenize
from ._session import Session, statement

_NAME = r"(?P<name>[A-Za-z_]\w*)"


def _options(text: str | None, stmt: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not text or not text.strip():
        return out
    toks = significant(tokenize(text))
    i = 0
    while i < len(toks):
        if toks[i].text == ",":
            i += 1
            continue
        if i + 2 >= len(toks) or toks[i].kind != "ident" or toks[i + 1].text not in ("=", ":="):
            raise QueryError("WITH takes options as name = value, e.g. WITH (C = 0.5, folds = 5).", statement=stmt)
        key, v = toks[i].text.lower(), toks[i + 2]
        if v.kind == "string":
            val: Any = v.text[1:-1].replace("''", "'")
        elif v.kind == "number":
            val = float(v.text) if any(c in v.text for c in ".eE") else int(v.text)
        elif v.upper in ("TRUE", "FALSE"):
            val = v.upper == "TRUE"
        elif v.kind == "op" and v.text == "-" and i + 3 < len(toks) and toks[i + 3].kind == "number":
            n = toks[i + 3].text
            val = -(float(n) if "." in n else int(n))
            i += 1
        else:
            val = v.text
        out[key] = val
        i += 3
    return out


def _provenance(query: str) -> tuple[str | None, str | None]:
    """The backbone and layer of an ``embed()`` call in the training query, if any."""
    m = re.search(r"\bembed\s*\(", query, re.IGNORECASE)
    if not m:
        return None, None
    rest = query[m.end() :]
    mm = re.search(r"\bmodel\s*:=\s*'([^']*)'", rest, re.IGNORECASE)
    ml = re.search(r"\blayer\s*:=\s*'([^']*)'", rest, re.IGNORECASE)
    return (mm.group(1) if mm else "efficientnet_lite0"), (ml.group(1) if ml else "pool")


def _split_columns(df: Any, stmt: str) -> tuple[str, str]:
    if "features" in df.columns and "label" in df.columns:
        return "features", "label"
    if df.width < 2:
        raise QueryError("The training query must return a features column and a label column.", statement=stmt)
    return df.columns[0], df.columns[1]


@statement(
    r"CREATE\s+(?P<replace>OR\s+REPLACE\s+)?CLASSIFIER\s+" + _NAME + r"\s*(?:USING\s+(?P<algo>\w+)\s*)?"
    r"(?:WITH\s*\((?P<opts>[^)]*)\)\s*)?AS\s+(?P<query>.+)"
)
def _create(session: Session, m: Match[str], stmt: str, ns: Mapping[str, Any]) -> Any:
    import polars as pl

    from ..heads import drop_classifier, train_classifier
    from ..heads.store import versions

    opts = _options(m.group("opts"), stmt)
    folds = opts.pop("folds", None)
    query = m.group("query")
    df = session._run_one(query, ns, lazy=False)
    feats, label = _split_columns(df, stmt)
    model, layer = _provenance(query)
    name = m.group("name")
    if m.group("replace") and versions(name):
        drop_classifier(name)
    head = train_classifier(
        df, features=feats, label=label, algo=(m.group("algo") or "logistic").lower(), name=name, folds=folds, options=opts,
        feature_model=model, layer=layer,
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
        }
    )


@statement(r"EVALUATE\s+CLASSIFIER\s+(?P<ref>\"?[A-Za-z_]\w*(?:@\d+)?\"?)(?:\s+ON\s*\((?P<query>.+)\))?")
def _evaluate(session: Session, m: Match[str], stmt: str, ns: Mapping[str, Any]) -> Any:
    import polars as pl

    from ..heads import load_classifier

    head = load_classifier(m.group("ref").strip('"'))
    if m.group("query") is None:  # the metrics measured at training time
        met = head.meta["metrics"]
        return pl.DataFrame({"classifier": [head.ref], **{k: [v] for k, v in met.items()}})
    df = session._run_one(m.group("query"), ns, lazy=False)
    feats, label = _split_columns(df, stmt)
    ev = head.evaluate(df, features=feats, label=label)
    return ev.metrics.with_columns(pl.lit(head.ref).alias("classifier")).select("classifier", *ev.metrics.columns)


@statement(r"SHOW\s+CLASSIFIERS")
def _show(session: Session, m: Match[str], stmt: str, ns: Mapping[str, Any]) -> Any:
    from ..heads import classifiers

    return classifiers()


@statement(r"DROP\s+CLASSIFIER\s+(?P<ifexists>IF\s+EXISTS\s+)?" + _NAME)
def _drop(session: Session, m: Match[str], stmt: str, ns: Mapping[str, Any]) -> Any:
    import polars as pl

    from ..heads import drop_classifier
    from ..heads.store import versions

    name = m.group("name")
    if m.group("ifexists") and not versions(name):
        return pl.DataFrame({"dropped": [name], "versions": [0]})
    return pl.DataFrame({"dropped": [name], "versions": [drop_classifier(name)]})
