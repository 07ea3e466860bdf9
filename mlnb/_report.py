"""Bad rows are reported, not fatal: failures are collected while a query or a
Python call runs, then shown as one summary warning.

The warning lists the first reasons; every one of them stays available as a
Polars frame: ``mlnb.last_failures()`` or ``warning.failures``.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator
from typing import Any

#: Reasons written into the warning's message; the rest are in ``mlnb.last_failures()``.
SHOWN = 10


class ImageLoadWarning(UserWarning):
    """Some rows got NULL because their image could not be used; the message lists them.

    ``failures`` is every row as a Polars frame (``source``, ``reason``, ``null``):
    also ``mlnb.last_failures()`` after the warning was shown.
    """

    def __init__(self, message: str = "", failures: list[tuple[str, str, bool]] | None = None) -> None:
        super().__init__(message)
        self._rows = list(failures or [])

    @property
    def failures(self) -> Any:
        return _frame(self._rows)


_lock = threading.Lock()
_depth = 0
# (source, reason, gave NULL): notes about images that loaded anyway have null=False.
_failures: list[tuple[str, str, bool]] = []
_last: list[tuple[str, str, bool]] = []


def report_failure(source: object, reason: str) -> None:
    """Record one bad row (called from any thread, e.g. DuckDB's UDF workers)."""
    from .exceptions import _short

    with _lock:
        _failures.append((_short(source), reason, True))


def report_note(source: object, reason: str) -> None:
    """Record a problem with an image that still loaded (e.g. Pillow's "Corrupt EXIF data");
    dropped when no query or call is collecting."""
    from .exceptions import _short

    with _lock:
        if _depth:
            _failures.append((_short(source), reason, False))


def last_failures() -> Any:
    """Every image that the last query or call could not use, as a Polars frame.

    Columns: ``source``, ``reason`` and ``null`` (False for an image that loaded,
    with a problem noted, e.g. corrupt EXIF data). The warning shows the first 10.

    Examples
    --------
    >>> import mlnb
    >>> mlnb.last_failures()  # doctest: +SKIP
    shape: (13, 3)
    """
    with _lock:
        rows = list(_last)
    return _frame(rows)


def _frame(rows: list[tuple[str, str, bool]]) -> Any:
    import polars as pl

    schema = {"source": pl.String, "reason": pl.String, "null": pl.Boolean}
    return pl.DataFrame(list(dict.fromkeys(rows)), schema=schema, orient="row")


@contextlib.contextmanager
def collecting(what: str = "images") -> Iterator[None]:
    """Collect failures inside the block; the outermost block warns once."""
    global _depth, _last
    with _lock:
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            done = _depth == 0
            failures = list(_failures) if done else []
            if done:
                _failures.clear()
                _last = failures
        if failures:
            # Shown as "mlnb: ImageLoadWarning: ..." without a line of mlnb's source under it,
            # and every time (not once per code location): each query reports its own bad rows.
            warning = ImageLoadWarning(_summary(failures, what), failures)
            warnings.warn_explicit(warning, ImageLoadWarning, filename="mlnb", lineno=0, module="mlnb")


@contextlib.contextmanager
def capturing() -> Iterator[list[tuple[str, str]]]:
    """Take the failures recorded inside the block instead of warning about them
    (a Ray worker sends them back to the driver, which reports them)."""
    global _depth
    taken: list[tuple[str, str]] = []
    with _lock:
        _depth += 1
        start = len(_failures)
    try:
        yield taken
    finally:
        with _lock:
            taken.extend((src, reason) for src, reason, null in _failures[start:] if null)
            del _failures[start:]
            _depth -= 1


def _summary(failures: list[tuple[str, str, bool]], what: str) -> str:
    unique = list(dict.fromkeys(failures))
    bad = [(s, r) for s, r, null in unique if null]
    notes = [(s, r) for s, r, null in unique if not null]
    lines: list[str] = []
    if bad:
        noun = what if len(bad) != 1 else what.removesuffix("s")
        lines.append(f"{len(bad)} {noun} could not be used and gave NULL:")
        lines += [f"  {src}: {reason}" for src, reason in bad[:SHOWN]]
    room = max(0, SHOWN - len(bad))
    if notes:
        noun = what if len(notes) != 1 else what.removesuffix("s")
        lines.append(f"{len(notes)} {noun} loaded with problems:")
        lines += [f"  {src}: {reason}" for src, reason in notes[:room]]
    hidden = len(bad) - min(len(bad), SHOWN) + len(notes) - min(len(notes), room)
    if hidden:
        lines.append(f"  ... and {hidden} more (all of them: mlnb.last_failures())")
    return "\n".join(lines)
