"""Table functions computed in Python: ``SELECT * FROM label_issues(photos, label := 'tag')``.

DuckDB's Python API has no table functions, and a DuckDB table macro cannot take a subquery. So a
table function registered without a SQL body (``table_function(name, None, ...)``) is computed
before its statement runs: its first argument (a table or frame name, a ``(SELECT ...)`` query,
or a string the function reads itself, such as a head's name) is run through the session, the
function gets the result as a Polars frame and its constant options (literals or ``$params``),
and what it returns is registered under a temporary name that replaces the call in the text.
The rest of the statement (joins, WHERE, ORDER BY) is DuckDB's as usual.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from typing import Any

from ..exceptions import MlnbError, QueryError
from ._parse import Call, Statement, literal_value

_local = threading.local()
_names = itertools.count()


def current_namespace() -> Mapping[str, Any] | None:
    """The namespace of the statement whose table function is being computed on this thread."""
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


def is_computed(fn: Any) -> bool:
    return fn is not None and fn.kind == "table" and fn.sql is None


def computed_edits(session: Any, stmt: Statement, namespace: Mapping[str, Any], params: Mapping[str, Any], lookup: Any) -> list[tuple[int, int, str]]:
    """Compute the statement's Python table functions; the edits that put their results in its place."""
    calls = [(c, lookup(c.name)) for c in stmt.calls]
    calls = [(c, fn) for c, fn in calls if is_computed(fn)]
    # A call inside another one's arguments is computed with that one's input query.
    calls = [(c, fn) for c, fn in calls if not any(o.open < c.index < o.close for o, _ in calls)]
    if not calls:
        return []
    toks = stmt.tokens
    if toks[0].upper == "CREATE" and any(t.upper in ("VIEW", "MACRO", "FUNCTION") for t in toks[1:4]):
        raise QueryError(
            f"{calls[0][0].name}() is computed when a statement runs, so a view or macro cannot keep it.",
            statement=stmt.text, position=toks[calls[0][0].index].start,
            hint="Keep its result as a table instead: CREATE TABLE name AS SELECT * FROM ...",
        )
    edits = []
    for call, fn in calls:
        source, options = _arguments(stmt, call, fn, params)
        stack = getattr(_local, "stack", None) or []
        _local.stack = [*stack, namespace]
        try:
            if isinstance(source, _Query):
                source = _run_source(session, stmt, call, _with_ctes(stmt, call, source), namespace)
            result = fn.impl(source, **fn.bind_options(options))
        except QueryError:
            raise
        except MlnbError as exc:
            raise QueryError(str(exc), statement=stmt.text, position=toks[call.index].start) from None
        finally:
            _local.stack = stack
        name = f"__mlnb_{fn.name}_{next(_names)}"
        session._computed_register(name, result)
        after = toks[call.close + 1] if call.close + 1 < len(toks) else None
        aliased = after is not None and (after.upper == "AS" or after.kind == "identifier")
        text = name if aliased else f"{name} AS {call.name}"
        edits.append((toks[call.index].start, toks[call.close].end, text))
    return edits


class _Query(str):
    """The text of the query a call's first argument names (a table, frame or subquery)."""


def _with_ctes(stmt: Statement, call: Call, query: str) -> str:
    """``query`` with the WITH tables it names that the call can see (``WITH s AS (...) SELECT *
    FROM outliers(s)``): the input runs on its own, so it takes their definitions along."""
    toks, match, group = stmt.tokens, stmt.match, stmt.group
    n = len(toks)
    defs: dict[str, str] = {}
    recursive = False
    for w in range(min(call.index, n)):
        g = group[w]
        if toks[w].upper != "WITH" or toks[w].kind != "keyword" or (g >= 0 and not g < call.index < match[g]):
            continue
        j = w + 1
        if j < n and toks[j].upper == "RECURSIVE":
            recursive, j = True, j + 1
        while j < n and toks[j].is_name:
            k = j + 1
            if k < n and toks[k].text == "(" and match[k] > k:  # name(a, b) AS (...)
                k = match[k] + 1
            if k >= n or toks[k].upper != "AS":
                break
            k += 1
            while k < n and toks[k].upper in ("NOT", "MATERIALIZED"):
                k += 1
            if k >= n or toks[k].text != "(" or match[k] < k or match[k] > call.index:
                break  # not a definition, or the one holding the call: only those before it
            defs[toks[j].name.lower()] = stmt.text[toks[j].start : toks[match[k]].end]
            j = match[k] + 1
            if j < n and toks[j].text == ",":
                j += 1
                continue
            break
    inner = Statement.of(query)
    if not defs or not {name.lower() for name in inner.names} & defs.keys():
        return query
    q = inner.tokens
    if q and q[0].upper == "WITH":  # (WITH b AS (SELECT * FROM a) SELECT ...): one WITH list, its own names win
        k = 1
        if len(q) > 1 and q[1].upper == "RECURSIVE":
            recursive, k = True, 2
        own = {q[j].name.lower() for j in range(k, len(q) - 1) if q[j].is_name and inner.group[j] == -1
               and (q[j + 1].upper == "AS" or q[j + 1].text == "(") and (j == k or q[j - 1].text == ",")}
        kept = [text for name, text in defs.items() if name not in own]
        if not kept:
            return query
        return ("WITH RECURSIVE " if recursive else "WITH ") + ", ".join(kept) + ", " + query[q[k].start :]
    return ("WITH RECURSIVE " if recursive else "WITH ") + ", ".join(defs.values()) + " " + query


def _arguments(stmt: Statement, call: Call, fn: Any, params: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    toks, group = stmt.tokens, stmt.group
    parts: list[list[int]] = [[]]
    for j in range(call.open + 1, call.close):
        if group[j] == call.open and toks[j].text == ",":
            parts.append([])
        else:
            parts[-1].append(j)
    parts = [p for p in parts if p]
    usage = f"{fn.name}(table or (SELECT ...), {', '.join(f'{p.name} := ...' for p in fn.options)})"
    if not parts:
        raise QueryError(f"{fn.name}() needs its input: {usage}.", statement=stmt.text, position=toks[call.index].start)
    first, rest = parts[0], parts[1:]
    if len(first) > 1 and toks[first[1]].text in (":=", "=>"):
        raise QueryError(f"{fn.name}() takes its input first: {usage}.", statement=stmt.text, position=toks[first[0]].start)
    options: dict[str, Any] = {}
    for part in rest:
        if len(part) < 3 or toks[part[1]].text not in (":=", "=>") or not toks[part[0]].is_name:
            raise QueryError(f"{fn.name}() takes one input, then options as name := value: {usage}.",
                             statement=stmt.text, position=toks[part[0]].start)
        key = toks[part[0]].name.lower()
        if key in options:
            raise QueryError(f"{fn.name}() is given {key} twice: {usage}.", statement=stmt.text, position=toks[part[0]].start)
        options[key] = _constant(stmt, part[2:], params, fn.name)
    return _source(stmt, first, fn.name, usage), options


def _source(stmt: Statement, part: list[int], fn: str, usage: str) -> Any:
    toks = stmt.tokens
    t0, tn = toks[part[0]], toks[part[-1]]
    if len(part) == 1 and t0.kind == "string":
        value = literal_value(t0)
        if isinstance(value, str) and any(c in value for c in "./*"):  # 'photos.parquet', as FROM reads it (no head name has these)
            return _Query("SELECT * FROM " + t0.text)
        return value
    if t0.text == "(" and stmt.match[part[0]] == part[-1] and len(part) > 2:
        return _Query(stmt.text[toks[part[1]].start : toks[part[-2]].end])
    if all(toks[j].is_name or toks[j].text == "." for j in part):
        return _Query("SELECT * FROM " + stmt.text[t0.start : tn.end])
    if len(part) > 2 and t0.is_name and toks[part[1]].text == "(" and stmt.match[part[1]] == part[-1]:
        return _Query("SELECT * FROM " + stmt.text[t0.start : tn.end])  # read_parquet('x'), another table function
    raise QueryError(f"The input of {fn}() must be a table or frame name, a file, a table function or a (SELECT ...) query: {usage}.",
                     statement=stmt.text, position=t0.start)


def _constant(stmt: Statement, part: list[int], params: Mapping[str, Any], fn: str) -> Any:
    toks = stmt.tokens
    if len(part) == 1:
        t = toks[part[0]]
        if t.kind == "param":
            return params.get(t.text[1:])
        if t.upper in ("TRUE", "FALSE"):
            return t.upper == "TRUE"
        if t.upper == "NULL":
            return None
        value = literal_value(t)
        if isinstance(value, (str, int, float)):
            return value
    if len(part) == 2 and toks[part[0]].text == "-" and toks[part[1]].kind == "number":
        return -literal_value(toks[part[1]])
    raise QueryError(f"The options of {fn}() must be constants (a number, a string or a $parameter).",
                     statement=stmt.text, position=toks[part[0]].start)


def _run_source(session: Any, stmt: Statement, call: Call, query: str, namespace: Mapping[str, Any]) -> Any:
    try:
        return session.run(query, namespace)
    except QueryError as exc:
        raise QueryError(f"The input of {call.name}() could not run: {exc.message}", statement=stmt.text,
                         position=stmt.tokens[call.open + 1].start, hint=exc.hint) from None
