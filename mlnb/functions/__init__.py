"""The function registry: one definition serves SQL and Python."""

from __future__ import annotations

from ._registry import IMAGE, Function, Param, function, functions, registry, table_function

__all__ = ["IMAGE", "Function", "Param", "function", "functions", "registry", "table_function"]
