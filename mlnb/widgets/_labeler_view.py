"""The labeler's view: an anywidget whose ES module draws a page of thumbnails
and sends clicks, drags and keys back. It holds only synced traits; the
:class:`~mlnb.widgets.labeler.Labeler` controller owns the state.

A page travels as one trait, ``page_data`` (item ids, thumbnails keyed by id,
tags), so pictures and the ids they stand for can never arrive out of step;
every action the browser sends names the ids it acted on."""

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

    page_data = traitlets.Dict().tag(sync=True)  # token, page, n_pages, items, thumbs {id: JPEG bytes}
    classes = traitlets.List().tag(sync=True)  # [{"name", "key"}]
    counts = traitlets.List().tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    head_info = traitlets.Unicode("").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    help_text = traitlets.Unicode(KEYS_HELP).tag(sync=True)
    show_help = traitlets.Bool(False).tag(sync=True)
    focus = traitlets.Bool(False).tag(sync=True)
    thumb_size = traitlets.Int(96).tag(sync=True)
    page_size = traitlets.Int(48).tag(sync=True)
    cv_score = traitlets.Float(None, allow_none=True).tag(sync=True)

    def __init__(self, controller: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.controller = controller
        self.thumb_size = controller.thumb_size
        controller.on_change(self.refresh)
        self.on_msg(self._on_msg)
        self.refresh()

    # What the tests and the page message read.
    @property
    def items(self) -> list[dict[str, Any]]:
        return list(self.page_data.get("items", []))

    @property
    def thumbs(self) -> dict[str, bytes]:
        return dict(self.page_data.get("thumbs", {}))

    @property
    def page(self) -> int:
        return int(self.page_data.get("page", 0))

    @property
    def n_pages(self) -> int:
        return int(self.page_data.get("n_pages", 1))

    def refresh(self) -> None:
        c = self.controller
        # One message for all of it: traits set one by one reached the browser one by one, and
        # between "counts" and "page_data" the view drew the new counts over the old page (the
        # tile just labelled still shown selected and unlabelled; a key pressed then went to it).
        with c.lock, self.hold_sync():
            self.page_size = c.page_size
            message = c.page_message()
            self.classes = [{"name": n, "key": k} for n, k in zip(c.classes, c.class_keys())]
            self.counts = c.counts().to_dicts()
            self.status = c.status
            self.head_info = c.head_info
            self.show_help = c.show_help
            self.focus = c.focus
            self.cv_score = c.cv_score
            self.page_data = message

    def _on_msg(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        """Messages the browser sends: click, drag, key, label, mark, page, rank, add_class, undo, redo,
        zoom, page_size. Actions on items carry the ids the view drew (``item``, ``items``)."""
        c = self.controller
        kind = content.get("type")
        items = content.get("items")
        items = [str(i) for i in items] if isinstance(items, list) else None
        try:
            with c.lock:
                if isinstance(content.get("clicks"), int):
                    c.clicks_seen = max(c.clicks_seen, content["clicks"])
                if kind == "click":
                    item = content.get("item")
                    c.click(int(content.get("pos", 0)), shift=bool(content.get("shift")), ctrl=bool(content.get("ctrl")),
                            item=None if item is None else str(item))
                elif kind == "drag":
                    ids = content.get("items")
                    if ids is not None:
                        c.drag(0, 0, items=(str(ids[0]), str(ids[-1])))
                    else:
                        c.drag(int(content["start"]), int(content["end"]))
                elif kind == "key":
                    cursor = content.get("cursor")
                    c.key(str(content["key"]), ctrl=bool(content.get("ctrl")), shift=bool(content.get("shift")),
                          items=items, cursor=None if cursor is None else str(cursor))
                elif kind == "label":
                    c.label(content["cls"], items)
                elif kind == "mark":
                    c.mark(str(content["kind"]), items)
                elif kind == "page":
                    c.goto_page(int(content["page"]))
                elif kind == "rank":
                    c.apply_ranking()
                elif kind == "zoom":
                    # Thumbnails are made at 2x the shown size at most, so zooming needs no new pixels until then.
                    self.thumb_size = int(max(32, min(384, self.thumb_size * float(content.get("factor", 1.0)))))
                elif kind == "page_size":
                    size = int(content["size"])
                    if size < 1:
                        raise MlnbError("A page holds at least one item.")
                    c.page_size = size
                    c.page = c.cursor // size
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
            self.refresh()
