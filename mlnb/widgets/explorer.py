"""The embedding explorer's controller: layouts (PCA at once, UMAP or t-SNE in the
background, cached in the workspace), colours, hover previews, selections — no
browser needed.

The view (:mod:`mlnb.widgets._explorer_view`) is a WebGL scatter; it sends what a
person does (hover, lasso, box, legend clicks, label) as messages naming point
indices, and draws what this controller sends back. Tests drive this class the
same way.
"""

from __future__ import annotations

import re
import sys
import threading
from pathlib import PurePath
from typing import Any

import numpy as np

from ..exceptions import MlnbError
from ..labels import get_label_store
from ..workspace import get_workspace
from ._base import Controller

MAX_CATEGORIES = 50
BINS = 64  # steps of the continuous colour scale
LABELS_COLUMN = "label store"  # the labeler's current labels, offered as a colour
METHODS = {"pca": "PCA", "umap": "UMAP", "tsne": "t-SNE", "given": "given"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")  # 63 at most: a file name, and PostgreSQL's limit


class Explorer(Controller):
    """Look at a frame's embeddings: ``mlnb.explore(df, features="features", color="label", image="path")``.

    A PCA layout is drawn at once; ``layout="umap"`` (default) or ``"tsne"`` runs in
    the background and the points move to their places when it is done (cached in
    the workspace, so the second time is instant). ``coords=`` gives a layout of
    your own. ``head=`` (a head or its name) adds ``predicted`` and ``confidence``
    columns, and ``is_error`` when ``label=`` names the true labels, to colour by.

    ``selection`` is the selected rows as a Polars frame of the input's columns;
    ``select(query="confidence < 0.5")`` selects from Python or SQL;
    ``label_selection("cat")`` writes to the labeler's label store;
    ``save_selection("cats")`` makes the selection a SQL table.
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
        layout: str = "umap",
        n_components: int = 2,
        coords: Any = None,
        head: Any = None,
        label: str | None = None,
        size: tuple[int, int] | None = None,
        **layout_options: Any,
    ) -> None:
        from ..heads._data import feature_matrix

        df = _input_frame(frame)
        for col in (features, image, item, label):
            if col is not None and col not in df.columns:
                raise MlnbError(f"No column {col!r} in the frame; columns: {', '.join(df.columns)}.")
        method = layout.lower().replace("-", "")
        if method not in METHODS or method == "given":
            raise MlnbError(f"layout={layout!r} is not a layout; use 'umap', 'tsne' or 'pca' (or coords= for your own).")
        self.features, self.image, self.item_col, self.dataset = features, image, item or image, dataset
        self.size = (int(size[0]), int(size[1])) if size else (0, 0)  # (0, 0): the view fits its area
        self.problem = ""  # a whole-frame problem: the widget shows this message instead of a plot
        self.notes: list[str] = []
        self.message = ""  # a passing problem (a colour that cannot be used), shown over the plot
        self.status = ""
        self.selected: np.ndarray = np.zeros(0, dtype=np.int64)
        self.color: str | None = None
        self._lock = threading.Lock()
        self._job: Any = None
        self._layout_options = _check_layout_options(layout_options)
        self._n_components = n_components
        self._done = threading.Event()

        X = np.zeros((df.height, 0), dtype=np.float32)
        ok = np.zeros(df.height, dtype=bool)
        # Labels go under the dataset of the whole input, as the labeler on the same frame has it.
        self._items = df.get_column(self.item_col) if self.item_col is not None else None
        if df.height:
            feats = df.get_column(features)
            missing = int(feats.is_null().sum())
            feats, other = _one_length(feats)
            if other:
                self.notes.append(other)
            X, ok = _feature_matrix(feature_matrix, feats, features)
            bad = int(feats.len() - feats.null_count() - ok.sum())
            if missing:
                self.notes.append(f"{missing:,} row{'s' if missing != 1 else ''} without features left out")
            if bad:
                self.notes.append(f"{bad:,} row{'s' if bad != 1 else ''} with NaN/inf features left out")
        if head is not None and ok.any():
            df = _with_predictions(df, X, ok, head, label)
        self.rows = np.flatnonzero(ok)  # positions in the input frame
        self._n_input = df.height
        self.frame = df.filter(ok) if df.height else df
        self.X = X[ok]
        n = len(self.rows)
        if n < 3 or not self.X.shape[1]:
            self.problem = (
                f"Nothing to draw: the frame has {n} row{'s' if n != 1 else ''} with features in {features!r}"
                + (f" ({'; '.join(self.notes)})" if self.notes else "")
                + ". The explorer needs at least 3."
                if n < 3
                else f"Nothing to draw: the features in {features!r} are empty vectors (no values)."
            )
            self.coords = np.zeros((n, 2), dtype=np.float32)
            self.method = "pca"
            self.layouts = ["PCA"]
            self._done.set()
            self.set_color(None)
            return

        from ._layout import cached_layout, pca_layout

        self.layouts = ["PCA", "UMAP", "t-SNE"]
        if coords is not None:  # the user's own layout
            c = np.asarray(coords, dtype=np.float32)
            if c.ndim != 2 or c.shape[0] != df.height or c.shape[1] < 2:
                raise MlnbError(f"coords must have one row per input row and 2 or 3 columns; got shape {c.shape}.")
            c = c[ok]
            if not np.isfinite(c).all():
                raise MlnbError("coords has NaN or inf values in rows that have features.")
            self.coords, self.method = c[:, :3], "given"
            self._given = self.coords  # kept: the layout menu offers it after a switch away
            self.layouts = ["given", *self.layouts]
            self._done.set()
        else:
            self.coords, self.method = pca_layout(self.X, n_components=n_components), "pca"
            if (self.X.max(axis=0) == self.X.min(axis=0)).all():  # (no ptp: it overflows near float32's limits)
                self.notes.append("all rows have the same features, so every point is in one place")
                self._done.set()
            elif method == "pca":
                self._done.set()
            else:
                # Small enough to hash at once: a cached layout is drawn straight away. Larger
                # data is hashed in the job's thread, so the PCA points come first.
                cached = None
                if self.X.size <= 20_000_000:
                    cached = cached_layout(self.X, method, n_components=n_components, **self._options(method))
                if cached is not None:
                    self.coords, self.method = cached, method
                    self._done.set()
                else:
                    self._start(method)
        self.set_color(color)
        self.status = "; ".join(self.notes)

    # -- layout ------------------------------------------------------------------------------
    @property
    def layout(self) -> str:
        """The layout on screen: ``"pca"``, ``"umap"``, ``"tsne"`` or ``"given"``."""
        return self.method

    @property
    def progress(self) -> str:
        job = self._job
        return job.progress if job is not None and not job.done else ""

    @property
    def pending_layout(self) -> str:
        """The layout being computed in the background (``"UMAP"``, ``"t-SNE"``), or ``""``."""
        job = self._job
        return METHODS[job.method] if job is not None and not job.done else ""

    def set_layout(self, method: str) -> None:
        """Switch layout; UMAP and t-SNE run in the background (cached ones are instant)."""
        from ._layout import cached_layout, pca_layout

        m = method.lower().replace("-", "")
        if m not in METHODS or METHODS[m] not in self.layouts:
            raise MlnbError(f"No layout {method!r}; choose from {', '.join(self.layouts)}.")
        if self.problem:
            return
        if m == self.method:  # back to the layout on screen: a layout still running is dropped
            if self._job is not None and not self._job.done:
                self._cancel()
                self._push(progress="", pending="")
            return
        self._cancel()
        if m == "pca":
            self._set_coords(pca_layout(self.X, n_components=self._n_components), "pca")
        elif m == "given":
            self._set_coords(self._given, "given")
        else:
            cached = cached_layout(self.X, m, n_components=self._n_components, **self._options(m))
            if cached is not None:
                self._set_coords(cached, m)
            else:
                self._start(m)

    def wait(self, timeout: float | None = None) -> Explorer:
        """Block until the background layout is on screen (for scripts and tests)."""
        if not self._done.wait(timeout):
            raise MlnbError(f"The layout is still running after {timeout} s.")
        job = self._job
        if job is not None and job.error:
            raise MlnbError(job.error)
        return self

    def _options(self, method: str) -> dict[str, Any]:
        """The options given to the explorer that ``method`` takes (n_neighbors for UMAP,
        perplexity for t-SNE, metric for both), so one method's options never block the other."""
        from ._layout import _DEFAULTS

        return {k: v for k, v in self._layout_options.items() if k in _DEFAULTS[method]}

    def _start(self, method: str) -> None:
        from ._layout import LayoutJob

        self._done.clear()
        job = LayoutJob(self.X, method=method, n_components=self._n_components, **self._options(method))
        self._job = job

        def done(coords: np.ndarray) -> None:
            if self._job is job:
                self._set_coords(coords, method)
                self._done.set()

        def failed(message: str) -> None:
            if self._job is job:
                what = message if message.startswith(METHODS[method]) else f"{METHODS[method]} failed: {message}"
                self.status = f"{what}; showing {METHODS[self.method]}"
                self._push(status=self.status, progress="", pending="")
                self._done.set()

        def progress(line: str) -> None:
            if self._job is job:
                self._push(progress=line)

        self._push(pending=METHODS[method])  # before the start: a quick job's own "" comes after
        job.start(on_done=done, on_error=failed, on_progress=progress)

    def _cancel(self) -> None:
        job, self._job = self._job, None
        if job is not None and not job.done:
            job.cancel()
        self._done.set()

    def _set_coords(self, coords: np.ndarray, method: str) -> None:
        with self._lock:
            self.coords, self.method = np.asarray(coords, dtype=np.float32), method
        if self._view is not None:
            self._view.show_coords()

    def _push(self, **traits: Any) -> None:
        if self._view is not None:
            for k, v in traits.items():
                setattr(self._view, k, v)

    # -- colours ------------------------------------------------------------------------------
    def color_columns(self) -> list[str]:
        """The columns a colour can come from: categorical ones with at most 50 values, numeric
        ones, and the label store's labels. Paths, arrays and many-valued strings are left out."""
        import polars as pl

        out = []
        for name, dtype in self.frame.schema.items():
            if name in (self.features, self.image) or isinstance(dtype, (pl.List, pl.Array, pl.Struct, pl.Binary, pl.Object)):
                continue
            s = self.frame.get_column(name)
            if s.null_count() == len(s):
                continue
            if dtype.is_numeric() or dtype == pl.Boolean:
                out.append(name)
            elif s.drop_nulls().n_unique() <= MAX_CATEGORIES and not _looks_like_paths(s):
                out.append(name)
        if self.item_col is not None:
            out.append(LABELS_COLUMN)
        return out

    def color_values(self, column: str | None = None) -> tuple[dict[str, Any], np.ndarray]:
        """``(spec, codes)``: codes are float32 per point, a category index (categories, then
        nulls) or a step of the continuous scale (``BINS`` for a missing value)."""
        import polars as pl

        n = self.frame.height
        if column is None:
            return {"kind": "none", "column": ""}, np.zeros(n, dtype=np.float32)
        s = self._column(column)
        if s.dtype.is_numeric() and not (s.dtype.is_integer() and s.n_unique() <= MAX_CATEGORIES):
            v = s.cast(pl.Float64).to_numpy().astype(np.float64, copy=False)
            fin = np.isfinite(v)
            if not fin.any():
                codes = np.full(n, BINS, dtype=np.float32)
                return {"kind": "continuous", "column": column, "min": None, "max": None, "bins": BINS, "nulls": n}, codes
            lo, hi = float(v[fin].min()), float(v[fin].max())
            steps = np.zeros(n, dtype=np.float32)
            # Halves first: hi - lo overflows for values near the float64 limits.
            span = (hi / 2 - lo / 2) or 1.0
            steps[fin] = np.clip(np.floor((v[fin] / 2 - lo / 2) / span * BINS), 0, BINS - 1)
            steps[~fin] = BINS
            return {"kind": "continuous", "column": column, "min": lo, "max": hi, "bins": BINS, "nulls": int((~fin).sum())}, steps
        uniq = s.drop_nulls().unique().sort()
        if len(uniq) > MAX_CATEGORIES:
            raise MlnbError(f"{column!r} has {len(uniq):,} distinct values: colour by a column with at most {MAX_CATEGORIES}, or a numeric one.")
        k = len(uniq)
        codes_s = s.replace_strict(uniq, pl.int_range(k, eager=True), default=k, return_dtype=pl.Int32).fill_null(k)
        codes = codes_s.to_numpy().astype(np.float32)
        counts = np.bincount(codes.astype(np.int64), minlength=k + 1)
        spec = {"kind": "categorical", "column": column, "categories": [str(c) for c in uniq.to_list()],
                "counts": counts[:k].tolist() + ([int(counts[k])] if counts[k] else []), "nulls": int(counts[k])}  # fmt: skip
        return spec, codes

    def set_color(self, column: str | None) -> None:
        """Colour by ``column`` (``None``: one colour). A column that cannot colour leaves a message."""
        self.message = ""
        try:
            spec, codes = self.color_values(column or None)
        except MlnbError as exc:
            self.message = str(exc)
            spec, codes = self.color_values(None)
        self.color = spec["column"] or None
        self.color_spec, self.codes = spec, codes
        if self._view is not None:
            self._view.show_colors()

    def _column(self, name: str) -> Any:
        import polars as pl

        if name == LABELS_COLUMN and name not in self.frame.columns:
            if self.item_col is None:
                raise MlnbError("Colouring by labels needs image= or item= to name the items.")
            cur = get_label_store().current(self._dataset())
            mapping = dict(zip(cur.get_column("item").to_list(), cur.get_column("label").to_list())) if cur.height else {}
            items = self.frame.get_column(self.item_col).cast(pl.String)
            return items.replace_strict(list(mapping), list(mapping.values()), default=None, return_dtype=pl.String).alias(name)
        if name not in self.frame.columns:
            offered = self.color_columns()
            raise MlnbError(f"No column {name!r} to colour by; " + (f"choose from {', '.join(offered)}." if offered else "the frame has none that can be a colour."))
        s = self.frame.get_column(name)
        if isinstance(s.dtype, (pl.List, pl.Array, pl.Struct, pl.Binary, pl.Object)):
            raise MlnbError(f"{name!r} holds {s.dtype} values, which cannot be a colour.")
        return s.cast(pl.String) if s.dtype == pl.Boolean else s

    # -- selection -----------------------------------------------------------------------------
    def select(self, indices: Any = None, *, query: str | None = None, **frames: Any) -> int:
        """Select points by index (what a lasso or box sends), or by SQL over the points.

        ``query`` is a condition (``"confidence < 0.5 AND predicted = 'cat'"``) or a whole
        query over the table ``explorer`` (the explorer's rows with a ``_row`` column);
        mlnb's functions and your frames can be used in it. Returns how many are selected.
        """
        if query is not None:
            idx = self._query_rows(query, frames, sys._getframe(1))
        else:
            idx = np.asarray(indices if indices is not None else [], dtype=object if indices is None else None).ravel()
            if idx.dtype == bool:  # a mask (df["label"] == "3"), as NumPy and Polars take it
                if len(idx) == self._n_input and len(idx) != self.frame.height:
                    idx = idx[self.rows]  # over the input's rows, some of which were left out
                if len(idx) != self.frame.height:
                    raise MlnbError(f"A mask needs one value per point ({self.frame.height:,}); it has {len(idx):,}.")
                idx = np.flatnonzero(idx)
            elif len(idx) and not np.issubdtype(idx.dtype, np.integer):
                raise MlnbError(f"select() takes point numbers (integers) or a mask of booleans, not {idx.dtype} values.")
            idx = idx.astype(np.int64)
        self._set_selected(idx)
        if self._view is not None:
            self._view.show_selection()
        return len(self.selected)

    def _set_selected(self, idx: np.ndarray) -> None:
        """What a lasso or box in the browser does (the browser already shows it)."""
        idx = np.unique(np.asarray(idx, dtype=np.int64))
        if len(idx) and (idx[0] < 0 or idx[-1] >= self.frame.height):
            raise MlnbError(f"A selected point is out of range (the explorer has {self.frame.height:,} points).")
        self.selected = idx
        self.status = f"{len(idx):,} selected (explorer.selection)" if len(idx) else ""

    def _query_rows(self, query: str, frames: dict[str, Any], caller: Any) -> np.ndarray:
        import polars as pl

        from ..sql import get_session

        q = query.strip().rstrip(";").strip()
        # A whole query may start with comments or a parenthesis; anything else is a condition.
        head = re.sub(r"(?s)^(\s|--[^\n]*(\n|$)|/\*.*?\*/|\()*", "", q)
        if not re.match(r"(?is)^(select|with|from|values|table)\b", head):
            q = f"SELECT _row FROM explorer WHERE {q}"
        if "_row" in self.frame.columns:
            raise MlnbError("The frame has its own _row column, the name the explorer's SQL table gives its row numbers: rename it.")
        table = self.frame.select([c for c, t in self.frame.schema.items() if t != pl.Object]).with_row_index("_row")
        namespace = {**caller.f_globals, **caller.f_locals, **frames, "explorer": table}
        out = get_session().run(q, namespace, lazy=False)
        if "_row" not in out.columns:
            raise MlnbError("The query must return the explorer's _row column: SELECT * FROM explorer WHERE ...")
        rows = out.get_column("_row").drop_nulls()
        if not (rows.dtype.is_integer() or (rows.dtype.is_float() and (rows == rows.floor()).all())):
            raise MlnbError(f"The query's _row column holds {rows.dtype} values; it must be the explorer's row numbers.")
        return rows.to_numpy().astype(np.int64)

    def select_box(self, x0: float, x1: float, y0: float, y1: float) -> int:
        """Select the points inside a rectangle, in layout coordinates."""
        x, y = self.coords[:, 0], self.coords[:, 1]
        return self.select(np.flatnonzero((x >= min(x0, x1)) & (x <= max(x0, x1)) & (y >= min(y0, y1)) & (y <= max(y0, y1))))

    def select_lasso(self, polygon: list[tuple[float, float]]) -> int:
        """Select the points inside a polygon, in layout coordinates."""
        return self.select(np.flatnonzero(_inside(self.coords[:, :2], np.asarray(polygon, dtype=np.float64))))

    @property
    def selection(self) -> Any:
        """The selected rows, with the input's own columns."""
        return self.frame[self.selected] if len(self.selected) else self.frame.clear()

    def label_selection(self, label: str) -> int:
        """Write ``label`` for every selected row into the label store (the labeler's)."""
        if self.item_col is None:
            raise MlnbError("Labelling a selection needs image= or item= to name the items.")
        label = str(label).strip()
        if not label:
            raise MlnbError("Type a label first.")
        if not len(self.selected):
            raise MlnbError("Nothing is selected.")
        items = [str(v) for v in self.selection.get_column(self.item_col).to_list()]
        n = get_label_store().add(self._dataset(), items, label, source="explorer")  # on disk when this returns
        self.status = f"labelled {n:,} points as {label!r}"
        if self.color == LABELS_COLUMN:
            self.set_color(LABELS_COLUMN)
        return n

    def save_selection(self, name: str) -> str:
        """Save the selection as the SQL table ``name`` (a Parquet file in the workspace, so the
        table is there in later kernels too)."""
        import io

        import polars as pl

        from ..sql._parse import reserved_words
        from ..sql._session import _PROVIDERS, _builtin_tables

        if not _NAME.match(name or ""):
            raise MlnbError(f"{name!r} is not a table name: use up to 63 letters, digits and _, starting with a letter.")
        _builtin_tables()
        if name.lower() in {k.lower() for k in _PROVIDERS}:
            raise MlnbError(f"{name} is the name of one of mlnb's own tables ({', '.join(sorted(_PROVIDERS))}); choose another name.")
        if name.upper() in reserved_words():
            raise MlnbError(f"{name} is a SQL keyword, so FROM {name} would not parse; choose another name, like {name}_rows.")
        if not len(self.selected):
            raise MlnbError("Nothing is selected.")
        sel = self.selection
        objects = [c for c, t in sel.schema.items() if t == pl.Object]
        buf = io.BytesIO()
        sel.drop(objects).write_parquet(buf)
        ws = get_workspace()
        ws.write_bytes(f"selections/{name}.parquet", buf.getvalue())  # atomic: a reader never sees half
        # SQL names ignore case: one saved table per name, the latest.
        for old in ws.path("selections", "x").parent.glob("*.parquet"):
            if old.stem.lower() == name.lower() and old.stem != name:
                old.unlink(missing_ok=True)
        self.status = f"saved {len(self.selected):,} rows as the SQL table {name}"
        if objects:
            self.status += f" (without {', '.join(objects)}: Python objects cannot be stored)"
        return name

    # -- hover and thumbnails -------------------------------------------------------------------
    def hover(self, index: int) -> dict[str, Any]:
        """What a hover shows: a few fields of the row and its thumbnail (JPEG bytes, may be empty)."""
        i = int(index)
        if not 0 <= i < self.frame.height:
            raise MlnbError("No such point.")
        row = self.frame.row(i, named=True)
        fields: dict[str, Any] = {}
        if self.item_col is not None:
            fields["item"] = _short(row[self.item_col], name=True)
        for k in ([self.color] if self.color and self.color in row else []) + [c for c in ("predicted", "confidence", "is_error") if c in row]:
            fields[k] = _short(row[k])
        if self.color == LABELS_COLUMN:
            fields[LABELS_COLUMN] = self._column(LABELS_COLUMN)[i]
        thumb, problem = self.thumbnail(i)
        if problem:
            fields["image"] = problem
        fields["row"] = int(self.rows[i])
        return {"index": i, "fields": fields, "thumb": thumb}

    def thumbnail(self, index: int, size: int = 128) -> tuple[bytes, str]:
        """``(jpeg, problem)`` for point ``index``: bytes are empty when there is no image.
        (``images.thumbnail`` keeps made thumbnails; failures are not kept, as everywhere.)"""
        from ..exceptions import ImageLoadError
        from ..images import thumbnail

        if self.image is None:
            return b"", ""
        try:
            return thumbnail(self.frame.get_column(self.image)[int(index)], size), ""
        except ImageLoadError as exc:
            return b"", f"cannot be read: {exc.reason}"

    def title(self, index: int) -> str:
        """A short name for a point (its item, or its row)."""
        if self.item_col is not None:
            return str(_short(self.frame.get_column(self.item_col)[int(index)], name=True))
        return f"row {int(self.rows[int(index)])}"

    def _dataset(self) -> str:
        if self.dataset is None:
            from .labeler import _dataset_id

            self.dataset = _dataset_id(self.item_col, [str(v) for v in self._items.to_list()])
        return self.dataset

    def _make_view(self) -> Any:
        from ._explorer_view import ExplorerView

        return ExplorerView(self)


def _check_layout_options(options: dict[str, Any]) -> dict[str, Any]:
    from ._layout import _DEFAULTS

    known = {k for d in _DEFAULTS.values() for k in d}
    unknown = sorted(set(options) - known)
    if unknown:
        takes = "; ".join(f"{METHODS[m]}: {', '.join(d)}" for m, d in _DEFAULTS.items())
        raise MlnbError(f"No layout option {', '.join(unknown)}; the layouts take {takes}.")
    return dict(options)


def _input_frame(frame: Any) -> Any:
    """The input as a Polars frame; a pandas frame's own index (not 0, 1, 2 ...) comes along as
    a column (``index``, or the index's name), so a selection can be found in the input."""
    from .._frames import to_polars

    if type(frame).__module__.startswith("pandas") and hasattr(frame, "reset_index"):
        idx = frame.index
        default = type(idx).__name__ == "RangeIndex" and idx.start == 0 and idx.step == 1
        if not default:
            try:
                frame = frame.reset_index()
            except ValueError:  # the index's name is also a column's: leave the index out
                pass
    return to_polars(frame)


def _one_length(feats: Any) -> tuple[Any, str]:
    """Rows whose feature list is not the most common length become null (left out), with a note."""
    import polars as pl

    if not isinstance(feats.dtype, pl.List):
        return feats, ""
    lens = feats.list.len()
    counts = lens.drop_nulls().value_counts(sort=True)
    if counts.height <= 1:
        return feats, ""
    dim = counts.item(0, 0)
    other = lens.is_not_null() & (lens != dim)
    k = int(other.sum())
    feats = pl.select(pl.when(other).then(None).otherwise(feats).alias(feats.name)).to_series()
    return feats, f"{k:,} row{'s' if k != 1 else ''} with features of another length (not {dim:,}) left out"


def _feature_matrix(feature_matrix: Any, feats: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    import polars as pl

    try:
        return feature_matrix(feats)
    except pl.exceptions.PolarsError as exc:  # strings or nested lists where numbers should be
        first = str(exc).strip().splitlines()[0][:160]
        raise MlnbError(f"The {name!r} column cannot be read as vectors of numbers ({first}).") from None


def _looks_like_paths(s: Any) -> bool:
    """Strings that are mostly file paths or URLs (never a colour)."""
    sample = [v for v in s.drop_nulls().head(200).to_list() if isinstance(v, str)]
    return bool(sample) and sum(("/" in v or "\\" in v or "://" in v) for v in sample) > len(sample) / 2


def _short(v: Any, *, name: bool = False) -> Any:
    if isinstance(v, float):  # NaN and inf are not JSON: the browser would get no hover at all
        return round(v, 4) if np.isfinite(v) else None
    if isinstance(v, (int, bool)) or v is None:
        return v
    s = str(v)
    if name and ("/" in s or "\\" in s):
        s = PurePath(s.split("::")[0].split("#")[-1]).name or s
    return s if len(s) <= 48 else s[:45] + "..."


def _with_predictions(df: Any, X: np.ndarray, ok: np.ndarray, head: Any, label: str | None) -> Any:
    """Add ``predicted``, ``confidence`` (and ``is_error`` when ``label`` is given) from a head, to colour by."""
    import polars as pl

    from ..heads import load_classifier

    taken = [c for c in ("predicted", "confidence") + (("is_error",) if label is not None else ()) if c in df.columns]
    if taken:
        raise MlnbError(f"The frame has its own {', '.join(taken)} column{'s' if len(taken) > 1 else ''}, which head= would replace: rename {'them' if len(taken) > 1 else 'it'}.")
    h = load_classifier(head) if isinstance(head, str) else head
    proba = np.full((len(X), len(h.classes_)), np.nan)
    proba[ok] = h.predict_proba(X[ok])
    good = ok & np.isfinite(proba).all(axis=1)
    best = np.argmax(np.where(np.isfinite(proba), proba, -np.inf), axis=1)
    names = np.asarray([str(c) for c in h.classes_], dtype=object)
    pred = pl.Series("predicted", np.where(good, names[best], None), dtype=pl.String)
    conf = pl.Series("confidence", np.where(good, np.nanmax(np.where(good[:, None], proba, 0), axis=1), np.nan)).fill_nan(None)
    out = df.with_columns(pred, conf)
    if label is not None:
        out = out.with_columns((pl.col("predicted") != pl.col(label).cast(pl.String)).alias("is_error"))
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
    """Open the embedding explorer: a WebGL scatter of ``features`` (PCA at once, UMAP in the
    background), hover thumbnails, lasso/box selection, colours, labels.

    >>> ex = mlnb.explore(df, features="features", color="label", image="path")  # doctest: +SKIP
    >>> ex.selection  # the rows you lassoed  # doctest: +SKIP
    """
    return Explorer(frame, features=features, color=color, image=image, **kwargs)
