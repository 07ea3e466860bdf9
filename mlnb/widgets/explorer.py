"""The embedding explorer's controller: UMAP coordinates (cached in the
workspace), colours, hover previews and selections — no browser needed.

The view (:mod:`mlnb.widgets._explorer_view`) draws the points on a canvas,
sends hovers and lasso/box selections back as point indices, and asks for a
thumbnail only when a point is hovered.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np

from ..exceptions import MlnbError
from ..labels import get_label_store
from ..workspace import get_workspace
from ._base import Controller


def umap_coordinates(
    X: np.ndarray,
    *,
    n_components: int = 2,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "cosine",
    random_state: int = 0,
) -> np.ndarray:
    """UMAP of ``X`` (rows = points), cached in the workspace by data hash and parameters."""
    params = (n_components, n_neighbors, min_dist, metric, random_state, X.shape)
    h = hashlib.sha1(np.ascontiguousarray(X, dtype=np.float32).tobytes() + repr(params).encode()).hexdigest()[:20]
    ws = get_workspace()
    path = ws.path("umap", f"{h}.npy")
    if path.exists():
        return np.load(path, allow_pickle=False)
    try:
        import umap
    except ImportError:
        from ..exceptions import MissingDependencyError

        raise MissingDependencyError("umap-learn", "widgets", "The embedding explorer") from None
    n = len(X)
    if n < 4:
        raise MlnbError(f"UMAP needs at least 4 points; the frame has {n} with features.")
    reducer = umap.UMAP(
        n_components=n_components, n_neighbors=min(n_neighbors, n - 1), min_dist=min_dist, metric=metric, random_state=random_state,
        init="random" if n < 10 else "spectral",
        verbose=False, tqdm_kwds={"disable": True},  # umap's own log and epoch bars never spill into the cell
    )  # fmt: skip
    import contextlib
    import warnings

    from tqdm.auto import tqdm

    # One progress indicator of our own for layouts that take a while.
    bar = tqdm(total=1, desc=f"UMAP layout of {n:,} points", bar_format="{desc} {elapsed}") if n >= 2000 else None
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        # umap warns that a fixed random_state turns off its parallelism (that is the point of a seed);
        # numba and pynndescent warn about their own internals. None of it is the user's to act on.
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        warnings.filterwarnings("ignore", module=r"(umap|numba|pynndescent)")
        warnings.filterwarnings("ignore", category=Warning, message=r".*numba.*")
        try:
            coords = reducer.fit_transform(X).astype(np.float32)
        finally:
            if bar is not None:
                bar.update(1)
                bar.close()
    buf = io.BytesIO()
    np.save(buf, coords, allow_pickle=False)
    ws.write_bytes(str(path.relative_to(ws.root)), buf.getvalue())
    return coords


class Explorer(Controller):
    """Look at a frame's embeddings: ``mlnb.explore(df, features="features", color="label", image="path")``.

    ``coords=`` gives a layout of your own instead of UMAP. ``head=`` (a head or
    its name) adds ``predicted`` and ``confidence`` columns, and ``is_error``
    when ``label=`` names the true labels, to colour by. ``selection`` is the
    selected rows as a frame of the input's columns;
    ``label_selection("cat")`` writes them to the same label store as the labeler.
    """

    def __init__(
        self,
        frame: Any,
        *,
        features: str = "features",
        color: str | None = None,
        image: str | None = None,
        item: str | None = None,
        dataset: str | None = None,
        n_components: int = 2,
        coords: Any = None,
        head: Any = None,
        label: str | None = None,
        **umap_options: Any,
    ) -> None:
        from .._frames import to_polars
        from ..heads._data import feature_matrix

        df = to_polars(frame)
        if df.height == 0:
            raise MlnbError("The frame is empty: there is nothing to explore.")
        for col in (features, image, item, label):
            if col is not None and col not in df.columns:
                raise MlnbError(f"No column {col!r} in the frame; columns: {', '.join(df.columns)}.")
        X, ok = feature_matrix(df.get_column(features))
        if not ok.any():
            raise MlnbError(f"No row has features in {features!r}.")
        self.skipped = int((~ok).sum())
        if head is not None:
            df = _with_predictions(df, X, ok, head, label)
        if color is not None and color not in df.columns:
            raise MlnbError(f"No column {color!r} to colour by; columns: {', '.join(df.columns)}.")
        self.frame = df.filter(ok)
        self.rows = np.flatnonzero(ok)  # positions in the input frame
        self.features = features
        self.image = image
        self.item_col = item or image
        self.dataset = dataset
        if coords is not None:  # the user's own 2-D layout (t-SNE, PCA ...): no UMAP
            coords = np.asarray(coords, dtype=np.float32)
            if coords.shape != (df.height, coords.shape[1]) or coords.shape[1] < 2:
                raise MlnbError(f"coords must have one row per input row and 2 or 3 columns; got {coords.shape}.")
            self.coords = coords[ok]
        else:
            self.coords = umap_coordinates(X[ok], n_components=n_components, **umap_options)
        self.color = color
        self.selected: np.ndarray = np.zeros(0, dtype=np.int64)
        self.status = f"{self.skipped} rows without features are not shown" if self.skipped else ""

    # -- colours ------------------------------------------------------------
    def color_values(self, column: str | None = None) -> tuple[list[str], np.ndarray]:
        """``(categories, codes)`` for a categorical column, or ``([], values)`` for a numeric one."""
        col = column if column is not None else self.color
        if col is None:
            return [], np.zeros(self.frame.height, dtype=np.float32)
        s = self.frame.get_column(col)
        if s.dtype.is_numeric():
            v = s.cast(float).fill_null(float("nan")).to_numpy().astype(np.float32)
            return [], v
        cats = sorted({str(x) for x in s.to_list() if x is not None})
        index = {c: i for i, c in enumerate(cats)}
        codes = np.array([index.get(str(x), -1) if x is not None else -1 for x in s.to_list()], dtype=np.float32)
        return cats, codes

    # -- interaction ---------------------------------------------------------------
    def select(self, indices: Any) -> None:
        """Select points by index (what a lasso or box selection sends)."""
        idx = np.unique(np.asarray(list(indices), dtype=np.int64))
        if len(idx) and (idx.min() < 0 or idx.max() >= self.frame.height):
            raise MlnbError("A selected point is out of range.")
        self.selected = idx

    def select_box(self, x0: float, x1: float, y0: float, y1: float) -> None:
        x, y = self.coords[:, 0], self.coords[:, 1]
        self.select(np.flatnonzero((x >= min(x0, x1)) & (x <= max(x0, x1)) & (y >= min(y0, y1)) & (y <= max(y0, y1))))

    def select_lasso(self, polygon: list[tuple[float, float]]) -> None:
        self.select(np.flatnonzero(_inside(self.coords[:, :2], np.asarray(polygon, dtype=np.float64))))

    @property
    def selection(self) -> Any:
        """The selected rows, with the input's own columns."""
        return self.frame[self.selected.tolist()] if len(self.selected) else self.frame.clear()

    def hover(self, index: int) -> dict[str, Any]:
        """What a hover shows: the row's fields and (lazily) its thumbnail bytes."""
        from ..exceptions import ImageLoadError
        from ..images import thumbnail

        row = self.frame.row(int(index), named=True)
        fields = {k: (v if isinstance(v, (str, int, float, bool)) or v is None else str(v)[:60]) for k, v in row.items() if k != self.features}
        thumb = b""
        if self.image is not None:
            try:
                thumb = thumbnail(row[self.image], 128)
            except ImageLoadError as exc:
                fields["image error"] = exc.reason
        return {"index": int(index), "fields": fields, "thumb": thumb}

    def label_selection(self, label: str) -> int:
        """Write ``label`` for every selected row into the label store (the labeler's)."""
        if self.item_col is None:
            raise MlnbError("Labelling a selection needs image= or item= to name the items.")
        if not len(self.selected):
            raise MlnbError("Nothing is selected.")
        items = [str(v) for v in self.selection.get_column(self.item_col).to_list()]
        dataset = self.dataset
        if dataset is None:
            from .labeler import _dataset_id

            dataset = _dataset_id(self.item_col, [str(v) for v in self.frame.get_column(self.item_col).to_list()])
        n = get_label_store().add(dataset, items, label, source="explorer")
        self.status = f"labelled {n} points as {label!r}"
        return n

    def _make_view(self) -> Any:
        from ._explorer_view import ExplorerView

        return ExplorerView(self)


def _with_predictions(df: Any, X: np.ndarray, ok: np.ndarray, head: Any, label: str | None) -> Any:
    """Add ``predicted``, ``confidence`` (and ``is_error`` when ``label`` is given) from a head, to colour by."""
    import polars as pl

    from ..heads import load_classifier

    h = load_classifier(head) if isinstance(head, str) else head
    proba = h.predict_proba(X)
    cls = h.classes_
    pred = [str(cls[int(np.nanargmax(p))]) if k and np.isfinite(p).all() else None for p, k in zip(proba, ok)]
    conf = [float(np.nanmax(p)) if k and np.isfinite(p).all() else None for p, k in zip(proba, ok)]
    out = df.with_columns(pl.Series("predicted", pred, dtype=pl.String), pl.Series("confidence", conf, dtype=pl.Float64))
    if label is not None:
        out = out.with_columns((pl.col("predicted") != pl.col(label).cast(pl.String)).cast(pl.Int8).alias("is_error"))
    return out


def _inside(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over points."""
    x, y = points[:, 0], points[:, 1]
    inside = np.zeros(len(points), dtype=bool)
    n = len(poly)
    for i in range(n):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % n]
        crosses = ((y1 > y) != (y2 > y)) & (x < (x2 - x1) * (y - y1) / ((y2 - y1) or 1e-12) + x1)
        inside ^= crosses
    return inside


def explore(frame: Any, *, features: str = "features", color: str | None = None, image: str | None = None, **kwargs: Any) -> Explorer:
    """Open the embedding explorer (UMAP scatter, hover thumbnails, lasso selection)."""
    return Explorer(frame, features=features, color=color, image=image, **kwargs)
