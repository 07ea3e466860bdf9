"""``%%mlsql [-o NAME] [--lazy]`` and ``%mlsql [-o NAME] [--lazy] QUERY``."""

from __future__ import annotations

import re
from typing import Any

import polars as pl
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from traitlets import Int

from ..config import config
from ..exceptions import MlnbError
from ..sql import get_session


@magics_class
class MlsqlMagic(Magics):
    """Run SQL over the notebook's frames. Settings: ``%config MlsqlMagic.displaylimit = 50``."""

    displaylimit = Int(20, help="Rows shown in the HTML table (the frame keeps all rows).").tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.observe(lambda change: setattr(config, "display_limit", change["new"]), "displaylimit")

    @no_var_expand  # `$name` is mlnb's bound parameter, never IPython's text substitution
    @line_cell_magic
    def mlsql(self, line: str, cell: str | None = None) -> Any:
        """Run SQL; tables are the notebook's Polars/pandas/Arrow frames, ``$name`` binds a variable.

        Options: ``-o NAME`` also stores the result in ``NAME``; ``--lazy`` returns a LazyFrame.
        In line form everything after the options is the query.
        """
        out, lazy, rest = _parse_options(line)
        query = cell if cell is not None else rest
        if cell is not None and rest.strip():
            raise MlnbError(f"Unexpected text after the options of %%mlsql: {rest.strip()!r}. Put the query in the cell body.")
        result = get_session().run(query, self.shell.user_ns, lazy=lazy)
        if out:
            self.shell.user_ns[out] = result
        if isinstance(result, pl.DataFrame) and result.width == 0:
            return None  # a statement without a result set (CREATE, SET ...)
        return result


def _parse_options(line: str) -> tuple[str | None, bool, str]:
    """Leading ``-o NAME`` / ``--out NAME`` / ``--lazy``; the rest is SQL (kept verbatim)."""
    out: str | None = None
    lazy = False
    rest = line.lstrip()
    while re.match(r"--?[A-Za-z]", rest):  # "-- comment" and "-1" are SQL, not options
        first = rest.split(None, 1)[0]
        if first in ("-o", "--out"):
            parts = rest.split(None, 2)
            if len(parts) < 2 or not parts[1].isidentifier():
                raise MlnbError("-o needs a Python variable name: %%mlsql -o result")
            out = parts[1]
            rest = parts[2] if len(parts) > 2 else ""
        elif first == "--lazy":
            lazy = True
            rest = rest[len("--lazy") :].lstrip()
        else:
            raise MlnbError(f"Unknown option {first!r} for %mlsql: use -o NAME or --lazy.")
    return out, lazy, rest
