"""The parsed statement: a cell's SQL read once, by DuckDB's own tokenizer.

``parse(query)`` splits a cell into :class:`Statement` objects. Each holds its
text and offset in the cell, its tokens (from ``duckdb.tokenize``, so string
literals, E-strings, dollar-quoted strings and nested comments are DuckDB's
business, not ours), its ``$params``, the names it uses, the function calls
it makes, its MLDB row expressions and its kind (one of mlnb's own statements,
or ``"sql"`` for everything DuckDB runs). Every later step — frame
registration, parameter binding, rewriting, the backbone check, offloading,
error positions — reads this object; nothing tokenizes the text again.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

#: Token kinds (DuckDB's names, shortened): keyword identifier string number operator comment, plus ``param``.
_KINDS = {
    "KEYWORD": "keyword", "IDENTIFIER": "identifier", "STRING_CONST": "string", "NUMERIC_CONST": "number",
    "OPERATOR": "operator", "COMMENT": "comment",
}
_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {v: k for k, v in _OPEN.items()}


class Token(NamedTuple):
    """One token (a tuple: a long query has a hundred thousand of them)."""

    kind: str  # keyword identifier string number operator comment param
    text: str
    start: int  # offset in the statement's text
    end: int

    @property
    def upper(self) -> str:
        return self.text.upper()

    @property
    def is_name(self) -> bool:
        """An identifier, quoted identifier, or a keyword DuckDB accepts as a name (``label``)."""
        return self.kind in ("identifier", "keyword")

    @property
    def quoted(self) -> bool:
        return self.kind == "identifier" and self.text.startswith('"')

    @property
    def name(self) -> str:
        """The identifier's value: unquoted for ``"quoted"`` names, as written otherwise."""
        if self.quoted:
            return self.text[1:-1].replace('""', '"')
        return self.text

    @property
    def key(self) -> str:
        """How DuckDB looks the name up: quoted names exactly, others case-insensitively."""
        return self.name if self.quoted else self.text.lower()

    def shifted(self, by: int) -> Token:
        return self if by == 0 else Token(self.kind, self.text, self.start + by, self.end + by)



@functools.cache
def reserved_words() -> frozenset[str]:
    """DuckDB's reserved words, upper case: a name such as ``order`` must be quoted to be a table
    or column name."""
    import duckdb

    con = duckdb.connect()  # its own: DuckDB refuses a connection busy in another thread
    try:
        rows = con.execute("SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category = 'reserved'").fetchall()
    finally:
        con.close()
    return frozenset(r[0].upper() for r in rows)

@dataclass(frozen=True)
class Call:
    """``name(...)``: the name's token index and the indexes of its parentheses."""

    name: str  # lower case unless quoted
    index: int
    open: int
    close: int


@dataclass(frozen=True)
class RowExpr:
    """An MLDB row expression ``{...}`` (or ``* EXCLUDING (...)`` when ``braces`` is False).

    ``items`` are ``(kind, qualifier, pattern, position)`` with kind one of
    ``star``, ``name``, ``prefix``, ``exclude``, ``exclude_prefix``.
    """

    first: int  # token index of '{' (or '*')
    last: int  # token index of '}' (or the closing ')')
    braces: bool
    items: tuple[tuple[str, str | None, str, int], ...]

    @property
    def needs_schema(self) -> bool:
        return not self.braces or any(kind != "name" for kind, *_ in self.items)


#: mlnb's own statements, by their first words; everything else is ``"sql"``.
_KIND_PATTERNS = [
    ("create_classifier", re.compile(r"CREATE\s+(OR\s+REPLACE\s+)?CLASSIFIER\b", re.I)),
    ("evaluate_classifier", re.compile(r"EVALUATE\s+CLASSIFIER\b", re.I)),
    ("show_classifiers", re.compile(r"SHOW\s+CLASSIFIERS\b", re.I)),
    ("drop_classifier", re.compile(r"DROP\s+CLASSIFIER\b", re.I)),
    ("export_classifier", re.compile(r"EXPORT\s+(OR\s+REPLACE\s+)?CLASSIFIER\b", re.I)),
    ("create_regressor", re.compile(r"CREATE\s+(OR\s+REPLACE\s+)?REGRESSOR\b", re.I)),
    ("evaluate_regressor", re.compile(r"EVALUATE\s+REGRESSOR\b", re.I)),
    ("show_regressors", re.compile(r"SHOW\s+REGRESSORS\b", re.I)),
    ("drop_regressor", re.compile(r"DROP\s+REGRESSOR\b", re.I)),
    ("show_functions", re.compile(r"SHOW\s+FUNCTIONS\b", re.I)),
    ("create_function", re.compile(r"CREATE\s+(OR\s+REPLACE\s+)?FUNCTION\b", re.I)),
    ("drop_function", re.compile(r"DROP\s+FUNCTION\b", re.I)),
    ("create_model", re.compile(r"CREATE\s+(OR\s+REPLACE\s+)?MODEL\b", re.I)),
    ("show_models", re.compile(r"SHOW\s+MODELS\b", re.I)),
    ("drop_model", re.compile(r"DROP\s+MODEL\b", re.I)),
    ("setting", re.compile(r"(SET\s+(SESSION\s+)?|RESET\s+|SHOW\s+)mlnb_\w+", re.I)),
]


@dataclass
class Statement:
    """One statement of a cell, parsed once."""

    text: str
    offset: int  # where the statement starts in the cell
    tokens: list[Token]  # significant tokens (no comments), offsets in ``text``
    number: int = 1  # 1-based position in the cell
    count: int = 1  # statements in the cell

    # -- construction ---------------------------------------------------
    @classmethod
    def of(cls, text: str) -> Statement:
        """The first statement of ``text`` (a whole query made of one statement)."""
        stmts = parse(text)
        return stmts[0] if stmts else cls(text, 0, [])

    def sub(self, start: int, end: int | None = None) -> Statement:
        """The part of this statement between two character offsets, as a statement
        of its own (``CREATE CLASSIFIER ... AS <query>``), sharing the tokens."""
        end = len(self.text) if end is None else end
        toks = [t for t in self.tokens if t.start >= start and t.end <= end]
        if not toks:
            return Statement(self.text[start:end].strip(), self.offset + start, [], self.number, self.count)
        s, e = toks[0].start, toks[-1].end
        return Statement(
            self.text[s:e], self.offset + s, [t.shifted(-s) for t in toks], self.number, self.count
        )

    # -- what it is ---------------------------------------------------------
    @functools.cached_property
    def kind(self) -> str:
        if not self.tokens or self.tokens[0].upper not in ("CREATE", "EVALUATE", "SHOW", "DROP", "SET", "RESET", "EXPORT"):
            return "sql"
        head = self.text[: self.tokens[min(3, len(self.tokens) - 1)].end]
        for kind, pattern in _KIND_PATTERNS:
            if pattern.match(head):
                return kind
        return "sql"

    @functools.cached_property
    def params(self) -> list[Token]:
        """``$name`` parameters (never inside strings or comments)."""
        return [t for t in self.tokens if t.kind == "param"]

    @functools.cached_property
    def names(self) -> set[str]:
        """Every name the statement mentions, as written and unquoted: candidates for frames."""
        return {t.name for t in self.tokens if t.is_name}

    @functools.cached_property
    def match(self) -> list[int]:
        """For each bracket token, the index of its partner (-1 elsewhere)."""
        out = [-1] * len(self.tokens)
        stack: list[int] = []
        for i, t in enumerate(self.tokens):
            if t.kind != "operator":
                continue
            if t.text in _OPEN:
                stack.append(i)
            elif t.text in _CLOSE and stack and self.tokens[stack[-1]].text == _CLOSE[t.text]:
                j = stack.pop()
                out[i], out[j] = j, i
        return out

    @functools.cached_property
    def group(self) -> list[int]:
        """For each token, the index of the bracket that encloses it (-1 at the top level)."""
        out = [-1] * len(self.tokens)
        stack: list[int] = []
        match = self.match
        for i, t in enumerate(self.tokens):
            if t.kind == "operator" and t.text in _CLOSE and stack and match[i] == stack[-1]:
                stack.pop()
            out[i] = stack[-1] if stack else -1
            if t.kind == "operator" and t.text in _OPEN and match[i] >= 0:
                stack.append(i)
        return out

    @functools.cached_property
    def calls(self) -> list[Call]:
        """Function calls ``name(...)`` (not method calls ``x.name(...)``)."""
        toks, match = self.tokens, self.match
        out = []
        for i in range(len(toks) - 1):
            t = toks[i]
            if not t.is_name or toks[i + 1].text != "(" or match[i + 1] < 0:
                continue
            if i > 0 and toks[i - 1].text == ".":
                continue
            out.append(Call(t.key, i, i + 1, match[i + 1]))
        return out

    def calls_named(self, names: Iterable[str]) -> list[Call]:
        wanted = set(names)
        return [c for c in self.calls if c.name in wanted]

    def calls_inside(self, call: Call) -> list[Call]:
        return [c for c in self.calls if call.open < c.index < call.close]

    def span(self, first: int, last: int) -> str:
        """The text from token ``first`` to token ``last``, both included."""
        return self.text[self.tokens[first].start : self.tokens[last].end]

    def literal_options(self, call: Call) -> dict[str, Any] | None:
        """The call's ``name := literal`` options; ``None`` if an option is not a literal."""
        toks, group = self.tokens, self.group
        out: dict[str, Any] = {}
        for j in range(call.open + 1, call.close):
            t = toks[j]
            if group[j] != call.open or t.text not in (":=", "=>"):
                continue
            v = toks[j + 1] if j + 1 < call.close else None
            after = toks[j + 2].text if j + 2 < call.close else ","
            if v is None or after != ",":
                return None
            value = literal_value(v)
            if value is _NOT_LITERAL:
                return None
            out[toks[j - 1].name.lower()] = value
        return out

    @functools.cached_property
    def row_exprs(self) -> list[RowExpr]:
        from ._rowexpr import find_row_exprs

        return find_row_exprs(self)

    def position_of(self, name: str) -> int | None:
        """Offset of the first token naming ``name`` (case-insensitive)."""
        low = name.lower()
        for t in self.tokens:
            if t.is_name and t.name.lower() == low:
                return t.start
        return None


_NOT_LITERAL = object()


def literal_value(tok: Token) -> Any:
    """The Python value of a string or number token (``_NOT_LITERAL`` otherwise)."""
    if tok.kind == "string" and tok.text.startswith("'"):
        return tok.text[1:-1].replace("''", "'")
    if tok.kind == "number":
        try:
            return int(tok.text)
        except ValueError:
            return float(tok.text)
    return _NOT_LITERAL


def _tokens(text: str) -> list[Token]:
    """All tokens of ``text``, comments included, with ``$name`` joined into one param token."""
    import duckdb

    raw = duckdb.tokenize(text)
    if not text.isascii():  # DuckDB gives byte offsets in the UTF-8 text
        import numpy as np

        b = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        chars_before = np.concatenate([[0], np.cumsum((b & 0xC0) != 0x80)])
        raw = [(int(chars_before[o]), k) for o, k in raw]
    out: list[Token] = []
    n = len(raw)
    kinds: dict[int, str] = {}  # by id(): the token kinds are a handful of enum members
    prev: Token | None = None
    for i, (start, kind) in enumerate(raw):
        end = raw[i + 1][0] if i + 1 < n else len(text)
        piece = text[start:end].rstrip()
        k = kinds.get(id(kind))
        if k is None:
            name = getattr(kind, "name", str(kind).rsplit(".", 1)[-1]).upper()
            k = kinds[id(kind)] = _KINDS.get(name, "operator")
        if prev is not None and k in ("identifier", "keyword") and prev.text == "$" and prev.end == start and prev.kind == "operator":
            prev = out[-1] = Token("param", "$" + piece, prev.start, start + len(piece))
            continue
        prev = Token(k, piece, start, start + len(piece))
        out.append(prev)
    return out


def parse(query: str) -> list[Statement]:
    """The statements of a cell, split at the semicolons DuckDB's tokenizer sees."""
    tokens = _tokens(query or "")
    pieces: list[list[Token]] = [[]]
    for t in tokens:
        if t.kind == "operator" and t.text == ";":
            pieces.append([])
        else:
            pieces[-1].append(t)
    stmts: list[Statement] = []
    for piece in pieces:
        sig = [t for t in piece if t.kind != "comment"]
        if not sig:
            continue
        # Comments before and after the statement are left out of its text: mlnb's own statements
        # are matched on the text (a cell starting "-- export it" then "EXPORT CLASSIFIER ..." went
        # to DuckDB, which said "syntax error at or near CLASSIFIER").
        s, e = sig[0].start, sig[-1].end
        stmts.append(Statement(query[s:e], s, [t.shifted(-s) for t in sig] if s else sig))
    for i, st in enumerate(stmts):
        st.number, st.count = i + 1, len(stmts)
    return stmts
