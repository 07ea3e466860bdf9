"""The one image loader: a path, URL, archive member, bytes or in-memory image
becomes a decoded RGB ``PIL.Image`` — or an :class:`ImageLoadError` that says why not.

Sources
-------
- local paths and ``file://`` URLs; ``.gz``, ``.bz2``, ``.xz`` and ``.zst`` files are decompressed;
- ``http://`` and ``https://`` URLs (one total deadline: ``mlnb.config.url_timeout`` seconds);
- archive members, in fsspec's chained form ``zip://inner/cat.jpg::photos.zip``
  (also ``tar://``) or MLDB's ``archive+file:///data/photos.zip#inner/cat.jpg``;
- any other fsspec URL (``s3://`` ...) when its fsspec backend is installed;
- raw encoded bytes; in Python also a ``PIL.Image`` or a NumPy array (HxW, HxWx3, HxWx4).

Everything read from outside is bounded: at most ``mlnb.config.max_image_bytes``
are read (or inflated) for one image, streamed, so a zip or gzip bomb costs
no more than that. Decoding converts grayscale, palette, CMYK, 16-bit and
float images to 8-bit RGB, composites transparency onto white, applies the
EXIF orientation and refuses images larger than ``mlnb.config.max_image_pixels``
(decompression bombs); the pixels decoded at once, across threads, are bounded
too. JPEGs are decoded at reduced scale when the caller needs a smaller image
(``draft``). Pillow's own warnings (corrupt EXIF ...) become notes in mlnb's one
``ImageLoadWarning``.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import lzma
import os
import sys
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from ._report import report_note
from .config import config
from .exceptions import ImageLoadError, MissingDependencyError

_OPENERS: dict[str, Callable[[BinaryIO], BinaryIO]] = {
    ".gz": lambda fh: gzip.GzipFile(fileobj=fh),
    ".bz2": lambda fh: bz2.BZ2File(fh),
    ".xz": lambda fh: lzma.LZMAFile(fh),
}
_CHUNK = 1 << 20


def _too_big(cap: int) -> str:
    return f"too large: over {cap / (1 << 20):g} MiB (raise mlnb.config.max_image_bytes to allow it)"


def _read_capped(fh: Any, src: Any, cap: int) -> bytes:
    """Read ``fh`` to its end, in chunks, refusing to hold more than ``cap`` bytes."""
    chunks, total = [], 0
    while True:
        chunk = fh.read(min(_CHUNK, cap + 1 - total))
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > cap:
            raise ImageLoadError(src, _too_big(cap))
        chunks.append(chunk)


# -- fetching bytes (the seam tests replace: no network in tests) ----------
_CLIENT: Any = None
_CLIENT_LOCK = threading.Lock()


def _client() -> Any:
    """One HTTP client per process: connections are reused across images and threads."""
    global _CLIENT
    with _CLIENT_LOCK:
        if _CLIENT is None:
            import httpx

            from ._version import __version__

            limits = httpx.Limits(max_connections=64, max_keepalive_connections=16)
            _CLIENT = httpx.Client(
                # retries: connection failures only, retried at once (not on a slow or failing server).
                transport=httpx.HTTPTransport(retries=2, limits=limits),
                follow_redirects=True,
                headers={"User-Agent": f"mlnb/{__version__}", "Accept-Encoding": "identity"},
            )
        return _CLIENT


def _shutdown(sock: Any) -> None:
    # Wakes a read blocked on a server that trickles bytes: the deadline is for the whole URL.
    with contextlib.suppress(OSError):
        import socket

        sock.shutdown(socket.SHUT_RDWR)


def _fetch_url(url: str, timeout: float, cap: int | None = None) -> bytes:
    """GET ``url`` with one total deadline and at most ``cap`` bytes read (default
    ``config.max_image_bytes``; weights files pass their own)."""
    import httpx

    cap = config.max_image_bytes if cap is None else cap
    deadline = time.monotonic() + timeout
    timer: threading.Timer | None = None
    try:
        with _client().stream("GET", url, timeout=httpx.Timeout(timeout)) as resp:
            if resp.status_code >= 400:
                raise ImageLoadError(url, f"HTTP {resp.status_code} {resp.reason_phrase}")
            declared = resp.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                raise ImageLoadError(url, _too_big(cap))
            stream = resp.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
            if sock is not None:
                timer = threading.Timer(remaining, _shutdown, (sock,))
                timer.daemon = True
                timer.start()
            chunks, total = [], 0
            for chunk in resp.iter_bytes(_CHUNK):
                total += len(chunk)
                if total > cap:
                    raise ImageLoadError(url, _too_big(cap))
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise TimeoutError("timed out")
            return b"".join(chunks)
    except httpx.TimeoutException:
        raise TimeoutError("timed out") from None
    except (httpx.HTTPError, httpx.StreamError) as exc:
        if time.monotonic() >= deadline:
            raise TimeoutError("timed out") from None
        raise ImageLoadError(url, f"cannot fetch: {exc or type(exc).__name__}") from None
    finally:
        if timer is not None:
            timer.cancel()


fetch_url: Callable[[str, float], bytes] = _fetch_url


def set_url_fetcher(fn: Callable[[str, float], bytes] | None) -> None:
    """Replace how URLs are fetched (tests, proxies); ``None`` restores the HTTP client."""
    global fetch_url
    fetch_url = fn or _fetch_url


def read_source(src: Any, *, timeout: float | None = None) -> bytes:
    """The encoded bytes behind ``src`` (path, URL, archive member or bytes), at most
    ``mlnb.config.max_image_bytes`` of them (after decompression)."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src)
    if isinstance(src, os.PathLike):
        src = os.fspath(src)
    if not isinstance(src, str):
        raise ImageLoadError(src, f"cannot read an image from a {type(src).__name__}")
    if not src:
        raise ImageLoadError(src, "empty path")
    timeout = config.url_timeout if timeout is None else timeout
    cap = config.max_image_bytes
    lower = src.lower()
    try:
        if lower.startswith(("http://", "https://")):
            data = fetch_url(src, timeout)
            if len(data) > cap:  # a replaced fetcher may not know the cap
                raise ImageLoadError(src, _too_big(cap))
        elif lower.startswith("archive+"):
            outer, _, member = src[len("archive+") :].partition("#")
            if not member:
                raise ImageLoadError(src, "an archive URL needs '#member/path' after the archive")
            data = _archive_member(src, outer, member, timeout)
        elif lower.startswith(("zip://", "tar://")) and src.count("::") == 1:
            member, _, outer = src.split("://", 1)[1].partition("::")
            data = _archive_member(src, outer, member, timeout)
        elif "::" in src or (("://" in src) and not lower.startswith("file://")):
            data = _read_fsspec(src, cap)
        else:
            with open(_local_path(src), "rb") as fh:
                if os.fstat(fh.fileno()).st_size > cap:
                    raise ImageLoadError(src, _too_big(cap))
                data = _read_capped(fh, src, cap)
    except (ImageLoadError, MissingDependencyError):
        raise
    except FileNotFoundError:
        raise ImageLoadError(src, "file not found") from None
    except IsADirectoryError:
        raise ImageLoadError(src, "is a folder, not an image") from None
    except PermissionError:
        raise ImageLoadError(src, "permission denied") from None
    except TimeoutError:
        raise ImageLoadError(src, f"timed out after {timeout:g}s") from None
    except OSError as exc:
        reason = getattr(exc, "reason", None) or exc
        if "timed out" in str(reason):
            raise ImageLoadError(src, f"timed out after {timeout:g}s") from None
        raise ImageLoadError(src, f"cannot fetch: {reason}") from None
    except Exception as exc:  # noqa: BLE001 - any other reader error is this row's problem, said as it is
        raise ImageLoadError(src, f"cannot read: {type(exc).__name__}: {exc}") from None
    return _maybe_decompress(src, data, cap)


def _local_path(src: str) -> str:
    return src[7:] if src.lower().startswith("file://") else src


def _maybe_decompress(src: str, data: bytes, cap: int) -> bytes:
    base = src.split("#", 1)[0].split("::", 1)[0].lower()
    for ext, opener in _OPENERS.items():
        if base.endswith(ext):
            try:
                with opener(io.BytesIO(data)) as fh:
                    return _read_capped(fh, src, cap)
            except ImageLoadError:
                raise
            except Exception as exc:  # noqa: BLE001 - gzip/bz2/lzma raise OSError, EOFError, zlib.error ...
                raise ImageLoadError(src, f"cannot decompress {ext}: {exc}") from None
    if base.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise MissingDependencyError("zstandard", "all", "Reading .zst files") from None
        try:
            with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as fh:
                return _read_capped(fh, src, cap)
        except ImageLoadError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ImageLoadError(src, f"cannot decompress .zst: {exc}") from None
    return data


def _archive_member(src: str, outer: str, member: str, timeout: float) -> bytes:
    """One member of a zip or tar archive, streamed and capped, read from the archive
    opened once and kept open (:mod:`mlnb._archives`): a local archive is opened in
    place (it may be far larger than one image), a remote one is fetched once."""
    from ._archives import read_member

    return read_member(src, outer, member, timeout, config.max_image_bytes)


def _read_fsspec(src: str, cap: int) -> bytes:
    try:
        import fsspec
    except ImportError:
        raise MissingDependencyError("fsspec", "all", f"Reading {src.split(':', 1)[0]} URLs") from None
    try:
        with fsspec.open(src, "rb") as fh:
            return _read_capped(fh, src, cap)
    except ImportError as exc:
        raise ImageLoadError(src, f"this URL needs an fsspec backend that is not installed ({exc})") from None
    except (KeyError, ValueError) as exc:
        raise ImageLoadError(src, f"not found ({exc})") from None


# -- Pillow's warnings become notes on the row ----------------------------------
_tls = threading.local()
_patched = False


class _PillowWarnings:
    """Stands in for the ``warnings`` module inside Pillow's modules: while this thread
    decodes, a warning is kept as a note on the image instead of leaking beside mlnb's
    one ``ImageLoadWarning``. Thread-safe, unlike ``warnings.catch_warnings``."""

    def __getattr__(self, name: str) -> Any:
        return getattr(warnings, name)

    def warn(self, message: Any, category: Any = None, stacklevel: int = 1, source: Any = None, **kw: Any) -> None:
        notes = getattr(_tls, "notes", None)
        if notes is None:
            warnings.warn(message, category, stacklevel + 1, source, **kw)
        else:
            notes.append(str(message))


def _patch_pillow() -> None:
    global _patched
    if _patched:
        return
    from PIL import Image, ImageOps  # noqa: F401 - ImageOps loaded so that it is patched too

    Image.init()  # loads every format plugin
    proxy = _PillowWarnings()
    for name, mod in list(sys.modules.items()):
        if (name == "PIL" or name.startswith("PIL.")) and getattr(mod, "warnings", None) is warnings:
            mod.warnings = proxy  # type: ignore[attr-defined]
    _patched = True


@contextlib.contextmanager
def _pillow_notes(src: Any) -> Iterator[None]:
    _patch_pillow()
    before = getattr(_tls, "notes", None)
    _tls.notes = notes = []
    try:
        yield
    except ImageLoadError as exc:
        if notes:  # the row failed: what Pillow said belongs to its reason
            raise ImageLoadError(exc.source, f"{exc.reason} (Pillow: {'; '.join(dict.fromkeys(notes))})") from None
        raise
    else:
        if notes:
            report_note(src, "; ".join(dict.fromkeys(notes)))
    finally:
        _tls.notes = before


# -- bounded decoding ------------------------------------------------------------
class _PixelBudget:
    """Pixels being decoded at once, across threads, stay under ``config.max_image_pixels``
    (an image alone may use all of it): a few huge images do not decode together."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._used = 0

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        with self._cond:
            while self._used and self._used + pixels > config.max_image_pixels:
                self._cond.wait()
            self._used += pixels
        try:
            yield
        finally:
            with self._cond:
                self._used -= pixels
                self._cond.notify_all()


_BUDGET = _PixelBudget()
# Decoding uses a core each; fetching does not, so more threads may fetch than decode.
_DECODERS = threading.BoundedSemaphore(max(2, os.cpu_count() or 2))


def decode(
    data: bytes,
    *,
    source: Any = None,
    draft: tuple[int, int] | None = None,
    then: Callable[[Any], Any] | None = None,
    keep: Callable[[Any, tuple[int, int]], Any] | None = None,
) -> Any:
    """Decode encoded bytes into an RGB ``PIL.Image`` (see module docs for conversions).

    ``then(image)`` runs while the image's pixels still count against the decode
    budget (resizing, thumbnails); its result is returned instead of the image.
    ``keep(image, original_size)`` runs before it and returns the image ``then`` gets
    (the decode-once copy is made there).
    """
    from PIL import Image, UnidentifiedImageError

    src = source if source is not None else data
    if not data:
        raise ImageLoadError(src, "empty file")
    limit = config.max_image_pixels
    with _pillow_notes(src):
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ImageLoadError(src, "not an image (unknown format)") from None
        except Image.DecompressionBombError as exc:
            raise ImageLoadError(src, f"too large: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad headers
            raise ImageLoadError(src, f"cannot decode: {exc}") from None
        w, h = img.size
        if w * h > limit:
            raise ImageLoadError(
                src, f"too large: {w}x{h} pixels (limit {limit:,}: mlnb.config.max_image_pixels); possibly a decompression bomb"
            )
        with _DECODERS:
            try:
                if draft and img.format == "JPEG":
                    img.draft("RGB", draft)
            except Exception as exc:  # noqa: BLE001
                raise ImageLoadError(src, f"corrupt or truncated image: {exc}") from None
            dw, dh = img.size
            with _BUDGET.hold(max(1, dw * dh)):
                try:
                    img.load()
                    rgb = to_rgb(img)
                except ImageLoadError:
                    raise
                except Exception as exc:  # noqa: BLE001 - truncated / corrupt pixel data
                    raise ImageLoadError(src, f"corrupt or truncated image: {exc}") from None
                if keep is not None:
                    rgb = keep(rgb, (w, h))
                return then(rgb) if then is not None else rgb


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


def load_image(
    src: Any,
    *,
    draft: tuple[int, int] | None = None,
    timeout: float | None = None,
    then: Callable[[Any], Any] | None = None,
    key: str | None = None,
) -> Any:
    """Load one image as RGB ``PIL.Image``; raises :class:`ImageLoadError` with the reason.

    ``then(image)``, if given, runs on the decoded image while its pixels count
    against the decode budget; its result is returned (see :func:`decode`).

    With ``draft=(w, h)`` the caller says it needs no more than that many pixels:
    the image may come smaller (down to ``w`` x ``h`` on its shorter side), and with
    ``mlnb.config.decode_once`` it is read from the workspace's small copy of the
    image when there is one, or such a copy is made (see :mod:`mlnb._copies`).
    ``key`` is the image's :func:`source_key` when the caller has it already.

    Examples
    --------
    >>> from mlnb.images import load_image
    >>> load_image("photos/cat.jpg").size  # doctest: +SKIP
    (640, 480)
    """
    mod = type(src).__module__
    if mod.startswith("PIL") or mod.startswith("numpy"):
        img = to_rgb(src) if mod.startswith("PIL") else from_array(src)
        return then(img) if then is not None else img
    if src is None:
        raise ImageLoadError(src, "NULL image")
    if draft and config.decode_once:
        key = key if key is not None else source_key(src)
        if key is not None:
            return _load_once(src, key, draft, timeout, then)
    return decode(read_source(src, timeout=timeout), source=src, draft=draft, then=then)


def _load_once(src: Any, key: str, draft: tuple[int, int], timeout: float | None, then: Any) -> Any:
    """Decode the small copy of ``src`` if there is one large enough; else the original,
    keeping a copy for next time (only where the original is larger than the copy)."""
    from . import _copies

    store = _copies.get_store()
    need = max(draft)
    data = store.get(key, need)
    if data is not None:
        img = _copies.decode(data)
        return then(img) if then is not None else img
    side = _copies.copy_side(need)

    def keep(img: Any, original: tuple[int, int]) -> Any:
        if min(original) <= side:
            return img  # small already: decoding it again is cheap, a copy would only lose quality
        small = _copies.shrink(img, side)
        store.put(key, _copies.encode(small))
        return small

    return decode(read_source(src, timeout=timeout), source=src, draft=(side, side), then=then, keep=keep)


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
    def encode(img: Any) -> bytes:
        img.thumbnail((size, size))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        return buf.getvalue()

    data = load_image(src, draft=(size, size), then=encode, key=key)
    if key is not None:
        with _THUMBS_LOCK:
            _THUMBS[(key, size)] = data
            while len(_THUMBS) > _THUMBS_MAX:
                _THUMBS.popitem(last=False)
    return data


IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")


def looks_like_image_bytes(data: Any) -> bool:
    return isinstance(data, (bytes, bytearray)) and bytes(data[:4]).startswith(IMAGE_MAGIC)
