"""A user's weights file: read from a path, URL or archive member, its format told from its
bytes, and loaded without running anything from it (``torch.load(weights_only=True)``, safetensors);
TorchScript and ONNX models behind the engine's module interface."""

from __future__ import annotations

import contextlib
import io
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..exceptions import ImageLoadError, MissingDependencyError, MlnbError

#: Largest weights file read (a local file, or an archive member once decompressed).
MAX_WEIGHTS_BYTES = 4 << 30
#: An archive member larger than this that decompresses more than ``_BOMB_RATIO`` times is refused
#: before it is read (weights hardly compress: float tensors shrink by a few percent).
_BOMB_MIN = 64 << 20
_BOMB_RATIO = 100
#: Keys under which training checkpoints keep the model's state dict.
_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights", "module")
FORMATS = ("state_dict", "torchscript", "onnx")


class OnnxBackbone:
    """An onnxruntime session behind the engine's module interface (NCHW float in, features out)."""

    def __init__(self, path: Path) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingDependencyError("onnxruntime", "export", "An ONNX model") from None
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise MlnbError(f"An ONNX feature extractor takes one input (an image batch); {path.name} takes {len(inputs)}.")
        self.input = inputs[0].name
        shape = list(inputs[0].shape)
        self.nhwc = len(shape) == 4 and shape[-1] == 3 and shape[1] != 3
        self.shape = shape
        # torch.onnx.export fixes the batch size to the example's (often 1) unless told otherwise:
        # such a model is run that many images at a time.
        self.batch = shape[0] if shape and isinstance(shape[0], int) and shape[0] > 0 else None

    def __call__(self, x: Any) -> Any:
        import numpy as np
        import torch

        arr = x.detach().float().cpu()
        if self.nhwc:
            arr = arr.permute(0, 2, 3, 1)
        arr = np.ascontiguousarray(arr.numpy())
        step = self.batch or len(arr)
        outs = []
        for i in range(0, len(arr), max(step, 1)):
            part = arr[i : i + step]
            if len(part) < step:  # the last, short chunk, padded to the model's fixed batch
                part = np.concatenate([part, np.zeros((step - len(part), *part.shape[1:]), part.dtype)])
            out = np.asarray(self.session.run(None, {self.input: part})[0], dtype=np.float32)
            outs.append(out[: min(step, len(arr) - i)])
        return torch.from_numpy(np.concatenate(outs) if len(outs) > 1 else outs[0])

    def eval(self) -> OnnxBackbone:
        return self

    def to(self, *args: Any, **kwargs: Any) -> OnnxBackbone:
        return self  # runs where onnxruntime runs (CPU)


def jit_load(path: Path) -> Any:
    """A TorchScript file (torch 2.9+ calls TorchScript deprecated; the issue asks for it, so quietly)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated", category=FutureWarning)
        return torch.jit.load(str(path), map_location="cpu").eval()


def read_weights_source(source: str) -> tuple[bytes, str]:
    """The bytes behind a path, ``file://`` URL, archive member or URL, and a display name."""
    from .._archives import read_member, split_pattern

    try:
        parts = split_pattern(source)
        if parts is not None:
            _scheme, member, outer = parts
            if not member:
                raise MlnbError(f"{source}: an archive source names its member: archive+file:///x.zip#weights.pth.")
            if outer.lower().startswith(("http://", "https://")):
                return _member_of(_download(outer, 300.0), source, outer, member), member
            _check_zip_member(source, outer, member)
            return read_member(source, outer, member, 60.0, MAX_WEIGHTS_BYTES), member
        lower = source.lower()
        if lower.startswith(("http://", "https://")):
            return _download(source, 300.0), source.split("?", 1)[0].rsplit("/", 1)[-1]
        if "://" in source and not lower.startswith("file://"):
            from ..images import read_source

            return read_source(source, timeout=120.0), source.rsplit("/", 1)[-1]
        path = Path(source[7:] if lower.startswith("file://") else source).expanduser()
        if not path.exists():
            raise MlnbError(f"No weights file {source}: check the path (relative paths start at {os.getcwd()}).")
        if path.is_dir():
            raise MlnbError(f"{source} is a folder: name the weights file inside it.")
        size = path.stat().st_size
        if size > MAX_WEIGHTS_BYTES:
            raise MlnbError(f"{source} is {size / (1 << 30):.1f} GiB: mlnb reads weights files up to "
                            f"{MAX_WEIGHTS_BYTES / (1 << 30):g} GiB.")
        return path.read_bytes(), path.name
    except ImageLoadError as exc:
        raise MlnbError(f"Cannot read the weights {exc.source}: {exc.reason}.") from None


def _too_large(source: str, size: int) -> MlnbError:
    return MlnbError(f"{source} is over {MAX_WEIGHTS_BYTES / (1 << 30):g} GiB ({size:,} bytes): mlnb reads weights "
                     f"files up to {MAX_WEIGHTS_BYTES / (1 << 30):g} GiB.")


def _download(url: str, timeout: float) -> bytes:
    """A URL's bytes through the one URL fetcher, up to :data:`MAX_WEIGHTS_BYTES` (weights are
    larger than the images ``mlnb.config.max_image_bytes`` is for). A replaced URL fetcher
    (tests, a proxy) is used as it is."""
    from .. import images

    if images.fetch_url is not images._fetch_url:
        return images.fetch_url(url, timeout)
    try:
        return images._fetch_url(url, timeout, cap=MAX_WEIGHTS_BYTES)
    except TimeoutError:
        raise MlnbError(f"Cannot download {url}: timed out after {timeout:g}s.") from None
    except ImageLoadError as exc:
        if exc.reason.startswith("too large"):
            raise MlnbError(f"{url} is over {MAX_WEIGHTS_BYTES / (1 << 30):g} GiB: mlnb reads weights files up to "
                            f"{MAX_WEIGHTS_BYTES / (1 << 30):g} GiB.") from None
        raise MlnbError(f"Cannot download {url}: {exc.reason}.") from None


def _member_of(data: bytes, source: str, outer: str, member: str) -> bytes:
    """One member of a downloaded zip or tar archive (a zip bomb refused before it is inflated)."""
    import tarfile

    buf = io.BytesIO(data)
    try:
        if zipfile.is_zipfile(buf):
            with zipfile.ZipFile(buf) as zf:
                try:
                    info = zf.getinfo(member)
                except KeyError:
                    raise MlnbError(f"{source}: no member {member!r} in {outer}.") from None
                _check_sizes(source, info.file_size, info.compress_size)
                with zf.open(info) as fh:
                    out = fh.read(MAX_WEIGHTS_BYTES + 1)
        else:
            buf.seek(0)
            with tarfile.open(fileobj=buf) as tf:
                try:
                    fh = tf.extractfile(member)
                except KeyError:
                    fh = None
                if fh is None:
                    raise MlnbError(f"{source}: no file {member!r} in {outer}.")
                out = fh.read(MAX_WEIGHTS_BYTES + 1)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise MlnbError(f"{outer} is not a zip or tar archive mlnb can read ({exc or type(exc).__name__}).") from None
    if len(out) > MAX_WEIGHTS_BYTES:
        raise _too_large(source, len(out))
    return out


def _check_sizes(source: str, size: int, compressed: int) -> None:
    if size > MAX_WEIGHTS_BYTES:
        raise _too_large(source, size)
    if size > _BOMB_MIN and size > _BOMB_RATIO * max(compressed, 1):
        raise MlnbError(
            f"{source} would decompress from {compressed:,} to {size:,} bytes "
            f"({size // max(compressed, 1):,} times): that is not a weights file "
            "(weights hardly compress), so it is not read."
        )


def _check_zip_member(source: str, outer: str, member: str) -> None:
    """Refuse a member of a local zip that claims to be far larger than it is compressed (a zip
    bomb), or larger than mlnb reads, before a byte of it is decompressed."""
    path = outer[7:] if outer.lower().startswith("file://") else outer
    if "://" in path or not zipfile.is_zipfile(path):
        return  # a remote or tar archive: read_member's cap still holds
    with zipfile.ZipFile(path) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            return  # read_member says so
    _check_sizes(source, info.file_size, info.compress_size)


def sniff_format(data: bytes, filename: str) -> str:
    """``state_dict`` (a torch pickle or safetensors), ``torchscript`` or ``onnx``."""
    lower = filename.lower()
    if data[:4] == b"PK\x03\x04":
        with contextlib.suppress(zipfile.BadZipFile):
            members = zipfile.ZipFile(io.BytesIO(data)).namelist()
            if any(m.endswith("/constants.pkl") or "/code/" in m for m in members):
                return "torchscript"
        return "state_dict"
    if lower.endswith(".onnx"):
        return "onnx"
    if lower.endswith((".pt", ".pth", ".bin", ".ckpt", ".tar", ".safetensors")) or data[:1] == b"\x80":
        return "state_dict"
    if len(data) > 8 and data[8:9] == b"{":
        return "state_dict"  # safetensors: an 8-byte header length, then JSON
    with contextlib.suppress(Exception):
        import onnx

        onnx.load_model_from_string(data)
        return "onnx"
    return "state_dict"


def load_state_dict_bytes(data: bytes, source: str) -> dict[str, Any]:
    """A state dict from ``torch.save`` bytes (``weights_only=True``) or safetensors."""
    import pickle

    import torch

    if len(data) > 8 and data[8:9] == b"{" and data[:4] != b"PK\x03\x04" and data[:1] != b"\x80":
        from safetensors.torch import load as st_load

        try:
            return dict(st_load(data))
        except Exception as exc:  # noqa: BLE001
            raise MlnbError(f"{source} looks like safetensors but cannot be read: {exc}") from None
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported global" in text:
            glob = text.split("Unsupported global:", 1)[-1].split("was not an allowed global")[0].strip(" :")
            more = f" (it names {glob.split()[-1] if glob else 'a Python class'})" if "Unsupported global" in text else ""
            raise MlnbError(
                f"{source} holds Python objects, not only tensors{more}: loading it would run code from the file, "
                "which mlnb never does (torch.load(weights_only=True)). Save the weights instead: "
                "torch.save(model.state_dict(), 'weights.pth'), or a TorchScript file (torch.jit.save), "
                "or safetensors."
            ) from None
        raise MlnbError(_not_weights(source, text)) from None
    except Exception as exc:  # noqa: BLE001 - torch says "invalid load key", "PytorchStreamReader failed" ...
        raise MlnbError(_not_weights(source, f"{type(exc).__name__}: {exc}")) from None
    return _state_of(obj, source)


def _not_weights(source: str, reason: str) -> str:
    if "WeightsUnpickler error:" in reason:  # torch's own words past its long preamble
        reason = reason.split("WeightsUnpickler error:", 1)[1].strip()
    return (
        f"{source} is not a weights file mlnb can read: a torch.save state dict, safetensors, TorchScript "
        f"or ONNX (torch.load said: {reason.splitlines()[0][:120] if reason else 'nothing'})."
    )


def _state_of(obj: Any, source: str) -> dict[str, Any]:
    import torch

    def tensors_only(d: Any) -> bool:
        return isinstance(d, Mapping) and bool(d) and all(isinstance(v, torch.Tensor) for v in d.values())

    if not tensors_only(obj) and isinstance(obj, Mapping):
        for k in _CHECKPOINT_KEYS:  # a training checkpoint: {"epoch": .., "state_dict": {...}}
            if tensors_only(obj.get(k)):
                obj = obj[k]
                break
    if isinstance(obj, Mapping) and not tensors_only(obj):
        # Non-tensor extras beside the tensors (rare: metadata strings) are dropped.
        kept = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if kept and len(kept) >= len(obj) / 2:
            obj = kept
    if not tensors_only(obj):
        kind = type(obj).__name__
        keys = ", ".join(map(repr, list(obj)[:5])) if isinstance(obj, Mapping) else ""
        raise MlnbError(
            f"{source} holds no state dict (a {kind}{' with keys ' + keys if keys else ''}): "
            "save one with torch.save(model.state_dict(), path)."
        )
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    return state
