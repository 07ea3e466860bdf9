"""The embedding engine: models loaded once per process and kept warm, images
decoded and resized in a thread pool while the model runs, batched inference
on the chosen device and precision, channels-last, and the persistent cache
in front of it all."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._context import current as current_context
from .._report import carried, report_failure
from ..config import DEFAULT_MODEL, current_engine
from ..device import autocast_dtype, default_batch_size, precision_name, resolve_device, use_gpu_decode
from ..exceptions import ImageLoadError, Interrupted, MlnbError
from ..images import load_image, source_key
from .cache import get_cache
from .zoo import ModelSpec, get_spec

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            # Threads fetch (URLs wait on the network) and decode; the loader lets only one
            # decode per core run at once, so more of them may wait on the network than decode.
            _POOL = ThreadPoolExecutor(max_workers=max(16, 4 * (os.cpu_count() or 2)), thread_name_prefix="mlnb-decode")
        return _POOL


class _Stop(Exception):
    """Raised by a layer hook to end the forward pass early."""


def _global_pool(t: Any) -> Any:
    if t.dim() == 4:  # N, C, H, W
        return t.float().mean(dim=(2, 3))
    if t.dim() == 3:  # N, tokens, C (transformers)
        return t.float().mean(dim=1)
    return t.float().flatten(1)


#: Names of classifier outputs, not feature layers.
_HEAD_LAYERS = ("softmax", "logits", "classifier", "fc", "_fc", "head", "predictions")


def check_layer(layer: str, suggested: tuple[str, ...] = ("pool",), *, head: bool = False) -> None:
    """Refuse a layer that is the ImageNet classifier rather than a feature layer."""
    if layer != "pool" and (head or layer.lower() in _HEAD_LAYERS):
        raise MlnbError(
            f"Layer {layer!r} is the ImageNet classifier, not a feature layer: for ImageNet classes call "
            f"imagenet_labels(image); for features use one of {', '.join(suggested)}."
        )


class LayerTap:
    """Run ``module`` and return the global-average-pooled output of its sub-module ``layer``."""

    def __init__(self, module: Any, layer: str, suggested: tuple[str, ...] = ("pool",)) -> None:
        import torch

        modules = dict(module.named_modules())
        if layer not in modules:
            import difflib

            close = difflib.get_close_matches(layer, [n for n in modules if n], n=5, cutoff=0.3)
            raise MlnbError(
                f"The model has no layer {layer!r}. Feature layers: {', '.join(suggested)}; "
                f"close names: {', '.join(close) or 'none'}."
            )
        if isinstance(modules[layer], torch.nn.Identity):
            # The classifier mlnb took off the backbone (its output would be the pool vector again).
            check_layer(layer, suggested, head=True)
        self.module = module
        self.target = modules[layer]

    def __call__(self, x: Any) -> Any:
        captured: list[Any] = []

        def hook(_m: Any, _i: Any, out: Any) -> None:
            captured.append(out[0] if isinstance(out, (tuple, list)) else out)
            raise _Stop

        handle = self.target.register_forward_hook(hook)
        try:
            self.module(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        return _global_pool(captured[0])

    # nn.Module-like surface used by the engine
    def eval(self) -> LayerTap:
        self.module.eval()
        return self

    def to(self, *args: Any, **kwargs: Any) -> LayerTap:
        self.module.to(*args, **kwargs)
        return self


@dataclass
class Loaded:
    """A model on its device, ready to run; one per (model, device, precision)."""

    spec: ModelSpec
    backbone: Any
    head: Any
    device: Any
    dtype: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    dims: dict[str, int] = field(default_factory=dict)
    taps: dict[str, Any] = field(default_factory=dict)

    @property
    def precision(self) -> str:
        return precision_name(self.dtype)

    def namespace(self, layer: str) -> str:
        return cache_namespace(self.spec, layer, self.precision)

    def extractor(self, layer: str) -> Any:
        if layer == "pool":
            return self.backbone
        if layer not in self.taps:
            self.taps[layer] = LayerTap(self.backbone, layer, self.spec.layers)
        return self.taps[layer]

    def dim(self, layer: str) -> int:
        if layer == "pool" and self.spec.feature_dim:
            return self.spec.feature_dim
        if layer not in self.dims:
            s = self.spec.input_size
            x = np.zeros((1, s, s, 3), dtype=np.uint8)
            self.dims[layer] = int(self.forward(x, layer).shape[1])
        return self.dims[layer]

    def _prepare(self, batch: Any) -> Any:
        import torch

        if isinstance(batch, np.ndarray) or batch.dtype == torch.uint8:  # uint8 pixels: normalise on the device
            if isinstance(batch, np.ndarray):  # N, H, W, 3
                x = torch.from_numpy(batch).to(self.device, non_blocking=True).permute(0, 3, 1, 2)
            else:  # N, 3, H, W (the GPU decoder's)
                x = batch.to(self.device)
            x = x.float().div_(255.0)
            mean = torch.tensor(self.spec.mean, device=self.device).view(1, 3, 1, 1)
            std = torch.tensor(self.spec.std, device=self.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        else:  # already-transformed tensors from a user transform
            x = batch.to(self.device)
        return x.contiguous(memory_format=torch.channels_last)

    def forward(self, batch: Any, layer: str = "pool") -> np.ndarray:
        """Features for a preprocessed batch, as float32 NumPy (N, D)."""
        import torch

        fn = self.extractor(layer)
        with self.lock, torch.inference_mode():
            x = self._prepare(batch)
            if self.dtype is not None:
                with torch.autocast(device_type=self.device.type, dtype=self.dtype):
                    y = fn(x)
            else:
                y = fn(x)
            if y.dim() > 2:
                y = _global_pool(y)
            return y.float().cpu().numpy()

    def logits(self, feats: np.ndarray) -> np.ndarray:
        import torch

        if self.head is None:
            raise MlnbError(f"Model {self.spec.name!r} has no ImageNet head: imagenet_labels() needs one (e.g. efficientnet_lite0).")
        with self.lock, torch.inference_mode():
            return self.head(torch.from_numpy(feats).to(self.device)).float().cpu().numpy()


def cache_namespace(spec: ModelSpec, layer: str, precision: str | None = None) -> str:
    """The cache's name for features of ``spec`` at ``layer``; features computed in reduced
    precision are kept apart from fp32 ones (default: the precision this process would use)."""
    if precision is None:
        precision = precision_name(autocast_dtype(resolve_device()))
    return f"{spec.name}|{layer}|{spec.preprocessing_id}|{precision}"


def feature_dim(model: str, layer: str = "pool") -> int:
    """Length of the feature vector, without loading the model where the spec knows it."""
    spec = get_spec(model)
    check_layer(layer, spec.layers)
    if layer == "pool" and spec.feature_dim:
        return spec.feature_dim
    return get_loaded(model).dim(layer)


_LOADED: dict[tuple[str, str, str], Loaded] = {}
_LOADED_LOCK = threading.Lock()


def get_loaded(name: str) -> Loaded:
    """The warm model ``name`` on the configured device/precision (loaded on first use)."""
    spec = get_spec(name)
    device = resolve_device()
    dtype = autocast_dtype(device)
    key = (name, str(device), precision_name(dtype))
    with _LOADED_LOCK:
        hit = _LOADED.get(key)
    # A model re-registered under the same name is a new spec: reload, never serve the old one.
    if hit is not None and hit.spec is spec:
        return hit
    with spec._lock:  # one load per model even when DuckDB calls from several threads
        with _LOADED_LOCK:
            hit = _LOADED.get(key)
        if hit is not None and hit.spec is spec:
            return hit
        import torch

        backbone, head = spec.build()
        backbone = backbone.eval().to(device)
        if isinstance(backbone, torch.nn.Module):
            backbone = backbone.to(memory_format=torch.channels_last)
        if head is not None:
            head = head.eval().to(device)
        loaded = Loaded(spec=spec, backbone=backbone, head=head, device=device, dtype=dtype)
        with _LOADED_LOCK:
            _LOADED[key] = loaded
        return loaded


# -- preprocessing -----------------------------------------------------------
def preprocess(spec: ModelSpec, img: Any) -> Any:
    """Resize the shorter side to ``resize_size``, centre-crop ``input_size``: HxWx3 uint8."""
    from PIL import Image

    if spec.transform is not None:
        return spec.transform(img)
    resample = Image.Resampling.BICUBIC if spec.interpolation == "bicubic" else Image.Resampling.BILINEAR
    w, h = img.size
    r = spec.resize_size / min(w, h)
    nw, nh = max(spec.input_size, round(w * r)), max(spec.input_size, round(h * r))
    img = img.resize((nw, nh), resample, reducing_gap=3.0)
    left, top = (nw - spec.input_size) // 2, (nh - spec.input_size) // 2
    img = img.crop((left, top, left + spec.input_size, top + spec.input_size))
    return np.asarray(img, dtype=np.uint8)


def _decode_one(spec: ModelSpec, src: Any, key: Any = None) -> Any:
    try:
        need = (spec.resize_size, spec.resize_size)
        return load_image(src, draft=need, then=lambda img: preprocess(spec, img), key=key if isinstance(key, str) else None)
    except ImageLoadError as exc:
        return exc
    except MlnbError as exc:  # e.g. a .zst file without zstandard installed: its own message
        return ImageLoadError(src, str(exc))
    except Exception as exc:  # noqa: BLE001 - a bad image must not end the query
        return ImageLoadError(src, f"cannot preprocess: {exc}")


_FEEDER: ThreadPoolExecutor | None = None


def _gpu_feeder() -> ThreadPoolExecutor:
    """Threads that run the GPU decode scheduler, a batch each (not the decode pool,
    whose threads the scheduler waits on)."""
    global _FEEDER
    with _POOL_LOCK:
        if _FEEDER is None:
            _FEEDER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mlnb-gpu-decode")
        return _FEEDER


def _scheduler(loaded: Loaded) -> Any:
    """The GPU decode scheduler for ``loaded`` where the device policy says so (user
    transforms take PIL images: those stay on the CPU path)."""
    if loaded.spec.transform is not None or not use_gpu_decode(loaded.device):
        return None
    from ._decode_sched import Scheduler, Share

    share = _SHARES.setdefault(str(loaded.device), Share())  # the rates learnt carry over between calls
    return Scheduler(loaded.spec, loaded.device, _pool(), share=share)


_SHARES: dict[str, Any] = {}


def _stack(items: list[Any]) -> Any:
    if isinstance(items[0], np.ndarray):
        return np.stack(items)
    import torch

    return torch.stack(items)


# -- which engine does the work ------------------------------------------------
# The statement's own state (mlnb._context): DuckDB calls the UDFs from its own threads,
# which enter the statement's context; nothing here is process-wide.
_ENGINE_LOCK = threading.Lock()


@contextlib.contextmanager
def gathering() -> Iterator[dict[tuple[str, str], dict[str, Any]]]:
    """Inside the block, :func:`embed_images` computes nothing for the current
    statement: it records the images it would compute, ``{(model, layer): {key: source}}``,
    and returns NULL for them (the Ray engine's first pass over a SQL statement)."""
    ctx = _statement()
    wanted: dict[tuple[str, str], dict[str, Any]] = {}
    before, ctx.gather = ctx.gather, wanted
    try:
        yield wanted
    finally:
        ctx.gather = before


@contextlib.contextmanager
def features_given(model: str, layer: str, features: dict[str, np.ndarray]) -> Iterator[None]:
    """Inside the block, :func:`embed_images` takes the features of these cache
    keys as computed for the current statement (results a Ray job brought back for it)."""
    ctx = _statement()
    ctx.overlay[(model, layer)] = features
    try:
        yield
    finally:
        ctx.overlay.pop((model, layer), None)


def _statement() -> Any:
    from .._context import current

    ctx = current()
    if ctx is None:
        raise RuntimeError("gathering() and features_given() work for a running SQL statement")
    return ctx


# -- the main entry point ------------------------------------------------------
def embed_images(
    images: Sequence[Any],
    *,
    model: str = DEFAULT_MODEL,
    layer: str = "pool",
    progress: bool | None = None,
    use_cache: bool = True,
    stop: threading.Event | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Features for each image: ``(features[N, D] float32, ok[N] bool)``.

    Rows whose image is NULL or could not be loaded have ``ok = False`` (and
    NaN features); each failure is reported once. Images already in the
    cache are not decoded; new features are cached a batch at a time, so an
    interrupted run keeps what it finished.

    Ctrl-C in the calling thread, or ``stop.set()`` from any thread (default: the running
    statement's ``stop`` event, for DuckDB's worker threads where no Ctrl-C arrives), ends it
    within about a batch with :class:`~mlnb.exceptions.Interrupted`: "interrupted after N of
    M images; finished ones are cached".
    """
    spec = get_spec(model)
    dim = feature_dim(model, layer)
    n = len(images)
    feats = np.full((n, dim), np.nan, dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    if n == 0:
        return feats, ok
    ns = cache_namespace(spec, layer)
    cache = get_cache() if use_cache else None

    keys: list[str | None] = [None if im is None else source_key(im) for im in images]
    known = [k for k in dict.fromkeys(keys) if k is not None]
    # Cache hits come as one block: rows are copied into feats in one step, not one by one.
    found, block = cache.get_block(ns, known, dim) if cache is not None else (np.zeros(len(known), bool), None)
    slot = {k: j for j, k in enumerate(k for k, f in zip(known, found) if f)}
    ctx = current_context()
    given = ctx.overlay.get((model, layer)) if ctx is not None else None
    # Work: one entry per distinct image not in the cache (duplicates computed once).
    todo: dict[Any, list[int]] = {}
    hit_rows: list[int] = []
    hit_slots: list[int] = []
    for i, (im, k) in enumerate(zip(images, keys)):
        if im is None:
            continue
        if k is not None and k in slot:
            hit_rows.append(i)
            hit_slots.append(slot[k])
            continue
        if given and k is not None and k in given and given[k].shape[0] == dim:
            feats[i] = given[k]
            ok[i] = True
            continue
        todo.setdefault(k if k is not None else ("obj", i), []).append(i)
    if hit_rows:
        feats[hit_rows] = block[hit_slots]
        ok[hit_rows] = True
    if not todo:
        return feats, ok
    gather = ctx.gather if ctx is not None else None
    if gather is not None:
        with _ENGINE_LOCK:
            wanted = gather.setdefault((model, layer), {})
            for key, idx in todo.items():
                if isinstance(key, str):
                    wanted.setdefault(key, images[idx[0]])
        return feats, ok
    if current_engine() == "ray":
        from .ray_engine import embed_sources

        work_keys = list(todo)
        sub_feats, sub_ok = embed_sources(
            [images[todo[k][0]] for k in work_keys], model=model, layer=layer, progress=progress, keys=work_keys
        )
        for k, vec, good in zip(work_keys, sub_feats, sub_ok):
            if good:
                feats[todo[k]] = vec
                ok[todo[k]] = True
        return feats, ok

    # The model is loaded only here, where this process computes (not for cache hits, gathering or Ray).
    loaded = get_loaded(model)
    spec = loaded.spec
    work = list(todo.items())
    bs = default_batch_size(loaded.device, bytes_per_image=3 * spec.input_size**2 * 4 * 40)
    batches = [work[i : i + bs] for i in range(0, len(work), bs)]
    bar = _progress(len(work), model, progress)
    pool = _pool()
    pending: deque[list[Future]] = deque()
    submitted: list[Future] = []
    halt = stop if stop is not None else getattr(ctx, "stop", None)
    left = sum(len(idx) for _key, idx in work)  # rows still to compute; the others are done

    sched = _scheduler(loaded)

    def submit(batch: list[tuple[Any, list[int]]]) -> list[Future]:
        if sched is not None:  # one future per batch: GPU and CPU decode it together
            work = [(images[idx[0]], key) for key, idx in batch]
            futures = [_gpu_feeder().submit(carried(sched.decode), work)]
        else:
            futures = [pool.submit(carried(_decode_one), spec, images[idx[0]], key) for key, idx in batch]
        submitted.extend(futures)
        return futures

    def check() -> None:
        if halt is not None and halt.is_set():
            raise Interrupted(f"interrupted after {n - left} of {n} images; finished ones are cached")

    def result(fut: Future) -> Any:
        # Waits in short steps so that a stop asked from another thread is seen at once.
        while True:
            try:
                return fut.result(timeout=0.1)
            except concurrent.futures.TimeoutError:
                check()

    try:
        # Batches decoded while the model runs. On a GPU the CPU is free, so decoding
        # overlaps inference. On a CPU the model already uses every core: overlapping
        # oversubscribes them (measured: 45 vs 60 img/s on 2 cores), so the pool decodes
        # the next batch in parallel between forward passes instead.
        ahead = 3 if loaded.device.type != "cpu" else int(os.environ.get("MLNB_CPU_PREFETCH", "0"))
        for b in batches[: max(1, ahead)]:
            pending.append(submit(b))
        for bi, batch in enumerate(batches):
            check()
            futures = pending.popleft()
            if ahead and bi + ahead < len(batches):
                pending.append(submit(batches[bi + ahead]))
            arrays, rows = [], []
            if sched is not None:
                dec = result(futures[0])
                for err in dec.errors.values():
                    report_failure(err.source, err.reason)
                rows = [batch[j] for j in dec.rows]
                arrays = [dec.images] if rows else []
            else:
                for (key, idx), fut in zip(batch, futures):
                    res = result(fut)
                    if isinstance(res, ImageLoadError):
                        report_failure(res.source, res.reason)
                        continue
                    arrays.append(res)
                    rows.append((key, idx))
            if not ahead and bi + 1 < len(batches):
                # CPU: let the next batch start decoding only after this forward pass.
                next_batch = batches[bi + 1]
            else:
                next_batch = None
            if arrays:
                out = loaded.forward(arrays[0] if sched is not None else _stack(arrays), layer)
                to_cache = []
                for (key, idx), vec in zip(rows, out):
                    feats[idx] = vec
                    ok[idx] = True
                    if isinstance(key, str):
                        to_cache.append((key, vec))
                if cache is not None:
                    cache.put_many(ns, to_cache)
            left -= sum(len(idx) for _key, idx in batch)
            if next_batch is not None:
                pending.append(submit(next_batch))
            if bar is not None:
                bar.update(len(batch))
    except Interrupted:
        raise
    except KeyboardInterrupt:  # Ctrl-C in this thread: one line, what was kept
        raise Interrupted(f"interrupted after {n - left} of {n} images; finished ones are cached") from None
    finally:
        for f in submitted:
            f.cancel()
        if bar is not None:
            bar.close()
    return feats, ok


def features_series(name: str, feats: np.ndarray, ok: np.ndarray) -> Any:
    """A Polars ``Array(Float32, d)`` column, NULL where ``ok`` is False."""
    import polars as pl

    series = pl.Series(name, feats, dtype=pl.Array(pl.Float32, feats.shape[1]))
    return pl.select(pl.when(pl.Series(ok)).then(series).otherwise(None)).to_series().alias(name)


def _progress(total: int, model: str, progress: bool | None) -> Any:
    """A tqdm bar for every embedding that takes more than about two seconds: from the start
    when there are many images, else once two seconds have passed (tqdm's ``delay``)."""
    if progress is False or total == 0:
        return None
    from tqdm.auto import tqdm

    delay = 0.0 if progress or total >= 64 else 2.0
    return tqdm(total=total, desc=f"embed ({model})", unit="img", smoothing=0.1, delay=delay, mininterval=0.5)
