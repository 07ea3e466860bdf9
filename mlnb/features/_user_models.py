"""Models persisted in the workspace: ``CREATE MODEL`` and :func:`persist_model`.

A persisted model is an ordinary :class:`~mlnb.features.zoo.ModelSpec`,
found by name when it is looked up (``embed(x, model := 'name')``) in any
process whose workspace holds it. Its folder ``<workspace>/models/<name>/``
holds ``spec.json`` and one weights file named after its content:

* ``weights-<sha>.safetensors`` for state dicts (of an architecture mlnb can
  build: ``efficientnet_lite0``, or any torchvision classification model, with
  random initial weights, so nothing is downloaded), whatever the user's file
  was (``.pth``/``.pt`` read with ``torch.load(weights_only=True)``, or
  safetensors): nothing in the workspace ever needs unpickling;
* ``model-<sha>.pt`` for TorchScript and ``model-<sha>.onnx`` for ONNX
  (onnxruntime, the ``export`` extra), copied as they are. Their features are
  the model's output (4-D outputs are average-pooled): ``layer`` does not apply.

A redefinition writes the new weights file, then replaces ``spec.json``
(atomically), then removes the old weights: a reader sees the old model or the
new one, and a failed ``CREATE OR REPLACE`` leaves the old one as it was. The
weights' sha256 is part of the embedding cache key (``ModelSpec.weights_id``).

Public functions: :func:`persist_model` (a state dict, from Python: fine-tuning
uses it), :func:`create_model` (a file, URL or archive member: ``CREATE
MODEL``), :func:`drop_model`, :func:`user_models` (a frame),
:func:`lookup` / :func:`specs` (what the zoo asks), :func:`names`, :func:`read_model_spec`,
:func:`check_model_name`, and :func:`~._architectures.architectures` (the names ``architecture`` takes).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import difflib
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..exceptions import MlnbError, ModelNotFoundError
from ..workspace import atomic_write_bytes, check_identifier, get_workspace
from ._architectures import architectures, check_architecture, fit_architecture, preprocessing
from ._weights_files import FORMATS, OnnxBackbone, jit_load, load_state_dict_bytes, read_weights_source, sniff_format
from .zoo import _REGISTRY, ModelSpec

__all__ = [
    "architectures", "check_model_name", "create_model", "drop_model", "lookup", "names", "persist_model",
    "read_model_spec", "specs", "user_models",
]


# -- names and places ----------------------------------------------------------
def check_model_name(name: Any) -> str:
    return check_identifier(name, "Model names")


def models_root(create: bool = False) -> Path:
    ws = get_workspace()
    return ws.path("models", "x", create=create).parent


def _verify(path: Path, sha256: str) -> None:
    if _sha256_file(path) != sha256:
        raise MlnbError(f"The weights file {path} has changed since it was saved (sha256 differs): create the model again.")


def _builder(folder: Path, spec: dict[str, Any]):
    fmt, arch, layer = spec["format"], spec.get("architecture"), spec.get("layer")
    path = folder / spec["file"]

    def build() -> tuple[Any, Any]:
        if not path.is_file():
            raise MlnbError(f"The weights of model {spec['name']!r} are missing ({path}): create the model again.")
        _verify(path, spec["sha256"])
        if fmt == "onnx":
            return OnnxBackbone(path), None

        if fmt == "torchscript":
            return jit_load(path), None
        from safetensors.torch import load_file
        from torch import nn

        from .zoo import _set_attr_path

        model, head_path, has_head, classes = fit_architecture(arch, load_file(str(path)), str(path))
        head = _set_attr_path(model, head_path, nn.Identity()) if has_head else None
        if layer:
            from .engine import LayerTap

            return LayerTap(model, layer), None
        return model, head if classes == 1000 else None

    return build


def _spec_of(folder: Path, spec: dict[str, Any]) -> ModelSpec:
    pre = spec["preprocessing"]
    layers: tuple[str, ...] = ("pool",)
    if spec["format"] == "state_dict" and not spec.get("layer") and spec.get("architecture") in _REGISTRY:
        layers = _REGISTRY[spec["architecture"]].layers
    what = spec.get("architecture") or spec["format"]
    return ModelSpec(
        name=spec["name"],
        build=_builder(folder, spec),
        input_size=int(pre["input_size"]),
        resize_size=int(pre["resize_size"]),
        mean=tuple(pre["mean"]),
        std=tuple(pre["std"]),
        interpolation=pre["interpolation"],
        feature_dim=spec.get("feature_dim"),
        layers=layers,
        source=f"workspace: {what} from {spec.get('source') or 'Python'}",
        offline=True,
        classes="imagenet" if spec.get("classes") == 1000 and not spec.get("layer") else None,
        description=f"Persisted {spec['created']}; sha256 {spec['sha256'][:12]}.",
        weights_id=spec["sha256"],
    )


# -- what the zoo asks ---------------------------------------------------------
_specs: dict[str, tuple[tuple[Any, ...], ModelSpec]] = {}
_specs_lock = threading.Lock()


class DamagedModelError(MlnbError):
    """A persisted model's ``spec.json`` cannot be read or is not one mlnb wrote (a hand edit)."""


def _spec_problem(name: str, rec: Any) -> str | None:
    if not isinstance(rec, dict):
        return f"holds a JSON {type(rec).__name__}, not an object"
    if rec.get("name") != name:
        return f"names the model {rec.get('name')!r}, not {name!r}"
    if rec.get("format") not in FORMATS:
        return f'has "format" {rec.get("format")!r}: one of {", ".join(FORMATS)} is expected'
    file = rec.get("file")
    if not isinstance(file, str) or not file or Path(file).name != file or file.startswith("."):
        return f'has "file" {file!r}: the name of the weights file beside it is expected'
    if not isinstance(rec.get("sha256"), str):
        return 'has no "sha256" of the weights'
    pre = rec.get("preprocessing")
    try:
        preprocessing(None, pre["input_size"], pre["resize_size"], pre["mean"], pre["std"], pre["interpolation"])
    except (MlnbError, KeyError, TypeError) as exc:
        return f'has a "preprocessing" mlnb cannot use ({exc})'
    return None


def _read_spec(name: str) -> ModelSpec | None:
    """The model ``name``, None when there is none; :class:`DamagedModelError` when its spec is damaged."""
    folder = models_root() / name
    path = folder / "spec.json"
    try:
        st = path.stat()
    except OSError:
        return None
    key = (st.st_mtime_ns, st.st_size, st.st_ino)
    cache_key = str(path)
    with _specs_lock:
        hit = _specs.get(cache_key)
    if hit is not None and hit[0] == key:
        return hit[1]  # the same object while the file is unchanged: a warm model stays loaded
    try:
        rec = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None  # removed under us
    except (OSError, ValueError) as exc:
        problem = f"cannot be read as JSON ({exc})"
    else:
        problem = _spec_problem(name, rec)
    if problem is None:
        try:
            spec = _spec_of(folder, rec)
        except (ValueError, KeyError, TypeError) as exc:
            problem = f"is not a model spec mlnb can use ({type(exc).__name__}: {exc})"
    if problem is not None:
        raise DamagedModelError(
            f"The persisted model {name!r} cannot be used: its file {path} {problem}. Create it again "
            f"(CREATE OR REPLACE MODEL {name} FROM ...) or DROP MODEL {name}."
        )
    with _specs_lock:
        _specs[cache_key] = (key, spec)
    return spec


def lookup(name: str) -> ModelSpec | None:
    """The model ``name`` persisted in the workspace in use, or ``None``."""
    if not isinstance(name, str) or not name.isidentifier():
        return None
    return _read_spec(name)


def names() -> list[str]:
    root = models_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.name.isidentifier() and (p / "spec.json").is_file())


def specs() -> dict[str, ModelSpec]:
    """Every model persisted in the workspace in use, by name."""
    out = {}
    for n in names():
        with contextlib.suppress(DamagedModelError):  # listed without it; using it says what is wrong
            s = _read_spec(n)
            if s is not None:
                out[n] = s
    return out


def read_model_spec(name: str) -> dict[str, Any]:
    """The stored description of a persisted model (``spec.json``)."""
    check_model_name(name)
    try:
        return json.loads((models_root() / name / "spec.json").read_bytes())
    except FileNotFoundError:
        raise ModelNotFoundError(_unknown(name)) from None


def _unknown(name: str) -> str:
    close = difflib.get_close_matches(name, names(), n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"No model {name!r} in the workspace.{hint} SHOW MODELS lists them."


# -- writing ----------------------------------------------------------------
def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_free(name: str, replace: bool) -> None:
    check_model_name(name)
    if name in _REGISTRY:
        what = "a built-in model" if _REGISTRY[name].source != "user model" else "registered in this process"
        raise MlnbError(f"{name!r} is {what}: choose another name for the persisted model.")
    if not replace and (models_root() / name / "spec.json").is_file():
        raise MlnbError(f"A model named {name!r} already exists in the workspace: use CREATE OR REPLACE MODEL (replace=True).")


def _probe(build: Any, input_size: int, source: str) -> int:
    """Run the model once on a blank image: it must work, and its feature size is recorded."""
    import numpy as np
    import torch

    from .engine import _global_pool

    try:
        backbone, _head = build()
        x = torch.zeros((1, 3, input_size, input_size), dtype=torch.float32)
        with torch.inference_mode():
            y = backbone(x)
        if isinstance(y, (tuple, list)):
            y = y[0]
        if isinstance(y, dict):
            y = next(iter(y.values()))
        if not isinstance(y, torch.Tensor):
            raise MlnbError(f"The model in {source} returns {type(y).__name__}, not a tensor of features.")
        if y.dim() > 2:
            y = _global_pool(y)
        if y.dim() != 2 or y.shape[0] != 1:
            raise MlnbError(f"The model in {source} returns shape {tuple(y.shape)} for one image; features need (1, d).")
        return int(np.prod(y.shape[1:]))
    except MlnbError:
        raise
    except Exception as exc:  # noqa: BLE001 - a model that cannot run is the user's file's problem
        raise MlnbError(f"The model in {source} does not run on a {input_size}x{input_size} RGB image: {type(exc).__name__}: {exc}") from None


def _commit(name: str, filename: str, data: bytes, spec: dict[str, Any], replace: bool = True) -> None:
    """Write the weights file, then ``spec.json``, then remove the replaced weights (under a lock)."""
    root = models_root(create=True)
    folder = root / name
    with get_workspace().lock(f"model-{name}"):
        if not replace and (folder / "spec.json").is_file():  # another process made it since _check_free
            raise MlnbError(f"A model named {name!r} already exists in the workspace: use CREATE OR REPLACE MODEL (replace=True).")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / filename
        if not target.is_file() or _sha256_file(target) != spec["sha256"]:
            atomic_write_bytes(target, data)
        spec_bytes = json.dumps(spec, indent=1, sort_keys=True).encode()
        atomic_write_bytes(folder / "spec.json", spec_bytes)
        for p in folder.iterdir():
            if p.name not in ("spec.json", filename):
                with contextlib.suppress(OSError):
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
    with _specs_lock:
        _specs.pop(str(folder / "spec.json"), None)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _record(name: str, *, fmt: str, architecture: str | None, layer: str | None, pre: dict[str, Any], sha: str,
            filename: str, feature_dim: int, classes: int | None, source: str | None, source_sha256: str | None,
            meta: Mapping[str, Any] | None) -> dict[str, Any]:
    from .._version import __version__

    return {
        "name": name, "format": fmt, "architecture": architecture, "layer": layer, "preprocessing": pre,
        "sha256": sha, "file": filename, "feature_dim": feature_dim, "classes": classes, "source": source,
        "source_sha256": source_sha256, "created": _now(), "mlnb_version": __version__, "meta": dict(meta or {}),
    }


def _persist_state(name: str, architecture: str, state: Mapping[str, Any], *, layer: str | None, pre: dict[str, Any],
                   replace: bool, source: str | None, source_sha256: str | None, meta: Mapping[str, Any] | None) -> ModelSpec:
    import torch
    from safetensors.torch import save as st_save

    what = source or "the state dict"
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise MlnbError(f"{what} is not a state dict of tensors: {bad[0]!r} is {type(state[bad[0]]).__name__}.")
    tensors = {str(k): v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    model, head_path, has_head, classes = fit_architecture(architecture, tensors, what)
    if layer:
        from .engine import LayerTap

        LayerTap(model, layer)  # an unknown layer fails here, naming close ones
    data = st_save(tensors, metadata={"architecture": architecture})
    sha = hashlib.sha256(data).hexdigest()
    filename = f"weights-{sha[:16]}.safetensors"
    rec = _record(name, fmt="state_dict", architecture=architecture, layer=layer or None, pre=pre, sha=sha,
                  filename=filename, feature_dim=0, classes=classes if has_head else None, source=source,
                  source_sha256=source_sha256, meta=meta)

    def build() -> tuple[Any, Any]:
        if layer:
            from .engine import LayerTap

            return LayerTap(model, layer), None
        from torch import nn

        from .zoo import _set_attr_path

        if has_head:
            _set_attr_path(model, head_path, nn.Identity())
        return model, None

    rec["feature_dim"] = _probe(build, pre["input_size"], what)
    _commit(name, filename, data, rec, replace)
    spec = lookup(name)
    assert spec is not None
    return spec


def persist_model(
    name: str,
    *,
    architecture: str,
    state_dict: Mapping[str, Any],
    layer: str | None = None,
    input_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    replace: bool = False,
    meta: Mapping[str, Any] | None = None,
) -> ModelSpec:
    """Save ``state_dict`` of ``architecture`` in the workspace as the model ``name``.

    The weights are checked against the architecture (every key and shape; a
    classifier of any size, or none), run once, and written as safetensors
    with a JSON spec; ``embed(x, model := name)`` then works here and in any
    later process using this workspace. ``layer`` names the inner module
    whose pooled output are the features (default: the penultimate layer);
    ``input_size``, ``mean`` and ``std`` default to the architecture's own.
    ``meta`` is kept in the spec (JSON values). ``replace=True`` redefines an
    existing model; if anything fails, the old one is kept.

    Examples
    --------
    >>> import torch, mlnb
    >>> from mlnb.features._user_models import persist_model
    >>> from mlnb.features.efficientnet_lite import EfficientNetLite
    >>> persist_model("my_lite", architecture="efficientnet_lite0",
    ...               state_dict=EfficientNetLite().state_dict()).feature_dim  # doctest: +SKIP
    1280
    """
    _check_free(name, replace)
    check_architecture(architecture)
    if meta is not None:
        try:
            json.dumps(dict(meta))
        except (TypeError, ValueError) as exc:
            raise MlnbError(f"meta must hold JSON values (numbers, strings, lists, dicts): {exc}") from None
    pre = preprocessing(architecture, input_size, None, mean, std, None)
    return _persist_state(name, architecture, state_dict, layer=layer, pre=pre, replace=replace, source=None,
                          source_sha256=None, meta=meta)


def create_model(
    name: str,
    source: str,
    *,
    architecture: str | None = None,
    layer: str | None = None,
    input_size: int | None = None,
    resize_size: int | None = None,
    mean: Sequence[float] | str | None = None,
    std: Sequence[float] | str | None = None,
    interpolation: str | None = None,
    format: str | None = None,  # noqa: A002 - the SQL option's name
    replace: bool = False,
) -> ModelSpec:
    """Register the weights in ``source`` as the model ``name`` of the workspace (``CREATE MODEL``).

    ``source`` is a path, ``file://`` or ``http(s)://`` URL, or an archive
    member (``archive+file:///models.zip#resnet.pth``,
    ``zip://resnet.pth::models.zip``). A state dict (``torch.save`` file read
    with ``weights_only=True``, or safetensors) needs ``architecture``;
    TorchScript and ONNX files are models in themselves, and their output is
    the feature vector. The weights are copied into the workspace, so the
    model outlives the file.

    Examples
    --------
    >>> from mlnb.features._user_models import create_model
    >>> create_model("cars", "archive+file:///data/cars.zip#resnet18.pth",
    ...              architecture="resnet18", layer="avgpool")  # doctest: +SKIP
    """
    _check_free(name, replace)
    if format is not None and format not in FORMATS:
        raise MlnbError(f"format is one of {', '.join(FORMATS)}; got {format!r}.")
    if architecture is not None:
        check_architecture(architecture)
    preprocessing(architecture, input_size, resize_size, mean, std, interpolation)  # bad options fail before any read
    data, filename = read_weights_source(source)
    if not data:
        raise MlnbError(f"{source} is empty.")
    fmt = format or sniff_format(data, filename)
    source_sha = hashlib.sha256(data).hexdigest()
    if fmt == "state_dict":
        if architecture is None:
            raise MlnbError(
                f"{source} holds weights without the network: say which architecture they are for, "
                "e.g. WITH (architecture = 'resnet18') (architecture='resnet18' in Python)."
            )
        state = load_state_dict_bytes(data, source)
        pre = preprocessing(architecture, input_size, resize_size, mean, std, interpolation)
        return _persist_state(name, architecture, state, layer=layer, pre=pre, replace=replace, source=source,
                              source_sha256=source_sha, meta=None)
    if layer:
        raise MlnbError(
            f"{source} is {'a TorchScript' if fmt == 'torchscript' else 'an ONNX'} model: its output is the feature "
            "vector, so `layer` does not apply. Export the model up to the layer you want instead."
        )
    tmp = models_root(create=True) / f".incoming-{name}-{os.getpid()}-{threading.get_ident()}"
    try:
        atomic_write_bytes(tmp, data)
        if fmt == "torchscript":

            def build() -> tuple[Any, Any]:
                try:
                    return jit_load(tmp), None
                except Exception as exc:  # noqa: BLE001
                    raise MlnbError(f"{source} is not a TorchScript file torch.jit.load can read ({str(exc).splitlines()[0][:160]}).") from None
        else:
            def build() -> tuple[Any, Any]:
                try:
                    return OnnxBackbone(tmp), None
                except MlnbError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    raise MlnbError(f"{source} is not an ONNX model onnxruntime can read ({str(exc).splitlines()[0][:160]}).") from None

            if input_size is None:
                shape = build()[0].shape
                if len(shape) == 4 and isinstance(shape[2], int) and shape[2] == shape[3]:
                    input_size = int(shape[2])
                elif len(shape) == 4 and isinstance(shape[1], int) and shape[1] == shape[2] and shape[3] == 3:
                    input_size = int(shape[1])
        pre = preprocessing(architecture, input_size, resize_size, mean, std, interpolation)
        dim = _probe(build, pre["input_size"], source)
        ext = "pt" if fmt == "torchscript" else "onnx"
        filename = f"model-{source_sha[:16]}.{ext}"
        rec = _record(name, fmt=fmt, architecture=architecture, layer=None, pre=pre, sha=source_sha, filename=filename,
                      feature_dim=dim, classes=None, source=source, source_sha256=source_sha, meta=None)
        _commit(name, filename, data, rec, replace)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    spec = lookup(name)
    assert spec is not None
    return spec


def drop_model(name: str, *, missing_ok: bool = False) -> bool:
    """Remove the persisted model ``name`` (its spec first, so no reader sees half of it)."""
    check_model_name(name)
    folder = models_root() / name
    spec = folder / "spec.json"
    if not spec.is_file():
        if missing_ok:
            return False
        raise ModelNotFoundError(_unknown(name))
    with get_workspace().lock(f"model-{name}"):
        with contextlib.suppress(FileNotFoundError):
            spec.unlink()
        shutil.rmtree(folder, ignore_errors=True)
    with _specs_lock:
        _specs.pop(str(spec), None)
    from ..sql._persisted import warn_dependents

    warn_dependents(name, "model", model=True)
    return True


def user_models() -> Any:
    """The models persisted in the workspace as a Polars frame.

    Columns: name, format, architecture, layer, feature_dim, input_size,
    sha256, source, created.
    """
    import polars as pl

    rows = []
    for n in names():
        with contextlib.suppress(MlnbError, OSError, ValueError):
            s = read_model_spec(n)
            rows.append({
                "name": n, "format": s["format"], "architecture": s.get("architecture"), "layer": s.get("layer"),
                "feature_dim": s.get("feature_dim"), "input_size": s["preprocessing"]["input_size"],
                "sha256": s["sha256"], "source": s.get("source"), "created": s.get("created"),
            })
    schema = {"name": pl.String, "format": pl.String, "architecture": pl.String, "layer": pl.String,
              "feature_dim": pl.Int64, "input_size": pl.Int64, "sha256": pl.String, "source": pl.String,
              "created": pl.String}
    return pl.DataFrame(rows, schema=schema)
