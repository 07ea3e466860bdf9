"""A small SQL tokenizer: enough to split statements, find ``$params``,
table names and mlnb's own syntax without touching string literals or comments."""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<string>(?:[eE])?'(?:[^']|'')*(?:'|\Z))
  | (?P<dollar>\$(?P<tag>[A-Za-z_]\w*)?\$.*?(?:\$(?P=tag)?\$|\Z))
  | (?P<param>\$[A-Za-z_]\w*)
  | (?P<qident>"(?:[^"]|"")*(?:"|\Z))
  | (?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)
  | (?P<ident>[^\W\d]\w*)
  | (?P<op>::|:=|=>|<=|>=|<>|!=|\|\||.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class Token:
    kind: str  # ws comment string dollar param qident number ident op
    text: str
    start: int

    @property
    def end(self) -> int:
        return self.start + len(self.text)

    @property
    def upper(self) -> str:
        return self.text.upper()

    @property
    def name(self) -> str:
        """Identifier value: unquoted for ``"quoted"`` names."""
        if self.kind == "qident":
            return self.text[1:-1].replace('""', '"')
        return self.text

    @property
    def trivial(self) -> bool:
        return self.kind in ("ws", "comment")


def tokenize(sql: str) -> list[Token]:
    out: list[Token] = []
    for m in _TOKEN.finditer(sql):
        kind = m.lastgroup
        if kind == "tag":  # pragma: no cover - inner group never last
            kind = "dollar"
        out.append(Token(kind or "op", m.group(0), m.start()))
    return out


def split_statements(sql: str) -> list[tuple[str, int]]:
    """Statements and their offsets in ``sql``; empty ones are dropped."""
    result: list[tuple[str, int]] = []
    start = 0
    for tok in tokenize(sql):
        if tok.kind == "op" and tok.text == ";":
            _keep(sql, start, tok.start, result)
            start = tok.end
    _keep(sql, start, len(sql), result)
    return result


def _keep(sql: str, start: int, end: int, out: list[tuple[str, int]]) -> None:
    piece = sql[start:end]
    if any(not t.trivial for t in tokenize(piece)):
        out.append((piece, start))


def significant(tokens: list[Token]) -> list[Token]:
    return [t for t in tokens if not t.trivial]
