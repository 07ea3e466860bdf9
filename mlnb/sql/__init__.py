"""The SQL session: DuckDB over the notebook's frames, with mlnb's statements."""

from __future__ import annotations

from . import _classifier_statements, _persisted_statements, _statements  # noqa: F401 - register mlnb's statements
from ._persisted import create_function, drop_function, persisted_functions
from ._session import Session, get_session, is_frame, sql, statement, table_provider, to_polars

__all__ = [
    "Session", "create_function", "drop_function", "get_session", "is_frame", "persisted_functions", "sql", "statement",
    "table_provider", "to_polars",
]
