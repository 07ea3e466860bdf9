"""Each saved head is callable from SQL: ``name(features)`` gives the label,
``name_proba(features)`` a map of class → probability; ``"name@2"(...)`` a
given version. A regressor's ``name(features)`` gives a DOUBLE.

The experiment kept with each head is a SQL table too: ``classifier_folds('name')``,
``classifier_confusion('name')`` and ``regressor_folds('name')`` (Python twins:
``mlnb.heads.classifier_folds`` ..., and ``Head.folds()`` / ``Head.confusion()``).

Heads belong to the workspace in use: the registry asks :class:`HeadResolver` for
a name it does not know when a statement runs, and the answer comes from the
current workspace's head store — after ``mlnb.config.workspace = other`` every
head listed there is callable (even one another process saved a moment ago)
and none of the old workspace's is.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import DEFAULT_MODEL
from ..exceptions import MlnbError, QueryError
from ..functions import Function, Param, registry
from . import store

if TYPE_CHECKING:
    from ..sql._parse import Call, Statement


def model_weights(model: str | None) -> str | None:
    """The sha256 of a workspace model's weights (``CREATE MODEL``), or None (a built-in model, none, or
    one that cannot be read): kept with a head trained on its features, so that a head is not used
    on the features of weights that replaced them (``CREATE OR REPLACE MODEL``)."""
    if not model:
        return None
    from ..features import _user_models
    from ..features.zoo import _REGISTRY

    if model in _REGISTRY or not isinstance(model, str) or not model.isidentifier():
        return None
    try:
        sha = _user_models.read_model_spec(model).get("sha256")
    except (MlnbError, OSError, ValueError):
        return None
    return sha if isinstance(sha, str) else None


def check_backbone(head: Any, model: str, layer: str) -> None:
    """Refuse to use a head on features of another backbone or layer than it was trained on, or on
    a workspace model whose weights were replaced since."""
    trained_model, trained_layer = head.meta.get("feature_model"), head.meta.get("layer") or "pool"
    kind = "Regressor" if head.meta.get("kind") == "regressor" else "Classifier"
    if trained_model and (model, layer) != (trained_model, trained_layer):
        raise QueryError(
            f"{kind} {head.ref} was trained on {trained_model} features (layer {trained_layer}) "
            f"but is called on {model} (layer {layer}): use model '{trained_model}', layer '{trained_layer}' "
            f"(in SQL: embed(..., model := '{trained_model}', layer := '{trained_layer}'))."
        )
    trained_sha = head.meta.get("feature_model_sha256")
    now = model_weights(model) if trained_sha else None
    if trained_sha and now and now != trained_sha:
        raise QueryError(
            f"{kind} {head.ref} was trained on the features of model {model} with weights {trained_sha[:12]}, but "
            f"{model} now has other weights ({now[:12]}, from CREATE OR REPLACE MODEL): its features no longer fit "
            f"this head. Train {head.name} again on the new features (CREATE OR REPLACE {kind.upper()} {head.name} ...)."
        )


def _checker(ref: str):
    def check(stmt: Statement, call: Call) -> None:
        """A head called on embed() of another backbone or layer is refused before the statement runs."""
        from .head import load_head

        for inner in stmt.calls_inside(call):
            if inner.name != "embed" or stmt.group[inner.index] != call.open:
                continue
            opts = stmt.literal_options(inner) or {}
            check_backbone(load_head(ref), str(opts.get("model", DEFAULT_MODEL)), str(opts.get("layer", "pool")))

    return check


def vectors(features: Any, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``(X[n, dim] float32, ok[n])`` from an Arrow column of vectors. ``FLOAT[dim]`` (what
    embed() gives, and what a head's SQL function takes) is read straight from its values
    buffer; anything else goes through the one frame-column reader, ``feature_matrix``."""
    import pyarrow as pa

    if isinstance(features, pa.ChunkedArray):
        features = features.chunk(0) if features.num_chunks == 1 else features.combine_chunks()
    if not (isinstance(features, pa.Array) and pa.types.is_fixed_size_list(features.type) and features.type.list_size == dim):
        import polars as pl

        from ._data import feature_matrix

        return feature_matrix(pl.Series(features), expect_dim=dim)
    n = len(features)
    ok = ~np.asarray(features.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    # The values buffer already is the (n, dim) matrix, null rows included as slots: no copy for float32.
    values = features.values.slice(features.offset * dim, n * dim)
    if values.null_count:
        values = values.fill_null(np.nan)
    X = values.to_numpy(zero_copy_only=False).reshape(n, dim)
    if X.dtype != np.float32:
        X = X.astype(np.float32)
    # One pass: a NaN or inf anywhere in a row makes its sum non-finite.
    return X, ok & np.isfinite(X.sum(axis=1))


def score(head: Any, features: Any, *, proba: bool = False) -> Any:
    """A head applied to a column of feature vectors: labels (or class → probability
    maps), NULL for NULL features. Shared by the SQL scorers and Ray workers."""
    import pyarrow as pa

    X, ok = vectors(features, head.meta["dim"])
    classes = np.array([str(c) for c in head.meta["classes"]], dtype=object)
    n, k = len(ok), len(classes)
    rows = np.flatnonzero(ok)
    if len(rows) == n:
        p = head.estimator.predict_proba(X)  # every row has features: no copy of the block
    else:
        p = head.estimator.predict_proba(X[rows]) if len(rows) else np.zeros((0, k))
    if not proba:
        idx = np.zeros(n, dtype=np.int32)
        if len(rows):
            idx[rows] = np.argmax(p, axis=1)
        return pa.array(classes, type=pa.string()).take(pa.array(idx, mask=~ok))
    # One map per row: offsets into flat key / value arrays (k entries for each scored row).
    counts = np.where(ok, k, 0)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    keys = pa.array(np.tile(classes, len(rows)), type=pa.string())
    values = pa.array(np.asarray(p, dtype=np.float32).reshape(-1), type=pa.float32())
    return pa.MapArray.from_arrays(pa.array(offsets, type=pa.int32(), mask=None), keys, values, mask=pa.array(~ok))


def score_regression(head: Any, features: Any) -> Any:
    """A regressor applied to a column of feature vectors: DOUBLE, NULL for NULL features."""
    import pyarrow as pa

    X, ok = vectors(features, head.meta["dim"])
    out = np.zeros(len(ok))
    rows = np.flatnonzero(ok)
    if len(rows) == len(ok):
        out = np.asarray(head.estimator.predict(X), dtype=np.float64)
    elif len(rows):
        out[rows] = head.estimator.predict(X[rows])
    return pa.array(out, type=pa.float64(), mask=~ok)


def _make(ref: str, proba: bool, dim: int | None = None, kind: str = "classifier") -> Function:
    def impl(features: Any) -> Any:
        from .._context import current
        from .head import load_head

        # Loaded (and its files checked) once per statement, not once per 2,048-row chunk.
        ctx = current()
        memo = ctx.memo if ctx is not None else {}
        head = memo.get(("head", ref))
        if head is None:
            head = memo[("head", ref)] = load_head(ref)
        if head.meta.get("kind") == "regressor":
            return score_regression(head, features)
        return score(head, features, proba=proba)

    base, _, ver = ref.partition("@")
    name = f"{base}_proba" if proba else base
    if ver:
        name = f"{base}@{ver}_proba" if proba else f"{base}@{ver}"
    what = "class probabilities (a map class -> probability)" if proba else "the predicted class"
    regressor = kind == "regressor"
    fn = Function(
        name=name,
        impl=impl,
        # FLOAT[dim]: embed()'s FLOAT[d] arrives as it is (a list column is cast to it).
        params=(Param("features", f"FLOAT[{dim}]" if dim else "FLOAT[]"),),
        returns="DOUBLE" if regressor else "MAP(VARCHAR, FLOAT)" if proba else "VARCHAR",
        doc=f"Regressor {ref}: the predicted value for a feature vector (NULL for NULL features)." if regressor
        else f"Classifier head {ref}: {what} for a feature vector (NULL for NULL features).",
    )
    fn.check = _checker(ref)
    return fn


# (workspace heads folder, function name) -> its Function: one object per head function, so a
# session installs it once and sees when the name means something else.
_made: dict[tuple[str, str], Function] = {}
_made_lock = threading.Lock()


def _split(name: str) -> tuple[str, str, bool]:
    """``name`` / ``name_proba`` / ``name@2`` / ``name@2_proba`` → (head, version, proba)."""
    proba = name.endswith("_proba")
    base = name.removesuffix("_proba") if proba else name
    head, _, ver = base.partition("@")
    return head, ver, proba


class HeadResolver:
    """The registry's source of head functions: those of the workspace in use."""

    def lookup(self, name: str) -> Function | None:
        head, ver, proba = _split(name)
        if not store.is_name(head):
            return None
        vs = store.versions(head)
        if not vs or (ver and (not ver.isdigit() or int(ver) not in vs)):
            if proba and not ver and store.versions(name):  # a head whose own name ends in _proba
                return self._function(name, "", False)
            return None
        fn = self._function(head, ver, proba)
        if fn is None and not ver and store.versions(name):  # a regressor has no _proba; a head may be named so
            return self._function(name, "", False)
        return fn

    def functions(self) -> list[Function]:
        out = []
        for head in store.names():
            for ver in ["", *map(str, store.versions(head))]:
                for proba in (False, True):
                    fn = self._function(head, ver, proba)
                    if fn is not None:
                        out.append(fn)
        return out

    def _function(self, head: str, ver: str, proba: bool) -> Function | None:
        """The head's function (None for ``_proba`` of a regressor: it has no classes)."""
        ref = f"{head}@{ver}" if ver else head
        version = int(ver) if ver else store.versions(head)[-1]
        # A new version under the same name is a new function (its dimension may differ).
        key = (str(store.heads_root()), ref + ("_proba" if proba else ""), version)
        with _made_lock:
            fn = _made.get(key)
        if fn is None:
            try:
                meta = store.read_meta(head, version)
                dim, kind = int(meta["dim"]), str(meta.get("kind", "classifier"))
            except (MlnbError, KeyError, TypeError, ValueError):
                dim, kind = None, "classifier"  # a damaged head: calling it gives the store's error
            if proba and kind == "regressor":
                return None
            fn = _make(ref, proba, dim, kind)
            with _made_lock:
                fn = _made.setdefault(key, fn)
        return fn


registry.add_resolver(HeadResolver())


# -- the experiment as SQL tables ----------------------------------------------------
_FOLD_COLUMNS = {
    "classifier": "fold VARCHAR, rows BIGINT, accuracy DOUBLE, macro_f1 DOUBLE, log_loss DOUBLE",
    "regressor": "fold VARCHAR, rows BIGINT, rmse DOUBLE, mae DOUBLE, r2 DOUBLE",
}
_CONFUSION_COLUMNS = "fold VARCHAR, actual VARCHAR, predicted VARCHAR, count BIGINT"


def _rows_function(fn_name: str, frame_of: Any, columns: str, what: str) -> None:
    """A scalar function giving, for each head name, its table as a list of structs: what the
    table macro below unnests (DuckDB table macros are SQL; the rows come from the head store)."""
    from ..functions import registry as reg

    def impl(names: Any) -> Any:
        import pyarrow as pa

        from ..functions._registry import _arrow_type

        out = [None if n is None else frame_of(str(n)).to_dicts() for n in names.to_pylist()]
        return pa.array(out, type=_arrow_type(f"STRUCT({columns})[]"))

    reg.add(
        Function(name=fn_name, impl=impl, params=(Param("name", "VARCHAR"),), returns=f"STRUCT({columns})[]",
                 doc=f"The rows of {what} as a list of structs (what that table function reads)."),
        replace=True,
    )


def _table(name: str, rows_fn: str, frame_of: Any, columns: str, doc: str) -> Function:
    from ..functions import table_function

    _rows_function(rows_fn, frame_of, columns, f"{name}(name)")
    fields = ", ".join(f"r.{c.split()[0]}" for c in columns.split(", "))
    return table_function(
        name, f"SELECT {fields} FROM (SELECT unnest({rows_fn}(name)) AS r)",
        params=[Param("name", "VARCHAR")], returns=f"TABLE({columns})", doc=doc, impl=frame_of,
    )


def _classifier_folds(name: str) -> Any:
    from ._experiment import folds_frame

    return folds_frame(name, "classifier")


def _regressor_folds(name: str) -> Any:
    from ._experiment import folds_frame

    return folds_frame(name, "regressor")


def _classifier_confusion(name: str) -> Any:
    from ._experiment import confusion_frame

    return confusion_frame(name)


#: ``SELECT * FROM classifier_folds('digit')``; in Python a Polars frame.
classifier_folds = _table(
    "classifier_folds", "classifier_folds_rows", _classifier_folds, _FOLD_COLUMNS["classifier"],
    "A classifier's experiment, one row per fold (fold, rows, accuracy, macro_f1, log_loss), then mean, std, min "
    "and max over the folds (MLDB's classifier.experiment), then 'test' (held-out set) or 'train' (training "
    "data) when it was evaluated so. 'name' is the latest version, 'name@2' version 2.",
)
#: ``SELECT * FROM classifier_confusion('digit')``: fold, actual, predicted, count.
classifier_confusion = _table(
    "classifier_confusion", "classifier_confusion_rows", _classifier_confusion, _CONFUSION_COLUMNS,
    "The confusion matrices of a classifier's experiment, as (fold, actual, predicted, count) for every nonzero "
    "cell: fold is the fold number, 'cv' (every out-of-fold prediction), 'test' or 'train'.",
)
#: ``SELECT * FROM regressor_folds('price')``: fold, rows, rmse, mae, r2.
regressor_folds = _table(
    "regressor_folds", "regressor_folds_rows", _regressor_folds, _FOLD_COLUMNS["regressor"],
    "A regressor's experiment, one row per fold (fold, rows, rmse, mae, r2), then mean, std, min and max over "
    "the folds, then 'test' or 'train' when it was evaluated so.",
)
