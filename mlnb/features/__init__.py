"""CNN features: the model zoo, the embedding engine and cache, and the
``embed`` / ``imagenet_labels`` functions (SQL and Python).

Importing this package registers the SQL functions; torch loads only when a
model is first used.
"""

from __future__ import annotations

from typing import Any

from .cache import cache
from .functions import embed, imagenet_labels

__all__ = ["cache", "embed", "embed_frame", "imagenet_labels", "list_models", "register_model"]


def list_models(pattern: str = "*") -> Any:
    """The backbones as a Polars frame (see :func:`mlnb.features.zoo.list_models`)."""
    from .zoo import list_models as _list

    return _list(pattern)


def register_model(name: str, module: Any, **kwargs: Any) -> Any:
    """Register a ``torch.nn.Module`` as a backbone (see :func:`mlnb.features.zoo.register_model`)."""
    from .zoo import register_model as _register

    return _register(name, module, **kwargs)




def embed_frame(
    frame: Any,
    column: str,
    *,
    model: str = "efficientnet_lite0",
    layer: str = "pool",
    name: str = "features",
    progress: bool | None = None,
) -> Any:
    """``frame`` with a new ``name`` column of features for the images in ``column``.

    Shows a progress bar (images/s, ETA) on long runs. Interrupting keeps the
    finished batches in the cache, so the next call continues where it stopped.
    """
    import polars as pl

    from .._report import collecting
    from ..exceptions import MlnbError
    from ..sql import to_polars
    from .engine import embed_images

    df = to_polars(frame)
    if column not in df.columns:
        import difflib

        close = difflib.get_close_matches(column, df.columns, n=3)
        raise MlnbError(f"No column {column!r} in the frame.{' Did you mean ' + ', '.join(map(repr, close)) + '?' if close else ''} Columns: {', '.join(df.columns)}")
    with collecting():
        feats, ok = embed_images(df.get_column(column).to_list(), model=model, layer=layer, progress=progress)
    series = pl.Series(name, feats, dtype=pl.Array(pl.Float32, feats.shape[1]))
    series = pl.select(pl.when(pl.Series(ok)).then(series).otherwise(None)).to_series().alias(name)
    return df.with_columns(series)
