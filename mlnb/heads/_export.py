"""Export a classifier as one model file that needs no mlnb: image in, class probabilities out.

::

    EXPORT [OR REPLACE] CLASSIFIER name[@version] TO 'digit.onnx' [FORMAT onnx | torchscript]
        [CHECK ON (SELECT path FROM ...)]

The file holds the whole pipeline: the model's normalisation (scale to [0, 1],
mean/std), the backbone, the head, and a softmax (or the head's own probability
function). Its input ``image`` is a batch of **uint8 RGB images, NHWC**, shape
``(batch, S, S, 3)`` with ``S`` the backbone's input size — what
``numpy.asarray(pil_image)`` gives. Resizing is the caller's job: mlnb resizes
the shorter side to ``resize_size`` and centre-crops ``S`` (both in the model
card). The output ``probabilities`` is ``(batch, classes)`` float32, columns in
the order of the card's ``classes`` (also in the ONNX metadata).

Before the file is put in place, its outputs are compared with mlnb's own
(the embedding engine's preprocessing and forward pass in float32, then the
head's ``predict_proba``) on 100 images: the check images the caller gives, else
offline ones (scikit-learn's digits and crops of the bundled photographs). Every
image must get the same class (exact ties excepted) and probabilities within
1e-3; otherwise nothing is written. The file and its card
(``<file>.card.json``) are written under temporary names and renamed; an existing
file is replaced only with ``OR REPLACE`` (``replace=True``), and when the card
cannot be put in place the old file is put back.

Heads that export: ``logistic``, ``linear_svm`` (its calibrated probabilities),
``mlp``, ``torch`` and ``finetune``; backbones: any torch module mlnb builds
(EfficientNet-Lite, torchvision, models persisted from their weights). Not:
``knn``, ``gbdt``, ``random_forest``, heads trained on features from a table,
heads on an inner layer, and backbones that are ONNX or TorchScript files.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..exceptions import MissingDependencyError, MlnbError

FORMATS = ("onnx", "torchscript")
#: The format a file name's suffix gives when no FORMAT is named.
SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".pth": "torchscript", ".torchscript": "torchscript"}
EXPORTABLE = ("logistic", "linear_svm", "mlp", "torch", "finetune")
#: How close mlnb and the exported file must be.
TOLERANCE = 1e-3
#: Top-two probabilities closer than this are a tie: either class is right.
TIE = 1e-5
N_CHECK = 100


# -- heads as torch modules -------------------------------------------------------
def _linear(W: np.ndarray, b: np.ndarray) -> Any:
    import torch
    from torch import nn

    layer = nn.Linear(W.shape[1], W.shape[0])
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.asarray(W, dtype=np.float32)))
        layer.bias.copy_(torch.from_numpy(np.asarray(b, dtype=np.float32)))
    return layer


def _scaled(scaler: Any, W: np.ndarray, b: np.ndarray) -> Any:
    """A linear layer on raw features, the StandardScaler in front of it folded into its weights."""
    mean = np.zeros(W.shape[1]) if scaler is None or scaler.mean_ is None else scaler.mean_
    scale = np.ones(W.shape[1]) if scaler is None or scaler.scale_ is None else scaler.scale_
    W = np.asarray(W, dtype=np.float64) / scale
    return _linear(W, np.asarray(b, dtype=np.float64) - W @ mean)


def _module_class() -> Any:
    import torch
    from torch import nn

    class BinaryOrSoftmax(nn.Module):
        """Logits to probabilities, as scikit-learn does: one logit → [1 - p, p], else softmax."""

        def __init__(self, inner: Any, binary: bool) -> None:
            super().__init__()
            self.inner, self.binary = inner, binary

        def forward(self, x: Any) -> Any:
            z = self.inner(x)
            if self.binary:
                p = torch.sigmoid(z)
                return torch.cat([1 - p, p], dim=1)
            return torch.softmax(z, dim=1)

    class CalibratedLinear(nn.Module):
        """CalibratedClassifierCV(LinearSVC, method='sigmoid'): each fold's decision values, one
        sigmoid per class, normalised, then averaged over the folds."""

        def __init__(self, linears: list[Any], a: list[Any], b: list[Any], cols: list[Any], k: int) -> None:
            super().__init__()
            self.linears = nn.ModuleList(linears)
            for i, (ai, bi, ci) in enumerate(zip(a, b, cols)):
                self.register_buffer(f"a{i}", torch.tensor(ai, dtype=torch.float32))
                self.register_buffer(f"b{i}", torch.tensor(bi, dtype=torch.float32))
                # One-hot placement of each calibrated column into the k classes.
                place = torch.zeros(len(ci), k)
                place[torch.arange(len(ci)), torch.tensor(ci)] = 1.0
                self.register_buffer(f"p{i}", place)
            self.k = k

        def forward(self, x: Any) -> Any:
            total = None
            for i, lin in enumerate(self.linears):
                p = torch.sigmoid(-(getattr(self, f"a{i}") * lin(x) + getattr(self, f"b{i}")))
                if self.k == 2:
                    q = p[:, :1]
                    proba = torch.cat([1 - q, q], dim=1)
                else:
                    proba = p @ getattr(self, f"p{i}")
                    den = proba.sum(dim=1, keepdim=True)
                    proba = torch.where(den > 0, proba / den.clamp_min(1e-30), torch.full_like(proba, 1.0 / self.k))
                total = proba if total is None else total + proba
            return total / len(self.linears)

    class MLP(nn.Module):
        def __init__(self, layers: list[Any], out: str) -> None:
            super().__init__()
            self.layers = nn.ModuleList(layers)
            self.out = out

        def forward(self, x: Any) -> Any:
            for lin in self.layers[:-1]:
                x = torch.relu(lin(x))
            z = self.layers[-1](x)
            if self.out == "logistic":
                p = torch.sigmoid(z)
                return torch.cat([1 - p, p], dim=1)
            return torch.softmax(z, dim=1)

    class Scale(nn.Module):
        def __init__(self, mean: np.ndarray, scale: np.ndarray) -> None:
            super().__init__()
            self.register_buffer("mean", torch.from_numpy(np.asarray(mean, dtype=np.float32)))
            self.register_buffer("scale", torch.from_numpy(np.asarray(scale, dtype=np.float32)))

        def forward(self, x: Any) -> Any:
            return (x - self.mean) / self.scale

    return BinaryOrSoftmax, CalibratedLinear, MLP, Scale


def head_module(head: Any) -> Any:
    """The head as a torch module: features (N, dim) float32 → probabilities (N, classes).

    ``MlnbError`` for algorithms that cannot be written as one.
    """
    import copy

    from torch import nn

    from .torch_head import TorchHead

    BinaryOrSoftmax, CalibratedLinear, MLP, Scale = _module_class()
    algo = head.meta.get("algorithm")
    est = head.estimator
    k = len(head.meta["classes"])
    refuse = MlnbError(
        f"Classifier {head.ref} uses {algo}, which cannot be exported as one model: heads that export are "
        f"{', '.join(EXPORTABLE)}. Train one of those on the same features (CREATE CLASSIFIER ... USING logistic)."
    )
    if isinstance(est, TorchHead):
        return nn.Sequential(Scale(est.mean_, est.scale_), copy.deepcopy(est.model_).eval(), nn.Softmax(dim=1))
    steps = getattr(est, "steps", None)
    if not steps or algo not in EXPORTABLE:
        raise refuse
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    scaler, last = (steps[0][1], steps[-1][1]) if len(steps) == 2 else (None, steps[-1][1])
    if scaler is not None and not isinstance(scaler, StandardScaler):
        raise refuse
    if isinstance(last, LogisticRegression):
        return BinaryOrSoftmax(_scaled(scaler, last.coef_, last.intercept_), binary=last.coef_.shape[0] == 1 and k == 2)
    if isinstance(last, MLPClassifier):
        if last.activation != "relu":
            raise MlnbError(f"Classifier {head.ref}: an MLP with activation {last.activation!r} does not export (relu does).")
        layers = [_scaled(scaler, last.coefs_[0].T, last.intercepts_[0])]
        layers += [_linear(W.T, b) for W, b in zip(last.coefs_[1:], last.intercepts_[1:])]
        return MLP(layers, last.out_activation_)
    if isinstance(last, CalibratedClassifierCV) and all(c.method == "sigmoid" for c in last.calibrated_classifiers_):
        linears, a, b, cols = [], [], [], []
        classes = [str(c) for c in last.classes_]
        for cc in last.calibrated_classifiers_:
            svm = cc.estimator
            if not hasattr(svm, "coef_"):
                raise refuse
            linears.append(_scaled(scaler, svm.coef_, np.atleast_1d(svm.intercept_)))
            a.append([float(c.a_) for c in cc.calibrators])
            b.append([float(c.b_) for c in cc.calibrators])
            cols.append([classes.index(str(c)) for c in svm.classes_] if k > 2 else [1])
        return CalibratedLinear(linears, a, b, cols, k)
    raise refuse


# -- the whole pipeline --------------------------------------------------------
def _pipeline_class() -> Any:
    import torch
    from torch import nn

    class ImageClassifier(nn.Module):
        """uint8 NHWC images → class probabilities. The normalisation is the engine's
        (``Loaded._prepare``: x / 255, then (x - mean) / std), written as graph operations."""

        def __init__(self, backbone: Any, head: Any, mean: tuple, std: tuple) -> None:
            super().__init__()
            self.backbone, self.head = backbone, head
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, image: Any) -> Any:
            x = image.permute(0, 3, 1, 2).float() / 255.0
            f = self.backbone((x - self.mean) / self.std)
            if f.dim() == 4:
                f = f.mean(dim=(2, 3))
            return self.head(f.flatten(1))

    return ImageClassifier


def _tapped_class() -> Any:
    from torch import nn

    class Tapped(nn.Module):
        """A :class:`~mlnb.features.engine.LayerTap` as a module: the network runs up to the
        layer (its hook stops the rest), and the layer's output is pooled."""

        def __init__(self, tap: Any) -> None:
            super().__init__()
            self.net, self.tap = tap.module, tap

        def forward(self, x: Any) -> Any:
            return self.tap(x)

    return Tapped


def _backbone(head: Any) -> tuple[Any, Any]:
    """``(spec, backbone module)`` the head was trained on; ``MlnbError`` when it cannot be exported."""
    from torch import nn

    from ..features.zoo import get_spec

    model, layer = head.meta.get("feature_model"), head.meta.get("layer") or "pool"
    if not model:
        raise MlnbError(
            f"Classifier {head.ref} was trained on features from a table, not on embed(): there is no backbone "
            "to export with it. Train it on embed(image) features to export it."
        )
    if layer != "pool":
        raise MlnbError(f"Classifier {head.ref} was trained on layer {layer!r} of {model}: only heads on the pooled features (layer 'pool') export.")
    spec = get_spec(model)
    if spec.transform is not None:
        raise MlnbError(f"The backbone {model!r} of {head.ref} has its own Python transform function, which cannot be written into a model file.")
    backbone, _imagenet = spec.build()
    from ..features.engine import LayerTap

    if isinstance(backbone, LayerTap):  # a persisted model whose features are an inner layer's
        backbone = _tapped_class()(backbone)
    if not isinstance(backbone, nn.Module) or isinstance(backbone, __import__("torch").jit.ScriptModule):
        raise MlnbError(
            f"The backbone {model!r} of {head.ref} is a {type(backbone).__name__.lstrip('_')} (an ONNX or TorchScript file), "
            "not a torch module mlnb can export: export works with EfficientNet-Lite, torchvision models and models made from their weights."
        )
    return spec, backbone.eval()


# -- check images -------------------------------------------------------------------
def default_check_images(n: int = N_CHECK) -> list[Any]:
    """Offline images for the export check: scikit-learn's digits (upscaled, as RGB arrays) and
    crops of the bundled photographs, ``n`` in all."""
    from PIL import Image
    from sklearn.datasets import load_digits

    out: list[Any] = []
    with contextlib.suppress(Exception):
        from ..datasets import photograph_files

        photos = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(photograph_files().values())]
        rng = np.random.default_rng(0)
        for i in range(n // 2):
            ph = photos[i % len(photos)]
            h, w = ph.shape[:2]
            s = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
            top, left = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
            out.append(ph[top : top + s, left : left + s])
    digits = (load_digits().images * (255.0 / 16.0)).round().astype(np.uint8)
    for d in digits[: n - len(out)]:
        out.append(np.repeat(np.kron(d, np.ones((4, 4), dtype=np.uint8))[..., None], 3, axis=2))
    return out[:n]


def _pixels(spec: Any, images: list[Any]) -> np.ndarray:
    """The engine's preprocessing of each image (resize, centre crop): uint8 N x S x S x 3."""
    from .._report import collecting, report_failure
    from ..features.engine import _decode_one
    from ..images import source_key

    out, bad = [], []
    with collecting("images"):  # one warning naming the images left out of the check
        for src in images:
            res = _decode_one(spec, src, source_key(src) if isinstance(src, str) else None)
            if isinstance(res, Exception):
                bad.append(str(res))
                report_failure(getattr(res, "source", src), f"{getattr(res, 'reason', res)} (left out of the export check)")
                continue
            out.append(res)
        if not out:
            raise MlnbError(f"None of the {len(images)} check images could be read ({bad[0] if bad else 'no images'}): CHECK ON needs a query returning images (paths, URLs or bytes).")
    return np.stack(out)


def _compare(ref: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    diff = float(np.abs(ref - got).max())
    top2 = np.sort(ref, axis=1)[:, -2:] if ref.shape[1] > 1 else np.zeros((len(ref), 2))
    tie = (top2[:, 1] - top2[:, 0]) < TIE
    same = (ref.argmax(1) == got.argmax(1)) | tie
    return {"images": int(len(ref)), "max_abs_diff": diff, "same_class": int(same.sum()), "ties": int((tie & (ref.argmax(1) != got.argmax(1))).sum()),
            "passed": bool(same.all() and diff <= TOLERANCE)}


# -- export -----------------------------------------------------------------------
def export_classifier(
    ref: str, path: str | os.PathLike[str], *, format: str | None = None, check_images: list[Any] | None = None,  # noqa: A002
    replace: bool = False,
) -> dict[str, Any]:
    """Write classifier ``ref`` ("name" or "name@2") with its backbone as one ONNX (or TorchScript)
    model at ``path``, plus ``<path>.card.json``; checked against mlnb before it is put in place.

    The model takes ``image``: uint8 RGB, NHWC, ``(batch, S, S, 3)`` at the backbone's input size
    (resize and centre-crop first, as the card says), and gives ``probabilities`` ``(batch, classes)``.
    ``format`` is ``"onnx"`` or ``"torchscript"`` (default: from the suffix, ``.pt``/``.pth`` →
    TorchScript, else ONNX). ``check_images``: images (paths, URLs, bytes, arrays) to check on;
    default: 100 offline images. ``replace``: overwrite an existing file (and its card); without
    it an existing one is refused. Returns the model card.

    Examples
    --------
    >>> import mlnb
    >>> card = mlnb.export_classifier("digits", "digits.onnx")  # doctest: +SKIP
    >>> import onnxruntime as ort, numpy as np
    >>> sess = ort.InferenceSession("digits.onnx")  # doctest: +SKIP
    >>> sess.run(None, {"image": np.zeros((1, 224, 224, 3), np.uint8)})[0].shape  # doctest: +SKIP
    (1, 10)
    """
    import torch

    from . import load_classifier

    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if format is None and suffix not in SUFFIXES:
        # A file named 'model' or 'model.bin' used to get ONNX silently; say which formats there are.
        raise MlnbError(f"Cannot tell the format from the file name {path.name!r}: end it in .onnx (or .pt for TorchScript), or add FORMAT onnx | torchscript.")
    fmt = (format or SUFFIXES[suffix]).lower()
    if fmt not in FORMATS:
        raise MlnbError(f"Unknown export format {format!r}: choose onnx or torchscript.")
    if suffix in SUFFIXES and SUFFIXES[suffix] != fmt:
        # 'x.onnx' FORMAT torchscript wrote a TorchScript archive that onnxruntime then cannot open.
        want = ".onnx" if fmt == "onnx" else ".pt"
        raise MlnbError(f"{path.name!r} ends in {suffix} ({SUFFIXES[suffix]}) but FORMAT is {fmt}: name the file {path.stem}{want}, or leave out FORMAT.")
    if fmt == "onnx":
        try:
            import onnx
            import onnxruntime as ort
        except ImportError:
            raise MissingDependencyError("onnx and onnxruntime", "export", "Exporting to ONNX") from None
    if not path.parent.is_dir():
        raise MlnbError(f"Cannot write {path}: the folder {path.parent} does not exist.")
    if path.is_dir():
        raise MlnbError(f"Cannot write {path}: it is a folder. Give a file name, e.g. '{path / ('model.onnx' if fmt == 'onnx' else 'model.pt')}'.")
    card_path = Path(str(path) + ".card.json")
    if card_path.is_dir():
        raise MlnbError(f"Cannot write the model card {card_path}: it is a folder. Remove it or export to another name.")
    if not replace and (path.exists() or card_path.exists()):
        there = path if path.exists() else card_path
        raise MlnbError(f"{there} exists already: use EXPORT OR REPLACE CLASSIFIER (replace=True) to overwrite it, or another file name.")
    if check_images is not None and not len(check_images):
        raise MlnbError("CHECK ON gave no images (no rows, or only NULLs): give a query that returns images, or leave out CHECK ON to check on 100 offline images.")
    from .head import load_head

    head = load_head(ref)
    if head.meta.get("kind") == "regressor":  # load_classifier's hint (mlnb.load_regressor) is no use here
        raise MlnbError(f"{head.ref} is a regressor: EXPORT CLASSIFIER writes classifiers (image in, class probabilities out); regressors do not export.")
    head = load_classifier(ref)
    module = head_module(head)  # refuses heads that do not export before the backbone is built
    spec, backbone = _backbone(head)
    ImageClassifier = _pipeline_class()
    model = ImageClassifier(backbone, module, spec.mean, spec.std).eval().requires_grad_(False)
    s = spec.input_size

    # mlnb's answer: the engine's preprocessing and forward pass (in float32), then the head.
    from ..features.engine import Loaded

    images = list(check_images) if check_images is not None else default_check_images()
    pixels = _pixels(spec, images[:N_CHECK] if check_images is None else images)
    runner = Loaded(spec=spec, backbone=backbone, head=None, device=torch.device("cpu"), dtype=None)
    feats = np.concatenate([runner.forward(pixels[i : i + 16]) for i in range(0, len(pixels), 16)])
    ref_proba = np.asarray(head.estimator.predict_proba(feats), dtype=np.float64)

    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise MlnbError(f"Cannot write in {path.parent}: {exc.strerror or exc}. Export to a folder you can write to.") from None
    os.close(fd)
    tmp = Path(tmp_name)
    card_tmp = Path(str(tmp) + ".card")
    try:
        example = torch.from_numpy(pixels[:2] if len(pixels) >= 2 else np.repeat(pixels, 2, axis=0))
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript-based exporter and torch.jit are deprecated in new torch, still the
            # ones that work without onnxscript; their warnings are not the user's business.
            warnings.simplefilter("ignore")
            if fmt == "onnx":
                torch.onnx.export(
                    model, (example,), str(tmp), dynamo=False, input_names=["image"], output_names=["probabilities"],
                    dynamic_axes={"image": {0: "batch"}, "probabilities": {0: "batch"}}, opset_version=17,
                )
                proto = onnx.load(str(tmp))
                for key, value in (("classes", json.dumps(head.meta["classes"])), ("input_layout", "NHWC uint8 RGB"),
                                   ("input_size", str(s)), ("mlnb_classifier", head.ref), ("mlnb_version", __version__)):
                    entry = proto.metadata_props.add()
                    entry.key, entry.value = key, value
                onnx.save(proto, str(tmp))
                opts = ort.SessionOptions()
                opts.log_severity_level = 3
                sess = ort.InferenceSession(str(tmp), opts, providers=["CPUExecutionProvider"])
                got = np.concatenate([sess.run(None, {"image": pixels[i : i + 16]})[0] for i in range(0, len(pixels), 16)])
                runtime = f"onnxruntime {ort.__version__}"
            else:
                traced = torch.jit.trace(model, example, check_trace=False)
                torch.jit.save(traced, str(tmp))
                loaded = torch.jit.load(str(tmp), map_location="cpu").eval()
                got = np.concatenate([loaded(torch.from_numpy(pixels[i : i + 16])).numpy() for i in range(0, len(pixels), 16)])
                runtime = f"torch.jit {torch.__version__}"
        check = _compare(ref_proba, np.asarray(got, dtype=np.float64))
        check["runtime"] = runtime
        if not check["passed"]:
            raise MlnbError(
                f"The exported {fmt} model does not agree with mlnb on {check['images']} check images "
                f"(same class for {check['same_class']}, largest probability difference {check['max_abs_diff']:.2g}, "
                f"allowed {TOLERANCE:g}); nothing was written."
            )
        card = _card(head, spec, fmt, path, check)
        card_tmp.write_text(json.dumps(card, indent=1, default=str))
        for f in (tmp, card_tmp):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        _put_in_place(tmp, card_tmp, path, card_path, replace=replace)
    finally:
        for f in (tmp, card_tmp):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
    return card


def _put_in_place(tmp: Path, card_tmp: Path, path: Path, card_path: Path, *, replace: bool) -> None:
    """Rename the model and then its card into place, as one step: when the card cannot be
    put in place, the model file that was there before (or none) is put back. Without
    ``replace``, a file that appeared meanwhile is not overwritten."""
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    had_old = False
    if replace and path.exists():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(old)
        try:
            os.link(path, old)
            had_old = True
        except OSError:  # no hard links here: a copy
            import shutil

            shutil.copy2(path, old)
            had_old = True
    try:
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails when the name is taken
            except FileExistsError:
                raise MlnbError(f"{path} exists already: use EXPORT OR REPLACE CLASSIFIER (replace=True) to overwrite it.") from None
            except OSError:  # a file system without hard links
                if path.exists():
                    raise MlnbError(f"{path} exists already: use EXPORT OR REPLACE CLASSIFIER (replace=True) to overwrite it.") from None
                os.replace(tmp, path)
        try:
            if not replace and card_path.exists():
                raise MlnbError(f"{card_path} exists already: use EXPORT OR REPLACE CLASSIFIER (replace=True) to overwrite it.")
            os.replace(card_tmp, card_path)
        except BaseException:
            if had_old:  # the old file back
                os.replace(old, path)
                had_old = False
            else:  # the new file out: nothing half-written
                path.unlink()
            raise
    finally:
        if had_old:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(old)


def _card(head: Any, spec: Any, fmt: str, path: Path, check: dict[str, Any]) -> dict[str, Any]:
    import sklearn
    import torch

    versions = {"mlnb": __version__, "torch": torch.__version__, "scikit-learn": sklearn.__version__}
    with contextlib.suppress(ImportError):
        import onnx
        import onnxruntime

        versions.update({"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__})
    m = head.meta
    return {
        "file": path.name,
        "format": fmt,
        "classifier": head.ref,
        "algorithm": m.get("algorithm"),
        "classes": m["classes"],
        "metrics": m.get("metrics", {}),
        "n_rows": m.get("n_rows"),
        "training_data_hash": m.get("data_hash"),
        "trained": m.get("created"),
        "backbone": {
            "model": spec.name, "layer": m.get("layer") or "pool", "source": spec.source, "license": spec.license,
            "feature_dim": int(m["dim"]), "fine_tuned_from": m.get("backbone"),
        },
        "input": {
            "name": "image", "dtype": "uint8", "layout": "NHWC", "channels": "RGB",
            "shape": ["batch", spec.input_size, spec.input_size, 3],
            "resize_size": spec.resize_size, "input_size": spec.input_size, "interpolation": spec.interpolation,
            "preprocessing_in_model": f"x / 255, then (x - mean) / std with mean {list(spec.mean)} and std {list(spec.std)}",
            "caller_resizes": f"resize the shorter side to {spec.resize_size} ({spec.interpolation}), then centre-crop {spec.input_size}x{spec.input_size}",
        },
        "output": {"name": "probabilities", "dtype": "float32", "shape": ["batch", len(m["classes"])], "columns": "classes, in order"},
        # mlnb's SQL scorer follows config.precision: on a CPU with bfloat16 ("auto") or a GPU in
        # float16, its classes can differ from this float32 file on near ties (measured: 1 of 20
        # digits with efficientnet_lite0); with precision 'fp32' they are the ones checked here.
        "check": {**check, "tolerance": TOLERANCE, "compared_with": "mlnb in float32 (mlnb.config.precision = 'fp32')"},
        "exported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions,
    }
