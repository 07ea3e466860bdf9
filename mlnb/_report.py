"""Bad rows are reported, not fatal: failures are collected while a query or a
Python call runs, then shown as one summary warning."""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator


class ImageLoadWarning(UserWarning):
    """Some rows got NULL because their image could not be used; the message lists them."""


_lock = threading.Lock()
_depth = 0
_failures: list[tuple[str, str]] = []


def report_failure(source: object, reason: str) -> None:
    """Record one bad row (called from any thread, e.g. DuckDB's UDF workers)."""
    from .exceptions import _short

    with _lock:
        _failures.append((_short(source), reason))


@contextlib.contextmanager
def collecting(what: str = "images") -> Iterator[None]:
    """Collect failures inside the block; the outermost block warns once."""
    global _depth
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
        if failures:
            # Shown as "mlnb: ImageLoadWarning: ..." without a line of mlnb's source under it,
            # and every time (not once per code location): each query reports its own bad rows.
            warnings.warn_explicit(_summary(failures, what), ImageLoadWarning, filename="mlnb", lineno=0, module="mlnb")


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
            taken.extend(_failures[start:])
            del _failures[start:]
            _depth -= 1


def _summary(failures: list[tuple[str, str]], what: str) -> str:
    unique = list(dict.fromkeys(failures))
    noun = what if len(unique) != 1 else what.removesuffix("s")
    lines = [f"{len(unique)} {noun} could not be used and gave NULL:"]
    lines += [f"  {src}: {reason}" for src, reason in unique[:10]]
    if len(unique) > 10:
        lines.append(f"  ... and {len(unique) - 10} more")
    return "\n".join(lines)
