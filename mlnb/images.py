"""The one image loader: a path, URL, archive member, bytes or in-memory image
becomes a decoded RGB ``PIL.Image`` — or an :class:`ImageLoadError` that says why not.

Sources
-------
- local paths and ``file://`` URLs; ``.gz``, ``.bz2``, ``.xz`` and ``.zst`` files are decompressed;
- ``http://`` and ``https://`` URLs (with a timeout: ``mlnb.images.URL_TIMEOUT`` seconds);
- archive members, in fsspec's chained form ``zip://inner/cat.jpg::photos.zip``
  (also ``tar://``) or MLDB's ``archive+file:///data/photos.zip#inner/cat.jpg``;
- any other fsspec URL (``s3://`` ...) when its fsspec backend is installed;
- raw encoded bytes; in Python also a ``PIL.Image`` or a NumPy array (HxW, HxWx3, HxWx4).

Decoding converts grayscale, palette, CMYK, 16-bit and float images to 8-bit
RGB, composites transparency onto white, applies the EXIF orientation and
refuses images larger than ``MAX_PIXELS`` (decompression bombs). JPEGs are
decoded at reduced scale when the caller needs a smaller image (``draft``).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import threading
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .exceptions import ImageLoadError, MissingDependencyError

#: Largest image accepted, in pixels (about 16k x 11k).
MAX_PIXELS = 178_956_970
#: Seconds to wait for a URL.
URL_TIMEOUT = 10.0

_DECOMPRESS: dict[str, Callable[[bytes], bytes]] = {
    ".gz": gzip.decompress,
    ".bz2": bz2.decompress,
    ".xz": lzma.decompress,
}


# -- fetching bytes (the seam tests replace: no network in tests) ----------
def _fetch_url(url: str, timeout: float) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": "mlnb"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - http(s) only, checked by caller
        return resp.read()


fetch_url: Callable[[str, float], bytes] = _fetch_url


def set_url_fetcher(fn: Callable[[str, float], bytes] | None) -> None:
    """Replace how URLs are fetched (tests, proxies); ``None`` restores urllib."""
    global fetch_url
    fetch_url = fn or _fetch_url


def read_source(src: Any, *, timeout: float | None = None) -> bytes:
    """The encoded bytes behind ``src`` (path, URL, archive member or bytes)."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src)
    if isinstance(src, os.PathLike):
        src = os.fspath(src)
    if not isinstance(src, str):
        raise ImageLoadError(src, f"cannot read an image from a {type(src).__name__}")
    if not src:
        raise ImageLoadError(src, "empty path")
    timeout = URL_TIMEOUT if timeout is None else timeout
    lower = src.lower()
    try:
        if lower.startswith(("http://", "https://")):
            data = fetch_url(src, timeout)
        elif lower.startswith("archive+"):
            data = _read_mldb_archive(src, timeout)
        elif "::" in src or (("://" in src) and not lower.startswith("file://")):
            data = _read_fsspec(src)
        else:
            path = src[7:] if lower.startswith("file://") else src
            data = Path(path).read_bytes()
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError(src, "file not found") from None
    except IsADirectoryError:
        raise ImageLoadError(src, "is a folder, not an image") from None
    except PermissionError:
        raise ImageLoadError(src, "permission denied") from None
    except urllib.error.HTTPError as exc:
        raise ImageLoadError(src, f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            raise ImageLoadError(src, f"timed out after {timeout:g}s") from None
        raise ImageLoadError(src, f"cannot fetch: {reason}") from None
    return _maybe_decompress(src, data)


def _maybe_decompress(src: str, data: bytes) -> bytes:
    base = src.split("#", 1)[0].split("::", 1)[0].lower()
    for ext, fn in _DECOMPRESS.items():
        if base.endswith(ext):
            try:
                return fn(data)
            except Exception as exc:  # noqa: BLE001
                raise ImageLoadError(src, f"cannot decompress {ext}: {exc}") from None
    if base.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise MissingDependencyError("zstandard", "all", "Reading .zst files") from None
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 31)
    return data


def _read_mldb_archive(src: str, timeout: float) -> bytes:
    """``archive+file:///data/photos.zip#inner/cat.jpg`` (and ``archive+http(s)://``)."""
    outer, _, member = src[len("archive+") :].partition("#")
    if not member:
        raise ImageLoadError(src, "an archive URL needs '#member/path' after the archive")
    blob = read_source(outer, timeout=timeout)
    return _archive_member(src, blob, outer, member)


def _archive_member(src: str, blob: bytes, outer: str, member: str) -> bytes:
    import tarfile
    import zipfile

    buf = io.BytesIO(blob)
    if zipfile.is_zipfile(buf):
        with zipfile.ZipFile(buf) as zf:
            try:
                return zf.read(member)
            except KeyError:
                raise ImageLoadError(src, f"no member {member!r} in {outer}") from None
    buf.seek(0)
    try:
        with tarfile.open(fileobj=buf) as tf:
            try:
                fh = tf.extractfile(member)
            except KeyError:
                raise ImageLoadError(src, f"no member {member!r} in {outer}") from None
            if fh is None:
                raise ImageLoadError(src, f"{member!r} is not a file")
            return fh.read()
    except tarfile.TarError:
        raise ImageLoadError(src, f"{outer} is not a zip or tar archive") from None


def _read_fsspec(src: str) -> bytes:
    try:
        import fsspec
    except ImportError:
        raise MissingDependencyError("fsspec", "all", f"Reading {src.split(':', 1)[0]} URLs") from None
    try:
        with fsspec.open(src, "rb") as fh:
            return fh.read()
    except ImportError as exc:
        raise ImageLoadError(src, f"this URL needs an fsspec backend that is not installed ({exc})") from None
    except (KeyError, ValueError) as exc:
        raise ImageLoadError(src, f"not found ({exc})") from None


# -- decoding --------------------------------------------------------------
def decode(data: bytes, *, source: Any = None, draft: tuple[int, int] | None = None) -> Any:
    """Decode encoded bytes into an RGB ``PIL.Image`` (see module docs for conversions)."""
    from PIL import Image, UnidentifiedImageError

    src = source if source is not None else data
    if not data:
        raise ImageLoadError(src, "empty file")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageLoadError(src, "not an image (unknown format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(src, f"too large: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad headers
        raise ImageLoadError(src, f"cannot decode: {exc}") from None
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise ImageLoadError(src, f"too large: {w}x{h} pixels (limit {MAX_PIXELS:,}); possibly a decompression bomb")
    try:
        if draft and img.format == "JPEG":
            img.draft("RGB", draft)
        img.load()
        return to_rgb(img)
    except ImageLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated / corrupt pixel data
        raise ImageLoadError(src, f"corrupt or truncated image: {exc}") from None


def to_rgb(img: Any) -> Any:
    """Any PIL mode → 8-bit RGB, alpha composited onto white, EXIF orientation applied."""
    import numpy as np
    from PIL import Image, ImageOps

    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - broken EXIF must not fail the image
        pass
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        img = Image.fromarray(((arr - lo) * scale).astype(np.uint8), "L")
        mode = "L"
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def from_array(arr: Any) -> Any:
    """A NumPy image (HxW, HxWx1/3/4; uint8, uint16 or float in [0, 1]) → RGB PIL image."""
    import numpy as np
    from PIL import Image

    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageLoadError(f"<array {a.shape}>", "expected an HxW, HxWx3 or HxWx4 array")
    if a.dtype == np.uint16:
        a = (a / 257.0).astype(np.uint8)
    elif a.dtype.kind == "f":
        a = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8) if a.max(initial=0) <= 1.0 else np.clip(a, 0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return to_rgb(Image.fromarray(a))


def load_image(src: Any, *, draft: tuple[int, int] | None = None, timeout: float | None = None) -> Any:
    """Load one image as RGB ``PIL.Image``; raises :class:`ImageLoadError` with the reason.

    Examples
    --------
    >>> from mlnb.images import load_image
    >>> load_image("photos/cat.jpg").size  # doctest: +SKIP
    (640, 480)
    """
    mod = type(src).__module__
    if mod.startswith("PIL"):
        return to_rgb(src)
    if mod.startswith("numpy"):
        return from_array(src)
    if src is None:
        raise ImageLoadError(src, "NULL image")
    return decode(read_source(src, timeout=timeout), source=src, draft=draft)


# -- identity, for caches ---------------------------------------------------
def source_key(src: Any) -> str | None:
    """A string that changes when the image behind ``src`` changes, or ``None`` if unknown.

    Local files: absolute path + size + modification time (no read needed).
    Archive members: the archive's key + member. Bytes and in-memory images:
    a hash of the content. URLs: the URL itself (assumed immutable).
    """
    import numpy as np

    if isinstance(src, (bytes, bytearray, memoryview)):
        return "sha1:" + hashlib.sha1(bytes(src)).hexdigest()
    mod = type(src).__module__
    if mod.startswith("PIL"):
        return "sha1:" + hashlib.sha1(src.tobytes() + repr((src.mode, src.size)).encode()).hexdigest()
    if mod.startswith("numpy"):
        a = np.ascontiguousarray(src)
        return "sha1:" + hashlib.sha1(a.tobytes() + repr((a.shape, str(a.dtype))).encode()).hexdigest()
    if isinstance(src, os.PathLike):
        src = os.fspath(src)
    if not isinstance(src, str) or not src:
        return None
    lower = src.lower()
    if lower.startswith(("http://", "https://")):
        return "url:" + src
    if lower.startswith("archive+"):
        outer, _, member = src[len("archive+") :].partition("#")
        inner = source_key(outer)
        return None if inner is None else f"{inner}#{member}"
    if "::" in src:
        member, _, outer = src.partition("::")
        inner = source_key(outer)
        return None if inner is None else f"{inner}#{member}"
    if "://" in src and not lower.startswith("file://"):
        return "url:" + src
    path = src[7:] if lower.startswith("file://") else src
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"file:{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}"


# -- thumbnails (display and widgets) ----------------------------------------
_THUMBS: OrderedDict[tuple[str, int], bytes] = OrderedDict()
_THUMBS_LOCK = threading.Lock()
_THUMBS_MAX = 4096


def thumbnail(src: Any, size: int = 64) -> bytes:
    """A JPEG thumbnail (longest side ``size``), made once and kept in memory."""
    key = source_key(src)
    if key is not None:
        with _THUMBS_LOCK:
            hit = _THUMBS.get((key, size))
            if hit is not None:
                _THUMBS.move_to_end((key, size))
                return hit
    img = load_image(src, draft=(size, size))
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    data = buf.getvalue()
    if key is not None:
        with _THUMBS_LOCK:
            _THUMBS[(key, size)] = data
            while len(_THUMBS) > _THUMBS_MAX:
                _THUMBS.popitem(last=False)
    return data


IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")


def looks_like_image_bytes(data: Any) -> bool:
    return isinstance(data, (bytes, bytearray)) and bytes(data[:4]).startswith(IMAGE_MAGIC)
