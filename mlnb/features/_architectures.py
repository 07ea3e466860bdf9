"""The architectures a persisted model's state dict is for: ``efficientnet_lite0/1/2`` and every
torchvision classification model, built with random weights (nothing is downloaded) and sized for the
classifier the weights have (any number of classes, or none); and their preprocessing defaults."""

from __future__ import annotations

import contextlib
import difflib
import math
from collections.abc import Mapping
from typing import Any

from ..exceptions import MlnbError
from .zoo import _REGISTRY, IMAGENET_MEAN, IMAGENET_STD, TORCHVISION, check_state_dict


def architectures() -> list[str]:
    """Names :func:`persist_model` and ``CREATE MODEL ... WITH (architecture = ...)`` accept."""
    import torchvision.models as tvm

    from .efficientnet_lite import VARIANTS

    return sorted(set(VARIANTS) | set(tvm.list_models(module=tvm)))


def check_architecture(architecture: Any) -> str:
    names = architectures()
    if architecture not in names:
        close = difflib.get_close_matches(str(architecture), names, n=4, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise MlnbError(
            f"Unknown architecture {architecture!r}.{hint} Architectures are efficientnet_lite0/1/2 and the "
            f"torchvision classification models (resnet18, resnet50, mobilenet_v3_large, convnext_tiny, ...)."
        )
    return architecture


def _head_path(architecture: str, model: Any) -> str:
    """The attribute path of the classifier layer mlnb takes off to get features."""
    from torch import nn

    from .efficientnet_lite import VARIANTS

    if architecture in VARIANTS:
        return "_fc"
    if architecture in TORCHVISION:
        return TORCHVISION[architecture][1]
    last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if last:
        return last[-1]
    for name in ("classifier", "fc", "head", "heads"):  # squeezenet's classifier is a convolution
        if hasattr(model, name):
            return name
    raise MlnbError(f"Cannot find the classifier layer of {architecture}.")


def _new_model(architecture: str, num_classes: int | None = None) -> Any:
    """The architecture with random weights: nothing is downloaded."""
    from .efficientnet_lite import VARIANTS

    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if architecture in VARIANTS:
        from .efficientnet_lite import EfficientNetLite

        return EfficientNetLite(architecture, **kwargs)
    import torchvision.models as tvm

    if architecture in ("googlenet", "inception_v3"):
        kwargs["init_weights"] = False  # scipy-based init is slow, and the weights come next anyway
    return tvm.get_model(architecture, weights=None, **kwargs)


def _get_attr_path(root: Any, path: str) -> Any:
    obj = root
    for p in path.split("."):
        obj = obj[int(p)] if p.isdigit() else getattr(obj, p)
    return obj


def fit_architecture(architecture: str, state: Mapping[str, Any], source: str) -> tuple[Any, str, bool, int | None]:
    """``(model with the weights loaded, head path, has head, classes)``: the model is sized
    for the classifier in ``state`` (any number of classes), or has none when ``state`` has none."""
    from torch import nn

    from .zoo import _set_attr_path

    model = _new_model(architecture)
    head = _head_path(architecture, model)
    head_weight = state.get(head + ".weight")
    classes: int | None = None
    if head_weight is not None and getattr(head_weight, "ndim", 0) == 2:
        classes = int(head_weight.shape[0])
        if classes != getattr(_get_attr_path(model, head), "out_features", classes):
            model = _new_model(architecture, classes)
    has_head = any(k == head or k.startswith(head + ".") for k in state)
    if not has_head:
        _set_attr_path(model, head, nn.Identity())
    check_state_dict(model, dict(state), source)
    model.load_state_dict(dict(state), strict=True)
    model.eval()
    return model, head, has_head, classes


def defaultpreprocessing(architecture: str | None) -> dict[str, Any]:
    """Input size, resize, mean/std and interpolation the architecture was trained with."""
    if architecture in _REGISTRY:
        s = _REGISTRY[architecture]
        return {"input_size": s.input_size, "resize_size": s.resize_size, "mean": list(s.mean), "std": list(s.std),
                "interpolation": s.interpolation}
    if architecture:
        with contextlib.suppress(Exception):
            import torchvision.models as tvm

            t = tvm.get_model_weights(architecture).DEFAULT.transforms()
            return {"input_size": int(t.crop_size[0]), "resize_size": int(t.resize_size[0]), "mean": list(t.mean),
                    "std": list(t.std), "interpolation": str(t.interpolation.value)}
    return {"input_size": 224, "resize_size": 256, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            "interpolation": "bilinear"}


def _triple(value: Any, what: str) -> list[float]:
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]
    if isinstance(value, (int, float)):
        value = [value] * 3
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        out = []
    example = "[0.229, 0.224, 0.225]" if what == "std" else "[0.485, 0.456, 0.406]"
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise MlnbError(f"{what} takes three numbers (one per RGB channel), e.g. {example}; got {value!r}.")
    if what == "std" and min(out) <= 0:
        raise MlnbError(f"std divides the pixels, so each of its numbers must be above 0, e.g. {example}; got {value!r}.")
    return out


def preprocessing(architecture: str | None, input_size: Any, resize_size: Any, mean: Any, std: Any,
                   interpolation: Any) -> dict[str, Any]:
    out = defaultpreprocessing(architecture)
    if input_size is not None:
        if not isinstance(input_size, int) or isinstance(input_size, bool) or not 8 <= input_size <= 4096:
            raise MlnbError(f"input_size is a whole number of pixels between 8 and 4096, got {input_size!r}.")
        if input_size != out["input_size"]:
            out["resize_size"] = int(round(input_size / 0.875))
        out["input_size"] = input_size
    if resize_size is not None:
        if not isinstance(resize_size, int) or isinstance(resize_size, bool) or resize_size < out["input_size"]:
            raise MlnbError(f"resize_size is a whole number of pixels, at least input_size ({out['input_size']}); got {resize_size!r}.")
        out["resize_size"] = resize_size
    if mean is not None:
        out["mean"] = _triple(mean, "mean")
    if std is not None:
        out["std"] = _triple(std, "std")
    if interpolation is not None:
        if interpolation not in ("bilinear", "bicubic"):
            raise MlnbError(f"interpolation is 'bilinear' or 'bicubic', got {interpolation!r}.")
        out["interpolation"] = interpolation
    return out
