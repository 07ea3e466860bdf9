"""Example data that ships offline, written out as image files plus a Polars frame.

- :func:`photographs`: the real photographs bundled with scikit-image and
  scikit-learn (a cat, coffee, a rocket, an astronaut, a palace, a flower ...).
- :func:`digits`: scikit-learn's 1,797 handwritten digits (10 classes).
- :func:`faces`: scikit-image's ``lfw_subset``: 100 faces and 100 non-faces.

Files go under ``<workspace>/datasets/`` unless ``dest`` says otherwise and
are written once.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from .exceptions import MissingDependencyError
from .workspace import get_workspace


def _dest(dest: str | os.PathLike[str] | None, name: str) -> Path:
    d = Path(dest) if dest is not None else get_workspace().path("datasets", name, "x").parent
    d.mkdir(parents=True, exist_ok=True)
    return d


_SKIMAGE_PHOTOS = {
    "chelsea.png": "a tabby cat (scikit-image)",
    "coffee.png": "a cup of espresso (scikit-image)",
    "rocket.jpg": "a rocket on its launch pad (scikit-image)",
    "astronaut.png": "astronaut Eileen Collins (scikit-image)",
    "motorcycle_left.png": "a motorcycle (scikit-image)",
    "hubble_deep_field.jpg": "Hubble deep field (scikit-image)",
}
_SKLEARN_PHOTOS = {
    "china.jpg": "the Summer Palace, Beijing (scikit-learn)",
    "flower.jpg": "a flower (scikit-learn)",
}


def photograph_files() -> dict[str, Path]:
    """The bundled photographs in their installed location (nothing is copied)."""
    out: dict[str, Path] = {}
    try:
        import skimage
    except ImportError:
        raise MissingDependencyError("scikit-image", "data", "The example photographs") from None
    import sklearn.datasets

    skdir = Path(skimage.__file__).parent / "data"
    for f in _SKIMAGE_PHOTOS:
        if (skdir / f).exists():
            out[f] = skdir / f
    sldir = Path(sklearn.datasets.__file__).parent / "images"
    for f in _SKLEARN_PHOTOS:
        if (sldir / f).exists():
            out[f] = sldir / f
    return out


def photographs(dest: str | os.PathLike[str] | None = None) -> Any:
    """Copy the bundled photographs into ``dest``; a frame of path, name, description.

    Examples
    --------
    >>> import mlnb
    >>> mlnb.datasets.photographs()["name"].to_list()[:3]  # doctest: +SKIP
    ['astronaut.png', 'chelsea.png', 'china.jpg']
    """
    import polars as pl

    d = _dest(dest, "photos")
    rows = []
    for name, src in sorted(photograph_files().items()):
        target = d / name
        if not target.exists():
            shutil.copyfile(src, target)
        rows.append({"path": str(target), "name": name, "description": {**_SKIMAGE_PHOTOS, **_SKLEARN_PHOTOS}[name]})
    return pl.DataFrame(rows)


def _write_images(d: Path, arrays: Any, labels: list[str], prefix: str, scale: int) -> list[str]:
    import numpy as np
    from PIL import Image

    paths = []
    for i, (arr, label) in enumerate(zip(arrays, labels)):
        folder = d / label
        folder.mkdir(exist_ok=True)
        p = folder / f"{prefix}{i:05d}.png"
        if not p.exists():
            img = Image.fromarray(np.asarray(arr, dtype=np.uint8), "L")
            if scale > 1:
                img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
            img.save(p)
        paths.append(str(p))
    return paths


def digits(dest: str | os.PathLike[str] | None = None, *, scale: int = 4) -> Any:
    """scikit-learn's digits as PNG files in ImageFolder layout (``<label>/digit00042.png``).

    Returns a frame of path, label (``"0"`` ... ``"9"``) and the 64 raw pixel values
    (``pixels``, for a pixel baseline).
    """
    import numpy as np
    import polars as pl
    from sklearn.datasets import load_digits

    ds = load_digits()
    arrays = (ds.images * (255.0 / 16.0)).round().astype(np.uint8)
    labels = [str(int(t)) for t in ds.target]
    paths = _write_images(_dest(dest, "digits"), arrays, labels, "digit", scale)
    return pl.DataFrame(
        {"path": paths, "label": labels, "pixels": ds.data.astype(np.float32)},
        schema={"path": pl.String, "label": pl.String, "pixels": pl.Array(pl.Float32, 64)},
    )


def faces(dest: str | os.PathLike[str] | None = None, *, scale: int = 4) -> Any:
    """scikit-image's ``lfw_subset``: 100 faces and 100 non-face patches (25x25, gray).

    Returns a frame of path, label (``"face"`` / ``"not_face"``) and raw ``pixels``.
    """
    import numpy as np
    import polars as pl

    try:
        from skimage.data import lfw_subset
    except ImportError:
        raise MissingDependencyError("scikit-image", "data", "The faces data set") from None
    imgs = lfw_subset()
    arrays = (imgs * 255.0).round().astype(np.uint8)
    labels = ["face"] * 100 + ["not_face"] * 100
    paths = _write_images(_dest(dest, "faces"), arrays, labels, "patch", scale)
    return pl.DataFrame(
        {"path": paths, "label": labels, "pixels": imgs.reshape(len(imgs), -1).astype(np.float32)},
        schema={"path": pl.String, "label": pl.String, "pixels": pl.Array(pl.Float32, 625)},
    )


def oxford_pets(dest: str | os.PathLike[str] | None = None, *, split: str = "trainval") -> Any:
    """Oxford-IIIT Pets (37 breeds, ~3,700 photos per split) through torchvision, downloaded once when online.

    Returns a frame of path and label (the breed). Offline, a clear error says so; the
    offline examples use :func:`digits`, :func:`faces` and :func:`photographs` instead.
    """
    import polars as pl

    from .exceptions import MlnbError

    d = _dest(dest, "oxford_pets")
    try:
        from torchvision.datasets import OxfordIIITPet

        ds = OxfordIIITPet(str(d), split=split, download=True)
    except Exception as exc:  # noqa: BLE001 - urllib, socket and HTTP errors all mean "no data"
        raise MlnbError(
            f"Could not download Oxford-IIIT Pets ({type(exc).__name__}: {exc}). It needs the internet once; "
            "offline, use mlnb.datasets.digits(), faces() or photographs()."
        ) from None
    names = [c for c in ds.classes]
    return pl.DataFrame({"path": [str(p) for p in ds._images], "label": [names[i] for i in ds._labels]})
