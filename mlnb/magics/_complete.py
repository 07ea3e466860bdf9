"""Tab completion in ``%%mlsql`` cells and ``%mlsql`` lines, through IPython's completer.

A thin adapter: it finds the SQL around the cursor and asks
:func:`mlnb.sql._complete.complete`. Registered by ``%load_ext mlnb`` as a
matcher (IPython's API v2), so every front end that sends the kernel a
``complete_request`` — JupyterLab, Notebook 7, VS Code — gets SQL completions. Inside
SQL it suppresses IPython's Python matches; in a string mlnb knows nothing about it
leaves them on (file paths in ``read_images('photos/``).
"""

from __future__ import annotations

import re
from typing import Any

from ..sql._complete import complete, forget_functions

_CELL = re.compile(r"\s*%%mlsql\b[^\n]*(\n|$)")
_LINE = re.compile(r"(?<![%\w])%mlsql\b")
_OPTION = re.compile(r"\s*(?:(?:-o|--out)\s+[A-Za-z_]\w*|--lazy)(?=\s|$)")


def sql_at(text: str, line: int, column: int) -> tuple[str, int] | None:
    """The SQL of a ``%%mlsql`` cell (or a ``%mlsql`` line) holding the cursor, and the cursor's
    offset in it; None when the cursor is in Python or in the magic's options."""
    lines = text.split("\n")
    if not 0 <= line < len(lines):
        return None
    offset = sum(len(x) + 1 for x in lines[:line]) + min(column, len(lines[line]))
    cell = _CELL.match(text)
    if cell is not None:
        body = cell.end()
        if offset < body or not cell.group(1):
            return None
        return text[body:], offset - body
    current = lines[line]
    magic = _LINE.search(current)
    if magic is None:
        return None
    start = magic.end()
    while True:  # -o NAME / --lazy before the query
        opt = _OPTION.match(current, start)
        if opt is None:
            break
        start = opt.end()
    while start < len(current) and current[start] in " \t":
        start += 1
    if column < start:
        return None
    return current[start:], column - start


def _shown_type(c: Any) -> str:
    """What the front end shows beside a completion (JupyterLab: at the right of the item, its first
    letter as the badge): the signature of a function, the type of a column. Non-breaking spaces, so
    JupyterLab widens the list rather than wrapping the text over the next item."""
    text = c.type
    if c.type in ("function", "head") and c.detail:
        text = c.detail if len(c.detail) <= 80 else c.detail[:77] + "..."
    elif c.type == "column" and c.detail:
        text = f"column {c.detail}"
    return text.replace(" ", "\u00a0")


def _user_names(shell: Any) -> dict[str, Any]:
    """The notebook's names less IPython's own (``In``, ``Out``, ``exit`` ...), as ``%who`` lists them."""
    hidden = getattr(shell, "user_ns_hidden", {})
    return {k: v for k, v in shell.user_ns.items() if k not in hidden or hidden[k] is not v}


def make_matcher(shell: Any) -> Any:
    """The IPython matcher for ``shell`` (its namespace holds the frames and ``$variables``)."""
    from IPython.core.completer import SimpleCompletion, context_matcher

    @context_matcher()
    def mlsql_matcher(context: Any) -> dict[str, Any]:
        found = sql_at(context.full_text, context.cursor_line, context.cursor_position)
        if found is None:
            return {"completions": [], "suppress": False}
        sql, cursor = found
        try:
            items = complete(sql, cursor, _user_names(shell), limit=context.limit or 500)
        except Exception:  # noqa: BLE001 - a Tab press never raises into the notebook
            return {"completions": [], "suppress": False}
        if not items:
            # Nothing from SQL: in an unknown string let IPython offer file paths; elsewhere stay quiet.
            if items.context == "string":
                return {"completions": [], "suppress": False}
            # IPython lets a matcher silence the others (Python's 300 builtins after "WITH (k = ")
            # only when it has a completion: one that leaves the cell as it is.
            return {"completions": [SimpleCompletion("", type="")], "matched_fragment": "", "suppress": True}
        return {
            "completions": [SimpleCompletion(c.text, type=_shown_type(c)) for c in items],
            "matched_fragment": sql[items[0].start : cursor],
            "suppress": True,
            "ordered": True,
        }

    return mlsql_matcher


def _after_cell(result: Any) -> None:
    cell = getattr(getattr(result, "info", None), "raw_cell", "") or ""
    if "macro" in cell.lower() or "function" in cell.lower():
        forget_functions()


def _warm_up() -> None:
    """Make the session and read DuckDB's function list once, off the main thread: JupyterLab drops
    a completion reply that takes over a second (its providerTimeout), so the first Tab must not
    pay for them."""
    try:
        complete("SELECT a", None, {})
    except Exception:  # noqa: BLE001 - the first Tab will say nothing rather than fail
        pass


def register(shell: Any) -> None:
    """Add the matcher to ``shell``'s completer (once, however often the extension is loaded)."""
    completer = getattr(shell, "Completer", None)
    if completer is None:
        return
    try:
        import IPython.core.completer as ipc

        ipc.context_matcher, ipc.SimpleCompletion  # noqa: B018 - the matcher API (IPython 8.6+)
    except (ImportError, AttributeError):
        return  # an older IPython: %%mlsql cells complete as Python does
    import threading

    threading.Thread(target=_warm_up, name="mlnb-complete-warm-up", daemon=False).start()  # joined at exit: never inside DuckDB when the interpreter goes
    completer.custom_matchers[:] = [m for m in completer.custom_matchers if getattr(m, "__name__", "") != "mlsql_matcher"]
    completer.custom_matchers.insert(0, make_matcher(shell))
    try:
        shell.events.unregister("post_run_cell", _after_cell)
    except ValueError:
        pass
    shell.events.register("post_run_cell", _after_cell)
