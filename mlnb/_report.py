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
_last: list[tuple[str, str, bool]] = []
_local = threading.local()


class _Collector:
    """The bad rows of one query or call: (source, reason, gave NULL); notes about
    images that loaded anyway have null=False."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: list[tuple[str, str, bool]] = []

    def add(self, row: tuple[str, str, bool]) -> None:
        with self.lock:
            self.rows.append(row)


def _active() -> _Collector | None:
    """This thread's collector: its own (a Python call, a Ray worker's shard), else that of
    the statement it works for. A background thread outside both has none."""
    stack = getattr(_local, "stack", None)
    if stack:
        return stack[-1]
    from ._context import current

    ctx = current()
    return ctx.collector if ctx is not None else None


def report_failure(source: object, reason: str) -> None:
    """Record one bad row (called from any thread, e.g. DuckDB's UDF workers)."""
    from .exceptions import _short

    row = (_short(source), reason, True)
    c = _active()
    if c is not None:
        c.add(row)
    else:  # nobody collects: say it now rather than lose it
        _warn([row], "images")


def report_note(source: object, reason: str) -> None:
    """Record a problem with an image that still loaded (e.g. Pillow's "Corrupt EXIF data");
    dropped when no query or call is collecting."""
    from .exceptions import _short

    c = _active()
    if c is not None:
        c.add((_short(source), reason, False))


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
def collecting(what: str = "images") -> Iterator[_Collector]:
    """Collect failures inside the block; the outermost block of this thread (or of
    the statement it works for) warns once."""
    global _last
    outer = _active()
    if outer is not None:
        yield outer
        return
    c = _Collector()
    stack = _local.__dict__.setdefault("stack", [])
    stack.append(c)
    try:
        yield c
    finally:
        stack.remove(c)
        with c.lock:
            failures = list(c.rows)
        with _lock:
            _last = failures
        if failures:
            _warn(failures, what)


def _warn(failures: list[tuple[str, str, bool]], what: str) -> None:
    # Shown as "mlnb: ImageLoadWarning: ..." without a line of mlnb's source under it,
    # and every time (not once per code location): each query reports its own bad rows.
    warning = ImageLoadWarning(_summary(failures, what), failures)
    warnings.warn_explicit(warning, ImageLoadWarning, filename="mlnb", lineno=0, module="mlnb")


@contextlib.contextmanager
def capturing() -> Iterator[list[tuple[str, str]]]:
    """Take the failures recorded inside the block instead of warning about them
    (a Ray worker sends them back to the driver, which reports them)."""
    taken: list[tuple[str, str]] = []
    c = _Collector()
    stack = _local.__dict__.setdefault("stack", [])
    stack.append(c)
    try:
        yield taken
    finally:
        stack.remove(c)
        taken.extend((src, reason) for src, reason, null in c.rows if null)


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


def carried(fn: Any) -> Any:
    """``fn`` made to report into this thread's collector when another thread runs it
    (the decode pool works for the query or call that submitted the work)."""
    c = _active()
    if c is None:
        return fn

    def run(*args: Any, **kwargs: Any) -> Any:
        stack = _local.__dict__.setdefault("stack", [])
        stack.append(c)
        try:
            return fn(*args, **kwargs)
        finally:
            stack.remove(c)

    return run
