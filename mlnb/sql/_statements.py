"""mlnb's own SQL statements that are not classifier-specific."""

from __future__ import annotations

from collections.abc import Mapping
from re import Match
from typing import Any

from ..functions import functions
from ._session import Session, statement


@statement(r"SHOW\s+FUNCTIONS(?:\s+LIKE\s+'(?P<pattern>[^']*)')?")
def _show_functions(session: Session, m: Match[str], stmt: str, ns: Mapping[str, Any]) -> Any:
    """``SHOW FUNCTIONS [LIKE 'embed*']``: mlnb's functions with signatures and docs."""
    pattern = (m.group("pattern") or "*").replace("%", "*")
    return functions(pattern)
