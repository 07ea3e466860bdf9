"""The head store: ``<workspace>/heads/<name>/v<k>/`` holds ``meta.json`` and the
weights — ``model.safetensors`` for torch heads, ``model.skops`` for
scikit-learn ones. Nothing is unpickled: safetensors holds only tensors, and
a skops file is loaded only when every type it names is trusted.

What is trusted, and why
------------------------
skops loads by itself only the types it trusts by default: builtins
containers and primitives, numpy arrays, dtypes and ufuncs, and every
scikit-learn estimator class (by exact name). Anything else in a file is
reported by ``skops.io.get_untrusted_types``; we accept such a type only
when its exact name is in :data:`TRUSTED_TYPES`:

* the types mlnb's own algorithms write (found by dumping each of
  ``logistic``, ``linear_svm``, ``knn``, ``mlp``, ``gbdt``, ``random_forest``
  and the regressors; ``tests/heads`` checks
  the list still covers them), and
* the internal state that fitted scikit-learn classifiers a user passes to
  ``train_classifier(algo=...)`` keep beside their estimator classes: the tree
  and neighbour indexes, distance metrics, GP kernels, calibrators and MLP
  optimizers, each by exact name. A RandomForest or an SVC can be saved.

HistGradientBoosting's ``TreePredictor`` (``gbdt``) is trusted on a condition.
It holds only arrays, but skops leaves it out because its compiled predict
follows the node indexes without bounds checks, so a crafted one crashes the
process. A loaded head's predictors are therefore checked before it is used
(:func:`_check_tree_predictors`): the record dtype scikit-learn writes, child
indexes that point forward inside the array (no loop, no jump outside it),
feature indexes below the head's dimension, finite thresholds and values, and no
categorical splits (mlnb's features are numeric). A file that fails is damaged.

Never trusted: functions and callables of any kind (``numpy.full_like``,
``builtins.exec``, ``numpy.vectorize``, ``PyFuncDistance64``), which are how a
crafted file runs code; and ``FunctionTransformer`` anywhere in a file, even
though skops trusts the class, since its only purpose is to call a function.
An estimator that needs anything else is refused when it is saved, not only
when it is loaded, so a head that was saved can always be loaded again.

Beside ``meta.json`` each version may hold ``evaluation.json``: the per-fold
metrics and confusion matrices of its experiment (plain JSON, read and checked
by :func:`read_evaluation`).

Writes hold a lock per head name (shared by every process using the
workspace): a version folder is written under a temporary name and renamed
into place, so a reader never sees half a head. ``replace=True`` renames the
new version into place as the next number (so ``name`` means the new head as
soon as it is complete, while the old versions still exist), then moves the
old versions out and renames the new one to ``v1``; there is always a
complete version on disk. A reader that picked a version which was moved or
replaced while it read the files finds out from :func:`stamp` and reads again
(:func:`mlnb.heads.head.load_head`), so it gets the whole old head or the
whole new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..exceptions import MlnbError, ModelNotFoundError
from ..workspace import _fsync_dir, get_workspace

TRUSTED_TYPES = frozenset(
    {
        # mlnb's own algorithms: linear_svm, mlp
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._SigmoidCalibration",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        # gbdt: loaded only once _check_tree_predictors has passed (see above)
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        # scikit-learn classifiers a user may pass from Python
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
        "sklearn.tree._tree.Tree",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.gaussian_process._gpc._BinaryGaussianProcessClassifierLaplace",
        *(
            f"sklearn.gaussian_process.kernels.{k}"
            for k in (
                "CompoundKernel", "ConstantKernel", "DotProduct", "ExpSineSquared", "Exponentiation", "Hyperparameter",
                "Matern", "Product", "RBF", "RationalQuadratic", "Sum", "WhiteKernel",
            )
        ),
        *(
            f"sklearn.metrics._dist_metrics.{m}Distance64"
            for m in (
                "BrayCurtis", "Canberra", "Chebyshev", "Dice", "Euclidean", "Hamming", "Haversine", "Jaccard",
                "Mahalanobis", "Manhattan", "Matching", "Minkowski", "RogersTanimoto", "RussellRao", "SEuclidean",
                "SokalMichener", "SokalSneath",
            )
        ),
    }
)
# Trusted by skops, refused by us: a FunctionTransformer exists to call a function.
REFUSED_TYPES = frozenset({"sklearn.preprocessing._function_transformer.FunctionTransformer"})

_MAX_NAME = 100


def check_name(name: Any) -> str:
    """The one check of a head name: a SQL identifier, so it is also a safe folder name."""
    if not isinstance(name, str) or not name.isidentifier() or len(name) > _MAX_NAME:
        raise MlnbError(
            f"Classifier names are SQL identifiers (letters, digits and _, not starting with a digit, "
            f"at most {_MAX_NAME} characters): {name!r} is not."
        )
    return name


def is_name(name: Any) -> bool:
    """Whether ``name`` passes :func:`check_name`."""
    try:
        check_name(name)
    except MlnbError:
        return False
    return True


def check_new_name(name: Any, kind: str = "classifier") -> str:
    """A name a new head may take: :func:`check_name`, and callable in SQL (``real``, ``time``,
    ``select`` ... are keywords, so ``real(...)`` would not parse)."""
    from ..sql._persisted import _load, builtin_clash, check_callable_name

    name = check_callable_name(check_name(name), f"{name}_{'reg' if kind == 'regressor' else 'clf'}")
    # A persisted function of that name (or name_proba) would shadow the head's own function in SQL.
    for taken in (name.lower(), f"{name.lower()}_proba"):
        if _load(taken) is not None:
            raise MlnbError(
                f"{taken!r} is a persisted function (CREATE FUNCTION), so {kind} {name!r} could not be called by "
                f"its name in SQL: choose another name, or DROP FUNCTION {taken} first."
            )
    why = builtin_clash(name)
    if why:
        suffix = "reg" if kind == "regressor" else "clf"
        raise MlnbError(f"{why}: a {kind} named so would hide it in SQL. Choose another name (e.g. {name}_{suffix}).")
    return name


def heads_root() -> Path:
    return get_workspace().path("heads", "x").parent


def stored_name(name: str) -> str:
    """The name ``name`` is stored under. SQL names ignore case (DuckDB keeps the case a name was
    created with and finds it in any case; mlnb's parser lowers unquoted calls), so ``pixup``
    and ``PIXUP`` find the head created as ``PixUp``; an exact match wins."""
    root = heads_root()
    if (root / name).is_dir():
        return name
    low = name.lower()
    try:
        for p in root.iterdir():
            if p.name.lower() == low and p.name.isidentifier() and p.is_dir():
                return p.name
    except OSError:
        pass
    return name


def _folder(name: str) -> Path:
    return heads_root() / stored_name(check_name(name))


def versions(name: str) -> list[int]:
    """The complete versions of ``name``, oldest first. Folders being written or removed
    (``.v3-…``, ``.old-v1``) are not versions."""
    d = _folder(name)
    for attempt in range(3):
        try:
            entries = list(d.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = sorted(int(p.name[1:]) for p in entries if p.name[:1] == "v" and p.name[1:].isdigit() and p.is_dir())
        if found:
            return found
        # A replace renames its new version into place as the last step; a directory listing taken
        # during that rename may show neither name. The head's folder is still there: look again.
        time.sleep(0.001 * (attempt + 1))
    return []


def names() -> list[str]:
    root = heads_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.name.isidentifier() and p.is_dir() and versions(p.name))


def resolve(ref: str, what: str = "classifier") -> tuple[str, int]:
    """``"name"`` (latest) or ``"name@2"`` → (name, version). ``what`` names the kind in errors."""
    if not isinstance(ref, str):
        raise MlnbError(f"A {what} is named by a string such as 'pets' or 'pets@2', not {type(ref).__name__}.")
    name, _, ver = ref.partition("@")
    if is_name(name):
        name = stored_name(name)
    vs = versions(name)
    if not vs:
        import difflib

        close = difflib.get_close_matches(name, names(), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ModelNotFoundError(f"No {what} named {name!r} in {heads_root()}.{hint}")
    if not ver:
        return name, vs[-1]
    if ver.isdigit() and int(ver) not in vs:
        for attempt in range(3):  # where a replace cannot swap v1 in one step, it is missing between two renames
            time.sleep(0.001 * (attempt + 1))
            vs = versions(name) or vs
            if int(ver) in vs:
                break
    if not ver.isdigit() or int(ver) not in vs:
        raise ModelNotFoundError(f"{what.capitalize()} {name!r} has no version {ver!r}; versions: {', '.join(map(str, vs))}.")
    return name, int(ver)


def kind_of(name: str) -> str | None:
    """``"classifier"`` or ``"regressor"``: what the latest version of ``name`` is (None when
    there is none, or it cannot be read)."""
    vs = versions(name)
    if not vs:
        return None
    try:
        return str(read_meta(name, vs[-1]).get("kind", "classifier"))
    except MlnbError:
        return None


def stamp(name: str, version: int) -> tuple[int, ...] | None:
    """Identifies what is on disk for ``name@version``: it changes when the version is replaced or its files are."""
    d = _folder(name) / f"v{version}"
    out: list[int] = []
    for f in ("meta.json", "model.skops", "model.safetensors"):
        try:
            st = os.stat(d / f)
        except OSError:
            out += [0, 0, 0]
            continue
        out += [st.st_ino, st.st_mtime_ns, st.st_size]
    return tuple(out) if out[:3] != [0, 0, 0] else None


_lock = threading.Lock()


@contextlib.contextmanager
def locked(name: str) -> Iterator[Path]:
    """Hold the per-name lock (threads and processes); yields the head's folder."""
    check_name(name)
    with _lock, get_workspace().lock(f"head-{name.lower()}"):  # names that differ in case are one head
        folder = _folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        yield folder


def save(name: str, estimator: Any, meta: dict[str, Any], *, replace: bool = False, evaluation: dict[str, Any] | None = None) -> int:
    """Write a new version; returns its number. ``evaluation`` (per-fold metrics and
    confusion matrices, JSON-able) goes to ``evaluation.json`` beside ``meta.json``.

    With ``replace``, the older versions are removed once the new one is in
    place, and the new one becomes version 1 (as after DROP and CREATE). There
    is always at least one complete version on disk.
    """
    from .torch_head import TorchHead

    name = stored_name(check_name(name))  # OR REPLACE PIXUP replaces PixUp (one head, its first case kept)
    data = None if isinstance(estimator, TorchHead) else _dump_checked(name, estimator)
    with locked(name) as folder:
        # Writers hold the lock for the whole write, so a temporary folder found now was left by a crash.
        for p in folder.iterdir():
            if p.name.startswith(".") and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
        old = versions(name)
        version = (old or [0])[-1] + 1
        final = 1 if replace else version
        tmp = Path(tempfile.mkdtemp(prefix=f".v{version}-", dir=folder))
        first: Path | None = None
        try:
            if isinstance(estimator, TorchHead):
                from safetensors.torch import save_file

                tensors, tmeta = estimator.to_tensors()
                save_file(tensors, str(tmp / "model.safetensors"))
                meta = {**meta, "format": "safetensors", "torch_head": tmeta}
            else:
                (tmp / "model.skops").write_bytes(data)
                meta = {**meta, "format": "skops"}
            meta = {**meta, "name": name, "version": final}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
            if evaluation is not None:
                (tmp / "evaluation.json").write_text(json.dumps(evaluation, default=_json_number))
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            if replace and old:  # a second copy, to take v1's place in one rename (see below)
                first = Path(tempfile.mkdtemp(prefix=".v1-", dir=folder))
                shutil.copytree(tmp, first, dirs_exist_ok=True)
                for f in first.iterdir():
                    with open(f, "rb") as fh:
                        os.fsync(fh.fileno())
            os.replace(tmp, folder / f"v{version}")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if first is not None:
                shutil.rmtree(first, ignore_errors=True)
            raise
        if first is not None:
            _replace_versions(folder, old, first, version)
        _fsync_dir(folder)
    return final


def _replace_versions(folder: Path, old: list[int], first: Path, newest: int) -> None:
    """After ``v<newest>`` (the new head) is in place: make ``first`` (a copy of it) ``v1`` and
    remove every other version. Each step is a rename, in an order that keeps ``name`` the new
    head and ``name@1`` a complete head (the old one, then the new one) at every moment; the
    files are deleted last, once no name points at them."""
    gone = [folder / f".old-v{v}" for v in old if v != 1]
    for v in old:
        if v != 1:
            os.replace(folder / f"v{v}", folder / f".old-v{v}")
    v1 = folder / "v1"
    if 1 in old and _exchange(first, v1):
        gone.append(first)  # it holds the old v1 now
    else:
        if 1 in old:
            gone.append(folder / ".old-v1")
            os.replace(v1, gone[-1])
        os.replace(first, v1)
    gone.append(folder / f".old-v{newest}")
    os.replace(folder / f"v{newest}", gone[-1])
    _fsync_dir(folder)
    for g in gone:
        shutil.rmtree(g, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the system
    or file system cannot, and the caller renames in two steps."""
    import ctypes
    import errno
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _json_number(value: Any) -> Any:
    """numpy numbers in an evaluation record as plain ones."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _dump_checked(name: str, estimator: Any) -> bytes:
    """The skops file for ``estimator``; refused, before anything is written, when we would not load it back."""
    import io

    import skops.io as sio

    try:
        data = sio.dumps(estimator)
    except Exception as exc:  # skops raises whatever the estimator's state makes it raise
        raise MlnbError(f"Classifier {name!r}: {type(estimator).__name__} cannot be saved without pickle ({exc}).") from exc
    bad = _refused_types(sio.get_untrusted_types(data=data), _schema_types(zipfile.ZipFile(io.BytesIO(data))))
    if bad:
        raise MlnbError(
            f"Classifier {name!r} was not saved: {type(estimator).__name__} holds {', '.join(bad[:5])}, which mlnb "
            "does not load from files (a crafted file could run code). Use the head unsaved (leave out name=), "
            "or save it yourself with skops."
        )
    return data


def _schema_types(zf: zipfile.ZipFile) -> set[str]:
    """Every type named anywhere in a skops file."""
    found: set[str] = set()
    stack = [json.loads(zf.read("schema.json"))]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("__module__"), str) and isinstance(node.get("__class__"), str):
                found.add(f"{node['__module__']}.{node['__class__']}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def _refused_types(untrusted: list[str], every: set[str]) -> list[str]:
    return sorted({t for t in untrusted if t not in TRUSTED_TYPES} | (every & REFUSED_TYPES))


def _damaged(name: str, version: int, what: str) -> MlnbError:
    return MlnbError(
        f"Classifier {name}@{version} is damaged: {what}. Drop it (DROP CLASSIFIER {name}) and train it again."
    )


def load(name: str, version: int) -> tuple[Any, dict[str, Any]]:
    """The estimator and meta of ``name@version``, checked against each other.

    Missing, truncated or edited files and untrusted types give an ``MlnbError``
    naming the head.
    """
    from safetensors import SafetensorError

    name = stored_name(check_name(name))
    d = heads_root() / name / f"v{version}"
    meta = read_meta(name, version)
    try:
        if meta["format"] == "safetensors":
            from safetensors.torch import load_file

            from .torch_head import TorchHead

            path = d / "model.safetensors"
            if not path.is_file():
                raise _damaged(name, version, f"{path} is missing")
            estimator = TorchHead.from_tensors(load_file(str(path)), meta["torch_head"])
        else:
            estimator = _load_skops(name, version, d / "model.skops")
        _check_consistent(name, version, estimator, meta)
    except MlnbError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError, IndexError, zipfile.BadZipFile, SafetensorError) as exc:
        raise _damaged(name, version, f"{type(exc).__name__}: {str(exc)[:200]}") from exc
    return estimator, meta


def _load_skops(name: str, version: int, path: Path) -> Any:
    import skops.io as sio

    if not path.is_file():
        raise _damaged(name, version, f"{path} is missing")
    try:
        with zipfile.ZipFile(path) as zf:
            every = _schema_types(zf)
        untrusted = sio.get_untrusted_types(file=path)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise _damaged(name, version, f"{path.name} is not a complete skops file ({exc})") from exc
    bad = _refused_types(untrusted, every)
    if bad:
        raise MlnbError(
            f"Classifier {name}@{version} contains types mlnb does not load automatically: {', '.join(bad[:5])}. "
            f"It was not written by mlnb, or was changed since. If you trust {path}, load it yourself with "
            "skops.io.load(path, trusted=[...])."
        )
    return sio.load(path, trusted=untrusted)


def _check_consistent(name: str, version: int, estimator: Any, meta: dict[str, Any]) -> None:
    """meta.json describes the model; it must agree with what the model itself learned."""
    import numpy as np

    classes = [str(c) for c in meta["classes"]]
    learned = [str(c) for c in np.asarray(getattr(estimator, "classes_", []))]
    if learned != classes:
        raise _damaged(name, version, f"meta.json lists classes {classes[:10]}, the model has {learned[:10]}")
    if classes != sorted(set(classes)):  # every head learns its classes sorted (np.unique)
        raise _damaged(name, version, f"its classes {classes[:10]} are not in the order training gives them")
    dim = getattr(estimator, "n_features_in_", None)
    if dim is not None and int(dim) != int(meta["dim"]):
        raise _damaged(name, version, f"meta.json says {meta['dim']}-d features, the model takes {dim}-d")
    problem = _check_tree_predictors(estimator, int(meta["dim"]))
    if problem:
        raise _damaged(name, version, problem)


def _check_tree_predictors(estimator: Any, dim: int) -> str | None:
    """What is wrong with the ``TreePredictor`` objects anywhere in ``estimator`` (None when
    nothing is): their compiled predict trusts every index in them."""
    import numpy as np

    predictor = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
    seen: set[int] = set()
    stack = [estimator]
    found: list[Any] = []
    while stack:  # every object in the estimator: a predictor may hide in a pipeline step
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (str, bytes, int, float, bool, np.ndarray, type(None))):
            continue
        seen.add(id(obj))
        if f"{type(obj).__module__}.{type(obj).__qualname__}" == predictor:
            found.append(obj)
        if isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__"):
            stack.extend(vars(obj).values())
    if not found:
        return None
    from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE

    for p in found:
        nodes = getattr(p, "nodes", None)
        if not isinstance(nodes, np.ndarray) or nodes.dtype != PREDICTOR_RECORD_DTYPE or nodes.ndim != 1 or len(nodes) == 0:
            return "a gradient-boosted tree has no valid node array"
        if not nodes.flags.c_contiguous:
            return "a gradient-boosted tree's node array is not contiguous"
        for attr in ("binned_left_cat_bitsets", "raw_left_cat_bitsets"):
            bits = getattr(p, attr, None)
            if not isinstance(bits, np.ndarray) or bits.dtype != np.uint32 or bits.ndim != 2 or bits.shape[1] != 8:
                return f"a gradient-boosted tree has an invalid {attr}"
        inner = ~nodes["is_leaf"].astype(bool)
        idx = np.flatnonzero(inner)
        n = len(nodes)
        left, right = nodes["left"][idx].astype(np.int64), nodes["right"][idx].astype(np.int64)
        if ((left <= idx) | (right <= idx) | (left >= n) | (right >= n)).any():
            return "a gradient-boosted tree's node links point outside it or backwards"
        feat = nodes["feature_idx"][idx].astype(np.int64)
        if ((feat < 0) | (feat >= dim)).any():
            return f"a gradient-boosted tree splits on a feature outside the {dim} it takes"
        if nodes["is_categorical"].astype(bool).any():
            return "a gradient-boosted tree has categorical splits, which mlnb never trains"
        if not (np.isfinite(nodes["value"]).all() and np.isfinite(nodes["num_threshold"][idx]).all()):
            return "a gradient-boosted tree holds non-finite values"
    return None


def read_meta(name: str, version: int) -> dict[str, Any]:
    """meta.json, with name and version from where it lies; an ``MlnbError`` when unreadable."""
    name = stored_name(check_name(name))
    path = heads_root() / name / f"v{version}" / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise _damaged(name, version, f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _damaged(name, version, f"{path.name} is not valid JSON ({exc})") from None
    required = {"algorithm": str, "classes": list, "dim": int, "metrics": dict, "n_rows": int, "format": str}
    if not isinstance(meta, dict):
        raise _damaged(name, version, f"{path.name} is not a JSON object")
    for key, typ in required.items():
        if not isinstance(meta.get(key), typ):
            raise _damaged(name, version, f"{path.name} has no valid {key!r}")
    if meta["format"] not in ("skops", "safetensors"):
        raise _damaged(name, version, f"{path.name} names an unknown format {meta['format']!r}")
    return {**meta, "name": name, "version": version}


def read_evaluation(name: str, version: int) -> dict[str, Any]:
    """``evaluation.json`` of ``name@version``: ``{"folds": [...], "confusion": [...]}``, each a list of
    flat records. A head saved before experiments were recorded has none: empty lists."""
    path = _folder(name) / f"v{version}" / "evaluation.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        read_meta(name, version)  # the version itself is gone or damaged: say so
        return {"folds": [], "confusion": []}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _damaged(name, version, f"{path.name} is not valid JSON ({exc})") from None
    ok = isinstance(data, dict) and all(
        isinstance(data.get(k, []), list) and all(isinstance(r, dict) for r in data.get(k, [])) for k in ("folds", "confusion")
    )
    if not ok:
        raise _damaged(name, version, f"{path.name} does not hold lists of fold and confusion records")
    return {"folds": data.get("folds", []), "confusion": data.get("confusion", [])}


def check_files(name: str, version: int) -> dict[str, Any]:
    """meta.json, once a quick look at the model file found it whole (cheaper than loading it)."""
    import struct

    meta = read_meta(name, version)
    path = _folder(name) / f"v{version}" / ("model.safetensors" if meta["format"] == "safetensors" else "model.skops")
    try:
        size = path.stat().st_size
        if meta["format"] == "skops":
            whole = zipfile.is_zipfile(path)
        else:  # 8 bytes of header length, the JSON header, then the tensors
            with open(path, "rb") as fh:
                head = fh.read(8)
            whole = len(head) == 8 and 8 + struct.unpack("<Q", head)[0] <= size
    except FileNotFoundError:
        raise _damaged(name, version, f"{path} is missing") from None
    except OSError as exc:
        raise _damaged(name, version, f"{path.name} cannot be read ({exc.strerror})") from None
    if not whole:
        raise _damaged(name, version, f"{path.name} is truncated or not a {meta['format']} file")
    return meta


def drop(name: str) -> int:
    if is_name(name):
        name = stored_name(name)
    vs = versions(name)
    if not vs:
        resolve(name)  # raises the not-found error with suggestions
    with locked(name) as folder:
        n = len(versions(name))
        if not n:  # dropped by someone else while we waited for the lock
            resolve(name)
        # Out of the way in one rename, then deleted: a concurrent reader sees the head or nothing.
        gone = heads_root() / f".dropped-{name}-{os.getpid()}-{threading.get_ident()}"
        os.replace(folder, gone)
        shutil.rmtree(gone, ignore_errors=True)
    return n
