"""What one running SQL statement owns, reached by the code that works for it.

A :class:`StatementContext` is made by the session for each statement: the
engine chosen for it, the rows its functions could not use, the first error
raised inside one of its functions, and (for the Ray engine) the images it
gathers and the features held for it. DuckDB calls mlnb's functions from its
own worker threads; the function wrapper enters the statement's context on
that thread for the duration of the call, so everything below reads
:func:`current` and never a process-wide global. A thread that runs no
statement (a widget retraining a head in the background) has no context and
shares nothing with a query.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StatementContext:
    engine: str | None = None  # an engine forced for this statement (None: mlnb.config.engine)
    collector: Any = None  # the _report collector of this statement's bad rows
    gather: dict[tuple[str, str], dict[str, Any]] | None = None  # images wanted (Ray dry run)
    overlay: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # features held for it
    error: BaseException | None = None  # the first exception raised inside one of its functions
    stop: threading.Event = field(default_factory=threading.Event)  # set on Ctrl-C: its workers stop too
    memo: dict[Any, Any] = field(default_factory=dict)  # what its functions load once per statement
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    active: int = 0  # its function calls running now (on DuckDB's threads)

    @contextlib.contextmanager
    def calling(self) -> Iterator[None]:
        """Count a function call of this statement while it runs."""
        with self.lock:
            self.active += 1
        try:
            yield
        finally:
            with self.lock:
                self.active -= 1

    def put_error(self, exc: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = exc

    def take_error(self) -> BaseException | None:
        with self.lock:
            exc, self.error = self.error, None
            return exc


_local = threading.local()


def current() -> StatementContext | None:
    """The context of the statement this thread works for, if any."""
    return getattr(_local, "ctx", None)


@contextlib.contextmanager
def entered(ctx: StatementContext | None) -> Iterator[StatementContext | None]:
    """Make ``ctx`` this thread's context inside the block."""
    before = getattr(_local, "ctx", None)
    _local.ctx = ctx
    try:
        yield ctx
    finally:
        _local.ctx = before
