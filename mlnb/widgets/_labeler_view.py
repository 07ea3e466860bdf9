"""The labeler's view: an anywidget whose ES module draws a page of thumbnails
and sends clicks, drags and keys back. It holds only synced traits; the
:class:`~mlnb.widgets.labeler.Labeler` controller owns the state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anywidget
import traitlets

from ..exceptions import MlnbError
from .labeler import KEYS_HELP


class LabelerView(anywidget.AnyWidget):
    _esm = Path(__file__).with_name("labeler.js")
    _css = Path(__file__).with_name("labeler.css")

    items = traitlets.List().tag(sync=True)
    thumbs = traitlets.List().tag(sync=True)  # JPEG bytes, sent as binary buffers
    classes = traitlets.List().tag(sync=True)
    counts = traitlets.List().tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    help_text = traitlets.Unicode(KEYS_HELP).tag(sync=True)
    show_help = traitlets.Bool(False).tag(sync=True)
    focus = traitlets.Bool(False).tag(sync=True)
    page = traitlets.Int(0).tag(sync=True)
    n_pages = traitlets.Int(1).tag(sync=True)
    thumb_size = traitlets.Int(96).tag(sync=True)
    page_size = traitlets.Int(48).tag(sync=True)
    cv_score = traitlets.Float(None, allow_none=True).tag(sync=True)

    def __init__(self, controller: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.controller = controller
        self.thumb_size = controller.thumb_size
        self._shown_page: int | None = None
        controller.on_change(self.refresh)
        self.on_msg(self._on_msg)
        self.refresh()

    def refresh(self) -> None:
        c = self.controller
        n = len(c.order)
        self.n_pages = max(1, -(-n // c.page_size))
        self.page_size = c.page_size
        if c.page != self._shown_page:
            # Thumbnails travel only when the page changes: made once in the kernel, sent as binary.
            self.thumbs = c.thumbnails(c.page)
            self._shown_page = c.page
        self.items = c.page_items(c.page)
        self.page = c.page
        self.classes = list(c.classes)
        self.counts = c.counts().to_dicts()
        self.status = c.status
        self.show_help = c.show_help
        self.focus = c.focus
        self.cv_score = c.cv_score

    def _on_msg(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        """Messages the browser sends: click, drag, key, label, mark, page, add_class, undo, redo."""
        c = self.controller
        kind = content.get("type")
        try:
            if kind == "click":
                c.click(int(content["pos"]), shift=bool(content.get("shift")), ctrl=bool(content.get("ctrl")))
            elif kind == "drag":
                c.drag(int(content["start"]), int(content["end"]))
            elif kind == "key":
                c.key(str(content["key"]), ctrl=bool(content.get("ctrl")), shift=bool(content.get("shift")))
            elif kind == "label":
                c.label(content["cls"])
            elif kind == "mark":
                c.mark(str(content["kind"]))
            elif kind == "page":
                c.page = max(0, min(self.n_pages - 1, int(content["page"])))
                self.refresh()
            elif kind == "zoom":
                # Thumbnails are made at 2x the shown size at most, so zooming needs no new pixels until then.
                self.thumb_size = int(max(32, min(384, self.thumb_size * float(content.get("factor", 1.0)))))
            elif kind == "page_size":
                size = int(content["size"])
                if size < 1:
                    raise MlnbError("A page holds at least one item.")
                c.page_size = size
                c.page = c.cursor // size
                self._shown_page = None
                self.refresh()
            elif kind == "add_class":
                c.add_class(str(content["name"]))
            elif kind == "undo":
                c.undo()
            elif kind == "redo":
                c.redo()
            self.error = ""
        except MlnbError as exc:
            # Said in the widget's own area; nothing half-done: the store was written first or not at all.
            self.error = str(exc)
