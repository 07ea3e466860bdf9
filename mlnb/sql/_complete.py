"""Completion for ``%%mlsql`` cells, without IPython: ``complete(text, cursor, namespace)``.

The text is read by DuckDB's tokenizer (as the rest of the SQL layer reads it), which
takes half-written SQL: an unterminated string or quoted name is one token. From the
tokens before the cursor we learn where we are — after ``FROM``/``JOIN`` (tables),
after ``t.`` (t's columns, through aliases), inside ``model := '`` (the zoo's models),
``layer := '`` (that model's layers), after ``$`` (Python variables), in one of mlnb's
statements (``CREATE CLASSIFIER x USING`` algorithms, ``WITH (`` their options) — and
offer what fits. Tables are read without copying data: frames give their schema,
DuckDB's own tables are described by the session's connection.

>>> import polars as pl
>>> images = pl.DataFrame({"path": ["a.jpg"], "label": ["cat"]})
>>> first = complete("SELECT pa FROM images", 9, {"images": images})[0]  # columns come first
>>> first.text, first.type, first.detail, (first.start, first.end)
('path', 'column', 'String (images)', (7, 9))
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .._frames import is_frame
from ._parse import Token, _tokens, reserved_words


@dataclass(frozen=True)
class Completion:
    """One suggestion: ``text`` replaces ``text[start:end]`` of the cell."""

    text: str
    type: str  # column table function head keyword model layer variable algorithm option setting classifier regressor
    start: int
    end: int
    detail: str = ""  # a function's signature, a column's type, a variable's value

    def __repr__(self) -> str:
        return f"<Completion {self.text!r} {self.type}>"


class Completions(list):
    """The suggestions, best first; ``context`` says where the cursor was (``string`` for
    a string literal mlnb knows nothing about, where a path completer may help)."""

    context: str = "sql"


#: Keywords worth offering inside a query (DuckDB knows ~500; these are what people type).
_QUERY_KEYWORDS = [
    "SELECT", "FROM", "WHERE", "GROUP BY", "ORDER BY", "HAVING", "LIMIT", "OFFSET", "JOIN", "LEFT JOIN",
    "INNER JOIN", "CROSS JOIN", "POSITIONAL JOIN", "ASOF JOIN", "ON", "USING", "AS", "AND", "OR", "NOT", "IN",
    "IS NULL", "IS NOT NULL", "LIKE", "ILIKE", "BETWEEN", "CASE", "WHEN", "THEN", "ELSE", "END", "DISTINCT",
    "UNION", "UNION ALL", "EXCEPT", "INTERSECT", "QUALIFY", "WINDOW", "OVER", "PARTITION BY", "ASC", "DESC",
    "NULLS LAST", "EXCLUDE", "REPLACE", "COLUMNS", "CAST", "TRY_CAST", "NULL", "TRUE", "FALSE", "USING SAMPLE",
    "EXCLUDING",
]
_CLAUSE_END = {
    "WHERE", "GROUP", "ORDER", "HAVING", "LIMIT", "OFFSET", "JOIN", "LEFT", "RIGHT", "INNER", "OUTER", "FULL",
    "CROSS", "NATURAL", "POSITIONAL", "ASOF", "ANTI", "SEMI", "ON", "USING", "UNION", "EXCEPT", "INTERSECT",
    "QUALIFY", "WINDOW", "SELECT", "WITH", "AS", "SAMPLE", "TABLESAMPLE", "LATERAL", "RETURNING", "PIVOT",
    "UNPIVOT", "FETCH", "SET", "VALUES", "BY",
}
_SIMPLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# -- the cursor's place ------------------------------------------------------------
@dataclass
class _Place:
    text: str
    cursor: int
    toks: list[Token]  # significant tokens of the cursor's statement
    before: list[Token]  # those wholly before the word being typed
    word: Token | None  # the token being typed (ends at or after the cursor)
    prefix: str  # what of it is before the cursor
    start: int  # where a completion's text starts replacing


def _is_dot(t: Token) -> bool:
    return t.text == "." and t.kind in ("operator", "number")


def _place(text: str, cursor: int) -> _Place | str:
    """Where the cursor is, or ``"comment"`` when it is inside a comment."""
    toks = _tokens(text)
    stmt: list[Token] = []
    for t in toks:
        if t.kind == "operator" and t.text == ";":
            if t.end <= cursor:
                stmt = []
                continue
            break
        if t.kind == "comment":
            line = t.text.startswith("--")
            if t.start < cursor and (
                (line and "\n" not in text[t.start : cursor])
                or (not line and (cursor < t.end or not t.text.endswith("*/") or len(t.text) < 4))
            ):
                return "comment"
            continue
        stmt.append(t)
    word: Token | None = None
    before: list[Token] = []
    for t in stmt:
        if t.kind == "string" and t.start < cursor:
            closed = len(t.text) > 1 and t.text.endswith("'") and not t.text.endswith("''")
            if closed and cursor >= t.end:
                before.append(t)
                continue
            word = t
            break
        if t.end < cursor or (t.end == cursor and not t.is_name and t.kind != "param"):
            before.append(t)
            continue
        if t.start < cursor:
            word = t
        break
    if word is not None and word.kind == "number" and word.text == ".":
        before.append(word)
        word = None
    if word is None:
        return _Place(text, cursor, stmt, before, None, "", cursor)
    prefix = text[word.start : cursor]
    return _Place(text, cursor, stmt, before, word, prefix, word.start)


# -- what the session and namespace hold ---------------------------------------------
class _Catalog:
    """Names and their details, read lazily once per completion."""

    def __init__(self, namespace: Mapping[str, Any], session: Any) -> None:
        self.ns = namespace
        self._session = session
        self._con_checked = False

    @property
    def session(self) -> Any:
        """The session, or None when it cannot be made (completion then goes on without DuckDB's names)."""
        if self._session is None and not self._con_checked:
            self._con_checked = True
            from ._session import get_session

            try:
                self._session = get_session()
            except Exception:  # noqa: BLE001 - a Tab press must not fail on a broken session
                self._session = None
        return self._session

    # tables ----------------------------------------------------------
    def frames(self) -> list[str]:
        return [k for k, v in self.ns.items() if not k.startswith("_") and is_frame(v)]

    def builtin_tables(self) -> list[str]:
        from ._session import _PROVIDERS, _builtin_tables

        _builtin_tables()
        return sorted(_PROVIDERS)

    def selections(self) -> list[str]:
        from ..workspace import get_workspace

        try:
            folder = get_workspace().path("selections", "x").parent
            return sorted(p.stem for p in folder.glob("*.parquet") if _SIMPLE_NAME.fullmatch(p.stem))
        except Exception:  # noqa: BLE001 - no workspace yet: no selections
            return []

    def duckdb_tables(self, within: str | None = None) -> list[tuple[str, str]]:
        """(name, 'table'|'view') of the session's own tables and views (not registered frames),
        as SQL names: ``things`` in the schema in use, ``sch.things`` elsewhere. ``within``: only
        those of that schema or attached database (``sch`` of ``FROM sch.``), by their own name."""
        rows = self._query(
            "SELECT database_name, schema_name, table_name, 'table', current_database(), current_schema() "
            "FROM duckdb_tables() WHERE NOT internal "
            "UNION ALL SELECT database_name, schema_name, view_name, 'view', current_database(), current_schema() "
            "FROM duckdb_views() WHERE NOT internal"
        )
        registered = set(getattr(self.session, "_views", {}))
        reserved = self.reserved()
        out = []
        for db, schema, name, kind, cur_db, cur_schema in rows or []:
            if name in registered or name.startswith("__mlnb"):  # frames, computed results: offered as frames
                continue
            if within is not None:
                parts = [p.lower() for p in _split_name(within)]
                if parts in ([schema.lower()], [db.lower()], [db.lower(), schema.lower()]):
                    out.append((_sql_name(name, reserved), kind))
                continue
            if db == cur_db and schema == cur_schema:
                out.append((_sql_name(name, reserved), kind))
                continue
            path = [schema, name] if db == cur_db else [db, name] if schema == "main" else [db, schema, name]
            out.append((".".join(_sql_name(p, reserved) for p in path), kind))
        return out

    def columns(self, name: str, schema: str | None = None) -> list[tuple[str, str]]:
        """(column, type) of a table called ``name``: a frame, a built-in table, a saved selection,
        a DuckDB table or view (in ``schema``, as written, when the SQL names one); [] when unknown."""
        if schema is not None:
            from ._errors import quote

            rows = self._query(f"DESCRIBE {schema}.{quote(name)}")
            return [(r[0], r[1]) for r in rows or []]
        obj = self.ns.get(name)
        if obj is None:
            low = name.lower()
            obj = next((v for k, v in self.ns.items() if k.lower() == low and is_frame(v)), None)
        if obj is not None and is_frame(obj):
            return frame_schema(obj)
        from ._session import _PROVIDERS

        if name.lower() in _PROVIDERS:
            try:
                return frame_schema(_PROVIDERS[name.lower()]())
            except Exception:  # noqa: BLE001 - a store that cannot be read has no columns to offer
                return []
        if name in self.selections():
            import pyarrow.parquet as pq

            from ..workspace import get_workspace

            schema = pq.read_schema(get_workspace().path("selections", f"{name}.parquet"))
            return [(f.name, str(f.type)) for f in schema]
        from ._errors import quote

        rows = self._query(f"DESCRIBE {quote(name)}")
        return [(r[0], r[1]) for r in rows or []]

    def query_columns(self, query: str) -> list[tuple[str, str]]:
        """(column, type) of a subquery or WITH table, as DuckDB binds it (nothing runs); [] when
        it does not bind on its own (it names another WITH table, a $param, a typo)."""
        session = self.session
        if session is None or not query.strip():
            return []
        now = time.monotonic()
        with _cache_lock:
            hit = _described.get(query)
        if hit is not None and now - hit[0] < 5.0:
            return hit[1]
        cols = self._describe(query)
        with _cache_lock:
            if len(_described) > 200:
                _described.clear()
            _described[query] = (now, cols)
        return cols

    def _describe(self, query: str) -> list[tuple[str, str]]:
        session = self.session
        from ._parse import Statement

        lock = session._lock
        if not lock.acquire(timeout=0.05):
            return []
        try:
            session._register(Statement.of(query), self.ns)  # the frames it names, as the query itself would
            return [(r[0], r[1]) for r in session.con.execute("DESCRIBE " + query).fetchall()]
        except Exception:  # noqa: BLE001 - half-written SQL: no columns to offer
            return []
        finally:
            lock.release()

    def table_function_columns(self, name: str) -> list[tuple[str, str]] | None:
        """The columns an mlnb table function declares (``TABLE(path VARCHAR, ...)``; its input's
        columns, when it passes them on, are not known here); None for a function not mlnb's."""
        from ..functions import registry

        fn = registry.lookup(name.lower())
        if fn is None or fn.kind != "table":
            return None
        m = re.fullmatch(r"TABLE\((.*)\)", fn.returns.strip(), re.S)
        parts = [part.strip().split(None, 1) for part in m.group(1).split(",")] if m else []
        return [(p[0], p[1]) for p in parts if len(p) == 2 and _SIMPLE_NAME.fullmatch(p[0])]

    def _query(self, sql: str) -> list[tuple] | None:
        """Run a catalog query on the session's connection, unless a statement holds it now."""
        session = self.session
        if session is None:
            return None
        lock = getattr(session, "_lock", None)
        if lock is not None and not lock.acquire(timeout=0.05):
            return None
        try:
            return session.con.execute(sql).fetchall()
        except Exception:  # noqa: BLE001 - a name DuckDB does not know: nothing to offer
            return None
        finally:
            if lock is not None:
                lock.release()

    # functions -------------------------------------------------------
    def mlnb_functions(self) -> list[Any]:
        from .. import _ensure_builtins
        from ..functions import registry

        _ensure_builtins()
        return [f for f in registry.all() if not f.name.startswith("__")]

    def duckdb_functions(self) -> dict[str, tuple[str, str]]:
        """name -> (kind, signature) of DuckDB's functions and the user's macros."""
        if self.session is None:
            return {}
        con = self.session.con
        with _cache_lock:
            cached = _builtin_cache.get(id(con))
        if cached is None:
            rows = self._query(
                "SELECT function_name, function_type, parameters, parameter_types, return_type FROM duckdb_functions() "
                "WHERE internal"
            )
            cached = _signatures(rows or [])
            if rows:
                with _cache_lock:
                    _builtin_cache[id(con)] = cached
        user = _user_functions(self)
        return {**cached, **user}

    def reserved(self) -> frozenset[str]:
        """DuckDB's reserved words (a column named ``order`` is written ``"order"``)."""
        return reserved_words()


_cache_lock = threading.Lock()
_builtin_cache: dict[int, dict[str, tuple[str, str]]] = {}
_user_cache: dict[int, tuple[float, dict[str, tuple[str, str]]]] = {}
#: query -> (when, its columns): a subquery's or a file's columns, kept a few seconds between Tab presses.
_described: dict[str, tuple[float, list[tuple[str, str]]]] = {}


def forget_functions() -> None:
    """The user's macros are read again at the next completion (a cell may have created one)."""
    with _cache_lock:
        _user_cache.clear()


def _user_functions(cat: _Catalog) -> dict[str, tuple[str, str]]:
    """The user's own macros (``CREATE MACRO``). Reading DuckDB's function list costs ~40 ms
    (it lists its 3,000 built-ins too), so they are kept until :func:`forget_functions` (the
    notebook calls it after a cell that mentions a macro) or for 30 s."""
    con = cat.session.con
    now = time.monotonic()
    with _cache_lock:
        hit = _user_cache.get(id(con))
    if hit is not None and now - hit[0] < 30.0:
        return hit[1]
    rows = cat._query(
        "SELECT function_name, function_type, parameters, parameter_types, return_type FROM duckdb_functions() "
        "WHERE NOT internal AND function_name NOT LIKE '\\_\\_mlnb\\_%' ESCAPE '\\'"
    )
    out = _signatures(rows or [])
    with _cache_lock:
        _user_cache[id(con)] = (now, out)
    return out


def _signatures(rows: Iterable[tuple]) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    counts: dict[str, int] = {}
    for name, kind, params, types, returns in rows:
        counts[name] = counts.get(name, 0) + 1
        if name in out:
            continue
        args = ", ".join(f"{p} {t}" if t and t != "ANY" else str(p) for p, t in zip(params or [], types or [None] * len(params or [])))
        sig = f"{name}({args})" + (f" -> {returns}" if returns and kind not in ("macro", "table_macro") else "")
        out[name] = (kind, sig)
    return {n: (k, s + (f"  (+{counts[n] - 1} overloads)" if counts[n] > 1 else "")) for n, (k, s) in out.items()}


def frame_schema(frame: Any) -> list[tuple[str, str]]:
    """(column, type) of a Polars, pandas or Arrow frame, read from its schema (no data copied)."""
    mod = type(frame).__module__.split(".")[0]
    if mod == "polars":
        schema = frame.collect_schema() if type(frame).__name__ == "LazyFrame" else frame.schema
        return [(str(k), str(v)) for k, v in schema.items()]
    if mod == "pandas":
        return [(str(k), str(v)) for k, v in frame.dtypes.items()]
    schema = frame.schema
    return [(f.name, str(f.type)) for f in schema]


# -- table references ---------------------------------------------------------------
@dataclass
class _Ref:
    name: str | None  # the table, frame or function name (None for a subquery)
    alias: str | None
    depth: int  # the enclosing bracket's token index (-1 at the top level)
    function: bool = False
    body: str | None = None  # the query of a subquery or of a WITH table
    schema: str | None = None  # ``sch`` of ``sch.things`` (``db.sch`` of ``db.sch.things``), as written
    open: int = -1  # a table function's "(" (token index): inside its arguments it is no table yet
    branch: int = 0  # which SELECT of a UNION / EXCEPT / INTERSECT at its depth (0 = the first)


def _bracket_of(toks: list[Token]) -> list[int]:
    """For each token, the token index of the bracket that encloses it (-1 at the top level);
    a bracket itself counts as outside what it opens or closes."""
    stack: list[int] = []
    out: list[int] = []
    for i, t in enumerate(toks):
        if t.kind == "operator" and t.text == ")" and stack:
            stack.pop()
        out.append(stack[-1] if stack else -1)
        if t.kind == "operator" and t.text == "(":
            stack.append(i)
    return out


def _refs(toks: list[Token], text: str) -> tuple[list[_Ref], dict[str, str]]:
    """The table references of a statement (after FROM and JOIN, at any depth) and its WITH
    tables (name -> query)."""
    refs: list[_Ref] = []
    ctes: dict[str, str] = {}
    depth_of = _bracket_of(toks)
    branch_of = _branches(toks, depth_of)
    n = len(toks)

    def skip_group(j: int) -> int:
        level = 0
        while j < n:
            if toks[j].text == "(" and toks[j].kind == "operator":
                level += 1
            elif toks[j].text == ")" and toks[j].kind == "operator":
                level -= 1
                if level == 0:
                    return j + 1
            j += 1
        return n

    def alias_at(j: int) -> tuple[str | None, int]:
        if j < n and toks[j].upper == "AS" and j + 1 < n and toks[j + 1].is_name:
            return toks[j + 1].name, j + 2
        if j < n and toks[j].is_name and (toks[j].kind == "identifier" or toks[j].upper not in _CLAUSE_END):
            return toks[j].name, j + 1
        return None, j

    def body(open_at: int, after: int) -> str | None:
        """The text inside the brackets opened at ``open_at`` (None while they are not closed)."""
        close = after - 1
        if close <= open_at + 1 or toks[close].text != ")":
            return None
        return text[toks[open_at + 1].start : toks[close - 1].end]

    for i, t in enumerate(toks):
        if t.kind == "keyword" and t.upper == "AS" and i > 0 and i + 1 < n and toks[i + 1].text == "(":
            prev = toks[i - 1]
            if prev.is_name and (i < 2 or toks[i - 2].upper in ("WITH", ",", "RECURSIVE")):
                ctes[prev.name] = body(i + 1, skip_group(i + 1)) or ""
        if t.kind != "keyword" or t.upper not in ("FROM", "JOIN"):
            continue
        j = i + 1
        while j < n:
            depth = depth_of[j]
            if toks[j].text == "(":
                open_at, j = j, skip_group(j)
                query = body(open_at, j)
                alias, j = alias_at(j)
                refs.append(_Ref(None, alias, depth, body=query, branch=branch_of[i]))
            elif toks[j].is_name and toks[j].upper not in _CLAUSE_END:
                k = j
                while k + 2 < n and _is_dot(toks[k + 1]) and toks[k + 2].is_name:
                    k += 2
                name = toks[k].name
                schema = text[toks[j].start : toks[k - 2].end] if k > j else None
                j = k + 1
                func = j < n and toks[j].text == "("
                query = None
                open_at = j if func else -1
                if func:
                    j = skip_group(j)
                    if toks[j - 1].text == ")":  # read_parquet('x.parquet'): what DuckDB says it gives
                        query = "SELECT * FROM " + text[toks[k].start : toks[j - 1].end]
                alias, j = alias_at(j)
                refs.append(_Ref(name, alias, depth, func, query, schema, open_at, branch_of[i]))
            elif toks[j].kind == "string" and toks[j].text.endswith("'") and len(toks[j].text) > 2:
                query = "SELECT * FROM " + toks[j].text  # FROM 'data.parquet'
                alias, j = alias_at(j + 1)
                refs.append(_Ref(None, alias, depth, body=query, branch=branch_of[i]))
            else:
                break
            if j < n and toks[j].text == "," and t.upper == "FROM":
                j += 1
                continue
            break
    by_name = {k.lower(): v for k, v in ctes.items()}
    for ref in refs:
        if ref.name is not None and not ref.function and ref.name.lower() in by_name:
            ref.body = by_name[ref.name.lower()] or None
    return refs, ctes


# -- completing ---------------------------------------------------------------------
def _fits(prefix: str, text: str) -> bool:
    """``text`` starts with what was typed, case-insensitively; ``or`` fits ``"order"`` too."""
    p, t = prefix.lower(), text.lower()
    return t.startswith(p) or (t[:1] == '"' and p[:1] != '"' and t[1:].startswith(p))


def _matches(prefix: str, names: Iterable[str]) -> list[str]:
    return [n for n in names if _fits(prefix, n)]


def _split_name(text: str) -> list[str]:
    """``db."my schema"`` -> ``["db", "my schema"]``."""
    return [m.group(1).replace('""', '"') if m.group(1) is not None else m.group(2)
            for m in re.finditer(r'"((?:[^"]|"")*)"|([^."]+)', text)]


def _sql_name(name: str, reserved: frozenset[str]) -> str:
    """A name as it must be written in SQL (quoted when it is not a plain identifier)."""
    if _SIMPLE_NAME.fullmatch(name) and name.upper() not in reserved:
        return name
    return '"' + name.replace('"', '""') + '"'


def _cased(word: str, prefix: str) -> str:
    return word.lower() if prefix and prefix[0].islower() else word


def complete(
    text: str,
    cursor: int | None = None,
    namespace: Mapping[str, Any] | None = None,
    *,
    session: Any = None,
    limit: int = 500,
) -> Completions:
    """Completions at ``cursor`` (default: the end) in the SQL ``text`` of a ``%%mlsql`` cell.

    ``namespace`` is where frames and ``$variables`` live (the notebook's); ``session``
    the :class:`~mlnb.sql._session.Session` whose DuckDB tables and functions count
    (default: the kernel's). Each :class:`Completion` replaces ``text[start:end]``.

    >>> import polars as pl
    >>> t = pl.DataFrame({"width": [1], "height": [2]})
    >>> [c.text for c in complete("SELECT x.w FROM t AS x", 10, {"t": t})]
    ['width']
    """
    cursor = len(text) if cursor is None else max(0, min(int(cursor), len(text)))
    out = Completions()
    place = _place(text, cursor)
    if isinstance(place, _Place) and place.word is not None and _open_quote(place, text):
        # A string or quoted name still open at the cursor runs to the end of the cell, swallowing
        # FROM and the rest: read the cell as if it were closed here.
        quote = '"' if place.word.kind == "identifier" else "'"
        place = _place(text[:cursor] + quote + text[cursor:], cursor)
    if isinstance(place, str):
        out.context = place
        return out
    cat = _Catalog(namespace or {}, session)
    items = _complete(place, cat, out)
    seen: set[tuple[str, str]] = set()
    for c in items:
        key = (c.text, c.type)
        if key not in seen:
            seen.add(key)
            out.append(c)
            if len(out) >= limit:
                break
    return out


def _open_quote(place: _Place, text: str) -> bool:
    """The word at the cursor is a string or quoted name left open that runs on past the cursor."""
    w = place.word
    if w is None or w.end <= place.cursor:
        return False
    if w.kind == "string" and w.text.startswith("'"):
        return not (len(w.text) > 1 and w.text.endswith("'") and "'" not in text[place.cursor : w.end - 1])
    if w.kind == "identifier" and w.text.startswith('"'):
        # "My|" FROM t is closed; "My| FROM x."col" ran on to the next quote (a space or a quote in between)
        rest = text[place.cursor : w.end - 1]
        return len(w.text) < 2 or not w.text.endswith('"') or re.search(r'[\s"]', rest) is not None
    return False


def _complete(pl_: _Place, cat: _Catalog, out: Completions) -> list[Completion]:
    before, word, prefix = pl_.before, pl_.word, pl_.prefix
    start, end = pl_.start, pl_.cursor

    def make(texts: Iterable[str], kind: str, detail: str | dict[str, str] = "") -> list[Completion]:
        if isinstance(detail, dict):
            return [Completion(t, kind, start, end, detail.get(t, "")) for t in texts]
        return [Completion(t, kind, start, end, detail) for t in texts]

    # $variables ---------------------------------------------------------
    if word is not None and (word.kind == "param" or word.text == "$"):
        typed = prefix[1:]
        names = [k for k, v in cat.ns.items() if not k.startswith("_") and _is_bindable(v)]
        return [
            Completion("$" + k, "variable", start, end, _describe_value(cat.ns[k])) for k in sorted(_matches(typed, names))
        ]

    # inside a string -------------------------------------------------------
    if word is not None and word.kind == "string":
        at = word.start + 1
        typed = pl_.text[at : pl_.cursor]
        option = _option_before(before)
        if option is None and len(before) >= 2 and before[-1].text in ("=", ":=") and before[-2].text.lower() == "model" \
                and any(t.upper == "FINETUNE" for t in before):
            option = "model"  # CREATE CLASSIFIER x USING finetune WITH (model = '<here>
        source = _source_call(before)
        if source is not None and option in ("features", "label"):
            # label_issues(photos, features := '<here>': the input's columns
            return [Completion(c.replace("'", "''"), "column", at, end, f"{t} (input of {source.name})")
                    for c, t in _source_columns(pl_, before, cat) if c.lower().startswith(typed.lower())]
        if source is not None and source.name == "label_issues" and before[-1].text == "(":
            from ..heads import store

            heads = [(h, v) for h in store.names() for v in store.versions(h)]
            texts = list(dict.fromkeys([h for h, _v in heads] + [f"{h}@{v}" for h, v in heads]))
            return [Completion(t, "head", at, end, "rows the head was trained on") for t in _matches(typed, texts)]
        if option == "model":
            return [Completion(n, "model", at, end, d) for n, d in _models() if n.lower().startswith(typed.lower())]
        if option == "layer":
            model = _call_option(pl_.toks, before, "model", cat.ns)
            return [Completion(n, "layer", at, end, f"layer of {model}") for n in _matches(typed, _layers(model))]
        out.context = "string"
        return []

    upper = [t.upper for t in before]
    first = upper[0] if upper else ""

    # statement start -------------------------------------------------------
    if not before or (len(before) == 1 and before[0].text == "("):
        return make((_cased(k, prefix) for k in _matches(prefix, _statement_starts())), "keyword")

    # mlnb's statements ----------------------------------------------------
    if first in ("CREATE", "EVALUATE", "DROP", "SHOW", "SET", "RESET", "EXPORT"):
        special = _statement(pl_, cat, upper, make)
        if special is not None:
            return special

    # FROM sch.<table> ------------------------------------------------------------
    if before and _is_dot(before[-1]) and len(before) >= 3 and before[-2].is_name:
        k = len(before) - 2
        while k >= 2 and _is_dot(before[k - 1]) and before[k - 2].is_name:
            k -= 2
        if k >= 1 and _in_table_position(before[:k]):
            within = pl_.text[before[k].start : before[-2].end]
            return make(_matches(prefix, [n for n, _k in cat.duckdb_tables(within)]), "table", f"table in {within}")

    # t.<column> ---------------------------------------------------------------
    if before and _is_dot(before[-1]) and len(before) >= 2 and before[-2].is_name:
        qualifier = before[-2].name
        refs, _ = _refs(pl_.toks, pl_.text)
        cols = _ref_columns(qualifier, _visible(refs, before), cat)
        reserved = cat.reserved()
        texts = {_sql_name(c, reserved): t for c, t in cols}
        return make(_matches(prefix, texts), "column", texts)

    # FROM / JOIN <table> ------------------------------------------------------
    if _in_table_position(before):
        return _tables(prefix, pl_, cat, make)

    items: list[Completion] = []
    # name := inside a call of an mlnb function ----------------------------
    call = _enclosing_call(before)
    if before[-1].text == "(" and _source_call(before) is not None:
        return _tables(prefix, pl_, cat, make)  # near_duplicates(<here>: its input
    if call is not None and before[-1].text in ("(", ","):
        fn = _mlnb_function(call)
        if fn is not None:
            items += make((f"{p.name} := " for p in fn.options if p.name.startswith(prefix.lower())), "option", fn.signature)
    if before[-1].text in (":=", "=>") and len(before) >= 2 and before[-2].upper in ("MODEL", "LAYER"):
        option = before[-2].text.lower()
        names = [n for n, _d in _models()] if option == "model" else _layers(_call_option(pl_.toks, before, "model", cat.ns))
        return make((f"'{n}'" for n in _matches(prefix, names)), option)

    # an expression: columns, tables, functions, keywords ---------------------
    refs, _ctes = _refs(pl_.toks, pl_.text)
    reserved = cat.reserved()
    seen = _visible(refs, before)
    # the innermost query that has a FROM: its tables' columns
    here = [r for r in seen if r.depth == seen[0].depth] if seen else [r for r in refs if r.open not in _enclosing(before)]
    if not here and not any(t.upper == "FROM" for t in pl_.toks):
        # SELECT typed before FROM: the columns of the notebook's frames (the first 50 frames)
        here = [_Ref(name, None, -1) for name in cat.frames()[:50]]
    col_items: list[Completion] = []
    for ref in here:
        for c, t in _columns_of(ref, cat):
            name = _sql_name(c, reserved)
            if _fits(prefix, name):
                col_items.append(Completion(name, "column", start, end, f"{t} ({ref.alias or ref.name or 'FROM'})"))
    items += col_items
    quals = [_sql_name(r.alias or r.name, reserved) for r in here if (r.alias or r.name) and r in refs]
    items += make(_matches(prefix, quals), "table", "table in FROM")
    fns = cat.mlnb_functions()
    mlnb_names = {f.name for f in fns}
    for f in fns:
        # a saved head's scorer (pets, pets_proba, "pets@2") or any other function
        kind = "head" if getattr(f.impl, "__module__", "").startswith("mlnb.heads") else "function"
        name = f.name if _SIMPLE_NAME.fullmatch(f.name) else '"' + f.name + '"'
        if _fits(prefix, name):
            items.append(Completion(name, kind, start, end, f.signature))
    if prefix:
        for name, (kind, sig) in sorted(cat.duckdb_functions().items()):
            if kind in ("pragma", "table", "table_macro") or name in mlnb_names or not name.lower().startswith(prefix.lower()):
                continue
            items.append(Completion(name, "function", start, end, sig))
        items += make((_cased(k, prefix) for k in _matches(prefix, _QUERY_KEYWORDS)), "keyword")
    return items


def _statement(pl_: _Place, cat: _Catalog, upper: list[str], make: Any) -> list[Completion] | None:
    """Completions in mlnb's own statements (None when the cursor is in plain SQL)."""
    prefix = pl_.prefix
    n = len(upper)
    first = upper[0]
    # the rest of a statement's first words: CREATE <OR REPLACE CLASSIFIER>, SHOW <MODELS> ...
    typed = " ".join(upper) + " "
    rests = [s[len(typed) :] for s in _statement_starts() if s.startswith(typed)]
    if first in ("SET", "RESET", "SHOW") and n == 1:
        from ._statements import _SETTINGS

        settings = make(_matches(prefix, [f"mlnb_{s}" for s in _SETTINGS]), "setting")
        return make((_cased(k, prefix) for k in _matches(prefix, rests)), "keyword") + settings
    if rests and n <= 3:
        return make((_cased(k, prefix) for k in _matches(prefix, rests)), "keyword")
    kind = next((w for w in upper[1:4] if w in ("CLASSIFIER", "REGRESSOR")), None)
    if kind is None:
        if first == "DROP" and n == 2 and upper[1] in ("TABLE", "VIEW"):
            return make(_matches(prefix, [t for t, _k in cat.duckdb_tables()]), "table")
        return None
    c = upper.index(kind)
    if first == "CREATE":
        return _create_head(pl_, upper, c, kind, make)
    # EVALUATE / DROP / EXPORT CLASSIFIER <name>
    if n == c + 1 or (first == "DROP" and upper[c + 1 :] == ["IF", "EXISTS"]):
        from ..heads import store

        heads = store.names()
        texts = list(heads)
        if first != "DROP":
            texts += [f'"{h}@{v}"' for h in heads for v in store.versions(h)]
        elif n == c + 1:
            texts = ["IF EXISTS", *texts]
        return make(_matches(prefix, texts), kind.lower())
    if first == "EVALUATE" and n == c + 2:
        return make((_cased(k, prefix) for k in _matches(prefix, ["ON", "CONFUSION"])), "keyword")
    return None


def _create_head(pl_: _Place, upper: list[str], c: int, kind: str, make: Any) -> list[Completion] | None:
    """``CREATE [OR REPLACE] CLASSIFIER|REGRESSOR name [USING algo] [WITH (...)] AS query``."""
    from ..heads import algorithms

    before, prefix = pl_.before, pl_.prefix
    n = len(upper)
    regression = kind == "REGRESSOR"
    algos = getattr(algorithms, "REGRESSION_ALGORITHMS", {}) if regression else algorithms.ALGORITHMS
    rules = getattr(algorithms, "REGRESSION_OPTIONS", {}) if regression else algorithms.OPTIONS
    if "AS" in upper[c + 2 :]:
        return None  # the training query: plain SQL
    if n == c + 1:
        return []  # the new head's name: nothing to suggest
    finetune: dict[str, Any] = {}
    if not regression:  # USING finetune: trains the backbone's last blocks on images
        from ..heads._finetune import DEFAULTS

        finetune = {k: v for k, v in DEFAULTS.items() if k != "device"}
    if upper[-1] == "USING":
        details = {a: "options: " + ", ".join(rules.get(a, {})) for a in algos}
        if finetune:
            details["finetune"] = "fine-tunes the backbone on images: options: " + ", ".join(finetune)
        return make(_matches(prefix, list(details)), "algorithm", details)
    if "WITH" in upper[c:]:
        w = c + upper[c:].index("WITH")
        inside = n > w + 1 and before[w + 1].text == "(" and not any(t.text == ")" for t in before[w + 1 :])
        if inside and before[-1].text in ("(", ","):
            algo = next(iter(algos), "")
            if "USING" in upper[c:w]:
                u = c + upper[c:w].index("USING")
                algo = before[u + 1].text.lower() if u + 1 < n else algo
            if algo == "finetune" and finetune:
                details = {k: f"finetune: default {v!r}" if v is not None else "finetune" for k, v in finetune.items()}
            else:
                details = {k: f"{algo}: {r.describe()}" if hasattr(r, "describe") else algo for k, r in rules.get(algo, {}).items()}
                details["folds"] = "k-fold cross-validation: a whole number of at least 2"
                details["test"] = "test rows: (SELECT features, label FROM ...)"
                details["test_where"] = "test rows: a SQL condition, e.g. 'hash(path) % 5 = 0'"
            given = {before[k].text.lower() for k in range(w + 2, n - 1) if before[k].is_name and before[k + 1].text in ("=", ":=")}
            return make(_matches(prefix, [o for o in details if o.lower() not in given]), "option", details)
        if inside:
            return []
        return make((_cased(k, prefix) for k in _matches(prefix, ["AS"])), "keyword")
    words = ["USING", "WITH", "AS"] if "USING" not in upper[c:] else ["WITH", "AS"]
    return make((_cased(k, prefix) for k in _matches(prefix, words)), "keyword")


_DUCKDB_STATEMENTS = [
    "SHOW TABLES", "SHOW", "DESCRIBE", "SUMMARIZE", "CREATE TABLE", "CREATE OR REPLACE TABLE", "CREATE TEMP TABLE",
    "CREATE VIEW", "CREATE OR REPLACE VIEW", "CREATE MACRO", "CREATE OR REPLACE MACRO", "INSERT INTO", "UPDATE",
    "DELETE FROM", "DROP TABLE", "DROP VIEW", "DROP MACRO", "EXPLAIN", "PIVOT", "UNPIVOT", "COPY", "SET", "RESET",
    "ATTACH", "INSTALL", "LOAD", "VALUES",
]


def _statement_starts() -> list[str]:
    """Statements by their first words: SELECT, then mlnb's own (read from the parser's list of
    them, so a new statement is offered as soon as it exists), then DuckDB's."""
    from ._parse import _KIND_PATTERNS

    mlnb: list[str] = []
    for kind, pattern in _KIND_PATTERNS:
        if kind == "setting":
            continue
        variants = [pattern.pattern.replace(r"\b", "").replace(r"\s+", " ")]
        while any("(" in v for v in variants):  # (OR REPLACE )? -> without and with
            expanded = []
            for v in variants:
                m = re.search(r"\(([^()]*)\)\?", v)
                if m is None:
                    break
                expanded += [v[: m.start()] + v[m.end() :], v[: m.start()] + m.group(1) + v[m.end() :]]
            else:
                variants = expanded
                continue
            break
        mlnb += [" ".join(v.split()) for v in variants if re.fullmatch(r"[A-Z ]+", v)]
    return ["SELECT", "FROM", "WITH", *dict.fromkeys(mlnb), *_DUCKDB_STATEMENTS]


def _in_table_position(before: list[Token]) -> bool:
    last = before[-1]
    if last.kind == "keyword" and last.upper in ("FROM", "JOIN", "INTO", "UPDATE", "DESCRIBE", "SUMMARIZE", "TABLE"):
        return last.upper != "TABLE" or len(before) >= 2 and before[-2].upper in ("DESCRIBE", "TRUNCATE")
    if last.text == ",":
        # FROM a, <here>: the clause keyword at this depth is FROM
        level = 0
        for t in reversed(before[:-1]):
            if t.text == ")":
                level += 1
            elif t.text == "(":
                if level == 0:
                    return False
                level -= 1
            elif level == 0 and t.kind == "keyword" and t.upper in _CLAUSE_END | {"FROM"}:
                return t.upper == "FROM"
    return False


def _tables(prefix: str, pl_: _Place, cat: _Catalog, make: Any) -> list[Completion]:
    reserved = cat.reserved()
    items: list[Completion] = []
    _refs_, ctes = _refs(pl_.toks, pl_.text)
    items += make(_matches(prefix, ctes), "table", "WITH")
    frames = cat.frames()
    items += make(_matches(prefix, [_sql_name(f, reserved) for f in frames]), "table", {
        _sql_name(f, reserved): f"{type(cat.ns[f]).__module__.split('.')[0]} {type(cat.ns[f]).__name__}" for f in frames
    })
    items += make(_matches(prefix, cat.builtin_tables()), "table", "mlnb table")
    items += make(_matches(prefix, cat.selections()), "table", "saved selection")
    for name, kind in cat.duckdb_tables():
        if _fits(prefix, name):
            items.append(Completion(name, "table", pl_.start, pl_.cursor, f"DuckDB {kind}"))
    if prefix and not prefix.startswith('"'):
        for f in cat.mlnb_functions():
            if f.kind == "table" and f.name.startswith(prefix.lower()):
                items.append(Completion(f.name, "function", pl_.start, pl_.cursor, f.signature))
        for name, (kind, sig) in sorted(cat.duckdb_functions().items()):
            if kind in ("table", "table_macro") and name.lower().startswith(prefix.lower()) and not name.startswith("__"):
                items.append(Completion(name, "function", pl_.start, pl_.cursor, sig))
    return items


def _columns_of(ref: _Ref, cat: _Catalog) -> list[tuple[str, str]]:
    if ref.function and ref.name is not None:
        cols = cat.table_function_columns(ref.name)  # mlnb's say what they return: never bound here
        if cols is not None:
            return cols
    if ref.body is not None:
        return cat.query_columns(ref.body)
    if ref.name is None or ref.function:
        return []
    return cat.columns(ref.name, ref.schema)


def _ref_columns(qualifier: str, refs: list[_Ref], cat: _Catalog) -> list[tuple[str, str]]:
    """The columns ``qualifier.`` names: the innermost table seen from the cursor called so
    (``refs`` as :func:`_visible` orders them), by its alias or else its own name."""
    low = qualifier.lower()
    for ref in refs:
        if (ref.alias or "").lower() == low or (ref.alias is None and (ref.name or "").lower() == low):
            return _columns_of(ref, cat)
    # not in this statement's FROM (yet): a frame or table of that name
    return cat.columns(qualifier)


def _enclosing(before: list[Token]) -> list[int]:
    """The brackets holding the cursor, outermost first (token indices)."""
    stack: list[int] = []
    for i, t in enumerate(before):
        if t.kind == "operator" and t.text == "(":
            stack.append(i)
        elif t.kind == "operator" and t.text == ")" and stack:
            stack.pop()
    return stack


def _branches(toks: list[Token], depth_of: list[int]) -> list[int]:
    """For each token, how many UNION / EXCEPT / INTERSECT came before it at its depth."""
    count: dict[int, int] = {}
    out = []
    for t, d in zip(toks, depth_of):
        out.append(count.get(d, 0))
        if t.kind == "keyword" and t.upper in ("UNION", "EXCEPT", "INTERSECT"):
            count[d] = count.get(d, 0) + 1
    return out


def _visible(refs: list[_Ref], before: list[Token]) -> list[_Ref]:
    """The table references the cursor can see, innermost query first: those of the queries
    enclosing it (not of a WITH table or subquery beside it, nor another SELECT of its UNION),
    less a table function whose arguments hold the cursor."""
    stack = _enclosing(before)
    levels = [-1, *stack]
    level = {d: k for k, d in enumerate(levels)}
    depth_of = _bracket_of(before)
    branch_of = _branches(before, depth_of)
    # at each level, the SELECT the cursor is in: that of the bracket that leads to it (or of the cursor)
    here = {d: (branch_of[levels[k + 1]] if k + 1 < len(levels) else
                sum(1 for t, dd in zip(before, depth_of) if dd == d and t.kind == "keyword" and t.upper in ("UNION", "EXCEPT", "INTERSECT")))
            for k, d in enumerate(levels)}
    seen = [r for r in refs if r.depth in level and r.open not in stack and r.branch == here[r.depth]]
    return sorted(seen, key=lambda r: -level[r.depth])


def _depth(before: list[Token]) -> int:
    """The token index of the bracket enclosing the cursor (-1 at the top level)."""
    stack = _enclosing(before)
    return stack[-1] if stack else -1


def _enclosing_call(before: list[Token]) -> Token | None:
    """The name token of the function call whose parentheses hold the cursor."""
    i = _depth(before)
    if i > 0 and before[i - 1].is_name and not (i > 1 and _is_dot(before[i - 2])):
        return before[i - 1]
    return None


def _mlnb_function(tok: Token) -> Any:
    from .. import _ensure_builtins
    from ..functions import registry

    _ensure_builtins()
    return registry.lookup(tok.key)


def _option_before(before: list[Token]) -> str | None:
    """``model`` in ``model := '<here>`` (also ``=>``, and ``=`` inside a call)."""
    if len(before) >= 2 and before[-1].text in (":=", "=>", "=") and before[-2].is_name:
        if _enclosing_call(before) is not None:
            return before[-2].text.lower()
    return None


def _source_call(before: list[Token]) -> Any:
    """The mlnb table function whose arguments hold the cursor, when it takes a table first
    (``near_duplicates(photos, ...)``); None otherwise."""
    tok = _enclosing_call(before)
    fn = _mlnb_function(tok) if tok is not None else None
    if fn is None or fn.kind != "table" or not fn.params or fn.params[0].type != "TABLE":
        return None
    return fn


def _source_columns(pl_: _Place, before: list[Token], cat: _Catalog) -> list[tuple[str, str]]:
    """The columns of the first argument (a table, frame, WITH table or subquery) of the call around the cursor."""
    toks, open_at = pl_.toks, _depth(before)
    level, j = 0, open_at + 1
    while j < len(toks) and not (level == 0 and toks[j].text in (",", ")")):
        level += {"(": 1, ")": -1}.get(toks[j].text, 0) if toks[j].kind == "operator" else 0
        j += 1
    arg = toks[open_at + 1 : j]
    if not arg:
        return []
    text = pl_.text[arg[0].start : arg[-1].end]
    if arg[0].text == "(" and arg[-1].text == ")" and len(arg) > 2:
        return cat.query_columns(pl_.text[arg[1].start : arg[-2].end])
    if all(t.is_name or _is_dot(t) for t in arg):
        _r, ctes = _refs(toks, pl_.text)
        body = {k.lower(): v for k, v in ctes.items()}.get(arg[-1].name.lower()) if len(arg) == 1 else None
        if body:
            return cat.query_columns(body)
        return cat.columns(arg[-1].name, text[: arg[-2].start - arg[0].start] if len(arg) > 1 else None)
    if (len(arg) == 1 and arg[0].kind == "string" and any(c in arg[0].text for c in "./*")) or (
        len(arg) > 2 and arg[0].is_name and arg[1].text == "(" and arg[-1].text == ")"
    ):
        return cat.query_columns("SELECT * FROM " + text)  # 'feats.parquet', read_parquet(...)
    return []


def _call_option(toks: list[Token], before: list[Token], option: str, ns: Mapping[str, Any] | None = None) -> str:
    """The value of ``option := '...'`` (or ``:= $name``, a string in ``ns``) in the call around the cursor
    (the model's default otherwise)."""
    from ..config import DEFAULT_MODEL

    open_at = _depth(before)
    if open_at < 0:
        return DEFAULT_MODEL
    level = 0
    for j in range(open_at + 1, len(toks)):
        t = toks[j]
        if t.kind == "operator" and t.text in "([{":
            level += 1
        elif t.kind == "operator" and t.text in ")]}":
            if level == 0:
                break
            level -= 1
        elif level == 0 and t.is_name and t.text.lower() == option and j + 2 < len(toks):
            if toks[j + 1].text in (":=", "=>", "=") and toks[j + 2].kind == "string" and toks[j + 2].text.endswith("'"):
                return toks[j + 2].text[1:-1].replace("''", "'")
            if toks[j + 1].text in (":=", "=>", "=") and toks[j + 2].kind == "param" and isinstance((ns or {}).get(toks[j + 2].text[1:]), str):
                return ns[toks[j + 2].text[1:]]
    return DEFAULT_MODEL


_zoo_loading: threading.Thread | None = None
_zoo_lock = threading.Lock()


def _zoo(wait: float = 0.5) -> Any:
    """The model zoo module, or None while it is still being imported.

    The zoo imports torchvision (seconds, tens of seconds on a busy machine): a Tab press
    must not wait for that, so the first one starts the import in the background and
    offers what is known without it (the default model and its pooled layer)."""
    global _zoo_loading
    with _zoo_lock:
        loading = _zoo_loading
        if loading is None:
            mod = sys.modules.get("mlnb.features.zoo")
            if mod is not None:  # imported by the notebook (completion runs between cells)
                return mod
            import importlib

            loading = _zoo_loading = threading.Thread(
                target=importlib.import_module, args=("mlnb.features.zoo",), name="mlnb-zoo-import", daemon=False
            )
            loading.start()
    loading.join(wait)
    return None if loading.is_alive() else sys.modules.get("mlnb.features.zoo")


def _models() -> list[tuple[str, str]]:
    """(name, detail) of the zoo's models, those usable offline first."""
    from ..config import DEFAULT_MODEL

    zoo = _zoo()
    if zoo is None:
        return [(DEFAULT_MODEL, "the default model (the zoo is still loading: press Tab again for all)")]
    models = zoo.list_models()
    rows = sorted(zip(models["name"].to_list(), models["offline"].to_list()), key=lambda r: (not r[1], r[0]))
    return [(n, "offline" if o else "downloads weights") for n, o in rows]


def _layers(model: str) -> list[str]:
    zoo = _zoo()
    if zoo is None:
        return ["pool"]
    try:
        return list(zoo.get_spec(model).layers)
    except Exception:  # noqa: BLE001 - an unknown model has no layers to offer
        return []


_SCALARS = (int, float, str, bool, bytes)


def _is_bindable(value: Any) -> bool:
    """What a ``$name`` can bind: scalars (Python, NumPy, dates, decimals) and lists of them."""
    if isinstance(value, _SCALARS) or value is None:
        return value is not None
    mod = type(value).__module__
    if mod == "numpy" and getattr(value, "ndim", None) == 0:
        return True
    if mod in ("datetime", "decimal", "uuid"):
        return True
    if isinstance(value, (list, tuple)) and len(value) < 10_000:
        return all(isinstance(v, _SCALARS) for v in value[:50])
    return False


def _describe_value(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"
