"""Each saved head is callable from SQL: ``name(features)`` gives the label,
``name_proba(features)`` a map of class → probability; ``"name@2"(...)`` a
given version. The functions find the head in the workspace when called."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..exceptions import QueryError
from ..functions import Function, Param, registry
from . import store

_EMBED_MODEL = re.compile(r"\bembed\s*\((?P<args>.*)\)", re.IGNORECASE | re.DOTALL)
_MODEL_OPT = re.compile(r"\bmodel\s*:=\s*'(?P<m>[^']*)'", re.IGNORECASE)
_LAYER_OPT = re.compile(r"\blayer\s*:=\s*'(?P<l>[^']*)'", re.IGNORECASE)


def _matrix(features: Any, head: Any) -> tuple[np.ndarray, np.ndarray]:
    import polars as pl

    from ._data import feature_matrix

    return feature_matrix(pl.Series(features), expect_dim=head.meta["dim"])


def check_backbone(head: Any, model: str, layer: str) -> None:
    """Refuse to use a head on features of another backbone or layer than it was trained on."""
    trained_model, trained_layer = head.meta.get("feature_model"), head.meta.get("layer") or "pool"
    if trained_model and (model, layer) != (trained_model, trained_layer):
        raise QueryError(
            f"Classifier {head.ref} was trained on {trained_model} features (layer {trained_layer}) "
            f"but is called on {model} (layer {layer}): use model '{trained_model}', layer '{trained_layer}' "
            f"(in SQL: embed(..., model := '{trained_model}', layer := '{trained_layer}'))."
        )


def _checker(ref: str):
    def check(args_sql: str) -> None:
        """A head called on embed() of another backbone or layer is refused before it runs."""
        from .head import load_classifier

        m = _EMBED_MODEL.search(args_sql)
        if not m:
            return
        mm = _MODEL_OPT.search(m.group("args"))
        ml = _LAYER_OPT.search(m.group("args"))
        check_backbone(load_classifier(ref), mm.group("m") if mm else "efficientnet_lite0", ml.group("l") if ml else "pool")

    return check


def score(head: Any, features: Any, *, proba: bool = False) -> Any:
    """A head applied to a column of feature vectors: labels (or class → probability
    maps), NULL for NULL features. Shared by the SQL scorers and Ray workers."""
    import pyarrow as pa

    X, ok = _matrix(features, head)
    classes = [str(c) for c in head.meta["classes"]]
    out: list[Any] = [None] * len(ok)
    if ok.any():
        p = head.estimator.predict_proba(X[ok])
        for i, row in zip(np.flatnonzero(ok), p):
            out[i] = list(zip(classes, row.astype(float))) if proba else classes[int(np.argmax(row))]
    typ = pa.map_(pa.string(), pa.float32()) if proba else pa.string()
    return pa.array(out, type=typ)


def _make(ref: str, proba: bool) -> Function:
    def impl(features: Any) -> Any:
        from .head import load_classifier

        return score(load_classifier(ref), features, proba=proba)

    base, _, ver = ref.partition("@")
    name = f"{base}_proba" if proba else base
    if ver:
        name = f"{base}@{ver}_proba" if proba else f"{base}@{ver}"
    what = "class probabilities (a map class -> probability)" if proba else "the predicted class"
    fn = Function(
        name=name,
        impl=impl,
        params=(Param("features", "FLOAT[]"),),
        returns="MAP(VARCHAR, FLOAT)" if proba else "VARCHAR",
        doc=f"Classifier head {ref}: {what} for a feature vector (NULL for NULL features).",
    )
    fn.check = _checker(ref)
    return fn


def register_head_functions(name: str, version: int | None = None, *, prune: bool = False) -> None:
    """Register ``name``, ``name_proba`` and the versioned ``name@k`` functions (of ``version``,
    or of every saved version). ``prune`` then removes those of versions no longer saved;
    the new functions are in place before any old one goes."""
    vs = store.versions(name) if version is None else [version]
    for v in vs:
        for proba in (False, True):
            registry.add(_make(f"{name}@{v}", proba), replace=True)
    for proba in (False, True):
        registry.add(_make(name, proba), replace=True)
    if prune:
        keep = {str(v) for v in store.versions(name)}
        unregister_head_functions(name, keep=keep)


def unregister_head_functions(name: str, *, keep: set[str] | None = None) -> None:
    """Remove ``name``'s functions; with ``keep``, only those of versions not in it."""
    for fn in list(registry):
        base, _, ver = fn.name.removesuffix("_proba").partition("@")
        if base == name and fn.doc.startswith("Classifier head"):
            if keep is not None and (not ver or ver in keep):
                continue
            registry.remove(fn.name)


def register_saved_heads() -> None:
    """Make every head of the current workspace callable (a new kernel finds them again)."""
    for n in store.names():
        register_head_functions(n)
