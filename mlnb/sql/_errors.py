"""The one place where SQL engine errors become short messages for people."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from ..exceptions import QueryError
from ._parse import Statement

_LINE = re.compile(r"LINE (\d+): (.*)\n( *)\^", re.MULTILINE)
_MISSING_TABLE = re.compile(r"Table with name (\S+) does not exist")
_QUOTED = re.compile(r'"([^"]+)"')
_DIM = re.compile(r"Cannot cast (?:list with length|array of size) (\d+) to array (?:with length|of size) (\d+)")


def from_engine(exc: BaseException, *, statement: Statement, executed: str, frames: Iterable[str]) -> QueryError:
    """A :class:`QueryError` for a DuckDB exception raised by ``executed``
    (the rewritten form of the user's ``statement``)."""
    stmt = statement
    statement_text = stmt.text
    raw = str(exc).strip()
    first = raw.split("\n", 1)[0]
    message = first
    hint = None
    position = None

    dm = _DIM.search(raw)
    m = _MISSING_TABLE.search(raw)
    if dm and not m:
        # A head's scorer takes FLOAT[d]: vectors of another length cannot be its features.
        message = (
            f"The features have dimension {dm.group(1)}, but the head was trained on {dm.group(2)}: "
            "score it with the same model and layer it was trained on."
        )
        return QueryError(message, statement=statement_text)
    if m:
        name = m.group(1)
        frames = sorted(set(frames))
        if name in frames:
            message = f"The notebook frame {name!r} could not be read by DuckDB."
            hint = "Was it dropped with DROP VIEW? Run the query again: frames are registered for each statement."
        else:
            close = difflib.get_close_matches(name, frames, n=len(frames) or 1, cutoff=0.0)
            message = f"Unknown table {name!r}: no table, view or notebook frame has that name."
            if close:
                hint = "Frames in the namespace, closest first: " + ", ".join(close[:10])
            else:
                hint = "No Polars, pandas or Arrow frame is defined in the namespace."
        position = stmt.position_of(name)
    else:
        lm = _LINE.search(raw)
        if lm:
            context, caret = lm.group(2), len(lm.group(3)) - len(f"LINE {lm.group(1)}: ")
            position = _locate(statement_text, context, caret)
            if position is None and executed != statement_text:
                statement_text = executed
                position = _locate(executed, context, caret)
        else:
            for name in _QUOTED.findall(first):
                position = stmt.position_of(name)
                if position is not None:
                    break
        extra = [ln for ln in raw.split("\n")[1:] if ln.startswith(("Did you mean", "Candidate"))]
        if extra:
            hint = extra[0]
    return QueryError(message, statement=statement_text, position=position, hint=hint)


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def check_syntax(stmt: Statement) -> None:
    """Refuse a statement DuckDB cannot parse before anything of its cell runs.
    mlnb's own statements and row expressions are checked when they run."""
    if stmt.kind != "sql":
        return
    import duckdb

    from ._rowexpr import apply_edits

    toks = stmt.tokens
    text = apply_edits(stmt.text, [(toks[r.first].start, toks[r.last].end, "NULL" if r.braces else "*") for r in stmt.row_exprs])
    try:
        duckdb.extract_statements(text)
    except Exception as exc:  # noqa: BLE001 - DuckDB's parser error
        raise from_engine(exc, statement=stmt, executed=text, frames=()) from None


def in_cell(exc: QueryError, stmt: Statement, *, ran: bool) -> QueryError:
    """``exc`` saying which statement of a cell of several failed (``ran``: at run time,
    after the ones before it; else found before anything ran)."""
    if stmt.count == 1:
        return exc
    if not ran:
        message = f"Statement {stmt.number} of {stmt.count} cannot be parsed; nothing ran: {exc.message}"
    else:
        before = "; the ones before it ran" if stmt.number > 1 else ""
        later = ", the rest did not run" if stmt.number < stmt.count else ""
        message = f"Statement {stmt.number} of {stmt.count} failed{before}{later}: {exc.message}"
    return QueryError(
        message,
        statement=exc.statement, position=exc.position, hint=exc.hint,
    )


def check_frame_names(stmt: Statement, frames: set[str]) -> None:
    """``DROP VIEW t`` / ``CREATE TABLE t`` where ``t`` is a notebook frame: say what happens
    instead of letting the frame and the table shadow each other."""
    toks = stmt.tokens
    if len(toks) < 3 or toks[0].upper not in ("DROP", "CREATE"):
        return
    i = 1
    while i < len(toks) and toks[i].upper in ("OR", "REPLACE", "TEMP", "TEMPORARY", "IF", "NOT", "EXISTS"):
        i += 1
    if i >= len(toks) or toks[i].upper not in ("TABLE", "VIEW"):
        return
    j = i + 1
    while j < len(toks) and toks[j].upper in ("IF", "NOT", "EXISTS"):
        j += 1
    if j >= len(toks) or (j + 1 < len(toks) and toks[j + 1].text == "."):
        return
    name = toks[j].name
    if name not in frames:
        return
    what = toks[i].upper
    if toks[0].upper == "DROP":
        raise QueryError(
            f"{name!r} is a notebook frame, not a DuckDB {what.lower()}: DROP {what} cannot remove it.",
            statement=stmt.text, position=toks[j].start,
            hint=f"Delete or rename the Python variable ({name} = None) to stop queries from seeing it.",
        )
    raise QueryError(
        f"A notebook frame is named {name!r}: in mlnb's queries the frame wins, so this {what.lower()} could never be read.",
        statement=stmt.text, position=toks[j].start,
        hint=f"Give the {what.lower()} another name (e.g. {name}_table).",
    )


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
