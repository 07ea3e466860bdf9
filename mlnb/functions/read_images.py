"""``read_images(pattern)``: a folder of images as a table (path, size, label, modified)."""

from __future__ import annotations

from typing import Any

from ._registry import Param, table_function

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "gif", "bmp", "tif", "tiff", "webp")

_SQL = rf"""
SELECT
    filename AS path,
    size,
    NULLIF(regexp_extract(filename, '([^/\\]+)[/\\][^/\\]+$', 1), '') AS label,
    last_modified
FROM read_blob(pattern)
WHERE regexp_matches(lower(filename), '\.({"|".join(IMAGE_EXTENSIONS)})$')
ORDER BY filename
"""


def _read_images(pattern: str) -> Any:
    """Python twin: the same SQL, through the session."""
    from ..sql import get_session

    return get_session().run("SELECT * FROM read_images($pattern)", {"pattern": str(pattern)})


read_images = table_function(
    "read_images",
    _SQL,
    params=[Param("pattern", "VARCHAR")],
    returns="TABLE(path VARCHAR, size BIGINT, label VARCHAR, last_modified TIMESTAMP)",
    doc=(
        "List image files matching a glob (``photos/**/*.jpg``) as a table: path, size in bytes, "
        "label (the parent folder's name, the ImageFolder convention) and modification time.\n\n"
        "Only the file listing is read, never the pixels. Files that are not images by extension "
        "(jpg, jpeg, png, gif, bmp, tif, tiff, webp) are skipped."
    ),
    impl=_read_images,
)
