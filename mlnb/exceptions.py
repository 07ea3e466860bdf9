"""Every error mlnb raises on purpose.

::

    MlnbError                         root: a user-facing problem, shown without a traceback
    ├── QueryError                    SQL that could not run (statement, position, hint)
    ├── ModelNotFoundError (KeyError) an unknown backbone, head or function name
    ├── ImageLoadError                an image that could not be read or decoded
    ├── MissingDependencyError (ImportError)  an optional library is not installed
    ├── NotFittedError                a head used before it was trained
    └── WorkspaceError                the workspace folder cannot be used

    KeyboardInterrupt
    └── Interrupted                   Ctrl-C during long work: one line saying what was kept

In IPython, an ``MlnbError`` renders as its short message (``_render_traceback_``);
any other exception is a bug and keeps its full traceback.
"""

from __future__ import annotations

__all__ = [
    "ImageLoadError",
    "MissingDependencyError",
    "MlnbError",
    "ModelNotFoundError",
    "NotFittedError",
    "QueryError",
    "WorkspaceError",
]


class MlnbError(Exception):
    """Root of mlnb's errors: the message says what was wrong and what to do."""

    def _render_traceback_(self) -> list[str]:
        # IPython calls this instead of printing a traceback wall.
        return [f"{type(self).__name__}: {self}"]


class QueryError(MlnbError):
    """A SQL statement that could not run.

    ``statement`` is the statement as the user wrote it, ``position`` the 0-based
    character offset of the problem in it (or ``None``), ``hint`` a suggestion.
    """

    def __init__(
        self,
        message: str,
        *,
        statement: str | None = None,
        position: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.statement = statement
        self.position = position
        self.hint = hint
        super().__init__(self._format())

    def _format(self) -> str:
        lines = [self.message]
        if self.statement:
            lines.append("")
            lines.extend(_caret_lines(self.statement, self.position))
        if self.hint:
            lines.append("")
            lines.append(self.hint)
        return "\n".join(lines)


def _caret_lines(statement: str, position: int | None) -> list[str]:
    text = statement.strip("\n")
    offset = len(statement) - len(statement.lstrip("\n"))
    rows = text.split("\n")
    if position is None:
        return ["  " + r for r in rows[:20]]
    pos = max(0, position - offset)
    out: list[str] = []
    start = 0
    for i, row in enumerate(rows):
        end = start + len(row)
        out.append(f"  {row}")
        if start <= pos <= end:
            out.append("  " + " " * (pos - start) + "^")
            out.extend("  " + r for r in rows[i + 1 : i + 4])
            break
        start = end + 1
    return out


class ModelNotFoundError(MlnbError, KeyError):
    """An unknown name: the message lists the close matches."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ImageLoadError(MlnbError):
    """An image that could not be read or decoded; ``source`` names it."""

    def __init__(self, source: object, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{_short(source)}: {reason}")


def _short(source: object) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    text = str(source)
    return text if len(text) <= 120 else text[:117] + "..."


class MissingDependencyError(MlnbError, ImportError):
    """An optional library is missing; the message names the pip extra."""

    def __init__(self, module: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs {module}, which is not installed. "
            f'Install it with: pip install "mlnb[{extra}]"'
        )


class NotFittedError(MlnbError, ValueError):
    """A head was used before ``fit``."""


class WorkspaceError(MlnbError):
    """The workspace folder cannot be created, read or written."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped long work (embedding); the message says how far it got and what was kept.

    A ``KeyboardInterrupt``, so code that stops on Ctrl-C still stops; shown as one line.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"KeyboardInterrupt: {self}"]
