"""mlnb's own SQL statements that are not classifier-specific."""

from __future__ import annotations

from collections.abc import Mapping
from re import Match
from typing import Any

from ..exceptions import QueryError
from ..functions import functions
from ._parse import Statement
from ._session import Session, statement


@statement(r"SHOW\s+FUNCTIONS(?:\s+LIKE\s+'(?P<pattern>[^']*)')?")
def _show_functions(session: Session, m: Match[str], stmt: Statement, ns: Mapping[str, Any]) -> Any:
    """``SHOW FUNCTIONS [LIKE 'embed*']``: mlnb's functions with signatures and docs."""
    pattern = (m.group("pattern") or "*").replace("%", "*")
    return functions(pattern)


#: Settings SQL may change: ``SET mlnb_<name> = value`` is ``mlnb.config.<name> = value``.
_SETTINGS = (
    "engine", "device", "precision", "batch_size", "display_limit", "workspace", "ray_address", "ray_workers", "ray_output",
    "max_image_bytes", "max_image_pixels", "url_timeout", "remote_thumbnails", "mlflow",
)


def _setting(name: str) -> str:
    key = name.lower().removeprefix("mlnb_")
    if key not in _SETTINGS:
        import difflib

        close = difflib.get_close_matches(key, _SETTINGS, n=1)
        hint = f" Did you mean mlnb_{close[0]}?" if close else ""
        raise QueryError(f"Unknown setting mlnb_{key}.{hint} Settings: {', '.join('mlnb_' + k for k in _SETTINGS)}.")
    return key


def _literal(text: str) -> Any:
    text = text.strip()
    if text.upper() in ("NULL", "DEFAULT"):
        return None
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    if text.upper() in ("TRUE", "FALSE"):
        return text.upper() == "TRUE"
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    raise QueryError(f"Cannot read the value {text}: write a quoted string ('ray'), a number, true/false, or NULL.")


def _show_setting(key: str) -> Any:
    import polars as pl

    from ..config import config

    return pl.DataFrame({"setting": [f"mlnb_{key}"], "value": [None if getattr(config, key) is None else str(getattr(config, key))]})


@statement(r"SET\s+(?:SESSION\s+)?(?P<name>mlnb_\w+)\s*(?:=|\bTO\b)\s*(?P<value>.+?)")
def _set(session: Session, m: Match[str], stmt: Statement, ns: Mapping[str, Any]) -> Any:
    """``SET mlnb_engine = 'ray'``: change a session setting (``mlnb.config``) from SQL;
    ``= DEFAULT`` (or NULL) puts back the value a new session starts with."""
    from ..config import Config, config

    key = _setting(m.group("name"))
    value = _literal(m.group("value"))
    setattr(config, key, getattr(Config(), key) if value is None else value)
    return _show_setting(key)


@statement(r"RESET\s+(?P<name>mlnb_\w+)")
def _reset(session: Session, m: Match[str], stmt: Statement, ns: Mapping[str, Any]) -> Any:
    """``RESET mlnb_engine``: back to the value a new session starts with."""
    from ..config import Config, config

    key = _setting(m.group("name"))
    setattr(config, key, getattr(Config(), key))
    return _show_setting(key)


@statement(r"SHOW\s+(?P<name>mlnb_\w+)")
def _show(session: Session, m: Match[str], stmt: Statement, ns: Mapping[str, Any]) -> Any:
    """``SHOW mlnb_engine``: a setting's current value."""
    return _show_setting(_setting(m.group("name")))
