"""mlnb's additions to DuckDB's SQL, rewritten into plain DuckDB before a statement runs.

Row expressions (MLDB's syntax, for wide feature tables)::

    row_expr    := '{' item (',' item)* '}'
    item        := '*' [EXCLUDING '(' pattern (',' pattern)* ')'] | pattern
    pattern     := column | prefix '*'

``{* EXCLUDING(label, id)} AS features`` packs every remaining *numeric*
column of the FROM clause (integers, floats, decimals, booleans; text and
nested columns are skipped) into one ``FLOAT[n]`` array, in table order.
``{a, b, x*}`` packs the named columns and those starting with ``x``.
Outside braces, ``* EXCLUDING (a, x*)`` is the plain column exclusion.
A name in EXCLUDING that matches no column is an error, never a silent no-op.
Braces that open a DuckDB struct literal (``{'k': v}``) are left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..exceptions import QueryError
from ._lexer import Token, significant, tokenize

_NUMERIC = (
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
    "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL", "BOOLEAN",
)
_CLAUSE_END = {"WHERE", "GROUP", "HAVING", "ORDER", "LIMIT", "OFFSET", "QUALIFY", "WINDOW", "UNION", "EXCEPT", "INTERSECT"}

Describe = Callable[[str], list[tuple[str, str]]]


@dataclass
class _Edit:
    start: int
    end: int
    text: str


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def rewrite_row_expressions(stmt: str, describe: Describe) -> str:
    """Expand ``{...}`` row expressions and ``* EXCLUDING (...)``; ``describe``
    returns ``[(column, type), ...]`` for a ``SELECT * FROM ...`` probe."""
    toks = significant(tokenize(stmt))
    edits: list[_Edit] = []
    schema_cache: dict[int, list[tuple[str, str]]] = {}
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.text == "{" and _is_row_expr(toks, i):
            close = _matching(toks, i, "{", "}")
            items = _parse_items(toks[i + 1 : close], stmt)
            if _needs_schema(items):
                cols = _schema_for(toks, i, stmt, describe, schema_cache)
                names = _select(items, cols, stmt, numeric_only=True)
            else:
                names = [p for kind, p, _ in items]
            if not names:
                raise QueryError("The row expression selects no numeric column.", statement=stmt, position=t.start)
            packed = ", ".join(f"CAST({quote_ident(n)} AS FLOAT)" for n in names)
            edits.append(_Edit(t.start, toks[close].end, f"array_value({packed})"))
            i = close + 1
            continue
        if (
            t.text == "*"
            and i + 1 < len(toks)
            and toks[i + 1].upper == "EXCLUDING"
            and i + 2 < len(toks)
            and toks[i + 2].text == "("
        ):
            close = _matching(toks, i + 2, "(", ")")
            items = [("star", "*", t.start)] + _as_exclusions(_parse_patterns(toks[i + 3 : close], stmt))
            cols = _schema_for(toks, i, stmt, describe, schema_cache)
            keep = set(_select(items, cols, stmt, numeric_only=False))
            dropped = [c for c, _ in cols if c not in keep]
            text = "*" if not dropped else "* EXCLUDE (" + ", ".join(quote_ident(c) for c in dropped) + ")"
            edits.append(_Edit(t.start, toks[close].end, text))
            i = close + 1
            continue
        i += 1
    for e in sorted(edits, key=lambda e: e.start, reverse=True):
        stmt = stmt[: e.start] + e.text + stmt[e.end :]
    return stmt


def _is_row_expr(toks: list[Token], i: int) -> bool:
    nxt = toks[i + 1] if i + 1 < len(toks) else None
    if nxt is None or nxt.kind == "string" or nxt.text == "}":
        return False
    if nxt.text == "*":
        return True
    if nxt.kind in ("ident", "qident") and i + 2 < len(toks):
        return toks[i + 2].text in (",", "}", "*")
    return False


def _matching(toks: list[Token], i: int, open_: str, close_: str) -> int:
    depth = 0
    for j in range(i, len(toks)):
        if toks[j].text == open_:
            depth += 1
        elif toks[j].text == close_:
            depth -= 1
            if depth == 0:
                return j
    raise QueryError(f"Unclosed {open_!r}.", statement=None)


def _parse_items(toks: list[Token], stmt: str) -> list[tuple[str, str, int]]:
    """``*``, ``* EXCLUDING (...)``, ``col`` and ``prefix*`` items of a row expression."""
    items: list[tuple[str, str, int]] = []
    for group in _split_commas(toks):
        if group[0].text != "*":
            items += _parse_patterns(group, stmt)
            continue
        items.append(("star", "*", group[0].start))
        if len(group) == 1:
            continue
        if group[1].upper != "EXCLUDING" or len(group) < 4 or group[2].text != "(" or group[-1].text != ")":
            raise QueryError("After * only EXCLUDING(a, b, ...) may follow.", statement=stmt, position=group[1].start)
        items += _as_exclusions(_parse_patterns(group[3:-1], stmt))
    return items


def _split_commas(toks: list[Token]) -> list[list[Token]]:
    groups: list[list[Token]] = [[]]
    depth = 0
    for t in toks:
        depth += t.text in ("(", "[", "{")
        depth -= t.text in (")", "]", "}")
        if t.text == "," and depth == 0:
            groups.append([])
        else:
            groups[-1].append(t)
    return [g for g in groups if g]


def _parse_patterns(toks: list[Token], stmt: str) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    j = 0
    while j < len(toks):
        t = toks[j]
        if t.text == ",":
            j += 1
            continue
        if t.kind not in ("ident", "qident"):
            raise QueryError(f"Expected a column name, found {t.text!r}.", statement=stmt, position=t.start)
        if j + 1 < len(toks) and toks[j + 1].text == "*":
            out.append(("prefix", t.name, t.start))
            j += 2
        else:
            out.append(("name", t.name, t.start))
            j += 1
    return out


def _as_exclusions(patterns: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    return [("exclude_prefix" if kind == "prefix" else "exclude", n, p) for kind, n, p in patterns]


def _needs_schema(items: list[tuple[str, str, int]]) -> bool:
    return any(kind != "name" for kind, _, _ in items)


def _select(items: list[tuple[str, str, int]], cols: list[tuple[str, str]], stmt: str, *, numeric_only: bool) -> list[str]:
    names = [c for c, _ in cols]
    types = dict(cols)
    chosen: list[str] = []
    excluded: set[str] = set()
    for kind, pat, pos in items:
        if kind == "star":
            chosen += names
        elif kind == "name":
            if pat not in types:
                raise _unknown_column(pat, names, stmt, pos)
            chosen.append(pat)
        elif kind == "prefix":
            hits = [c for c in names if c.startswith(pat)]
            if not hits:
                raise QueryError(f"No column starts with {pat!r}.", statement=stmt, position=pos)
            chosen += hits
        else:  # exclude / exclude_prefix
            hits = [c for c in names if (c.startswith(pat) if kind == "exclude_prefix" else c == pat)]
            if not hits:
                raise _unknown_column(pat, names, stmt, pos, what="in EXCLUDING")
            excluded.update(hits)
    seen: set[str] = set()
    out = []
    for c in chosen:
        if c in excluded or c in seen:
            continue
        if numeric_only and not types[c].upper().startswith(_NUMERIC):
            continue
        seen.add(c)
        out.append(c)
    return out


def _unknown_column(name: str, names: list[str], stmt: str, pos: int, what: str = "") -> QueryError:
    import difflib

    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f"Did you mean {', '.join(repr(c) for c in close)}?" if close else f"Columns: {', '.join(names[:20])}"
    where = f" {what}" if what else ""
    return QueryError(f"Column {name!r}{where} not found.", statement=stmt, position=pos, hint=hint)


def _schema_for(toks: list[Token], i: int, stmt: str, describe: Describe, cache: dict[int, list[tuple[str, str]]]) -> list[tuple[str, str]]:
    """Columns of the FROM clause of the SELECT that contains token ``i``."""
    depth_at = _depths(toks)
    d = depth_at[i]
    frm = next((j for j in range(i, len(toks)) if depth_at[j] == d and toks[j].upper == "FROM"), None)
    if frm is None:
        raise QueryError("A row expression needs a FROM clause to take columns from.", statement=stmt, position=toks[i].start)
    if frm in cache:
        return cache[frm]
    end = len(stmt)
    for j in range(frm + 1, len(toks)):
        if depth_at[j] < d or (toks[j].text == ")" and depth_at[j] <= d):
            end = toks[j].start
            break
        if depth_at[j] == d and toks[j].upper in _CLAUSE_END:
            end = toks[j].start
            break
    cols = describe(f"SELECT * {stmt[toks[frm].start:end]}")
    cache[frm] = cols
    return cols


def _depths(toks: list[Token]) -> list[int]:
    out, d = [], 0
    for t in toks:
        if t.text in ("(", "{", "["):
            out.append(d)
            d += 1
        elif t.text in (")", "}", "]"):
            d -= 1
            out.append(d)
        else:
            out.append(d)
    return out


def find_params(stmt: str) -> list[Token]:
    """``$name`` parameter tokens (never inside strings or comments)."""
    return [t for t in tokenize(stmt) if t.kind == "param"]


def find_names(stmt: str) -> list[Token]:
    """Identifier tokens: candidates for frames of the namespace."""
    return [t for t in tokenize(stmt) if t.kind in ("ident", "qident")]


def specialise_calls(stmt: str, lookup: Callable[[str], Any]) -> str:
    """Run each called function's ``check`` on its arguments, and wrap calls of
    functions whose return type depends on constant options
    (``embed(x, model := 'resnet18')`` → ``CAST(embed(...) AS FLOAT[512])``)."""
    toks = significant(tokenize(stmt))
    edits: list[_Edit] = []
    for i, t in enumerate(toks[:-1]):
        if t.kind not in ("ident", "qident") or toks[i + 1].text != "(":
            continue
        fn = lookup(t.name if t.kind == "qident" else t.text.lower())
        if fn is None or (fn.specialise is None and fn.check is None):
            continue
        if i > 0 and toks[i - 1].text == ".":
            continue
        close = _matching(toks, i + 1, "(", ")")
        if fn.check is not None:
            fn.check(stmt[toks[i + 1].end : toks[close].start])
        if fn.specialise is None:
            continue
        options = _literal_options(toks[i + 2 : close])
        if options is None:
            continue
        sql_type = fn.specialise(fn.bind_options(options))
        if sql_type:
            edits.append(_Edit(t.start, toks[close].end, f"CAST({stmt[t.start:toks[close].end]} AS {sql_type})"))
    # Innermost edits never overlap outer ones here: a specialised call's arguments are images.
    for e in sorted(edits, key=lambda e: e.start, reverse=True):
        stmt = stmt[: e.start] + e.text + stmt[e.end :]
    return stmt


def _literal_options(toks: list[Token]) -> dict[str, Any] | None:
    """``name := 'literal'`` pairs at depth 0; ``None`` if an option is not a literal."""
    out: dict[str, Any] = {}
    depth = 0
    for j, t in enumerate(toks):
        if t.text in ("(", "[", "{"):
            depth += 1
        elif t.text in (")", "]", "}"):
            depth -= 1
        elif depth == 0 and t.text in (":=", "=>") and j > 0:
            if j + 1 >= len(toks):
                return None
            v = toks[j + 1]
            after = toks[j + 2].text if j + 2 < len(toks) else ","
            if after != ",":
                return None
            if v.kind == "string":
                out[toks[j - 1].name.lower()] = v.text[1:-1].replace("''", "'")
            elif v.kind == "number":
                out[toks[j - 1].name.lower()] = float(v.text) if "." in v.text else int(v.text)
            else:
                return None
    return out
