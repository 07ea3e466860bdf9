"""mlnb's additions to DuckDB's SQL, rewritten into plain DuckDB before a statement runs.

Everything is an edit on the parsed statement's text at token offsets, applied
together: row expressions expanded (:mod:`._rowexpr`), each called function's
``check`` run on its call (a head refuses another backbone's ``embed()``), and
calls whose return type depends on constant options given that type
(``embed(x, model := 'resnet18')`` → ``CAST(embed(...) AS FLOAT[512])``, so
``array_cosine_similarity`` works).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._parse import Statement
from ._rowexpr import apply_edits, row_expr_edits


def rewrite(
    stmt: Statement, *, scopes: Callable[[str], dict[int, str]], lookup: Callable[[str], Any],
    computed: list[tuple[int, int, str]] = (),  # type: ignore[assignment]
) -> str:
    """The statement as DuckDB runs it. ``computed``: the edits that put the results of table
    functions computed in Python in place of their calls (:mod:`._computed`); what lies inside
    those calls was run with their input and is not rewritten again."""
    edits = row_expr_edits(stmt, scopes, computed) + call_edits(stmt, lookup)
    if computed:
        edits = [e for e in edits if not any(s <= e[0] and e[1] <= t for s, t, _ in computed)] + list(computed)
    return apply_edits(stmt.text, edits) if edits else stmt.text


def call_edits(stmt: Statement, lookup: Callable[[str], Any]) -> list[tuple[int, int, str]]:
    out: list[tuple[int, int, str]] = []
    for call in stmt.calls:
        fn = lookup(call.name)
        if fn is None or (fn.specialise is None and fn.check is None):
            continue
        if fn.check is not None:
            fn.check(stmt, call)
        if fn.specialise is None:
            continue
        options = stmt.literal_options(call)
        if options is None:
            continue
        sql_type = fn.specialise(fn.bind_options(options))
        if sql_type:
            start, end = stmt.tokens[call.index].start, stmt.tokens[call.close].end
            out += [(start, start, "CAST("), (end, end, f" AS {sql_type})")]
    return out
