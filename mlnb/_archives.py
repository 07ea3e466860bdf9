"""Zip and tar archives opened once and read member by member.

Reading ``zip://a.jpg::photos.zip`` used to open the archive for every member:
the zip's central directory (or a tar's every header) was read again each
time, and a remote archive was fetched again each time. Here an archive is
opened once and kept in a small LRU of open handles, keyed by its path, size
and modification time (a changed file is opened afresh) or by its URL; the
least recently used is closed when more than :data:`MAX_OPEN` are open or, for
remote archives, when their bytes pass :data:`MAX_REMOTE_BYTES`.

Members are read streamed and capped (``mlnb.config.max_image_bytes``), as
any image. :func:`list_members` lists members matching a glob (``**/*.jpg``).
"""

from __future__ import annotations

import atexit
import io
import os
import re
import tarfile
import threading
import zipfile
from collections import OrderedDict
from datetime import datetime
from typing import Any

from .exceptions import ImageLoadError, MlnbError

#: Most archives kept open at once.
MAX_OPEN = 8
#: Most bytes of fetched (remote) archives kept in memory.
MAX_REMOTE_BYTES = 256 << 20

#: How many times an archive was opened (tests count it).
opens = 0


class _Zip:
    def __init__(self, source: Any, outer: str) -> None:
        self.outer = outer
        self.zf = zipfile.ZipFile(source)  # reads of several members at once are safe (zipfile locks its file)

    def read(self, src: str, member: str, cap: int) -> bytes:
        from .images import _read_capped, _too_big

        try:
            info = self.zf.getinfo(member)
        except KeyError:
            raise ImageLoadError(src, f"no member {member!r} in {self.outer}") from None
        if info.is_dir():
            raise ImageLoadError(src, f"{member!r} is a folder in {self.outer}, not an image")
        if info.file_size > cap:
            raise ImageLoadError(src, _too_big(cap))
        with self.zf.open(info) as fh:
            return _read_capped(fh, src, cap)

    def members(self) -> list[tuple[str, int, datetime]]:
        return [(i.filename, i.file_size, datetime(*i.date_time)) for i in self.zf.infolist() if not i.is_dir()]

    def close(self) -> None:
        self.zf.close()


class _Tar:
    def __init__(self, source: Any, outer: str) -> None:
        self.outer = outer
        self.tf = tarfile.open(fileobj=source) if isinstance(source, io.BytesIO) else tarfile.open(source)
        self.index = {m.name: m for m in self.tf.getmembers()}  # the one pass over every header
        self.lock = threading.Lock()  # a tar has one read position

    def read(self, src: str, member: str, cap: int) -> bytes:
        from .images import _read_capped, _too_big

        info = self.index.get(member)
        if info is None:
            raise ImageLoadError(src, f"no member {member!r} in {self.outer}")
        if not info.isfile():
            raise ImageLoadError(src, f"{member!r} is not a file in {self.outer}")
        if info.size > cap:
            raise ImageLoadError(src, _too_big(cap))
        with self.lock:
            fh = self.tf.extractfile(info)
            if fh is None:
                raise ImageLoadError(src, f"{member!r} is not a file in {self.outer}")
            with fh:
                return _read_capped(fh, src, cap)

    def members(self) -> list[tuple[str, int, datetime]]:
        return [(m.name, m.size, datetime.fromtimestamp(m.mtime)) for m in self.index.values() if m.isfile()]

    def close(self) -> None:
        self.tf.close()


_OPEN: OrderedDict[tuple[Any, ...], tuple[Any, int]] = OrderedDict()  # key -> (handle, bytes held in memory)
_LOCK = threading.Lock()


def _is_local(outer: str) -> bool:
    return "://" not in outer or outer.lower().startswith("file://")


def _open(src: str, outer: str, timeout: float) -> Any:
    """The open handle of ``outer``, opened here if it is not open yet."""
    global opens
    if _is_local(outer):
        path = outer[7:] if outer.lower().startswith("file://") else outer
        try:
            st = os.stat(path)
        except OSError:
            raise ImageLoadError(src, f"archive not found: {outer}") from None
        if not os.path.isfile(path):
            raise ImageLoadError(src, f"archive not found: {outer}")
        key: tuple[Any, ...] = ("file", os.path.abspath(path), st.st_size, st.st_mtime_ns)
    else:
        key = ("url", outer)
    with _LOCK:  # opening under the lock: threads asking for the same archive open it once
        if key in _OPEN:
            _OPEN.move_to_end(key)
            return _OPEN[key][0]
        if key[0] == "file":
            source: Any = key[1]
            held = 0
            for old in [k for k in _OPEN if k[0] == "file" and k[1] == key[1]]:  # the file changed
                _close(old)
        else:
            from .images import read_source

            try:
                source = io.BytesIO(read_source(outer, timeout=timeout))
            except ImageLoadError as exc:
                raise ImageLoadError(src, f"archive {exc.reason}") from None
            held = len(source.getvalue())
        try:
            is_zip = zipfile.is_zipfile(source)
            if isinstance(source, io.BytesIO):
                source.seek(0)
            handle = _Zip(source, outer) if is_zip else _Tar(source, outer)
        except tarfile.TarError:
            raise ImageLoadError(src, f"{outer} is not a zip or tar archive") from None
        except Exception as exc:  # noqa: BLE001 - BadZipFile, EOFError ...
            raise ImageLoadError(src, f"corrupt archive {outer}: {exc or type(exc).__name__}") from None
        opens += 1
        _OPEN[key] = (handle, held)
        while len(_OPEN) > MAX_OPEN or (len(_OPEN) > 1 and sum(h for _x, h in _OPEN.values()) > MAX_REMOTE_BYTES):
            _close(next(iter(_OPEN)))
        return handle


def _close(key: tuple[Any, ...]) -> None:
    handle, _held = _OPEN.pop(key)
    try:
        handle.close()
    except Exception:  # noqa: BLE001, S110 - closing a damaged archive: nothing left to do
        pass


def close_all() -> None:
    """Close every kept archive (the next read opens it again)."""
    with _LOCK:
        for key in list(_OPEN):
            _close(key)


atexit.register(close_all)


def read_member(src: str, outer: str, member: str, timeout: float, cap: int) -> bytes:
    """One member of a zip or tar archive, at most ``cap`` bytes, from the kept open archive."""
    handle = _open(src, outer, timeout)
    try:
        return handle.read(src, member, cap)
    except ImageLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - zlib.error, EOFError, encrypted members ...
        raise ImageLoadError(src, f"corrupt archive {outer}: {exc or type(exc).__name__}") from None


# -- globbing inside archives -------------------------------------------------------
def split_pattern(pattern: str) -> tuple[str, str, str] | None:
    """``(scheme, member glob, archive)`` of ``zip://GLOB::x.zip``, ``tar://GLOB::x.tar`` or
    ``archive+x.zip#GLOB``; ``None`` for anything else."""
    lower = pattern.lower()
    if lower.startswith(("zip://", "tar://")) and pattern.count("::") == 1:
        inner, _, outer = pattern.split("://", 1)[1].partition("::")
        return lower[:3], inner, outer
    if lower.startswith("archive+"):
        outer, _, inner = pattern[len("archive+") :].partition("#")
        return "archive", inner, outer
    return None


def _glob_regex(glob: str) -> re.Pattern[str]:
    """``**/`` any folders (or none), ``*`` and ``?`` within one name, ``[...]`` a set."""
    out, i = [], 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        elif glob[i] == "[" and "]" in glob[i + 1 :]:
            j = glob.index("]", i + 1)
            out.append("[" + glob[i + 1 : j].replace("!", "^", 1) + "]")
            i = j + 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def list_members(pattern: str, timeout: float = 10.0) -> list[tuple[str, int, datetime]]:
    """``(source, size, modified)`` of the files inside an archive whose names match the
    pattern's glob, sorted; each source reads that member (``zip://a/b.jpg::x.zip``)."""
    parts = split_pattern(pattern)
    if parts is None:
        raise MlnbError(f"{pattern!r} is not an archive pattern (zip://GLOB::archive, tar://GLOB::archive or archive+archive#GLOB).")
    scheme, glob, outer = parts
    if not glob:
        raise MlnbError(f"{pattern!r} names no members: add a glob such as **/*.jpg.")
    try:
        handle = _open(pattern, outer, timeout)
    except ImageLoadError as exc:
        raise MlnbError(f"Cannot list {outer}: {exc.reason}") from None
    rx = _glob_regex(glob.lstrip("/"))
    rows = []
    for name, size, modified in handle.members():
        if rx.match(name.lstrip("/")):
            src = f"archive+{outer}#{name}" if scheme == "archive" else f"{scheme}://{name}::{outer}"
            rows.append((src, size, modified))
    return sorted(rows)
