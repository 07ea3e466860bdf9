"""2-D layouts of a feature matrix for the embedding explorer.

``prepare`` cleans the matrix, ``pca_layout`` draws something at once, and a
``LayoutJob`` computes UMAP or t-SNE in a background thread, cached in the
workspace (keyed by the data, the method, its parameters and the library's
version) so a layout is computed once per data set.

>>> Xc, keep, note = prepare(X)                     # doctest: +SKIP
>>> coords = pca_layout(Xc)                          # instant
>>> job = LayoutJob(Xc, "umap").start(on_done=draw)  # later: draw(job.result)

Library output never reaches the cell: UMAP, pynndescent and openTSNE run with
their logs and progress bars off, and the warnings they (and numba) raise in a
layout thread are dropped for that thread only. numba's compiled code is cached
on disk (see :func:`numba_cache_dir`), so a second kernel does not compile UMAP again.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import MissingDependencyError, MlnbError
from ..workspace import get_workspace

METHODS = ("umap", "tsne")
_LABELS = {"umap": "UMAP", "tsne": "t-SNE"}
_DISTRIBUTIONS = {"umap": "umap-learn", "tsne": "openTSNE"}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "umap": {"n_neighbors": 15, "min_dist": 0.1, "metric": "cosine", "random_state": 0},
    "tsne": {"perplexity": 30.0, "metric": "cosine", "random_state": 0},
}
#: Rows used to find the principal axes; every row is then projected onto them.
_PCA_SAMPLE = 20_000
_CHUNK = 65_536


# --------------------------------------------------------------------------- cleaning and PCA


def prepare(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Clean a feature matrix for layout: ``(X_clean, keep, note)``.

    ``X_clean`` is float32 (``X`` itself, uncopied, when it already is and every
    row is finite); rows with NaN or inf are left out (``keep`` is False for them)
    and counted in ``note``, a short line for people ("" when nothing was left out).

    >>> Xc, keep, note = prepare(np.array([[0, 1], [np.nan, 2], [3, 4], [5, 6]]))
    >>> Xc.shape, keep.tolist(), note
    ((3, 2), [True, False, True, True], '1 row with NaN/inf features left out')
    """
    try:
        X = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError):
        raise MlnbError("Features must be numbers: a matrix with one row per point.") from None
    if X.ndim != 2:
        raise MlnbError(f"Features must be a 2-D matrix (one row per point); got {X.ndim}-D.")
    keep = np.empty(len(X), dtype=bool)
    for i in range(0, len(X), _CHUNK):  # chunks: a full-size boolean temporary would be n x d bytes
        keep[i : i + _CHUNK] = np.isfinite(X[i : i + _CHUNK]).all(axis=1)
    n_bad = int(len(X) - keep.sum())
    if n_bad:
        X = X[keep]
    note = f"{n_bad:,} row{'s' if n_bad != 1 else ''} with NaN/inf features left out" if n_bad else ""
    if len(X) < 3 or X.shape[1] == 0:
        what = f"{len(X)} usable row{'s' if len(X) != 1 else ''}" if X.shape[1] else "no feature columns"
        raise MlnbError(
            f"A layout needs at least 3 rows with features; there {'is' if len(X) == 1 else 'are'} {what}"
            + (f" ({note})." if note else ".")
        )
    return np.ascontiguousarray(X), keep, note


def pca_layout(X: np.ndarray, n_components: int = 2) -> np.ndarray:
    """The first principal components of ``X`` (a cleaned matrix from :func:`prepare`), float32.

    The axes come from a randomized SVD of at most 20,000 sampled rows; every row
    is then projected, so 1,000,000 x 1,280 takes about a second. Directions with
    no variance (constant features, identical rows) give zeros, never NaN.

    >>> pca_layout(np.random.default_rng(0).normal(size=(100, 8))).shape
    (100, 2)
    """
    X = np.asarray(X, dtype=np.float32)
    n, d = X.shape
    out = np.zeros((n, n_components), dtype=np.float32)
    k = min(n_components, d, n)
    if k == 0:
        return out
    rng = np.random.default_rng(0)
    S = X[np.sort(rng.choice(n, _PCA_SAMPLE, replace=False))] if n > _PCA_SAMPLE else X
    mu = S.mean(axis=0, dtype=np.float64)
    Sc = S - mu.astype(np.float32)
    W, s = _top_axes(Sc, k, rng)
    # Directions whose spread is rounding noise carry nothing: leave them at 0.
    live = s > float(np.abs(Sc).max()) * max(Sc.shape) * 1e-5
    if not live.any():
        return out
    W = W[:, live].astype(np.float32)
    shift = (mu @ W).astype(np.float32)
    cols = np.flatnonzero(live)
    for i in range(0, n, 1 << 18):
        out[i : i + (1 << 18), cols] = X[i : i + (1 << 18)] @ W - shift
    return out


def _top_axes(Sc: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The top-``k`` right singular vectors (d x k) and values of centred ``Sc`` (randomized range finder)."""
    n, d = Sc.shape
    if min(n, d) <= 64:
        _, s, Vt = np.linalg.svd(Sc, full_matrices=False)
    else:
        Q = Sc @ rng.normal(size=(d, min(k + 10, d))).astype(Sc.dtype)
        for _ in range(4):  # power iterations sharpen the leading directions
            Q, _ = np.linalg.qr(Q)
            Q, _ = np.linalg.qr(Sc @ (Sc.T @ Q))
        _, s, Vt = np.linalg.svd((Q.T @ Sc).astype(np.float64), full_matrices=False)
    V = Vt[:k].T
    # Fix each axis' sign (its largest loading positive) so layouts do not flip between runs.
    V *= np.sign(V[np.abs(V).argmax(axis=0), np.arange(V.shape[1])] + 1e-300)
    return V, s[:k]


# --------------------------------------------------------------------------- cache


def _resolve(method: str, n_components: int, params: dict[str, Any]) -> dict[str, Any]:
    if method not in METHODS:
        raise MlnbError(f"Unknown layout method {method!r}; choose one of: {', '.join(METHODS)}.")
    unknown = set(params) - set(_DEFAULTS[method])
    if unknown:
        raise MlnbError(
            f"{_LABELS[method]} has no option {', '.join(sorted(unknown))}; it takes: {', '.join(_DEFAULTS[method])}."
        )
    return {**_DEFAULTS[method], **params, "n_components": int(n_components)}


def _library_version(method: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(_DISTRIBUTIONS[method])
    except PackageNotFoundError:
        raise MissingDependencyError(_DISTRIBUTIONS[method], "widgets", f"The {_LABELS[method]} layout") from None


def _cache_path(X: np.ndarray, method: str, params: dict[str, Any]) -> Path:
    X = np.ascontiguousarray(X, dtype=np.float32)
    h = hashlib.sha1(_digest(X))
    h.update(json.dumps([method, _library_version(method), sorted(params.items()), X.shape], default=str).encode())
    return get_workspace().path("layouts", f"{method}-{h.hexdigest()[:24]}.npy")


def _digest(X: np.ndarray) -> bytes:
    """SHA-1 over 64 MiB blocks hashed in parallel (hashlib releases the GIL): ~1.5 s for 5 GB on 2 cores."""
    from concurrent.futures import ThreadPoolExecutor

    flat = memoryview(X).cast("B")
    block = 64 << 20
    if len(flat) <= block:
        return hashlib.sha1(flat).digest()
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        parts = pool.map(lambda i: hashlib.sha1(flat[i : i + block]).digest(), range(0, len(flat), block))
        return b"".join(parts)


def _load(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    try:
        coords = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    ok = coords.shape == shape and np.isfinite(coords).all()
    return coords.astype(np.float32, copy=False) if ok else None  # a damaged file is recomputed


def cached_layout(X: np.ndarray, method: str, **params: Any) -> np.ndarray | None:
    """The workspace's layout of ``X`` by ``method`` with ``params`` (defaults filled in), or None.

    Reading the key hashes all of ``X`` (about a second per GB).
    """
    p = _resolve(method, params.pop("n_components", 2), params)
    path = _cache_path(X, method, p)
    return _load(path, (len(X), p["n_components"])) if path.exists() else None


# --------------------------------------------------------------------------- quiet, cached libraries


def numba_cache_dir() -> Path:
    """Where numba keeps compiled code for mlnb: ``$XDG_CACHE_HOME/mlnb/numba`` (``~/.cache/mlnb/numba``).

    Per user, not per workspace: compiled code depends on the library versions and
    the CPU (numba's index checks both), not on a project's data, so every project
    and kernel shares it. ``NUMBA_CACHE_DIR`` set by the user wins.
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mlnb" / "numba"


def _use_numba_cache() -> None:
    """Point numba at :func:`numba_cache_dir` — only effective before numba's first import."""
    if "NUMBA_CACHE_DIR" in os.environ or "numba" in sys.modules:
        return
    d = numba_cache_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # numba then uses __pycache__ beside the library, or its own user cache
    if os.access(d, os.W_OK):
        os.environ["NUMBA_CACHE_DIR"] = str(d)


_cached_umap = False


def _cache_umap_functions() -> None:
    """Let numba cache umap's own jitted functions too (umap 0.5 marks almost none ``cache=True``).

    Measured on 2,000 x 1,280 in a fresh process with a warm cache: fit 14.3 s without
    this, 7.5 s with it (6.4 s is the work itself). numba invalidates an entry when
    umap's source file or numba's version changes, so this is safe across upgrades.
    """
    global _cached_umap
    if _cached_umap:
        return
    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    for name in ("umap.umap_", "umap.layouts", "umap.distances", "umap.spectral", "umap.sparse", "umap.utils"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        for f in list(vars(mod).values()):
            if isinstance(f, CPUDispatcher) and isinstance(f._cache, NullCache):
                try:
                    f.enable_caching()
                except Exception:  # noqa: BLE001 - a function numba cannot cache just compiles as before
                    pass
    _cached_umap = True


_quiet = threading.local()
_install_lock = threading.Lock()


def _install_quiet_warnings() -> None:
    """Drop warnings raised in a layout thread; other threads' warnings are shown as before.

    ``warnings.catch_warnings`` swaps process-global state and is unsafe from a
    background thread, so the filter is a thread-local flag in ``showwarning``.
    """
    with _install_lock:
        if getattr(warnings.showwarning, "_mlnb_quiet", False):
            return
        shown = warnings.showwarning

        def showwarning(*args: Any, **kwargs: Any) -> None:
            if not getattr(_quiet, "on", False):
                shown(*args, **kwargs)

        showwarning._mlnb_quiet = True  # type: ignore[attr-defined]
        warnings.showwarning = showwarning


# --------------------------------------------------------------------------- background job


class _QuietThreadFilter(logging.Filter):
    """Drops log records made in a layout thread (openTSNE logs its warnings)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.threadName.startswith(_THREAD_PREFIX)


_THREAD_PREFIX = "mlnb-layout"
_quiet_filter = _QuietThreadFilter()


def _quiet_loggers(prefix: str) -> None:
    # Logger filters do not apply to records propagated from children, so each logger gets one.
    for name in [prefix, *(k for k in list(logging.root.manager.loggerDict) if k.startswith(prefix + "."))]:
        logger = logging.getLogger(name)
        if _quiet_filter not in logger.filters:
            logger.addFilter(_quiet_filter)


_run_lock = threading.Lock()  # one layout at a time: two would share the same few cores


class LayoutJob:
    """UMAP or t-SNE of ``X`` (a cleaned matrix from :func:`prepare`) in a background thread.

    The result is cached in the workspace; a cached layout comes back at once.
    ``progress`` is one short line, refreshed about every half second while it runs.
    Callbacks run in the job's thread.

    >>> job = LayoutJob(Xc, "umap", n_neighbors=30).start(on_done=print)  # doctest: +SKIP
    >>> job.progress                                                       # doctest: +SKIP
    'UMAP of 10,000 points: 12 s'
    >>> coords = job.wait()                                                # doctest: +SKIP
    """

    def __init__(self, X: np.ndarray, method: str = "umap", n_components: int = 2, **params: Any) -> None:
        self.method = method
        self.params = _resolve(method, n_components, params)
        self.X = np.ascontiguousarray(X, dtype=np.float32)
        if self.X.ndim != 2 or len(self.X) < 3:
            raise MlnbError(f"A {_LABELS[method]} layout needs at least 3 rows with features; there are {len(self.X)}.")
        self.progress = f"{_LABELS[method]} of {len(self.X):,} points: waiting"
        self.done = False
        self.result: np.ndarray | None = None
        self.error: str | None = None
        self.cached = False
        self._finished = threading.Event()
        self._cancelled = threading.Event()
        self._thread: threading.Thread | None = None
        self._detail = ""
        self._on_progress: Callable[[str], None] | None = None

    def __repr__(self) -> str:
        return f"<LayoutJob {self.progress}>"

    def start(
        self,
        on_done: Callable[[np.ndarray], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        on_progress: Callable[[str], None] | None = None,
    ) -> LayoutJob:
        """Start the job (once); returns ``self``."""
        if self._thread is None:
            self._on_progress = on_progress
            self._thread = threading.Thread(
                target=self._run, args=(on_done, on_error), name=f"{_THREAD_PREFIX}-{self.method}", daemon=True
            )
            self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> np.ndarray:
        """Block until the layout is ready and return it; raises :class:`MlnbError` if it failed."""
        self.start()
        if not self._finished.wait(timeout):
            raise MlnbError(f"{self.progress} — still running after {timeout:g} s.")
        if self.result is None:
            raise MlnbError(self.error or f"{_LABELS[self.method]} layout failed.")
        return self.result

    def cancel(self) -> None:
        """Stop waiting for the layout: callbacks are not called and ``result`` stays None.

        t-SNE stops at its next iteration check; UMAP cannot be interrupted, so its
        thread finishes in the background (and still fills the cache).
        """
        if self.done:
            return
        self._cancelled.set()
        self.error = f"{_LABELS[self.method]} layout cancelled."
        self._say(self.error)
        self.done = True
        self._finished.set()

    # -- internals

    def _say(self, line: str) -> None:
        self.progress = line
        if self._on_progress is not None and not self._cancelled.is_set():
            _call(self._on_progress, line)

    def _run(self, on_done: Callable[[np.ndarray], None] | None, on_error: Callable[[str], None] | None) -> None:
        _install_quiet_warnings()
        _quiet.on = True
        label = f"{_LABELS[self.method]} of {len(self.X):,} points"
        t0 = time.perf_counter()
        ticking = threading.Event()

        def tick() -> None:
            while not ticking.wait(0.5) and not self._cancelled.is_set():
                self._say(f"{label}: {time.perf_counter() - t0:.0f} s{self._detail}")

        try:
            path = _cache_path(self.X, self.method, self.params)
            coords = _load(path, (len(self.X), self.params["n_components"])) if path.exists() else None
            if coords is not None:
                self.cached = True
                self._say(f"{label}: from the cache")
            else:
                self._say(f"{label}: waiting for another layout" if _run_lock.locked() else f"{label}: starting")
                with _run_lock:
                    if self._cancelled.is_set():
                        return
                    # The job that held the lock (one switched away from, still running) may
                    # have made this very layout meanwhile.
                    coords = _load(path, (len(self.X), self.params["n_components"])) if path.exists() else None
                    if coords is None:
                        t0 = time.perf_counter()
                        threading.Thread(target=tick, name=f"{_THREAD_PREFIX}-progress", daemon=True).start()
                        if _all_same(self.X):  # no neighbours to tell apart: every point at the origin
                            coords = np.zeros((len(self.X), self.params["n_components"]), dtype=np.float32)
                        else:
                            coords = _COMPUTE[self.method](self, self.X, dict(self.params))
                        ticking.set()
                        if not np.isfinite(coords).all():
                            raise MlnbError(
                                f"{_LABELS[self.method]} gave no usable layout (are the rows nearly all the same?)."
                            )
                        # Saved before the lock is let go, so a job waiting for it finds it.
                        buf = io.BytesIO()
                        np.save(buf, coords, allow_pickle=False)
                        get_workspace().write_bytes(str(path.relative_to(get_workspace().root)), buf.getvalue())
                        self._say(f"{label}: done in {time.perf_counter() - t0:.0f} s")
                    else:
                        self.cached = True
                        self._say(f"{label}: from the cache")
            if self._cancelled.is_set():
                return
            self.result = coords
            self.done = True
            self._finished.set()
            if on_done is not None:
                _call(on_done, coords)
        except _Cancelled:
            return
        except Exception as exc:  # noqa: BLE001 - every failure becomes the job's short message
            if self._cancelled.is_set():
                return
            self.error = exc.args[0] if isinstance(exc, MlnbError) and exc.args else _short_error(self.method, exc)
            self._say(self.error)
            self.done = True
            self._finished.set()
            if on_error is not None:
                _call(on_error, self.error)
        finally:
            ticking.set()
            _quiet.on = False


def _all_same(X: np.ndarray) -> bool:
    return all((X[i : i + _CHUNK] == X[0]).all() for i in range(0, len(X), _CHUNK))


class _Cancelled(Exception):
    pass


def _short_error(method: str, exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{_LABELS[method]} failed: {text[:200]}"


def _call(fn: Callable[..., Any], *args: Any) -> None:
    # A callback's own bug must not kill the layout thread silently or print into some other cell.
    try:
        fn(*args)
    except Exception:  # noqa: BLE001
        logging.getLogger("mlnb").exception("layout callback %r failed", fn)


def _umap(job: LayoutJob, X: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    _use_numba_cache()
    try:
        import umap
    except ImportError:
        raise MissingDependencyError("umap-learn", "widgets", "The UMAP layout") from None
    _cache_umap_functions()
    for name in ("umap", "pynndescent", "numba"):
        _quiet_loggers(name)
    n = len(X)
    reducer = umap.UMAP(
        n_components=p["n_components"], n_neighbors=max(2, min(int(p["n_neighbors"]), n - 1)), min_dist=p["min_dist"],
        metric=p["metric"], random_state=p["random_state"],
        init="random" if n < 10 else "spectral",  # spectral init needs more points than components + neighbours
        verbose=False, tqdm_kwds={"disable": True},
    )  # fmt: skip
    return reducer.fit_transform(X).astype(np.float32)


def _tsne(job: LayoutJob, X: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    try:
        import openTSNE
    except ImportError:
        raise MissingDependencyError("openTSNE", "widgets", "The t-SNE layout") from None
    _quiet_loggers("openTSNE")
    n = len(X)
    n_iter, early = 500, 250  # openTSNE's defaults

    class Progress:
        """openTSNE callback: reports the iteration; returning True stops the optimisation."""

        def __init__(self) -> None:
            self.phases = 0  # openTSNE runs two phases: early exaggeration, then the rest

        def optimization_about_to_start(self) -> None:
            self.phases += 1

        def __call__(self, iteration: int, error: float, embedding: np.ndarray) -> bool:
            done = iteration + (early if self.phases > 1 else 0)
            job._detail = f", iteration {done:,} of {early + n_iter:,}"
            return job._cancelled.is_set()

    progress = Progress()
    tsne = openTSNE.TSNE(
        n_components=p["n_components"], perplexity=min(float(p["perplexity"]), (n - 1) / 3),
        metric=p["metric"], random_state=p["random_state"], n_iter=n_iter, early_exaggeration_iter=early,
        n_jobs=os.cpu_count() or 1, verbose=False, callbacks=progress, callbacks_every_iters=10,
    )  # fmt: skip
    try:
        emb = tsne.fit(X)
    except openTSNE.OptimizationInterrupt:
        raise _Cancelled from None
    if job._cancelled.is_set():
        raise _Cancelled
    return np.asarray(emb, dtype=np.float32)


_COMPUTE: dict[str, Callable[[LayoutJob, np.ndarray, dict[str, Any]], np.ndarray]] = {"umap": _umap, "tsne": _tsne}


def umap_coordinates(X: np.ndarray, *, n_components: int = 2, **params: Any) -> np.ndarray:
    """Compat: the UMAP layout of ``X``, computed now (blocking) or read from the cache."""
    return LayoutJob(X, "umap", n_components, **params).wait()
