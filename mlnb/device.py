"""The one place that knows the device and the precision.

``mlnb.config.device = "auto"`` picks cuda, then mps, then cpu;
``mlnb.config.precision = "auto"`` picks fp16 on CUDA (bf16 where the GPU has
it), bf16 on CPUs with native bf16 (AVX512-BF16 or AMX), fp32 elsewhere.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from .config import config
from .exceptions import MlnbError


def resolve_device(preference: str | None = None) -> Any:
    """The ``torch.device`` to run models on."""
    import torch

    pref = preference or config.device
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(pref)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MlnbError("mlnb.config.device is 'cuda' but no CUDA GPU is available: set it to 'auto' or 'cpu'.")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise MlnbError("mlnb.config.device is 'mps' but MPS is not available: set it to 'auto' or 'cpu'.")
    return dev


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def autocast_dtype(device: Any, preference: str | None = None) -> Any:
    """The autocast dtype for ``device`` (``None`` means plain fp32)."""
    import torch

    pref = preference or config.precision
    if pref == "fp32":
        return None
    if pref == "bf16":
        return torch.bfloat16
    if pref == "fp16":
        return torch.float16 if device.type != "cpu" else torch.bfloat16
    # auto
    if device.type == "cuda":
        return torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else None


def precision_name(dtype: Any) -> str:
    import torch

    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def use_gpu_decode(device: Any) -> bool:
    """Whether images for a model on ``device`` are decoded on the GPU (nvJPEG, with
    CPU threads alongside): on CUDA unless ``mlnb.config.gpu_decode`` is off."""
    return device.type == "cuda" and bool(config.gpu_decode)


#: CPU batch size. On a CPU, small batches keep activations in cache: measured on
#: efficientnet_lite0 (2 cores, bf16): 161 img/s at 8, 113 at 16, 86 at 64.
CPU_BATCH = 8


def default_batch_size(device: Any, bytes_per_image: int) -> int:
    """Images per forward pass: ``config.batch_size`` if set; on a GPU, what a
    quarter of its free memory holds (8 to 256); on a CPU, :data:`CPU_BATCH`,
    lowered when free RAM is short."""
    if config.batch_size:
        return int(config.batch_size)
    if device.type == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return max(8, min(256, int(free // 4 // max(1, bytes_per_image))))
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return CPU_BATCH
    return max(1, min(CPU_BATCH, int(free // 4 // max(1, bytes_per_image))))
