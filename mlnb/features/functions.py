"""``embed`` and ``imagenet_labels``: one definition each, for SQL and Python."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .._report import collecting
from ..config import DEFAULT_MODEL
from ..functions import IMAGE, function
from .ray_engine import statement_on_ray


def _embed_type(options: dict[str, Any]) -> str | None:
    from .engine import feature_dim

    return f"FLOAT[{feature_dim(options['model'], options['layer'])}]"


@function(returns="FLOAT[]", types={"image": IMAGE}, specialise=_embed_type, offload=statement_on_ray)
def embed(image: Any, *, model: str = DEFAULT_MODEL, layer: str = "pool") -> Any:
    """Feature vector of an image from a pretrained CNN (default: its penultimate pooled layer).

    ``image`` is a path, URL, archive member (``zip://a.jpg::photos.zip``,
    ``archive+file:///photos.zip#a.jpg``) or image bytes; in Python also a PIL
    image or NumPy array. Unreadable images give NULL and one summary warning.
    Results are cached in the workspace. In SQL the result is ``FLOAT[d]``
    when ``model`` and ``layer`` are literals, so ``array_cosine_similarity``
    works directly. From Python, ``engine="ray"`` runs it on a Ray cluster
    (``mlnb.config.engine = "ray"`` / ``SET mlnb_engine = 'ray'`` for all calls).

    Examples
    --------
    >>> import mlnb
    >>> mlnb.embed("photos/cat.jpg").shape  # doctest: +SKIP
    (1280,)
    >>> # SELECT path FROM read_images('photos/*.jpg')
    >>> #   ORDER BY array_cosine_similarity(embed(path), embed('query.jpg')) DESC LIMIT 10
    """
    import pyarrow as pa

    from .engine import embed_images

    with collecting():
        feats, ok = embed_images(list(image), model=model, layer=layer)
    dim = feats.shape[1]
    values = pa.array(feats.reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(values, dim, mask=pa.array(~ok))


@functools.lru_cache(maxsize=1)
def imagenet_categories() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k class names (shipped with torchvision; no download)."""
    from torchvision.models import ResNet18_Weights

    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


@function(
    returns="STRUCT(label VARCHAR, probability FLOAT)[]",
    types={"image": IMAGE},
    offload=statement_on_ray,
)
def imagenet_labels(image: Any, *, k: int = 5, model: str = DEFAULT_MODEL) -> Any:
    """Top-``k`` ImageNet classes of an image, with human-readable names and probabilities.

    Reuses the cached penultimate features of ``embed`` and applies the model's
    ImageNet classifier.

    Examples
    --------
    >>> import mlnb
    >>> mlnb.imagenet_labels("chelsea.png", k=1)  # doctest: +SKIP
    [{'label': 'Egyptian cat', 'probability': 0.62}]
    """
    import pyarrow as pa

    from .engine import embed_images, get_loaded

    k = max(1, min(int(k), 1000))
    with collecting():
        feats, ok = embed_images(list(image), model=model, layer="pool")
    names = imagenet_categories()
    out: list[Any] = [None] * len(ok)
    if ok.any():
        logits = get_loaded(model).logits(feats[ok])
        logits = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        top = np.argsort(-probs, axis=1)[:, :k]
        for row, (i, idx) in enumerate(zip(np.flatnonzero(ok), top)):
            out[i] = [{"label": names[j], "probability": float(probs[row, j])} for j in idx]
    typ = pa.list_(pa.struct([("label", pa.string()), ("probability", pa.float32())]))
    return pa.array(out, type=typ)
