"""The workspace: the ``.mlnb/`` folder where caches, labels and heads persist.

Every write goes to a temporary file in the same folder, is flushed and
fsync'ed, then renamed over the target: a reader sees the old file or the new
one, never half of one. ``lock()`` serialises writers across processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import config
from .exceptions import WorkspaceError


class Workspace:
    """A folder that holds mlnb's persistent state.

    Examples
    --------
    >>> ws = Workspace("/tmp/demo/.mlnb")
    >>> ws.write_json("heads/index.json", {"heads": []})  # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    def path(self, *parts: str, create: bool = True) -> Path:
        """A path inside the workspace; its parent folder is created."""
        p = self.root.joinpath(*parts)
        if create:
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise WorkspaceError(
                    f"Cannot create {p.parent}: {exc.strerror}. "
                    "Set mlnb.config.workspace to a writable folder."
                ) from None
        return p

    def write_bytes(self, relpath: str | Path, data: bytes) -> Path:
        """Write ``data`` atomically and durably; returns the final path."""
        target = self.path(str(relpath))
        atomic_write_bytes(target, data)
        return target

    def write_json(self, relpath: str | Path, obj: Any) -> Path:
        data = json.dumps(obj, indent=1, sort_keys=True, default=str).encode()
        return self.write_bytes(relpath, data)

    def read_json(self, relpath: str | Path, default: Any = None) -> Any:
        p = self.root / relpath
        try:
            return json.loads(p.read_bytes())
        except FileNotFoundError:
            return default

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive lock shared by every process using this workspace."""
        p = self.path("locks", f"{name}.lock")
        with open(p, "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def check_identifier(name: Any, what: str, longest: int = 64) -> str:
    """``name`` if it is a SQL identifier (so also a safe file or folder name in the workspace);
    otherwise an error that says so (``what``: "Model names", "Function names" ...)."""
    if not isinstance(name, str) or not name.isidentifier() or len(name) > longest:
        raise WorkspaceError(
            f"{what} are SQL identifiers (letters, digits and _, not starting with a digit, "
            f"at most {longest} characters): {name!r} is not."
        )
    return name


def atomic_write_bytes(target: Path, data: bytes) -> None:
    """Write to a temp file beside ``target``, fsync, rename over it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def durable_append(path: Path, make_payload: Any) -> Any:
    """Append to a log under an exclusive lock, flushed and fsync'ed before returning.

    ``make_payload(size)`` gets the file's size (under the lock) and returns
    ``(text, result)``; ``result`` is returned. Used by every append-only log.
    A line left unfinished by a crash is cut off first: it was never
    acknowledged, and the next line must not be glued onto it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            size = _cut_torn_tail(fh)
            text, result = make_payload(size)
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
            return result
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def repair_log(path: Path) -> None:
    """Cut an unfinished last line (left by a crash) off the log at ``path``, if any."""
    try:
        fh = open(path, "r+b")
    except FileNotFoundError:
        return
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            _cut_torn_tail(fh)
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _cut_torn_tail(fh: Any) -> int:
    """The log's size once a trailing partial line is truncated (caller holds the lock)."""
    size = os.fstat(fh.fileno()).st_size
    end = size
    while end > 0:
        start = max(0, end - 65536)
        fh.seek(start)
        block = fh.read(end - start)
        nl = block.rfind(b"\n")
        if nl >= 0:
            end = start + nl + 1
            break
        end = start
    if end != size:
        os.ftruncate(fh.fileno(), end)
        os.fsync(fh.fileno())
    fh.seek(0, os.SEEK_END)
    return end


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a JSON-lines log (a line cut by a crash was never acknowledged)."""
    rows = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        pass
    return rows


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_instances: dict[tuple[str, Path], Any] = {}
_instances_lock = threading.Lock()


def per_workspace(relpath: str, factory: Any) -> Any:
    """One ``factory(path)`` object per file of the current workspace (caches, logs)."""
    path = get_workspace().path(*relpath.split("/"))
    key = (getattr(factory, "__qualname__", repr(factory)), path)
    with _instances_lock:
        if key not in _instances:
            _instances[key] = factory(path)
        return _instances[key]


_current: Workspace | None = None


def get_workspace() -> Workspace:
    """The workspace named by ``mlnb.config.workspace`` (re-read on each call)."""
    global _current
    root = Path(config.workspace).expanduser().resolve()
    if _current is None or _current.root != root:
        _current = Workspace(root)
    return _current
