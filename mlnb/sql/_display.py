"""HTML for result frames: a table a person can read.

Floats keep four significant digits, embeddings show their type and first values
(``FLOAT[1280] [0.12, 0.03, …]``), top-k lists read ``Egyptian cat 0.34, tabby 0.21, …``,
and every frame shows ``mlnb.config.display_limit`` rows (``%config MlsqlMagic.displaylimit``).
Thumbnails are drawn only for columns of images that are there: a column of bare file
names that resolve to nothing stays text, and URLs are not fetched while a table is drawn
unless ``mlnb.config.remote_thumbnails = True``.
"""

from __future__ import annotations

import base64
import html
import math
import os
from typing import Any

from ..functions.read_images import IMAGE_EXTENSIONS

_THUMB = 64
_REMOTE = ("http://", "https://", "s3://", "gs://", "gcs://", "az://", "abfs://", "hf://")
_SQL_NAMES = {
    "Float32": "FLOAT", "Float64": "DOUBLE", "Int8": "TINYINT", "Int16": "SMALLINT", "Int32": "INTEGER", "Int64": "BIGINT",
    "UInt8": "UTINYINT", "UInt16": "USMALLINT", "UInt32": "UINTEGER", "UInt64": "UBIGINT", "String": "VARCHAR",
    "Boolean": "BOOLEAN", "Binary": "BLOB",
}  # fmt: skip


def image_columns(df: Any) -> list[str]:
    """Columns of images that are there: encoded image bytes, or image paths/URLs of which
    at least one sampled value resolves (a URL counts; it is shown as a link, not fetched)."""
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
        elif all(_looks_like_image_path(v) for v in sample) and any(_resolves(v) for v in sample):
            out.append(name)
    return out


def _looks_like_image_path(value: str) -> bool:
    if value.startswith("data:image/"):
        return True
    base = value.lower().split("?", 1)[0].split("#", 1)[-1].split("::", 1)[0]
    if "::" in value.lower():  # an archive member: the member's name carries the extension
        base = value.lower().split("::", 1)[1]
    for ext in (".gz", ".bz2", ".xz", ".zst"):
        if base.endswith(ext):
            base = base[: -len(ext)]
    return base.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS


def _is_remote(value: str) -> bool:
    return value.lower().startswith(_REMOTE)


def _resolves(value: str) -> bool:
    """Whether a path names something that is there (no network: a URL is taken on trust)."""
    if _is_remote(value) or value.startswith("data:image/"):
        return True
    return os.path.exists(value.split("::", 1)[0])


def to_html(df: Any, *, limit: int = 20, remote_thumbnails: bool = False) -> str:
    """An HTML table of the first ``limit`` rows; image columns show thumbnails."""
    imgs = set(image_columns(df))
    n = df.height
    shown = df.head(limit)
    head = "".join(
        f"<th>{html.escape(str(c))}<br><small style='font-weight:normal;opacity:.6'>{html.escape(type_name(t))}</small></th>"
        for c, t in df.schema.items()
    )
    dtypes = list(df.schema.values())
    rows = []
    remote_skipped = False
    for row in shown.iter_rows():
        cells = []
        for name, dtype, value in zip(df.columns, dtypes, row):
            if name in imgs and value is not None:
                if isinstance(value, str) and _is_remote(value) and not remote_thumbnails:
                    remote_skipped = True
                    cells.append(f"<td>{_link(value)}</td>")
                else:
                    cells.append(f"<td>{_thumb_cell(value)}</td>")
            else:
                cells.append(f"<td>{html.escape(format_value(value, dtype))}</td>" if value is not None else f"<td>{_NULL}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    notes = []
    if n > shown.height:
        notes.append(f"{n - shown.height:,} more rows not shown (the frame holds all {n:,}; %config MlsqlMagic.displaylimit = N shows more).")
    if remote_skipped:
        notes.append("URL thumbnails are not fetched while a table is drawn: mlnb.config.remote_thumbnails = True fetches them.")
    more = "".join(f"<p><small>{html.escape(t)}</small></p>" for t in notes)
    return (
        f"<div class='mlnb-result'><small>shape: ({n:,}, {df.width})</small>"
        f"<table class='dataframe'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}</div>"
    )


_NULL = "<i style='opacity:.5'>null</i>"


def type_name(dtype: Any) -> str:
    """DuckDB's name for a Polars type: ``FLOAT[1280]``, ``STRUCT(label, probability)[]``."""
    import polars as pl

    if isinstance(dtype, pl.Array):
        return f"{type_name(dtype.inner)}[{dtype.size}]"
    if isinstance(dtype, pl.List):
        return f"{type_name(dtype.inner)}[]"
    if isinstance(dtype, pl.Struct):
        return "STRUCT(" + ", ".join(f.name for f in dtype.fields) + ")"
    base = type(dtype).__name__ if not isinstance(dtype, type) else dtype.__name__
    return _SQL_NAMES.get(base, str(dtype))


def format_number(v: float) -> str:
    """Four significant digits: ``0.0004445``, ``0.3412``, ``1234.6``, ``1.235e+09``."""
    if isinstance(v, bool) or not isinstance(v, float):
        return str(v)
    if math.isnan(v) or math.isinf(v):
        return str(v)
    if v == 0:
        return "0"
    mag = abs(v)
    if mag >= 1e7 or mag < 1e-4:
        return f"{v:.3e}"
    digits = max(0, 3 - int(math.floor(math.log10(mag))))
    text = f"{v:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_value(value: Any, dtype: Any = None, *, width: int = 120) -> str:
    """One cell as a person reads it (see the module docstring)."""
    import polars as pl

    if value is None:
        return "null"
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, (bytes, bytearray)):
        return f"{len(value):,} bytes"
    if isinstance(value, dict):
        text = ", ".join(f"{k}: {format_value(v)}" for k, v in value.items())
    elif isinstance(value, (list, tuple)) or hasattr(value, "to_list"):
        items = value.to_list() if hasattr(value, "to_list") else list(value)
        inner = getattr(dtype, "inner", None)
        if items and all(isinstance(x, dict) for x in items if x is not None):
            text = _topk(items)
        elif inner is not None and inner.is_numeric() or items and all(isinstance(x, (int, float)) for x in items if x is not None):
            name = type_name(dtype) if isinstance(dtype, pl.Array) else f"{type_name(inner) if inner is not None else 'LIST'}[{len(items)}]"
            shown = ", ".join("null" if x is None else format_number(float(x)) if isinstance(x, float) else str(x) for x in items[:3])
            text = f"{name} [{shown}{', …' if len(items) > 3 else ''}]"
        else:
            text = "[" + ", ".join(format_value(x) for x in items[:5]) + (", …" if len(items) > 5 else "") + "]"
    else:
        text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _topk(items: list[Any]) -> str:
    """``[{label, probability}, ...]`` -> ``Egyptian cat 0.34, tabby 0.21, …``."""
    parts = []
    for it in items[:3]:
        if it is None:
            parts.append("null")
            continue
        words = [str(v) for v in it.values() if isinstance(v, str)]
        nums = [format_number(round(v, 2)) if isinstance(v, float) else str(v) for v in it.values() if isinstance(v, (int, float))]
        parts.append(" ".join(words + nums) if words or nums else format_value(it))
    return ", ".join(parts) + (", …" if len(items) > 3 else "")


def _link(url: str) -> str:
    name = url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0] or url
    href = html.escape(url, quote=True)
    if url.lower().startswith(("http://", "https://")):
        return f"<a href='{href}' title='{href}' target='_blank' rel='noopener'>🌐 {html.escape(name)}</a>"
    return f"<span title='{href}'>🌐 {html.escape(name)}</span>"


def _thumb_cell(value: Any) -> str:
    from ..exceptions import ImageLoadError
    from ..images import thumbnail

    try:
        data = thumbnail(value, _THUMB)
    except ImageLoadError as exc:
        shown = format_value(value) if isinstance(value, str) else exc.reason
        return f"<span title='{html.escape(exc.reason, quote=True)}'>⚠ {html.escape(shown)} ({html.escape(exc.reason)})</span>"
    b64 = base64.b64encode(data).decode()
    title = html.escape(value, quote=True) if isinstance(value, str) else f"{len(value)} bytes"
    return f"<img src='data:image/jpeg;base64,{b64}' title='{title}' style='max-height:{_THUMB}px'/>"


def html_formatter(df: Any) -> str | None:
    """IPython formatter for Polars frames: every frame shows ``config.display_limit`` rows, readably."""
    from ..config import config

    return to_html(df, limit=config.display_limit, remote_thumbnails=bool(getattr(config, "remote_thumbnails", False)))
