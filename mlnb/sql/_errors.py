"""The one place where SQL engine errors become short messages for people."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from ..exceptions import QueryError
from ._lexer import tokenize

_LINE = re.compile(r"LINE (\d+): (.*)\n( *)\^", re.MULTILINE)
_MISSING_TABLE = re.compile(r"Table with name (\S+) does not exist")
_QUOTED = re.compile(r'"([^"]+)"')


def from_engine(exc: BaseException, *, statement: str, executed: str, frames: Iterable[str]) -> QueryError:
    """A :class:`QueryError` for a DuckDB exception raised by ``executed``
    (the rewritten form of the user's ``statement``)."""
    raw = str(exc).strip()
    first = raw.split("\n", 1)[0]
    message = first
    hint = None
    position = None

    m = _MISSING_TABLE.search(raw)
    if m:
        name = m.group(1)
        frames = sorted(set(frames))
        close = difflib.get_close_matches(name, frames, n=len(frames) or 1, cutoff=0.0)
        message = f"Unknown table {name!r}: no table, view or notebook frame has that name."
        if close:
            hint = "Frames in the namespace, closest first: " + ", ".join(close[:10])
        else:
            hint = "No Polars, pandas or Arrow frame is defined in the namespace."
        position = _find_name(statement, name)
    else:
        lm = _LINE.search(raw)
        if lm:
            context, caret = lm.group(2), len(lm.group(3)) - len(f"LINE {lm.group(1)}: ")
            position = _locate(statement, context, caret)
            if position is None and executed != statement:
                statement = executed
                position = _locate(executed, context, caret)
        else:
            for name in _QUOTED.findall(first):
                position = _find_name(statement, name)
                if position is not None:
                    break
        extra = [ln for ln in raw.split("\n")[1:] if ln.startswith(("Did you mean", "Candidate"))]
        if extra:
            hint = extra[0]
    return QueryError(message, statement=statement, position=position, hint=hint)


def _find_name(stmt: str, name: str) -> int | None:
    for t in tokenize(stmt):
        if t.kind in ("ident", "qident") and t.name.lower() == name.lower():
            return t.start
    return None


def _locate(stmt: str, context: str, caret: int) -> int | None:
    context = context.rstrip()
    if context.startswith("..."):
        context, caret = context[3:], caret - 3
    if context.endswith("..."):
        context = context[:-3]
    idx = stmt.find(context)
    if idx < 0:
        return None
    return idx + max(0, caret)
