"""Decode once: small copies of images already read, kept in the workspace.

The first time :func:`mlnb.images.load_image` reads an image for a model or a
thumbnail, it keeps the decoded pixels, resized so that the shorter side is
``config.decode_once_side`` (256 px), under ``<workspace>/decoded/``, named by a
hash of the image's :func:`~mlnb.images.source_key` (which changes when the
file does). A second model, another layer or a thumbnail then reads those
~0.1 MP instead of decoding the multi-megapixel original.

Copies are raw 8-bit RGB, not JPEG: the default model's features move by up to
cosine 0.988 under JPEG quality 95 (0.995 at quality 100; measured on the
bundled photographs) because it is that sensitive to +-1 level noise, while a
raw copy gives the very features the first pass gave. The price is disk: about
300 KB per image (a 3:2 photograph), bounded by ``config.decode_once_max_bytes``.

Copies are a cache, not data: written to a temporary file and renamed (a
reader sees a whole copy or none), not fsync'ed (a copy torn by a power cut
fails its length check and the original is read instead), and the least
recently used are deleted when they pass ``config.decode_once_max_bytes``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

from .config import config

_MAGIC = b"MLNBRGB1"
_HEADER = len(_MAGIC) + 8  # magic, width and height as little-endian uint32
#: Eviction deletes down to this share of the cap, so that it does not run on every write.
_LOW_WATER = 0.8
#: A temporary file older than this was left by a crashed writer.
_STALE_TMP_S = 3600.0


def copy_side(need: int) -> int:
    """Shorter side of a copy made for a reader that needs ``need`` pixels."""
    return max(config.decode_once_side, need)


def shrink(img: Any, side: int) -> Any:
    """``img`` resized so that its shorter side is ``side`` (bilinear, as the models resize)."""
    from PIL import Image

    w, h = img.size
    r = side / min(w, h)
    size = (max(side, round(w * r)), max(side, round(h * r)))
    return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)


def encode(img: Any) -> bytes:
    """A copy's bytes: a short header and the RGB pixels."""
    w, h = img.size
    return _MAGIC + w.to_bytes(4, "little") + h.to_bytes(4, "little") + img.tobytes()


def _size(data: bytes) -> tuple[int, int] | None:
    if len(data) < _HEADER or not data.startswith(_MAGIC):
        return None
    w = int.from_bytes(data[8:12], "little")
    h = int.from_bytes(data[12:16], "little")
    return (w, h) if len(data) == _HEADER + 3 * w * h else None  # torn copies fail here


def decode(data: bytes) -> Any:
    """The RGB ``PIL.Image`` in a copy's bytes."""
    from PIL import Image

    size = _size(data)
    if size is None:
        raise ValueError("not a whole decode-once copy")
    return Image.frombytes("RGB", size, memoryview(data)[_HEADER:])


class CopyStore:
    """The copies of one workspace: ``get``, ``put``, ``discard``; bounded, LRU by file time."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        self._bytes: int | None = None  # what this process believes the folder holds

    def path(self, key: str) -> Path:
        h = hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()
        return self.root / h[:2] / f"{h}.rgb"

    def get(self, key: str, need: int) -> bytes | None:
        """The copy's bytes if there is one whose shorter side is at least ``need``."""
        p = self.path(key)
        try:
            data = p.read_bytes()
        except OSError:
            return None
        side = _short_side(data)
        if side is None or side < need:
            return None
        _touch(p)  # recently used: evicted last
        return data

    def put(self, key: str, data: bytes) -> None:
        p = self.path(key)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, p)  # atomic: concurrent writers of one key leave one whole copy
            _touch(p)
        except OSError:  # a full or read-only disk costs speed, never a result
            with contextlib.suppress(OSError):
                tmp.unlink()
            return
        with self._lock:
            if self._bytes is None:
                self._bytes = self._scan()[1]
            else:
                self._bytes += len(data)
            if self._bytes > config.decode_once_max_bytes:
                self._evict()

    def discard(self, key: str) -> None:
        with contextlib.suppress(OSError):
            self.path(key).unlink()

    def size(self) -> int:
        """Bytes the copies use on disk now."""
        return self._scan()[1]

    def _scan(self) -> tuple[list[tuple[int, int, str]], int]:
        files: list[tuple[int, int, str]] = []
        total, now = 0, time.time()
        with contextlib.suppress(OSError):
            for sub in os.scandir(self.root):
                if not sub.is_dir():
                    continue
                with contextlib.suppress(OSError):
                    for entry in os.scandir(sub.path):
                        try:
                            st = entry.stat()
                        except OSError:
                            continue
                        if entry.name.endswith(".tmp"):
                            if now - st.st_mtime > _STALE_TMP_S:
                                with contextlib.suppress(OSError):
                                    os.unlink(entry.path)
                            continue
                        files.append((st.st_mtime_ns, st.st_size, entry.path))
                        total += st.st_size
        return files, total

    def _evict(self) -> None:
        """Delete the least recently used copies down to the low-water mark (lock held).
        Other processes may evict too: a file already gone is simply skipped."""
        files, total = self._scan()
        target = int(config.decode_once_max_bytes * _LOW_WATER)
        for _mtime, size, path in sorted(files):
            if total <= target:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            total -= size
        self._bytes = total


def _touch(p: Path) -> None:
    # An explicit time: the file system's own clock for writes is coarse (ticks of a few ms).
    now = time.time_ns()
    with contextlib.suppress(OSError):
        os.utime(p, ns=(now, now))


def _short_side(data: bytes) -> int | None:
    size = _size(data)
    return None if size is None else min(size)


def get_store() -> CopyStore:
    """The copy store of the current workspace."""
    from .workspace import per_workspace

    return per_workspace("decoded/.store", lambda path: CopyStore(path.parent))
