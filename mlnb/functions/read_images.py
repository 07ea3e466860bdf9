"""``read_images(pattern)``: a folder of images as a table (path, size, label, modified).

A pattern inside an archive (``zip://**/*.jpg::photos.zip``, ``tar://train/*/*.png::data.tar``,
``archive+photos.zip#**/*.jpg``) lists the archive's members instead of files: each row's
path reads that member. DuckDB's ``read_blob`` cannot see inside archives, so those rows
come from :func:`archive_members`, which opens the archive once (:mod:`mlnb._archives`).
"""

from __future__ import annotations

from typing import Any

from ._registry import Param, function, table_function

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "gif", "bmp", "tif", "tiff", "webp")

_IS_IMAGE = rf"""'\.({"|".join(IMAGE_EXTENSIONS)})$'"""
_LABEL = r"""'([^/\\]+)[/\\][^/\\]+$'"""
_ARCHIVE = r"""'^(zip|tar)://.*::|^archive\+'"""

_SQL = rf"""
SELECT
    path,
    size,
    NULLIF(regexp_extract(regexp_replace(path, '(^archive\+.*#|^(zip|tar)://)|::.*$', '', 'g'), {_LABEL}, 1), '') AS label,
    last_modified
FROM (
    SELECT filename AS path, size, last_modified
    FROM read_blob(CASE WHEN regexp_matches(lower(pattern), {_ARCHIVE}) THEN '' ELSE pattern END)
    UNION ALL
    SELECT m.path, m.size, m.last_modified
    FROM (SELECT unnest(archive_members(pattern)) AS m)
)
WHERE regexp_matches(lower(regexp_replace(path, '::.*$', '')), {_IS_IMAGE})
ORDER BY path
"""


@function(returns="STRUCT(path VARCHAR, size BIGINT, last_modified TIMESTAMP)[]", types={"pattern": "VARCHAR"}, side_effects=True)
def archive_members(pattern: Any) -> Any:
    """The files inside a zip or tar archive that match a glob, as a list of (path, size,
    last_modified); each path reads that member. An empty list for a pattern that is not
    inside an archive.

    >>> # SELECT unnest(archive_members('zip://**/*.jpg::photos.zip'))
    """
    from .._archives import list_members, split_pattern

    out = []
    for p in pattern.to_pylist():
        rows = list_members(p) if p is not None and split_pattern(p) is not None else []
        out.append([{"path": src, "size": size, "last_modified": modified} for src, size, modified in rows])
    return out



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
