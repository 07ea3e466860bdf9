"""The explorer's view: a canvas scatter (coordinates and colours sent once as
float32 buffers), hover previews fetched from the kernel on demand, lasso
selections sent back as point indices, a linked grid of the selected images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets

from ..exceptions import MlnbError


class ExplorerView(anywidget.AnyWidget):
    _esm = Path(__file__).with_name("explorer.js")
    _css = Path(__file__).with_name("explorer.css")

    xy = traitlets.Bytes(b"").tag(sync=True)  # float32 coordinates, `dims` per point, interleaved
    dims = traitlets.Int(2).tag(sync=True)
    codes = traitlets.Bytes(b"").tag(sync=True)  # float32 category code or value per point
    categories = traitlets.List().tag(sync=True)
    color_columns = traitlets.List().tag(sync=True)
    color = traitlets.Unicode("").tag(sync=True)
    n_selected = traitlets.Int(0).tag(sync=True)
    hover_info = traitlets.Dict().tag(sync=True)
    hover_thumb = traitlets.Bytes(b"").tag(sync=True)
    grid = traitlets.List().tag(sync=True)  # JPEG bytes of the first selected images
    status = traitlets.Unicode("").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)

    def __init__(self, controller: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.controller = controller
        c = controller
        self.dims = 3 if c.coords.shape[1] >= 3 else 2
        self.xy = np.ascontiguousarray(c.coords[:, : self.dims], dtype=np.float32).tobytes()
        self.color_columns = [n for n in c.frame.columns if n != c.features]
        self._set_color(c.color or "")
        self.status = c.status
        self.on_msg(self._on_msg)

    def _set_color(self, column: str) -> None:
        cats, values = self.controller.color_values(column or None)
        self.categories = cats
        self.codes = np.ascontiguousarray(values, dtype=np.float32).tobytes()
        self.color = column

    def _on_msg(self, _w: Any, content: dict[str, Any], _buffers: Any) -> None:
        c = self.controller
        kind = content.get("type")
        try:
            if kind == "hover":
                info = c.hover(int(content["index"]))
                self.hover_thumb = info["thumb"]
                self.hover_info = {"index": info["index"], "fields": info["fields"]}
            elif kind == "select":
                c.select(content.get("indices", []))
                self._after_selection()
            elif kind == "label":
                c.label_selection(str(content["label"]))
                self.status = c.status
            elif kind == "color":
                self._set_color(str(content.get("column") or ""))
            self.error = ""
        except MlnbError as exc:
            self.error = str(exc)

    def _after_selection(self) -> None:
        from ..exceptions import ImageLoadError
        from ..images import thumbnail

        c = self.controller
        self.n_selected = len(c.selected)
        thumbs = []
        if c.image is not None:
            for v in c.selection.get_column(c.image).head(24).to_list():
                try:
                    thumbs.append(thumbnail(v, 64))
                except ImageLoadError:
                    thumbs.append(b"")
        self.grid = thumbs
        self.status = f"{len(c.selected)} selected (explorer.selection)"
