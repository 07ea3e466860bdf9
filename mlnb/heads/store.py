"""The head store: ``<workspace>/heads/<name>/v<k>/`` holds ``meta.json`` and the
weights — ``model.safetensors`` for torch heads, ``model.skops`` for
scikit-learn ones. Nothing is unpickled: safetensors holds only tensors, and
a skops file is loaded only when every type it names is on our allow-list.
A version folder is written under a temporary name and renamed into place,
so a reader never sees half a head."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from ..exceptions import MlnbError, ModelNotFoundError
from ..workspace import get_workspace

_SAFE_PREFIXES = ("sklearn.", "numpy.", "builtins.", "scipy.sparse.")


def heads_root() -> Path:
    return get_workspace().path("heads", "x").parent


def versions(name: str) -> list[int]:
    d = heads_root() / name
    if not d.is_dir():
        return []
    return sorted(int(p.name[1:]) for p in d.iterdir() if p.is_dir() and p.name[:1] == "v" and p.name[1:].isdigit())


def names() -> list[str]:
    root = heads_root()
    return sorted(p.name for p in root.iterdir() if p.is_dir() and versions(p.name)) if root.is_dir() else []


def resolve(ref: str) -> tuple[str, int]:
    """``"name"`` (latest) or ``"name@2"`` → (name, version)."""
    name, _, ver = ref.partition("@")
    vs = versions(name)
    if not vs:
        import difflib

        close = difflib.get_close_matches(name, names(), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ModelNotFoundError(f"No classifier named {name!r} in {heads_root()}.{hint}")
    if not ver:
        return name, vs[-1]
    if not ver.isdigit() or int(ver) not in vs:
        raise ModelNotFoundError(f"Classifier {name!r} has no version {ver!r}; versions: {', '.join(map(str, vs))}.")
    return name, int(ver)


_lock = threading.Lock()


def save(name: str, estimator: Any, meta: dict[str, Any]) -> int:
    """Write a new version; returns its number."""
    from .torch_head import TorchHead

    ws = get_workspace()
    folder = heads_root() / name
    folder.mkdir(parents=True, exist_ok=True)
    with _lock, ws.lock(f"head-{name}"):
        version = (versions(name) or [0])[-1] + 1
        tmp = Path(tempfile.mkdtemp(prefix=f".v{version}-", dir=folder))
        try:
            if isinstance(estimator, TorchHead):
                from safetensors.torch import save_file

                tensors, tmeta = estimator.to_tensors()
                save_file(tensors, str(tmp / "model.safetensors"))
                meta = {**meta, "format": "safetensors", "torch_head": tmeta}
            else:
                import skops.io as sio

                sio.dump(estimator, tmp / "model.skops")
                meta = {**meta, "format": "skops"}
            meta = {**meta, "name": name, "version": version}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            os.replace(tmp, folder / f"v{version}")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return version


def load(name: str, version: int) -> tuple[Any, dict[str, Any]]:
    d = heads_root() / name / f"v{version}"
    meta = json.loads((d / "meta.json").read_text())
    if meta.get("format") == "safetensors":
        from safetensors.torch import load_file

        from .torch_head import TorchHead

        return TorchHead.from_tensors(load_file(str(d / "model.safetensors")), meta["torch_head"]), meta
    import skops.io as sio

    path = d / "model.skops"
    untrusted = sio.get_untrusted_types(file=path)
    unsafe = [t for t in untrusted if not t.startswith(_SAFE_PREFIXES)]
    if unsafe:
        raise MlnbError(
            f"Classifier {name}@{version} contains types mlnb does not load automatically: {', '.join(unsafe[:5])}. "
            f"If you trust {path}, load it yourself with skops.io.load(path, trusted=[...])."
        )
    return sio.load(path, trusted=untrusted), meta


def read_meta(name: str, version: int) -> dict[str, Any]:
    return json.loads((heads_root() / name / f"v{version}" / "meta.json").read_text())


def drop(name: str) -> int:
    vs = versions(name)
    if not vs:
        resolve(name)  # raises the not-found error with suggestions
    shutil.rmtree(heads_root() / name)
    return len(vs)
