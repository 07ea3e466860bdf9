"""``%%mlsql``, ``%mlsql``, ``%embed`` and ``%mlnb_serve``: thin magics over the Python API."""

from __future__ import annotations

from typing import Any

from ._mlsql import MlsqlMagic

__all__ = ["MlsqlMagic", "load_ipython_extension"]


def load_ipython_extension(ipython: Any) -> None:
    import polars as pl

    from ..sql._display import html_formatter

    ipython.register_magics(MlsqlMagic(shell=ipython))
    from ._embed import EmbedMagic

    ipython.register_magics(EmbedMagic(shell=ipython))
    from ._serve import ServeMagic

    ipython.register_magics(ServeMagic(shell=ipython))
    fmt = ipython.display_formatter.formatters["text/html"]
    fmt.for_type(pl.DataFrame, html_formatter)
    from ._complete import register

    register(ipython)  # Tab completion inside %%mlsql cells and %mlsql lines
