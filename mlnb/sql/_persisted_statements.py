"""The statements of things defined in SQL that persist in the workspace.

::

    CREATE [OR REPLACE] FUNCTION name(arg, ...) AS <expression>
    CREATE [OR REPLACE] FUNCTION name(arg, ...) AS TABLE <query>
    DROP FUNCTION [IF EXISTS] name
    CREATE [OR REPLACE] MODEL name FROM '<path, URL or archive member>'
        [WITH (architecture = 'resnet18', layer = 'avgpool', input_size = 224, mean = [...], std = [...])]
    SHOW MODELS [LIKE 'pattern']
    DROP MODEL [IF EXISTS] name

Functions: :mod:`._persisted`; models: :mod:`mlnb.features._user_models`.
(``CREATE MACRO`` and ``CREATE TEMP FUNCTION`` stay DuckDB's own, for this session only.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from re import Match
from typing import Any

from ..exceptions import MlnbError, QueryError
from ._parse import Statement
from ._session import Session, statement

_NAME = r"(?P<name>[A-Za-z_]\w*)"
# A function's name may be quoted ("Brand"): DuckDB folds quoted names' case too, so it is the same name.
_FNAME = r'(?:(?P<name>[^\W\d]\w*)|"(?P<qname>[^"]*)")'


def _fname(m: Match[str]) -> str:
    return m.group("name") if m.group("name") is not None else m.group("qname")


def _unquote(arg: str) -> str:
    return arg[1:-1] if len(arg) >= 2 and arg[0] == arg[-1] == '"' else arg


def _frame(**cols: Any) -> Any:
    import polars as pl

    return pl.DataFrame({k: [v] for k, v in cols.items()})


def _usage(pattern: str, message: str) -> None:
    """Registered after a statement's own handler: the statement written wrong is told how it is
    written (rather than passed to DuckDB, where ``CREATE FUNCTION`` means a session macro)."""

    @statement(pattern)
    def _wrong(session: Session, m: Match[str], stmt: Statement, ns: Mapping[str, Any]) -> Any:
        raise QueryError(message, statement=stmt.text)


# -- functions ---------------------------------------------------------------------
@statement(
    r"CREATE\s+(?P<replace>OR\s+REPLACE\s+)?FUNCTION\s+" + _FNAME + r"\s*\((?P<args>[^)]*)\)\s*AS\s+(?P<table>TABLE\s+)?(?P<body>.+)"
)
def _create_function(session: Session, m: Match[str], stmt: Statement, ns: Mapping[str, Any]) -> Any:
    from ._persisted import create_function

    args = [_unquote(a.strip()) for a in m.group("args").split(",")] if m.group("args").strip() else []
    fn = create_function(
        _fname(m), args, m.group("body"), replace=bool(m.group("replace")), table=bool(m.group("table")),
        session=session,
    )
    return _frame(function=fn.name, arguments=", ".join(fn.args), returns=fn.returns, definition=fn.expression)


_usage(
    r"CREATE\s+(OR\s+REPLACE\s+)?FUNCTION\b.*",
    "CREATE FUNCTION takes a name, its arguments in parentheses and a body: CREATE FUNCTION brand(url) AS car_head(embed(url)).",
)


@statement(r"DROP\s+FUNCTION\s+(?P<ifexists>IF\s+EXISTS\s+)?" + _FNAME)
def _drop_function(session: Session, m: Match[str], stmt: Statement, ns: Mapping[str, Any]) -> Any:
    from ..functions import registry
    from ._persisted import _load, drop_function

    name = _fname(m).lower()
    if name.isidentifier() and _load(name) is not None:  # a damaged file is dropped too
        drop_function(name, session=session)
        return _frame(dropped=name)
    if registry.is_static(name):
        raise QueryError(f"{name} is one of mlnb's built-in functions: it cannot be dropped.", statement=stmt.text)
    fn = registry.lookup(name)
    if fn is not None:
        raise QueryError(f"{name} is a classifier's function: DROP CLASSIFIER removes the classifier.", statement=stmt.text)
    # Not a persisted function: a macro of this session (CREATE MACRO), which DuckDB drops.
    try:
        session.con.execute(stmt.text)
    except Exception as exc:  # noqa: BLE001
        if "does not exist" not in str(exc):
            from ._errors import from_engine

            raise from_engine(exc, statement=stmt, executed=stmt.text, frames=()) from None
        import difflib

        from ._persisted import names

        close = difflib.get_close_matches(name, names(), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise QueryError(f"No function {name!r} to drop.{hint} SHOW FUNCTIONS lists them.", statement=stmt.text) from None
    return _frame(dropped=name)


# -- models ------------------------------------------------------------------------
_MODEL_OPTIONS = ("architecture", "layer", "input_size", "resize_size", "mean", "std", "interpolation", "format")


def _with_options(session: Session, stmt: Statement, m: Match[str], ns: Mapping[str, Any]) -> dict[str, Any]:
    """``WITH (a = <expr>, b = <expr>)`` → a dict; each value is a SQL expression DuckDB evaluates
    (``'resnet18'``, ``224``, ``[0.5, 0.5, 0.5]``, ``$size``)."""
    if m.group("opts") is None or not m.group("opts").strip():
        return {}
    sub = stmt.sub(m.start("opts"), m.end("opts"))
    toks, group = sub.tokens, sub.group
    pieces: list[list[int]] = [[]]
    for i, t in enumerate(toks):
        if t.text == "," and group[i] == -1:
            pieces.append([])
        else:
            pieces[-1].append(i)
    names, exprs = [], []
    for piece in pieces:
        if len(piece) < 3 or not toks[piece[0]].is_name or toks[piece[1]].text not in ("=", ":="):
            at = toks[piece[0]].start if piece else 0
            raise QueryError(
                "WITH takes options as name = value, e.g. WITH (architecture = 'resnet18', input_size = 224).",
                statement=stmt.text, position=sub.offset - stmt.offset + at,
            )
        key = toks[piece[0]].name.lower()
        if key not in _MODEL_OPTIONS:
            import difflib

            close = difflib.get_close_matches(key, _MODEL_OPTIONS, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise QueryError(f"CREATE MODEL has no option {key!r}.{hint} Options: {', '.join(_MODEL_OPTIONS)}.",
                             statement=stmt.text, position=sub.offset - stmt.offset + toks[piece[0]].start)
        names.append(key)
        exprs.append(sub.text[toks[piece[2]].start : toks[piece[-1]].end])
    params = session._params(sub, ns)
    query = "SELECT " + ", ".join(f"{e} AS \"{k}\"" for k, e in zip(names, exprs))
    try:
        row = session.con.execute(query, params or None).fetchall()[0]
    except Exception as exc:  # noqa: BLE001
        raise QueryError(f"Cannot read the WITH options: {str(exc).splitlines()[0]}", statement=stmt.text) from None
    return {k: _plain(v) for k, v in zip(names, row)}


def _plain(value: Any) -> Any:
    """DuckDB's DECIMAL literals (``0.5``) as floats, inside lists too."""
    import decimal

    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@statement(
    r"CREATE\s+(?P<replace>OR\s+REPLACE\s+)?MODEL\s+" + _NAME + r"\s+FROM\s+(?P<src>'(?:[^']|'')*'|\$\w+)"
    r"(?:\s*WITH\s*\((?P<opts>.*)\))?"
)
def _create_model(session: Session, m: Match[str], stmt: Statement, ns: Mapping[str, Any]) -> Any:
    from ..features._user_models import create_model, read_model_spec

    opts = _with_options(session, stmt, m, ns)
    src = m.group("src")
    if src.startswith("$"):  # a notebook variable holding the path
        source = session._params(stmt.sub(m.start("src"), m.end("src")), ns)[src[1:]]
        if not isinstance(source, (str, os.PathLike)):
            raise QueryError(f"{src} must hold a path or URL, not a {type(source).__name__}.", statement=stmt.text)
        source = os.fspath(source)
    else:
        source = src[1:-1].replace("''", "'")
    spec = create_model(m.group("name"), source, replace=bool(m.group("replace")), **opts)
    rec = read_model_spec(spec.name)
    return _frame(
        model=spec.name, format=rec["format"], architecture=rec.get("architecture"), layer=rec.get("layer"),
        feature_dim=rec.get("feature_dim"), input_size=spec.input_size, sha256=rec["sha256"],
    )


_usage(
    r"CREATE\s+(OR\s+REPLACE\s+)?MODEL\b.*",
    "CREATE MODEL takes a name and a quoted source: CREATE MODEL cars FROM 'weights.pth' "
    "WITH (architecture = 'resnet18'), or FROM 'archive+file:///models.zip#model.onnx'.",
)


@statement(r"SHOW\s+MODELS(?:\s+LIKE\s+'(?P<pattern>[^']*)')?")
def _show_models(session: Session, m: Match[str], stmt: Statement, ns: Mapping[str, Any]) -> Any:
    """Every model ``embed`` can use: the zoo's and the workspace's, with where each comes from."""
    import polars as pl

    from ..features._user_models import user_models
    from ..features.zoo import list_models

    pattern = (m.group("pattern") or "*").replace("%", "*")
    zoo = list_models(pattern)
    mine = user_models().select("name", "format", "architecture", "layer", "sha256", "created")
    return zoo.join(mine, on="name", how="left").with_columns(
        pl.when(pl.col("format").is_not_null()).then(pl.lit("workspace"))
        .when(pl.col("source") == "user model").then(pl.lit("python"))
        .otherwise(pl.lit("builtin")).alias("origin")
    ).select("name", "origin", *[c for c in zoo.columns if c != "name"], "format", "architecture", "layer", "sha256", "created")


@statement(r"DROP\s+MODEL\s+(?P<ifexists>IF\s+EXISTS\s+)?" + _NAME)
def _drop_model(session: Session, m: Match[str], stmt: Statement, ns: Mapping[str, Any]) -> Any:
    from ..features._user_models import drop_model
    from ..features.zoo import _REGISTRY

    name = m.group("name")
    if name in _REGISTRY:
        raise MlnbError(f"{name} is not a workspace model ({_REGISTRY[name].source}): only CREATE MODEL's models can be dropped.")
    dropped = drop_model(name, missing_ok=bool(m.group("ifexists")))
    return _frame(dropped=name if dropped else None)
