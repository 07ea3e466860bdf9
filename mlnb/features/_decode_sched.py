"""GPU decoding: baseline JPEGs go to nvJPEG in batches while CPU threads decode the rest.

For each batch of images the scheduler

1. reads the bytes (or the decode-once copy) in the engine's thread pool and sorts them:
   a baseline YCbCr JPEG with no EXIF rotation can go to the GPU decoder; anything else
   (progressive or CMYK JPEG, PNG, WebP, a rotated photo, a decode-once copy) takes the
   CPU path, which is the CPU engine's own, so its results are identical to it;
2. sends a share of the GPU-able images to the CPU pool as well, so that both decode at
   once; the share follows the rates measured on earlier batches;
3. decodes the GPU part with one batched ``decode_jpeg(list, device="cuda")`` call (nvJPEG
   returns no partial results: when the batch fails, its images take the CPU path, so a
   bad image is its own row's failure), resizes on the GPU (an exact box reduction first
   where the factor is large, as Pillow's ``reducing_gap`` does: the antialiased CUDA
   kernel refuses large factors for lack of shared memory) and centre-crops;
4. uploads the CPU part through pinned buffers reused only once the copy reading them
   has finished (a CUDA event per buffer).

The GPU decoder is a parameter, so tests run all of it on a CPU with a stand-in.
nvJPEG's memory leak (pytorch/vision#4378) is fixed from CUDA 11.6; mlnb needs newer.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import config
from ..exceptions import ImageLoadError

#: Pillow's ``reducing_gap`` in :func:`mlnb.features.engine.preprocess`: a box reduction
#: by ``int(factor / 3)`` first, then the filter (this also keeps CUDA's antialiased kernel
#: within its shared memory, which fails at factors of a few tens).
REDUCING_GAP = 3.0


def gpu_can_take(data: bytes) -> bool:
    """Whether nvJPEG decodes ``data`` as the CPU path would: a baseline 3-channel JPEG,
    no EXIF rotation, within ``config.max_image_pixels``."""
    if not data.startswith(b"\xff\xd8"):
        return False
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:  # the header only
            if img.format != "JPEG" or img.mode != "RGB" or img.info.get("progressive") or img.info.get("progression"):
                return False
            w, h = img.size
            if w * h > config.max_image_pixels:
                return False
            return img.getexif().get(0x0112, 1) == 1
    except Exception:  # noqa: BLE001 - the CPU path says what is wrong with it
        return False


def nvjpeg_decoder(device: Any) -> Callable[[list[Any]], list[Any]]:
    """The real GPU decoder: a list of 1-D uint8 CPU tensors -> a list of 3xHxW uint8 on ``device``."""
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(datas: list[Any]) -> list[Any]:
        return decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)

    return decode


def resize_crop(img: Any, resize: int, crop: int) -> Any:
    """3xHxW uint8 -> 3 x crop x crop uint8: shorter side to ``resize`` (box reduction, then
    antialiased bilinear), centre crop, as :func:`mlnb.features.engine.preprocess`."""
    import torch.nn.functional as F

    _c, h, w = img.shape
    x = img.unsqueeze(0).float()
    # The CPU path decodes JPEGs at 1/2, 1/4 or 1/8 scale (Pillow's draft, libjpeg's DCT
    # scaling, much like a box average): the same reduction here keeps the features close.
    s = next(s for s in (8, 4, 2, 1) if s <= max(1, min(w // resize, h // resize)))
    if s > 1:
        x = F.avg_pool2d(x, s, stride=s, ceil_mode=True)
        h, w = x.shape[2:]
    r = resize / min(w, h)
    nw, nh = max(crop, round(w * r)), max(crop, round(h * r))
    k = int(min(w / nw, h / nh) / REDUCING_GAP)
    if k > 1:
        x = F.avg_pool2d(x, k, stride=k, ceil_mode=True)
    if tuple(x.shape[2:]) != (nh, nw):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - crop) // 2, (nw - crop) // 2
    x = x[:, :, top : top + crop, left : left + crop]
    return x.round_().clamp_(0, 255).to(dtype=img.dtype)[0]


class Staging:
    """Host buffers (pinned on CUDA) for uploading CPU-decoded images. A buffer is written
    again only after the copy that read it has finished: its fence (a CUDA event) is waited on."""

    def __init__(self, device: Any, count: int = 3, fence: Callable[[], Any] | None = None) -> None:
        self.device = device
        self._bufs: list[Any] = [None] * count
        self._fences: list[Any] = [None] * count
        self._next = 0
        self._lock = threading.Lock()
        self._fence = fence if fence is not None else self._cuda_event

    def _cuda_event(self) -> Any:
        import torch

        if self.device.type != "cuda":
            return None
        ev = torch.cuda.Event()
        ev.record()
        return ev

    def upload(self, array: np.ndarray) -> Any:
        """``array`` (N, ...) uint8 on the device; the returned tensor never aliases a buffer."""
        import torch

        with self._lock:
            i = self._next
            self._next = (i + 1) % len(self._bufs)
            if self._fences[i] is not None:
                self._fences[i].synchronize()  # the last copy out of this buffer is done
                self._fences[i] = None
            buf = self._bufs[i]
            if buf is None or buf.numel() < array.size:
                buf = torch.empty(array.size, dtype=torch.uint8, pin_memory=self.device.type == "cuda")
                self._bufs[i] = buf
            view = buf[: array.size].view(array.shape)
            view.copy_(torch.from_numpy(array))
            if self.device.type == "cuda":
                out = view.to(self.device, non_blocking=True)
            else:
                out = view.clone()  # on the CPU ``to`` would hand back the buffer itself
            self._fences[i] = self._fence()
            return out


@dataclass
class Share:
    """The share of GPU-able images given to the CPU pool, from measured rates."""

    cpu: float = 0.25
    cpu_rate: float = 0.0  # images per second, smoothed
    gpu_rate: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def update(self, n_cpu: int, t_cpu: float, n_gpu: int, t_gpu: float) -> None:
        with self.lock:
            if n_cpu and t_cpu > 0:
                self.cpu_rate = _ewma(self.cpu_rate, n_cpu / t_cpu)
            if n_gpu and t_gpu > 0:
                self.gpu_rate = _ewma(self.gpu_rate, n_gpu / t_gpu)
            if self.cpu_rate and self.gpu_rate:
                self.cpu = min(0.9, max(0.0, self.cpu_rate / (self.cpu_rate + self.gpu_rate)))


def _ewma(old: float, new: float) -> float:
    return new if old == 0 else 0.7 * old + 0.3 * new


@dataclass
class Decoded:
    """One batch: ``images`` (M, 3, S, S) uint8 on the device for the rows in ``rows``
    (positions in the batch, in order); ``errors`` for the others."""

    images: Any
    rows: list[int]
    errors: dict[int, ImageLoadError]
    routed: dict[str, int]


class Scheduler:
    """Decodes batches for one model on one device (see module docs)."""

    def __init__(
        self,
        spec: Any,
        device: Any,
        pool: ThreadPoolExecutor,
        *,
        gpu_decoder: Callable[[list[Any]], list[Any]] | None = None,
        cpu_decode: Callable[[Any, Any, Any], Any] | None = None,
        share: Share | None = None,
        staging: Staging | None = None,
    ) -> None:
        from .engine import _decode_one

        self.spec = spec
        self.device = device
        self.pool = pool
        self.gpu_decoder = gpu_decoder if gpu_decoder is not None else nvjpeg_decoder(device)
        self.cpu_decode = cpu_decode if cpu_decode is not None else _decode_one
        self.share = share if share is not None else Share()
        self.staging = staging if staging is not None else Staging(device)

    def _read(self, src: Any, key: Any) -> bytes | None:
        """Original bytes for the GPU, or ``None``: the CPU path takes it (a decode-once
        copy, a format nvJPEG cannot take, an error it will report)."""
        from .. import _copies, images

        if isinstance(key, str) and config.decode_once and _copies.get_store().get(key, self.spec.resize_size):
            return None
        try:
            data = images.read_source(src)
        except Exception:  # noqa: BLE001 - read again on the CPU path, which reports it
            return None
        return data if gpu_can_take(data) else None

    def decode(self, batch: Sequence[tuple[Any, Any]]) -> Decoded:
        """``batch``: (source, cache key) pairs. Errors are per row, never raised."""
        import torch

        n = len(batch)
        datas = [f.result() for f in [self.pool.submit(self._read, s, k) for s, k in batch]]
        gpu_rows = [i for i, d in enumerate(datas) if d is not None]
        k = round(len(gpu_rows) * self.share.cpu)
        to_cpu = sorted({i for i in range(n) if datas[i] is None} | set(gpu_rows[len(gpu_rows) - k :]))
        gpu_rows = gpu_rows[: len(gpu_rows) - k]

        t0 = time.perf_counter()
        cpu_futs = {i: self.pool.submit(self.cpu_decode, self.spec, batch[i][0], batch[i][1]) for i in to_cpu}
        out: dict[int, Any] = {}
        t_gpu = 0.0
        if gpu_rows:
            # The byte tensors stay referenced (``inputs``) until the decoded images are made.
            inputs = [torch.frombuffer(bytearray(datas[i]), dtype=torch.uint8) for i in gpu_rows]
            tg = time.perf_counter()
            try:
                decoded = self.gpu_decoder(inputs)
                for i, img in zip(gpu_rows, decoded):
                    out[i] = resize_crop(img, self.spec.resize_size, self.spec.input_size)
            except Exception:  # noqa: BLE001 - no partial results: these rows take the CPU path
                for i in gpu_rows:
                    out.pop(i, None)
                    cpu_futs[i] = self.pool.submit(self.cpu_decode, self.spec, batch[i][0], batch[i][1])
                gpu_rows = []
            t_gpu = time.perf_counter() - tg
            del inputs
        errors: dict[int, ImageLoadError] = {}
        cpu_ok: list[int] = []
        arrays = []
        for i in sorted(cpu_futs):
            res = cpu_futs[i].result()
            if isinstance(res, ImageLoadError):
                errors[i] = res
            else:
                cpu_ok.append(i)
                arrays.append(res)
        t_cpu = time.perf_counter() - t0
        self.share.update(len(cpu_futs), t_cpu, len(gpu_rows), t_gpu)
        if arrays:
            up = self.staging.upload(np.stack(arrays)).permute(0, 3, 1, 2)
            out.update(zip(cpu_ok, up))
        rows = sorted(out)
        s = self.spec.input_size
        images = torch.stack([out[i] for i in rows]) if rows else torch.empty((0, 3, s, s), dtype=torch.uint8)
        routed = {"gpu": len(gpu_rows), "cpu": len(cpu_futs)}
        return Decoded(images=images, rows=rows, errors=errors, routed=routed)
