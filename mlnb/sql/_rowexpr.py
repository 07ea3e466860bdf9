"""MLDB row expressions, expanded into plain DuckDB with DuckDB's own binder.

::

    row_expr    := '{' item (',' item)* '}'
    item        := '*' [EXCLUDING '(' pattern (',' pattern)* ')'] | pattern
    pattern     := [table '.'] column | [table '.'] prefix '*'

``{* EXCLUDING(label, id)}`` packs every remaining *numeric* column in scope
(integers, floats, decimals, booleans; text and nested columns are skipped)
into one ``FLOAT[n]`` array, in table order; ``{a, b, x*}`` packs the named
columns and those starting with ``x``; ``{a.*}`` / ``{a.f*}`` take one side of
a join. Outside braces, ``* EXCLUDING (a, x*)`` is DuckDB's ``* EXCLUDE``
with patterns. A row expression may stand wherever a value can: the SELECT
list, function arguments, WHERE, GROUP BY, ORDER BY, CTEs, derived tables,
joins and UNION branches. A name in EXCLUDING that matches nothing is an
error, never a silent no-op.

How the columns in scope are learnt: the statement itself is bound by DuckDB
(``EXPLAIN``, so nothing runs and nothing is written) with each row
expression replaced by a typed NULL and, in the WHERE clause of the SELECT
that contains it, a call ``__mlnb_scope(i, typeof(struct_pack(*COLUMNS(*))))``.
DuckDB's star machinery expands ``COLUMNS(*)`` against that SELECT's real
FROM clause (CTEs, joins, subqueries and all), ``typeof`` is a constant, and
the optimizer folds the call — so the scope's names and types reach us
without running the query and without cutting its text apart.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..exceptions import QueryError

if TYPE_CHECKING:
    from ._parse import RowExpr, Statement

_NUMERIC = (
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
    "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL", "BOOLEAN",
)
#: Keywords that end a SELECT's FROM clause (or its WHERE clause) at the SELECT's own depth.
_CLAUSES = {"WHERE", "GROUP", "HAVING", "WINDOW", "QUALIFY", "ORDER", "LIMIT", "OFFSET", "UNION", "EXCEPT", "INTERSECT"}
SCOPE_UDF = "__mlnb_scope"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# -- finding them --------------------------------------------------------------------
def find_row_exprs(stmt: Statement) -> list[RowExpr]:
    from ._parse import RowExpr

    toks, match = stmt.tokens, stmt.match
    out: list[RowExpr] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.kind == "operator" and t.text == "{" and match[i] > i and _is_row_expr(stmt, i):
            close = match[i]
            out.append(RowExpr(i, close, True, tuple(_items(stmt, i + 1, close))))
            i = close + 1
            continue
        if (
            t.text == "*"
            and i + 2 < len(toks)
            and toks[i + 1].upper == "EXCLUDING"
            and toks[i + 2].text == "("
            and match[i + 2] > 0
            and not (i > 0 and toks[i - 1].text == "{")
        ):
            close = match[i + 2]
            items = [("star", None, "*", t.start)] + _exclusions(_patterns(stmt, i + 3, close))
            out.append(RowExpr(i, close, False, tuple(items)))
            i = close + 1
            continue
        i += 1
    return out


def _is_row_expr(stmt: Statement, i: int) -> bool:
    toks = stmt.tokens
    nxt = toks[i + 1] if i + 1 < len(toks) else None
    if nxt is None or nxt.text == "}" or nxt.kind == "string":
        return False  # {} or a struct literal {'k': v}
    if nxt.text == "*":
        return True
    if nxt.is_name and i + 2 < len(toks):
        return toks[i + 2].text in (",", "}", "*", ".")
    return False


def _items(stmt: Statement, first: int, stop: int) -> list[tuple[str, str | None, str, int]]:
    toks, group = stmt.tokens, stmt.group
    brace = first - 1
    items: list[tuple[str, str | None, str, int]] = []
    groups: list[tuple[int, int]] = []
    start = first
    for j in range(first, stop + 1):
        if j == stop or (toks[j].text == "," and group[j] == brace):
            if j > start:
                groups.append((start, j))
            start = j + 1
    for a, b in groups:
        if toks[a].text != "*":
            items += _patterns(stmt, a, b)
            continue
        items.append(("star", None, "*", toks[a].start))
        if b - a == 1:
            continue
        if toks[a + 1].upper != "EXCLUDING" or b - a < 4 or toks[a + 2].text != "(" or toks[b - 1].text != ")":
            raise QueryError("After * only EXCLUDING(a, b, ...) may follow.", statement=stmt.text, position=toks[a + 1].start)
        items += _exclusions(_patterns(stmt, a + 3, b - 1))
    return items


def _patterns(stmt: Statement, first: int, stop: int) -> list[tuple[str, str | None, str, int]]:
    """``col``, ``prefix*``, ``t.col``, ``t.prefix*``, ``t.*`` between two token indexes."""
    toks = stmt.tokens
    out: list[tuple[str, str | None, str, int]] = []
    j = first
    while j < stop:
        t = toks[j]
        if t.text == ",":
            j += 1
            continue
        qualifier = None
        if t.is_name and j + 2 < stop + 1 and j + 1 < stop and toks[j + 1].text == ".":
            qualifier, j = t.name, j + 2
            t = toks[j]
            if t.text == "*":
                out.append(("prefix", qualifier, "", t.start))
                j += 1
                continue
        if not t.is_name:
            raise QueryError(f"Expected a column name, found {t.text!r}.", statement=stmt.text, position=t.start)
        if j + 1 < stop and toks[j + 1].text == "*":
            out.append(("prefix", qualifier, t.name, t.start))
            j += 2
        else:
            out.append(("name", qualifier, t.name, t.start))
            j += 1
    return out


def _exclusions(patterns: list[tuple[str, str | None, str, int]]) -> list[tuple[str, str | None, str, int]]:
    return [("exclude_prefix" if k == "prefix" else "exclude", q, n, p) for k, q, n, p in patterns]


# -- learning the scope --------------------------------------------------------------
def _core(stmt: Statement, i: int) -> int:
    """Index of the SELECT keyword of the innermost query that contains token ``i``."""
    toks, group = stmt.tokens, stmt.group
    g = group[i]
    while True:
        for j in range(i - 1, g, -1):
            if group[j] == g and toks[j].upper == "SELECT" and toks[j].kind == "keyword":
                return j
        if g < 0:
            break
        i, g = g, group[g]
    raise QueryError(
        "A row expression needs a SELECT with a FROM clause to take columns from.",
        statement=stmt.text, position=toks[i].start,
    )


def _where_edits(stmt: Statement, select: int, capture: str) -> list[tuple[int, int, str]]:
    """Edits that put ``capture`` into the WHERE clause of the query whose SELECT is at ``select``."""
    toks, group = stmt.tokens, stmt.group
    g = group[select]
    end_of_query = stmt.match[g] if g >= 0 else len(toks)
    frm = where = clause_end = None
    # DuckDB's FROM-first form (FROM t SELECT ... WHERE ...): the FROM stands before the SELECT.
    for j in range(select - 1, g, -1):
        if group[j] == g and toks[j].kind == "keyword":
            if toks[j].upper == "FROM":
                frm = select
                break
            if toks[j].upper in ("SELECT", "UNION", "EXCEPT", "INTERSECT"):
                break
    for j in range(select + 1, end_of_query):
        if group[j] != g or toks[j].kind != "keyword":
            continue
        up = toks[j].upper
        if up == "FROM" and frm is None:
            frm = j
        elif frm is not None and up == "WHERE" and where is None:
            where = j
        elif frm is not None and up in _CLAUSES and up != "WHERE":
            clause_end = j
            break
    if frm is None:
        raise QueryError(
            "A row expression needs a FROM clause to take columns from.", statement=stmt.text, position=toks[select].start
        )
    end_pos = toks[clause_end].start if clause_end is not None else (
        toks[end_of_query].start if end_of_query < len(toks) else len(stmt.text)
    )
    if where is not None:
        return [(toks[where].end, toks[where].end, f" {capture} AND ("), (end_pos, end_pos, ") ")]
    return [(end_pos, end_pos, f" WHERE {capture} ")]


def _query_of_create(stmt: Statement) -> int | None:
    """Where the query of ``CREATE [OR REPLACE] [TEMP] VIEW name AS <query>`` starts, if it is one."""
    toks, group = stmt.tokens, stmt.group
    if not toks or toks[0].upper != "CREATE" or not any(t.upper == "VIEW" for t in toks[1:5]):
        return None
    for j, t in enumerate(toks):
        if group[j] == -1 and t.upper == "AS" and j + 1 < len(toks) and toks[j + 1].upper in ("SELECT", "WITH", "FROM", "("):
            return toks[j + 1].start
    return None


def _parse_struct(type_text: str) -> list[tuple[str, str]]:
    """``STRUCT(a DOUBLE, "b c" VARCHAR[], ...)`` → ``[("a", "DOUBLE"), ("b c", "VARCHAR[]")]``."""
    inner = type_text[type_text.index("(") + 1 : type_text.rindex(")")]
    fields: list[str] = []
    depth, quote, start = 0, False, 0
    for k, ch in enumerate(inner):
        if ch == '"':
            quote = not quote
        elif not quote and ch in "([":
            depth += 1
        elif not quote and ch in ")]":
            depth -= 1
        elif not quote and depth == 0 and ch == ",":
            fields.append(inner[start:k])
            start = k + 1
    fields.append(inner[start:])
    out = []
    for f in fields:
        f = f.strip()
        if not f:
            continue
        if f.startswith('"'):
            end = 1
            while True:
                end = f.index('"', end)
                if f[end : end + 2] == '""':
                    end += 2
                    continue
                break
            out.append((f[1:end].replace('""', '"'), f[end + 1 :].strip()))
        else:
            name, _, typ = f.partition(" ")
            out.append((name, typ.strip()))
    return out


class ScopeProbe:
    """The ``__mlnb_scope`` UDF of one connection and the scopes it captured."""

    def __init__(self, con: Any) -> None:
        import pyarrow as pa

        self._lock = threading.Lock()
        self.captured: dict[int, str] = {}

        def capture(ids: Any, types: Any) -> Any:
            with self._lock:
                for i, t in zip(ids.to_pylist(), types.to_pylist()):
                    if i is not None and t is not None:
                        self.captured[i] = t
            return pa.array([True] * len(ids), type=pa.bool_())

        con.create_function(SCOPE_UDF, capture, ["INTEGER", "VARCHAR"], "BOOLEAN", type="arrow", side_effects=False)

    def run(self, explain: Callable[[str], None], probe: str) -> dict[int, str]:
        with self._lock:
            self.captured = {}
        explain(probe)
        with self._lock:
            return dict(self.captured)


# -- expanding -------------------------------------------------------------------
def row_expr_edits(
    stmt: Statement, scopes: Callable[[str], dict[int, str]], computed: list[tuple[int, int, str]] = (),  # type: ignore[assignment]
) -> list[tuple[int, int, str]]:
    """Edits that expand every row expression. ``scopes(probe)`` binds a probe
    statement and returns what its ``__mlnb_scope`` calls captured. ``computed``: the edits
    that put computed table functions' results in place of their calls; the row expressions
    inside those calls were expanded when their input ran, and the probe binds the results."""
    rows = [r for r in stmt.row_exprs if not any(s <= stmt.tokens[r.first].start < t for s, t, _ in computed)]
    if not rows:
        return []
    toks = stmt.tokens
    # One probe per (query, qualifier) that some row expression needs the columns of.
    probes: dict[tuple[int, str | None], int] = {}
    needs: dict[int, list[tuple[int, str | None]]] = {}
    for r, row in enumerate(rows):
        if not row.needs_schema:
            continue
        select = _core(stmt, row.first)
        quals = {q for kind, q, *_ in row.items if kind in ("star", "prefix", "exclude_prefix") and q is not None}
        if any(kind == "star" or (kind == "prefix" and q is None) for kind, q, *_ in row.items):
            quals.add(None)
        if not quals:
            quals.add(None)
        needs[r] = []
        for q in sorted(quals, key=lambda x: x or ""):
            key = (select, q)
            probes.setdefault(key, len(probes))
            needs[r].append(key)
    columns: dict[tuple[int, str | None], list[tuple[str, str]]] = {}
    if probes:
        edits: list[tuple[int, int, str]] = []
        for row in rows:
            placeholder = "CAST(NULL AS FLOAT[])" if row.braces else "*"
            edits.append((toks[row.first].start, toks[row.last].end, placeholder))
        for (select, q), pid in probes.items():
            star = "*" if q is None else f"{quote_ident(q)}.*"
            capture = f"{SCOPE_UDF}({pid}, typeof(struct_pack(*COLUMNS({star}))))"
            edits += _where_edits(stmt, select, capture)
        probe = apply_edits(stmt.text, edits + list(computed))
        captured = scopes(probe)
        start = _query_of_create(stmt)
        if len(captured) < len(probes) and start is not None:
            # EXPLAIN of CREATE VIEW plans nothing: bind the view's query (edits all lie after its AS).
            captured = scopes(probe[start:])
        for key, pid in probes.items():
            if pid not in captured:
                raise QueryError(
                    "Could not learn the columns a row expression takes from: DuckDB could not bind its FROM clause.",
                    statement=stmt.text, position=toks[key[0]].start,
                )
            columns[key] = _parse_struct(captured[pid])
    edits = []
    for r, row in enumerate(rows):
        cols = [(q, c, t) for key in needs.get(r, []) for q, (c, t) in [(key[1], ct) for ct in columns[key]]]
        edits.append((toks[row.first].start, toks[row.last].end, _expansion(stmt, row, cols)))
    return edits


def apply_edits(text: str, edits: list[tuple[int, int, str]]) -> str:
    """``text`` with non-overlapping ``(start, end, new)`` edits applied, in one pass."""
    parts: list[str] = []
    pos = 0
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1])):
        parts.append(text[pos:start])
        parts.append(new)
        pos = max(pos, end)
    parts.append(text[pos:])
    return "".join(parts)


def _expansion(stmt: Statement, row: RowExpr, cols: list[tuple[str | None, str, str]]) -> str:
    names = [c for _, c, _ in cols]
    chosen: list[tuple[str | None, str]] = []
    excluded: set[tuple[str | None, str]] = set()
    explicit: set[tuple[str | None, str]] = set()
    for kind, q, pat, pos in row.items:
        if kind == "star":
            chosen += [(cq, c) for cq, c, _ in cols if cq is None]
        elif kind == "name":
            chosen.append((q, pat))
            explicit.add((q, pat))
            if cols and q is None and pat not in names:
                raise _unknown_column(pat, names, stmt, pos)
        elif kind == "prefix":
            hits = [(cq, c) for cq, c, _ in cols if cq == q and c.startswith(pat)]
            if not hits:
                what = f"{q}.{pat}" if q else pat
                raise QueryError(f"No column starts with {what!r}.", statement=stmt.text, position=pos)
            chosen += hits
        else:  # exclude / exclude_prefix: against every column in scope
            hits = [(cq, c) for cq, c, _ in cols if (c.startswith(pat) if kind == "exclude_prefix" else c == pat)]
            if not hits:
                raise _unknown_column(pat, names, stmt, pos, what="in EXCLUDING")
            excluded.update((None, c) for _, c in hits)
            excluded.update(hits)
    types = {(q, c): t for q, c, t in cols}
    seen: set[tuple[str | None, str]] = set()
    keep: list[tuple[str | None, str]] = []
    for key in chosen:
        if key in seen or key in excluded or (None, key[1]) in excluded:
            continue
        if row.braces and key not in explicit and not types.get(key, "").upper().startswith(_NUMERIC):
            continue
        seen.add(key)
        keep.append(key)
    ref = [(quote_ident(q) + "." if q else "") + quote_ident(c) for q, c in keep]
    if not row.braces:
        dropped = [c for q, c, _ in cols if (q, c) not in seen]
        return "*" if not dropped else "* EXCLUDE (" + ", ".join(quote_ident(c) for c in dropped) + ")"
    if not ref:
        raise QueryError(
            "The row expression selects no numeric column.", statement=stmt.text, position=stmt.tokens[row.first].start,
            hint="Row expressions pack numeric and boolean columns; text and nested columns are skipped.",
        )
    return "array_value(" + ", ".join(f"CAST({r} AS FLOAT)" for r in ref) + ")"


def _unknown_column(name: str, names: list[str], stmt: Statement, pos: int, what: str = "") -> QueryError:
    import difflib

    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f"Did you mean {', '.join(repr(c) for c in close)}?" if close else f"Columns: {', '.join(names[:20])}"
    where = f" {what}" if what else ""
    return QueryError(f"Column {name!r}{where} not found.", statement=stmt.text, position=pos, hint=hint)
