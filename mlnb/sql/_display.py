"""HTML for result frames: a readable table, with thumbnails for image columns."""

from __future__ import annotations

import base64
import html
from typing import Any

from ..functions.read_images import IMAGE_EXTENSIONS

_NAME_HINTS = ("path", "image", "img", "file", "filename", "url", "uri", "photo")
_THUMB = 64


def image_columns(df: Any) -> list[str]:
    """Columns that hold image paths/URLs or encoded image bytes."""
    import polars as pl

    from ..images import looks_like_image_bytes

    out = []
    for name, dtype in df.schema.items():
        if dtype not in (pl.String, pl.Binary):
            continue
        sample = df.get_column(name).drop_nulls().head(5).to_list()
        if not sample:
            continue
        if dtype == pl.Binary:
            if all(looks_like_image_bytes(v) for v in sample):
                out.append(name)
        elif all(_looks_like_image_path(v) for v in sample):
            out.append(name)
    return out


def _looks_like_image_path(value: str) -> bool:
    base = value.lower().split("?", 1)[0].split("#", 1)[-1].split("::", 1)[0]
    for ext in (".gz", ".bz2", ".xz", ".zst"):
        if base.endswith(ext):
            base = base[: -len(ext)]
    return base.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS


def to_html(df: Any, *, limit: int = 20) -> str:
    """An HTML table of the first ``limit`` rows; image columns show thumbnails."""
    imgs = set(image_columns(df))
    n = df.height
    shown = df.head(limit)
    head = "".join(
        f"<th>{html.escape(str(c))}<br><small style='font-weight:normal;opacity:.6'>{html.escape(str(t))}</small></th>"
        for c, t in df.schema.items()
    )
    rows = []
    for row in shown.iter_rows():
        cells = []
        for (name, value) in zip(df.columns, row):
            cells.append(f"<td>{_thumb_cell(value) if name in imgs and value is not None else _cell(value)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = f"<p><small>{n - shown.height:,} more rows not shown (the frame holds all {n:,}).</small></p>" if n > shown.height else ""
    return (
        f"<div class='mlnb-result'><small>shape: ({n:,}, {df.width})</small>"
        f"<table class='dataframe'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}</div>"
    )


def _cell(value: Any) -> str:
    if value is None:
        return "<i style='opacity:.5'>null</i>"
    text = repr(value) if isinstance(value, (bytes, bytearray)) else str(value)
    if len(text) > 120:
        text = text[:117] + "…"
    return html.escape(text)


def _thumb_cell(value: Any) -> str:
    from ..exceptions import ImageLoadError
    from ..images import thumbnail

    try:
        data = thumbnail(value, _THUMB)
    except ImageLoadError as exc:
        return f"<span title='{html.escape(exc.reason)}'>⚠ {_cell(value if isinstance(value, str) else exc.reason)}</span>"
    b64 = base64.b64encode(data).decode()
    title = html.escape(value) if isinstance(value, str) else f"{len(value)} bytes"
    return f"<img src='data:image/jpeg;base64,{b64}' title='{title}' style='max-height:{_THUMB}px'/>"


def html_formatter(df: Any) -> str | None:
    """IPython formatter for Polars frames: thumbnails when there are image columns."""
    from ..config import config

    if image_columns(df):
        return to_html(df, limit=config.display_limit)
    return df._repr_html_()
