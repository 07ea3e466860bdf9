"""CNN features: the model zoo, the embedding engine and cache, and the
``embed`` / ``imagenet_labels`` functions (SQL and Python).

Importing this package registers the SQL functions; torch loads only when a
model is first used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..config import DEFAULT_MODEL
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
    model: str = DEFAULT_MODEL,
    layer: str = "pool",
    name: str = "features",
    heads: Sequence[str] = (),
    engine: str | None = None,
    output: str | None = None,
    progress: bool | None = None,
) -> Any:
    """``frame`` with a new ``name`` column of features for the images in ``column``.

    ``heads`` names saved classifier heads to score as well: each adds a
    ``<head>`` (label) and ``<head>_proba`` (class → probability) column.
    Shows a progress bar (images/s, ETA) on long runs. Interrupting keeps the
    finished batches in the cache, so the next call continues where it stopped.

    On the Ray engine (``engine="ray"``, or ``mlnb.config.engine``) the work
    runs as a Ray Data job that writes Parquet shards under ``output``
    (default ``<workspace>/ray/...``); the result is a Polars LazyFrame over
    them, which ``%%mlsql`` queries like any frame. Running the same call
    again after an interruption computes only the missing shards.
    """
    from .._frames import to_polars
    from .._report import collecting
    from ..config import check_engine, current_engine
    from ..exceptions import MlnbError

    df = to_polars(frame)
    if column not in df.columns:
        import difflib

        close = difflib.get_close_matches(column, df.columns, n=3)
        raise MlnbError(f"No column {column!r} in the frame.{' Did you mean ' + ', '.join(map(repr, close)) + '?' if close else ''} Columns: {', '.join(df.columns)}")
    if engine is not None:
        check_engine(engine)
    scorers = _head_scorers(heads, model, layer)
    if (engine or current_engine()) == "ray" and df.height:
        from .ray_engine import run_job

        with collecting():
            job = run_job(df, column, model=model, layer=layer, name=name, scorers=scorers, output=output, progress=progress)
        if progress is not False:
            print(job)
        return job.scan()
    from .engine import embed_images, features_series

    with collecting():
        feats, ok = embed_images(df.get_column(column).to_list(), model=model, layer=layer, progress=progress)
    out = df.with_columns(features_series(name, feats, ok))
    import polars as pl

    for col, scorer in scorers.items():
        out = out.with_columns(pl.Series(col, scorer(out.get_column(name))))
    return out


def _head_scorers(heads: Sequence[str], model: str, layer: str) -> dict[str, Any]:
    """``{column: scorer}`` for saved heads (a label and a probability column each)."""
    import functools

    if isinstance(heads, str):
        heads = [heads]
    scorers: dict[str, Any] = {}
    if not heads:
        return scorers
    from ..heads import load_classifier
    from ..heads.functions import check_backbone, score

    for ref in heads:
        head = load_classifier(ref)
        check_backbone(head, model, layer)
        base = ref.split("@")[0]
        scorers[base] = functools.partial(score, head, proba=False)
        scorers[f"{base}_proba"] = functools.partial(score, head, proba=True)
    return scorers
