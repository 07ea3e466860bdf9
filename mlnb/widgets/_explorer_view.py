"""The explorer's view: the synced traits of a WebGL scatter (coordinates and colour codes
as float32 buffers, sent once per change) and the messages it exchanges with the
controller (hover, thumbnails, selections, labels). No state of its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets

from ..exceptions import MlnbError, QueryError

_POOL: Any = None


def _pool() -> Any:
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="mlnb-thumbs")
    return _POOL


class ExplorerView(anywidget.AnyWidget):
    # Built from js/src/explorer.js by js/build.sh (regl-scatterplot bundled in).
    _esm = Path(__file__).with_name("explorer.js")
    _css = Path(__file__).with_name("explorer.css")

    xy = traitlets.Bytes(b"").tag(sync=True)  # float32 coordinates, `dims` per point, interleaved
    dims = traitlets.Int(2).tag(sync=True)
    n = traitlets.Int(0).tag(sync=True)
    size = traitlets.List([0, 0]).tag(sync=True)  # [0, 0]: fit the output area at 4:3
    codes = traitlets.Bytes(b"").tag(sync=True)  # float32 colour code per point
    color_spec = traitlets.Dict().tag(sync=True)
    color_columns = traitlets.List().tag(sync=True)
    layouts = traitlets.List().tag(sync=True)
    layout = traitlets.Unicode("").tag(sync=True)
    pending = traitlets.Unicode("").tag(sync=True)  # the layout running in the background, if any
    # int32 indices of the selection: a view drawn later (the widget shown again, or a selection
    # made before it was first shown) starts from it. Live changes come as "select" messages.
    selected = traitlets.Bytes(b"").tag(sync=True)
    has_images = traitlets.Bool(False).tag(sync=True)
    progress = traitlets.Unicode("").tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    problem = traitlets.Unicode("").tag(sync=True)

    def __init__(self, controller: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.controller = c = controller
        self.size = list(c.size)
        self.problem = c.problem
        self.has_images = c.image is not None
        if not c.problem:
            self.color_columns = c.color_columns()
            self.layouts = list(c.layouts)
            self.show_colors()
            self.show_coords()
        self.status = c.status
        self.progress = c.progress
        self.pending = c.pending_layout
        self.selected = np.asarray(c.selected, dtype=np.int32).tobytes()
        self.on_msg(self._on_msg)

    # -- controller -> browser -------------------------------------------------------------
    def show_coords(self) -> None:
        from .explorer import METHODS

        c = self.controller
        dims = 2  # 3-D layouts are drawn by their first two axes
        with self.hold_sync():
            self.n = len(c.coords)
            self.dims = dims
            self.xy = np.ascontiguousarray(c.coords[:, :dims], dtype=np.float32).tobytes()
            self.layout = METHODS[c.method]
            self.progress = c.progress
            self.pending = c.pending_layout
            if c.status:
                self.status = c.status

    def show_colors(self) -> None:
        c = self.controller
        with self.hold_sync():
            self.color_spec = c.color_spec
            self.message = c.message
            self.codes = np.ascontiguousarray(c.codes, dtype=np.float32).tobytes()

    def show_selection(self) -> None:
        """Tell the browser about a selection made from Python."""
        c = self.controller
        self.selected = np.asarray(c.selected, dtype=np.int32).tobytes()
        self.send({"type": "select", "n": len(c.selected)}, buffers=[self.selected])
        self.status = c.status

    # -- browser -> controller -------------------------------------------------------------
    def _on_msg(self, _w: Any, content: dict[str, Any], buffers: Any) -> None:
        c = self.controller
        kind = content.get("type")
        try:
            if kind == "hover":
                info = c.hover(int(content["index"]))
                self.send({"type": "hover", "index": info["index"], "fields": info["fields"]}, buffers=[info["thumb"]])
                return
            if kind == "thumbs":
                idx = [int(i) for i in content.get("indices", [])][:400]
                # In parallel: images behind URLs take a round trip each (0.3-0.5 s measured for
                # one that fails), and the kernel answers nothing else while this runs.
                shots = list(_pool().map(c.thumbnail, idx))
                titles = [p or c.title(i) for i, (_b, p) in zip(idx, shots)]
                self.send({"type": "thumbs", "indices": idx, "titles": titles}, buffers=[b for b, _p in shots])
                return
            if kind == "select":
                raw = bytes(buffers[0]) if buffers else b""
                c._set_selected(np.frombuffer(raw, dtype=np.int32))
                self.selected = np.asarray(c.selected, dtype=np.int32).tobytes()
                self.status = c.status
            elif kind == "label":
                c.label_selection(str(content.get("label", "")))
                self.status = c.status
            elif kind == "save":
                c.save_selection(str(content.get("name", "")))
                self.status = c.status
            elif kind == "color":
                c.set_color(str(content.get("column") or "") or None)
            elif kind == "layout":
                c.set_layout(str(content.get("method", "")))
                self.progress = c.progress
                self.pending = c.pending_layout
            self.error = ""
        except (MlnbError, QueryError) as exc:
            self.error = str(exc)
        except OSError as exc:  # a full disk or a read-only workspace: said here, nothing claimed done
            where = f" ({exc.filename})" if exc.filename else ""
            self.error = f"Could not write to the workspace{where}: {exc.strerror or exc}. Nothing was saved."
