"""What is wrong with a data set, found on its feature vectors: label errors, near-duplicates, outliers.

::

    SELECT * FROM label_issues('digit')                        -- the rows head 'digit' was trained on
    SELECT * FROM label_issues(photos, features := 'f', label := 'label')
    SELECT * FROM label_issues((SELECT embed(path) AS features, label, path FROM photos))
    SELECT * FROM near_duplicates(photos, features := 'f', threshold := 0.95)
    SELECT * FROM duplicate_groups(photos, features := 'f')    -- one row per image, its group
    SELECT * FROM outliers(photos, features := 'f', k := 10)

The same functions in Python: ``mlnb.label_issues(frame, features=..., label=...)`` and so on;
each is one implementation (the SQL form computes its input query, then calls it).

- ``label_issues``: out-of-fold probabilities from k-fold training (the heads' own
  :func:`~mlnb.heads.cross_validate`), ranked by confident learning through cleanlab
  (``pip install "mlnb[quality]"``).
- ``near_duplicates``: every pair with cosine similarity at or above a threshold, computed in
  blocks of matrix products (on the GPU when :mod:`mlnb.device` picks one). For wide features a
  first pass runs on a projection onto the top principal directions plus the norm of what the
  projection leaves out: its dot product is never below the true cosine, so it finds every
  candidate pair at under a third of the cost (in bf16 on CPUs with bf16 units), and each
  candidate is then checked on the full vectors.
  The result is exactly the brute-force one.
- ``outliers``: mean cosine distance to the k nearest neighbours, in the same blocks.

Rows with null or NaN features (or a null label) are left out and counted in one warning.
"""

from __future__ import annotations

import difflib
import sys
import warnings
from typing import Any

import numpy as np

from ._frames import to_polars
from .exceptions import MissingDependencyError, MlnbError, ModelNotFoundError
from .functions import Param, table_function

#: Rows per block of the similarity matrix (a 4096 x 4096 float32 block is 64 MiB).
BLOCK = 4096
#: Principal directions in the first pass of near_duplicates for wide features (plus one
#: column for the rest: 384, a multiple of the matrix units' width). On 100,000 x 1,280
#: CNN-like vectors with isotropic noise, 256 left ~0.1% of all pairs as candidates, 383 none.
PROJECTION = 383
#: More pairs than this above a threshold is not "near-duplicates" any more.
MAX_PAIRS = 20_000_000
#: Float32 rounding of a dot product of unit vectors: identical rows come out 1 - 5e-7 (measured),
#: so a pair counts as at the threshold within this (threshold 1.0 finds exact copies).
ROUNDING = 2e-6


# -- input -------------------------------------------------------------------------------
def _column(df: Any, col: str, what: str, fn: str) -> str:
    """The column ``col`` names: as written, else the one column that matches it ignoring case (as SQL does)."""
    if col not in df.columns:
        same = [c for c in df.columns if c.lower() == str(col).lower()]
        if len(same) == 1:
            return same[0]
        close = difflib.get_close_matches(col, df.columns, n=2)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise MlnbError(f"{fn}(): no {what} column {col!r}.{hint} Columns: {', '.join(df.columns)}. Pass {what} := '...'.")
    return col


def _features(df: Any, features: str, fn: str, *, cosine: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(X[n, d] float32, ok[n])``; ``ok`` is False for null, NaN or all-zero vectors."""
    from .heads._data import feature_matrix

    features = _column(df, features, "features", fn)
    X, ok = feature_matrix(df.get_column(features))
    if X.shape[1] == 0 and ok.any():
        raise MlnbError(f"{fn}(): the features column {features!r} holds empty vectors.")
    if cosine and X.shape[1] == 1 and ok.any():
        # The cosine of two single numbers is their signs' product: every positive row would "match".
        raise MlnbError(
            f"{fn}(): the features column {features!r} holds one number per row ({df.schema[features]}); cosine "
            "similarity needs vectors: pass an embed() column, a list of numbers or a {* EXCLUDING(...)} row expression."
        )
    ok &= np.abs(X).sum(axis=1) > 0  # a zero vector has no direction: no cosine to anything
    return X, ok


def _left_out(n_bad: int, n: int, fn: str, what: str) -> None:
    if n_bad:
        warnings.warn(f"{fn}(): {n_bad} of {n} rows have {what} and were left out.", UserWarning, stacklevel=3)


def _keep_input_columns(df: Any, added: tuple[str, ...], fn: str) -> Any:
    """``df`` with its columns that the result's own would overwrite renamed ``rank_1``, as DuckDB
    names a repeated column (``outliers`` over ``label_issues``' result keeps both ranks)."""
    clash = [c for c in added if c in df.columns]
    if not clash:
        return df
    taken = set(df.columns) | set(added)
    renames: dict[str, str] = {}
    for c in clash:
        k = 1
        while f"{c}_{k}" in taken:
            k += 1
        renames[c] = f"{c}_{k}"
        taken.add(renames[c])
    listed = ", ".join(f"{a!r} as {b!r}" for a, b in renames.items())
    warnings.warn(f"{fn}(): the result has columns of the same names, so the input's are kept as {listed}.", UserWarning, stacklevel=3)
    return df.rename(renames)


def _normalised(X: np.ndarray) -> np.ndarray:
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32, copy=False)


def _frame(source: Any, fn: str) -> Any:
    if isinstance(source, str):
        raise MlnbError(f"{fn}() takes a frame, a table or a (SELECT ...) query, not the string {source!r}.")
    return to_polars(source)


# -- the blockwise kernels ---------------------------------------------------------------------
def _device() -> Any:
    from .device import resolve_device

    return resolve_device()


def _upper_bound_vectors(X: Any, k: int) -> Any:
    """``Z[n, k+1]``: ``X`` (unit rows) projected on its top ``k`` principal directions, plus the
    norm of the remainder. ``Z_i . Z_j >= X_i . X_j`` (Cauchy-Schwarz on the remainders)."""
    import torch
    from scipy.linalg import eigh

    # The bound holds for any orthonormal basis; a good one (principal directions, here from at
    # most 16,384 evenly spaced rows) makes it tight.
    S = X[:: max(1, X.shape[0] // 16384)]
    mean = S.mean(dim=0, keepdim=True)
    cov = ((S.T @ S) / S.shape[0] - mean.T @ mean).cpu().double().numpy()
    d = cov.shape[0]
    _, vecs = eigh(cov, subset_by_index=[d - k, d - 1], driver="evr")
    V = torch.from_numpy(vecs).to(device=X.device, dtype=X.dtype)
    P = X @ V
    rest = torch.sqrt(torch.clamp(1.0 - (P * P).sum(dim=1, keepdim=True), min=0.0))
    return torch.cat([P, rest], dim=1)


def pairs_above(X: np.ndarray, threshold: float, *, block: int = BLOCK, device: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, similarity)`` of every pair ``i < j`` of unit rows with ``X_i . X_j >= threshold``."""
    import torch

    from .device import cpu_has_native_bf16

    device = device or _device()
    n, d = X.shape
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(device)
    # The first pass: on the full vectors when they are narrow, else on the projection.
    project = d >= 2 * (PROJECTION + 1) and n > block
    Z = _upper_bound_vectors(Xt, PROJECTION) if project else Xt
    cut = threshold - (1e-4 if project else 1e-5)
    if project and device.type == "cpu" and cpu_has_native_bf16():
        # Twice the speed on CPUs with bf16 units. Rounding unit vectors to bf16 moves a dot
        # product by at most 2^-8 (Cauchy-Schwarz), its bf16 result by 2^-9 more: a margin of
        # 0.008 still finds every candidate, and candidates are checked in float32 below.
        Z, cut = Z.to(torch.bfloat16), threshold - 0.008
    found: list[tuple[Any, Any, Any]] = []
    total = 0
    for a in range(0, n, block):
        A = Z[a : a + block]
        for b in range(a, n, block):
            S = A @ Z[b : b + block].T
            if a == b:  # only j > i
                m = len(S)
                S.masked_fill_(torch.ones(m, m, dtype=torch.bool, device=device).tril_(), -3.0)
            # A row maximum first: most rows of most blocks have no candidate (a full compare
            # costs twice the matrix product).
            rows = torch.nonzero(S.amax(dim=1) >= cut).flatten()
            if not len(rows):
                continue
            ij = torch.nonzero(S[rows] >= cut)
            i, j = rows[ij[:, 0]] + a, ij[:, 1] + b
            # Every candidate checked on the full vectors.
            sims = torch.cat([(Xt[i[s : s + 65536]] * Xt[j[s : s + 65536]]).sum(dim=1) for s in range(0, len(i), 65536)])
            keep = sims >= threshold - ROUNDING
            found.append((i[keep], j[keep], sims[keep]))
            total += int(keep.sum())
            if total > MAX_PAIRS:
                raise MlnbError(
                    f"near_duplicates(): more than {MAX_PAIRS:,} pairs are at or above similarity {threshold}: "
                    "these are not near-duplicates any more. Raise the threshold (e.g. 0.98)."
                )
    if not found:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    i, j, sims = (torch.cat(parts) for parts in zip(*found))
    return i.cpu().numpy(), j.cpu().numpy(), sims.clamp(max=1.0).cpu().numpy()


def knn_mean_distance(X: np.ndarray, k: int, *, device: Any = None) -> np.ndarray:
    """Mean cosine distance of each unit row to its ``k`` nearest other rows."""
    import torch

    device = device or _device()
    n = X.shape[0]
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(device)
    rows = max(64, min(BLOCK, (1 << 26) // max(1, n)))  # a block of at most 256 MiB
    out = torch.empty(n, dtype=torch.float32, device=device)
    for a in range(0, n, rows):
        S = Xt[a : a + rows] @ Xt.T
        r = torch.arange(S.shape[0], device=device)
        S[r, r + a] = -3.0  # never its own neighbour
        top = torch.topk(S, k, dim=1).values
        out[a : a + rows] = (1.0 - top).mean(dim=1)
    return out.clamp(min=0.0).cpu().numpy()


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """A group number (1, 2, ... in order of each group's first row) per row; 0 for rows in no pair."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(i) == 0:
        return np.zeros(n, dtype=np.int64)
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    in_pair = np.zeros(n, dtype=bool)
    in_pair[i] = in_pair[j] = True
    numbers = np.zeros(comp.max() + 1, dtype=np.int64)
    nxt = 1
    for row in np.flatnonzero(in_pair):  # rows in order: groups numbered by their first row
        if numbers[comp[row]] == 0:
            numbers[comp[row]] = nxt
            nxt += 1
    return np.where(in_pair, numbers[comp], 0)


def _check_threshold(threshold: Any, fn: str) -> float:
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        t = float("nan")
    if not 0 < t <= 1:
        raise MlnbError(f"{fn}(): threshold must be a cosine similarity above 0 and at most 1 (e.g. 0.95); got {threshold!r}.")
    return t


def _check_int(value: Any, name: str, low: int, fn: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < low:
        raise MlnbError(f"{fn}(): {name} must be a whole number of at least {low}; got {value!r}.")
    return int(value)


# -- near_duplicates, duplicate_groups ------------------------------------------------------------
def _duplicates(source: Any, features: str, threshold: Any, fn: str) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    t = _check_threshold(threshold, fn)
    df = _frame(source, fn)
    X, ok = _features(df, features, fn)
    _left_out(int((~ok).sum()), df.height, fn, "null, NaN or all-zero features")
    rows = np.flatnonzero(ok)
    i, j, sim = pairs_above(_normalised(X[ok]), t) if len(rows) > 1 else (np.zeros(0, np.int64),) * 2 + (np.zeros(0, np.float32),)
    group = np.zeros(df.height, dtype=np.int64)
    group[rows] = components(len(rows), i, j)
    return df, rows[i], rows[j], sim, group, ok


def _near_duplicates(source: Any, *, features: str = "features", threshold: float = 0.95) -> Any:
    import polars as pl

    df, i, j, sim, group, _ok = _duplicates(source, features, threshold, "near_duplicates")
    features = _column(df, features, "features", "near_duplicates")
    order = np.lexsort((j, i, -sim.astype(np.float64)))
    i, j, sim = i[order], j[order], sim[order]
    keep = [c for c in df.columns if c != features]
    out = pl.DataFrame(
        {"i": i.astype(np.int64), "j": j.astype(np.int64), "similarity": sim.astype(np.float64), "duplicate_group": group[i]},
        schema={"i": pl.Int64, "j": pl.Int64, "similarity": pl.Float64, "duplicate_group": pl.Int64},
    )
    taken_i = df.select(keep)[i.tolist()] if keep else pl.DataFrame()
    taken_j = df.select(keep)[j.tolist()] if keep else pl.DataFrame()
    return pl.concat(
        [out, taken_i.rename({c: f"{c}_i" for c in keep}), taken_j.rename({c: f"{c}_j" for c in keep})], how="horizontal"
    )


def _duplicate_groups(source: Any, *, features: str = "features", threshold: float = 0.95) -> Any:
    import polars as pl

    df, _i, _j, _sim, group, ok = _duplicates(source, features, threshold, "duplicate_groups")
    sizes = np.bincount(group)
    size = np.where(group > 0, sizes[group], 1)
    df = _keep_input_columns(df, ("row", "duplicate_group", "group_size"), "duplicate_groups")
    return df.with_columns(
        pl.Series("row", np.arange(df.height, dtype=np.int64)),
        pl.Series("duplicate_group", np.where(group > 0, group, 0), dtype=pl.Int64).replace(0, None),
        pl.Series("group_size", size.astype(np.int64)),
    ).filter(pl.Series(ok))


# -- outliers ------------------------------------------------------------------------------------------
def _outliers(source: Any, *, features: str = "features", k: int = 10) -> Any:
    import polars as pl

    k = _check_int(k, "k", 1, "outliers")
    df = _frame(source, "outliers")
    X, ok = _features(df, features, "outliers")
    _left_out(int((~ok).sum()), df.height, "outliers", "null, NaN or all-zero features")
    n = int(ok.sum())
    if n <= k:
        raise MlnbError(f"outliers(): k = {k} neighbours needs more than {k} rows with features; there are {n}. Use a smaller k.")
    score = knn_mean_distance(_normalised(X[ok]), k)
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(-score, kind="stable")] = np.arange(1, n + 1)
    df = _keep_input_columns(df, ("row", "outlier_score", "rank"), "outliers")
    out = df.with_columns(pl.Series("row", np.arange(df.height, dtype=np.int64))).filter(pl.Series(ok))
    return out.with_columns(pl.Series("outlier_score", score.astype(np.float64)), pl.Series("rank", rank)).sort("rank")


# -- label_issues -----------------------------------------------------------------------------------------
def _calling_namespace() -> dict[str, Any]:
    """Where a head's training query finds its frames: the statement's namespace in SQL, the
    notebook's (``__main__``) in Python."""
    from .sql._computed import current_namespace

    ns = current_namespace()
    if ns is not None:
        return dict(ns)
    main = sys.modules.get("__main__")
    return dict(vars(main)) if main is not None else {}


def _head_training_data(ref: str) -> tuple[Any, str, str, str, dict[str, Any]]:
    """The rows a saved head was trained on, from the training query it recorded."""
    from .heads import load_classifier
    from .heads.algorithms import ALGORITHMS
    from .sql import get_session

    try:
        head = load_classifier(ref)
    except ModelNotFoundError:
        raise
    except MlnbError as exc:
        raise MlnbError(f"label_issues({ref!r}): {exc}") from None
    query = head.meta.get("training_query")
    if not query:
        raise MlnbError(
            f"label_issues({ref!r}): head {head.ref} was trained from Python, so mlnb has no record of its rows. "
            "Pass them: label_issues(frame, features := 'features', label := 'label'), or mlnb.label_issues(frame, ...)."
        )
    try:
        df = get_session().run(query, _calling_namespace())
    except MlnbError as exc:
        raise MlnbError(f"label_issues({ref!r}) re-runs the query head {head.ref} was trained on, and it failed: {exc}") from None
    if "features" in df.columns and "label" in df.columns:
        feats, label = "features", "label"
    else:
        feats, label = df.columns[0], df.columns[1]
    algo = head.meta.get("algorithm") or "logistic"
    options = dict(head.meta.get("options") or {}) if algo in ALGORITHMS else {}
    return df, feats, label, algo if algo in ALGORITHMS else "logistic", options


def _label_issues(source: Any, *, features: str = "features", label: str = "label", folds: int = 5, algo: str = "logistic") -> Any:
    import polars as pl

    from .heads import cross_validate
    from .heads.algorithms import check_data, make_estimator

    fn = "label_issues"
    folds = _check_int(folds, "folds", 2, fn)
    # Strongly regularised: an overfit model's out-of-fold probabilities are over-confident, which
    # hides label errors. Measured on digits (efficientnet_lite0 features, 5% flipped): recall of
    # the flipped rows in the top 5% is 0.74 at C = 1, 0.79 at C = 0.1 and 0.84 at C = 0.01.
    defaults: dict[str, dict[str, Any]] = {"logistic": {"C": 0.01}}
    if isinstance(source, str):
        # The head's algorithm and the options it chose; what it left to defaults, label_issues' own
        # (a head's C = 1 recovered 0.70-0.76 of the flipped digits above, C = 0.01 0.78-0.84).
        source, features, label, algo, chosen = _head_training_data(source)
    else:
        chosen = {}
    options = {**defaults.get(algo, {}), **chosen}
    df = to_polars(source)
    label = _column(df, label, "label", fn)
    dtype = df.schema[label]
    if dtype.is_nested() or dtype in (pl.Binary, pl.Object, pl.Null) and df.get_column(label).null_count() < df.height:
        raise MlnbError(f"{fn}(): the label column {label!r} has type {dtype}: a label is one value per row (text, a number, a flag).")
    X, ok = _features(df, features, fn, cosine=False)
    ok &= ~df.get_column(label).is_null().to_numpy()
    _left_out(int((~ok).sum()), df.height, fn, "null, NaN or all-zero features or a null label")
    rows = np.flatnonzero(ok)
    X, y = X[ok], df.get_column(label).cast(pl.String).to_numpy()[ok].astype(str)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise MlnbError(f"{fn}(): finding label errors needs at least two classes; the labels have {len(classes)}.")
    small = [(c, n) for c, n in zip(classes, counts) if n < folds]
    if small:
        listed = ", ".join(f"{str(c)!r} ({n})" for c, n in small[:5])
        raise MlnbError(
            f"{fn}(): {folds}-fold training needs at least {folds} rows of every class; too few for {listed}. "
            "Leave those classes out (WHERE label NOT IN (...)), label more rows, or use fewer folds (folds := 2)."
        )
    try:
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores
    except ImportError:
        raise MissingDependencyError("cleanlab", "quality", "label_issues()") from None
    estimator = make_estimator(algo, options)
    check_data(estimator, algo, y, folds)
    try:
        proba = cross_validate(estimator, X, y, folds).proba
    except ValueError as exc:
        if isinstance(exc, MlnbError):
            raise
        raise MlnbError(f"{fn}(): training {algo} failed: {exc}") from exc
    given = np.searchsorted(classes, y)
    quality = get_label_quality_scores(given, proba)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cleanlab's notes on classes it finds no errors in
        issue = find_label_issues(given, proba)
    rank = np.empty(len(rows), dtype=np.int64)
    rank[np.argsort(quality, kind="stable")] = np.arange(1, len(rows) + 1)
    df = _keep_input_columns(df, ("row", "given_label", "suggested_label", "label_quality", "is_issue", "rank"), fn)
    out = df.with_columns(pl.Series("row", np.arange(df.height, dtype=np.int64))).filter(pl.Series(ok))
    return out.with_columns(
        pl.Series("given_label", classes[given], dtype=pl.String),
        pl.Series("suggested_label", classes[np.argmax(proba, axis=1)], dtype=pl.String),
        pl.Series("label_quality", np.asarray(quality, dtype=np.float64)),
        pl.Series("is_issue", np.asarray(issue, dtype=bool)),
        pl.Series("rank", rank),
    ).sort("rank")


_SOURCE = Param("source", "TABLE")

label_issues = table_function(
    "label_issues",
    None,
    params=[_SOURCE, Param("features", "VARCHAR", "features"), Param("label", "VARCHAR", "label"),
            Param("folds", "BIGINT", 5), Param("algo", "VARCHAR", "logistic")],
    returns="TABLE(<input columns>, row BIGINT, given_label VARCHAR, suggested_label VARCHAR, label_quality DOUBLE, is_issue BOOLEAN, rank BIGINT)",
    doc=(
        "Rows whose label is probably wrong, most suspicious first: out-of-fold probabilities from k-fold "
        "training (``algo``: a head algorithm; ``logistic`` here is regularised with C = 0.01), ranked by "
        "confident learning (cleanlab).\n\n"
        "``source`` is a frame, a table, a ``(SELECT ...)`` query, or the name of a head made with CREATE CLASSIFIER "
        "(its training query is run again and its algorithm used). Every input column is kept, plus ``row`` (0-based "
        "position in the input), ``given_label``, ``suggested_label`` (the out-of-fold prediction), ``label_quality`` "
        "(cleanlab's self-confidence: the out-of-fold probability of the given label; low is suspicious), "
        "``is_issue`` (cleanlab's confident-learning verdict) and ``rank`` (1 = most suspicious). "
        "Needs ``pip install \"mlnb[quality]\"``.\n\n"
        ">>> # SELECT path, given_label, suggested_label FROM label_issues('digit') WHERE is_issue"
    ),
    impl=_label_issues,
)

near_duplicates = table_function(
    "near_duplicates",
    None,
    params=[_SOURCE, Param("features", "VARCHAR", "features"), Param("threshold", "DOUBLE", 0.95)],
    returns="TABLE(i BIGINT, j BIGINT, similarity DOUBLE, duplicate_group BIGINT, <column>_i, <column>_j, ...)",
    doc=(
        "Pairs of near-identical rows: cosine similarity of their features at or above ``threshold`` (0 to 1), "
        "``i < j`` their 0-based positions in the input, most similar first. ``duplicate_group`` numbers the "
        "connected groups of duplicates; every other input column comes twice, as ``<column>_i`` and ``<column>_j``. "
        "Computed in blocks of matrix products, on the GPU when there is one.\n\n"
        ">>> # SELECT path_i, path_j, similarity FROM near_duplicates(photos, features := 'f', threshold := 0.95)"
    ),
    impl=_near_duplicates,
)

duplicate_groups = table_function(
    "duplicate_groups",
    None,
    params=[_SOURCE, Param("features", "VARCHAR", "features"), Param("threshold", "DOUBLE", 0.95)],
    returns="TABLE(<input columns>, row BIGINT, duplicate_group BIGINT, group_size BIGINT)",
    doc=(
        "Every row with its group of near-duplicates (the connected pairs of near_duplicates): ``duplicate_group`` "
        "is null for a row with no duplicate, so colouring by it shows only the groups; ``group_size`` counts the "
        "group's rows (1 alone).\n\n"
        ">>> # SELECT * FROM duplicate_groups(photos, features := 'f') WHERE group_size > 1"
    ),
    impl=_duplicate_groups,
)

outliers = table_function(
    "outliers",
    None,
    params=[_SOURCE, Param("features", "VARCHAR", "features"), Param("k", "BIGINT", 10)],
    returns="TABLE(<input columns>, row BIGINT, outlier_score DOUBLE, rank BIGINT)",
    doc=(
        "How far each row is from the rest: ``outlier_score`` is the mean cosine distance to its ``k`` nearest "
        "neighbours (0 to 2; high is unusual), ``rank`` 1 the most unusual. Every input column is kept.\n\n"
        ">>> # SELECT path, outlier_score FROM outliers(photos, features := 'f') LIMIT 20"
    ),
    impl=_outliers,
)
