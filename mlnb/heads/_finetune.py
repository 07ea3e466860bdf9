"""Fine-tuning, as the PyTorch transfer-learning tutorial does it: the last ``blocks``
blocks of a backbone and a new linear head are trained on images, with
augmentation, SGD (or Adam) and a step schedule, early stopping on a validation
split (the best epoch is kept), on the GPU when there is one.

The result is two things a user already knows: a model in the zoo, so
``embed(x, model := 'name')`` gives the fine-tuned features in any kernel, and a
classifier head ``name`` on those features, scored from SQL as
``name(embed(path, model := 'name'))``.

::

    CREATE [OR REPLACE] CLASSIFIER name USING finetune
        WITH (model = 'efficientnet_lite0', blocks = 2, epochs = 5, lr = 1e-4,
              augment = 'flip,crop', optimizer = 'sgd', momentum = 0.9, schedule = 'step',
              batch_size = 32, validation = 0.2, patience = 2)
        AS SELECT path AS image, label FROM photos

Images go through the one image loader and the model's own preprocessing (the
embedding engine's ``preprocess`` and ``Loaded._prepare``), so what is trained is
what ``embed()`` later computes. Nothing is written until training has ended:
Ctrl-C, an error or a failed check leave the workspace (and an older head of the
same name) as they were.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as _dt
import hashlib
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .._frames import to_polars
from .._report import carried, collecting, report_failure
from .._version import __version__
from ..config import DEFAULT_MODEL
from ..exceptions import ImageLoadError, Interrupted, MlnbError
from .evaluation import Evaluation, evaluate_predictions

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("step", "cosine", "none")
AUGMENTS = ("flip", "crop", "color", "none")

#: Defaults, as in the PyTorch tutorial where it names them (SGD with momentum 0.9, a step
#: schedule, flips and random crops; its lr 1e-3 trains a random head, ours starts from a
#: fitted one and takes 1e-4), and every option a user can give in WITH (...).
DEFAULTS: dict[str, Any] = {
    "model": DEFAULT_MODEL,
    "blocks": 2,
    "epochs": 5,
    "lr": 1e-4,
    "augment": "flip,crop",
    "optimizer": "sgd",
    "momentum": 0.9,
    "weight_decay": 0.0,
    "schedule": "step",
    "step_size": None,  # None: a third of the epochs (at least 1)
    "gamma": 0.1,
    "batch_size": 32,
    "validation": 0.2,
    "validation_where": None,
    "patience": 2,
    "init_head": "probe",
    "random_state": 0,
    "device": None,
}


# -- which parameters are "the last blocks" -----------------------------------
def backbone_blocks(net: Any) -> list[list[Any]]:
    """The backbone's blocks in forward order, each a list of modules trained together.

    EfficientNet-Lite: its 16 MBConv blocks, then the head convolution with its
    batch norm. torchvision ResNets: their residual blocks; EfficientNet,
    MobileNet and ConvNeXt: the stages of ``features``; ViT: the encoder layers.
    Anything else: its top-level children that have parameters.
    """
    from torch import nn

    def has_params(m: Any) -> bool:
        return any(True for _ in m.parameters())

    if hasattr(net, "_blocks") and hasattr(net, "_conv_head"):
        return [[b] for b in net._blocks] + [[net._conv_head, net._bn1]]
    if all(hasattr(net, f"layer{i}") for i in range(1, 5)):
        return [[b] for i in range(1, 5) for b in getattr(net, f"layer{i}")]
    if isinstance(getattr(net, "features", None), nn.Sequential):
        return [[m] for m in net.features if has_params(m)]
    enc = getattr(net, "encoder", None)
    if enc is not None and isinstance(getattr(enc, "layers", None), nn.Sequential):
        return [[m] for m in enc.layers] + ([[enc.ln]] if hasattr(enc, "ln") else [])
    return [[m] for m in net.children() if has_params(m)]


# -- options ---------------------------------------------------------------
def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` (names ignore case) merged over :data:`DEFAULTS`, checked; an ``MlnbError``
    naming the first bad one."""
    import difflib

    out = dict(DEFAULTS)
    for key, value in options.items():
        k = str(key).lower()
        if k not in DEFAULTS:
            close = difflib.get_close_matches(k, list(DEFAULTS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise MlnbError(f"Unknown option {key!r} for finetune.{hint} Options: {', '.join(DEFAULTS)}.")
        out[k] = value

    def number(k: str, kind: type, low: float, *, low_open: bool = False, high: float | None = None, high_open: bool = False) -> None:
        v = out[k]
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if ok and kind is int:
            ok = float(v) == int(v)
        if ok:
            ok = v > low if low_open else v >= low
        if ok and high is not None:
            ok = v < high if high_open else v <= high
        if not ok:
            what = "a whole number" if kind is int else "a number"
            rng = f"{'above' if low_open else 'at least'} {low:g}" + (f" and {'below' if high_open else 'at most'} {high:g}" if high is not None else "")
            raise MlnbError(f"Option {k} for finetune must be {what} {rng}; got {v!r}.")
        out[k] = kind(v)

    number("blocks", int, 0)
    number("epochs", int, 1)
    number("lr", float, 0, low_open=True)
    number("momentum", float, 0, high=1, high_open=True)
    number("weight_decay", float, 0)
    number("gamma", float, 0, low_open=True, high=1)
    number("batch_size", int, 1)
    number("patience", int, 1)
    number("random_state", int, 0)
    if out["step_size"] is not None:
        number("step_size", int, 1)
    if out["validation_where"] is None:
        number("validation", float, 0, high=1, high_open=True)
    elif not isinstance(out["validation_where"], str) or not out["validation_where"].strip():
        raise MlnbError("Option validation_where for finetune is a SQL condition on the training rows, e.g. 'hash(image) % 5 = 0'.")
    for k, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("init_head", ("probe", "random"))):
        v = str(out[k]).lower()
        if v not in allowed:
            raise MlnbError(f"Unknown {k} {out[k]!r} for finetune: choose from {', '.join(allowed)}.")
        out[k] = v
    augment = out["augment"]
    if isinstance(augment, (list, tuple)):  # from Python: ["flip", "crop"]
        augment = ",".join(map(str, augment))
    parts = [p.strip().lower() for p in str(augment or "none").split(",") if p.strip()]
    bad = [p for p in parts if p not in AUGMENTS]
    if bad:
        raise MlnbError(f"Unknown augment {bad[0]!r} for finetune: give a comma-separated list of {', '.join(AUGMENTS)} (e.g. 'flip,crop').")
    out["augment"] = ",".join(p for p in parts if p != "none")
    if not isinstance(out["model"], str):
        raise MlnbError(f"Option model for finetune names a backbone, e.g. '{DEFAULT_MODEL}'; got {out['model']!r}.")
    if out["device"] is not None:
        _check_device(out["device"])
    return out


def _check_device(device: Any) -> None:
    """A device option that torch knows and this machine has, checked before any image is read
    (torch's own 'Expected one of cpu, cuda, ipu, xpu, ...' came after loading them)."""
    from ..device import resolve_device

    what = "'auto', 'cpu', 'cuda' (or 'cuda:1') or 'mps'"
    if not isinstance(device, str) or not device.strip():
        raise MlnbError(f"Option device for finetune is {what}; got {device!r}.")
    try:
        resolve_device(device)
    except RuntimeError:
        raise MlnbError(f"Option device for finetune is {what}; got {device!r}.") from None
    except MlnbError as exc:  # cuda or mps asked for where there is none
        raise MlnbError(f"Option device = {device!r} for finetune: {str(exc).split(' but ', 1)[-1]}") from None


# -- data ------------------------------------------------------------------
def _load_pixels(spec: Any, sources: list[Any], *, progress: bool | None) -> tuple[np.ndarray, np.ndarray]:
    """Every image as ``resize_size`` squares of uint8 RGB (the engine's resize and centre
    crop, so the centre ``input_size`` crop is exactly what ``embed()`` sees), and which loaded.
    Unreadable images are reported and left out."""
    from ..features.engine import _decode_one, _pool
    from ..images import source_key

    square = dataclasses.replace(spec, input_size=spec.resize_size)
    s = spec.resize_size
    pixels = np.zeros((len(sources), s, s, 3), dtype=np.uint8)
    ok = np.zeros(len(sources), dtype=bool)
    bar = _bar(len(sources), "load images", progress)
    from .._context import current

    ctx = current()
    futures = [_pool().submit(carried(_decode_one), square, src, source_key(src)) for src in sources]
    try:
        for i, fut in enumerate(futures):
            while True:  # short waits: a stop asked from another thread (Ctrl-C in a statement) is seen
                if ctx is not None and ctx.stop.is_set():
                    raise KeyboardInterrupt
                try:
                    res = fut.result(timeout=0.2)
                    break
                except TimeoutError:
                    continue
            if isinstance(res, ImageLoadError):
                report_failure(res.source, res.reason + " (left out of fine-tuning)")
            else:
                pixels[i] = res
                ok[i] = True
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:
        raise Interrupted(f"fine-tuning stopped while loading images ({int(ok.sum())} of {len(sources)} loaded); nothing was saved") from None
    finally:
        for f in futures:
            f.cancel()
        if bar is not None:
            bar.close()
    return pixels, ok


def _with_held_out(df: Any, held: Any, image: str, label: str) -> tuple[Any, np.ndarray]:
    """The training rows and then the held-out validation rows, as one frame of ``image`` and
    ``label`` (the held-out rows' columns of those names, else their first two), and which rows
    are held out."""
    import polars as pl

    if image in held.columns and label in held.columns:
        held = held.select(image, label)
    elif held.width >= 2:
        held = held.select(pl.col(held.columns[0]).alias(image), pl.col(held.columns[1]).alias(label))
    else:
        raise MlnbError(f"The validation rows need an image column and a label column (they have: {', '.join(held.columns)}).")
    if held.height == 0:
        raise MlnbError("The validation rows are empty: give a query or table with held-out images and labels, or a fraction (validation = 0.2).")
    train = df.select(image, label)
    cols = {}
    for c in (image, label):
        a, b = train.get_column(c), held.get_column(c)
        if c == label:
            a, b = a.cast(pl.String), b.cast(pl.String)
        elif a.dtype != b.dtype:  # paths here, bytes there: one column of Python objects
            a, b = pl.Series(c, a.to_list(), dtype=pl.Object), pl.Series(c, b.to_list(), dtype=pl.Object)
        cols[c] = (a, b)
    out = pl.DataFrame({c: pl.concat([a, b]) if a.dtype != pl.Object else pl.Series(c, a.to_list() + b.to_list(), dtype=pl.Object)
                        for c, (a, b) in cols.items()})
    return out, np.r_[np.zeros(train.height, dtype=bool), np.ones(held.height, dtype=bool)]


def _training_frame(frame: Any) -> Any:
    """The training rows as a Polars frame. A pandas column of images in memory (PIL images,
    NumPy arrays), which Arrow cannot convert, is kept as Python objects: the image loader
    reads them as it reads them for ``embed()``."""
    import polars as pl

    try:
        return to_polars(frame)
    except MlnbError:
        raise
    except Exception:
        if not type(frame).__module__.startswith("pandas"):
            raise
    cols = {}
    for c in frame.columns:
        try:
            cols[str(c)] = pl.from_pandas(frame[[c]]).to_series()
        except Exception:  # noqa: BLE001 - a column of Python objects
            cols[str(c)] = pl.Series(str(c), list(frame[c]), dtype=pl.Object)
    return pl.DataFrame(cols)


def _validation_mask(df: Any, where: str) -> np.ndarray:
    """``where`` (DuckDB SQL) evaluated on each training row."""
    import duckdb
    import polars as pl

    con = duckdb.connect()
    try:
        # Images in memory (Object columns) cannot go to DuckDB; the condition is on the other columns.
        con.register("rows", df.select([c for c, t in df.schema.items() if t != pl.Object]).with_row_index("__row"))
        got = con.execute(f"SELECT coalesce(CAST(({where}) AS BOOLEAN), false) AS v FROM rows ORDER BY __row").fetchnumpy()["v"]
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        raise MlnbError(f"validation_where = {where!r} cannot be evaluated on the training rows (columns: {', '.join(df.columns)}): {first}") from None
    finally:
        con.close()
    return np.asarray(got, dtype=bool)


def _split(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A stratified validation mask: ``fraction`` of each class (at least one row of a class
    with two or more)."""
    val = np.zeros(len(y), dtype=bool)
    if fraction <= 0:
        return val
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        k = int(round(fraction * len(rows)))
        k = min(max(k, 1 if len(rows) >= 2 else 0), len(rows) - 1)
        val[rows[:k]] = True
    return val


def _augment(batch: Any, spec: Any, augment: str, gen: Any) -> Any:
    """uint8 N x S x S x 3 (S = resize_size) on the device → uint8 N x 3 x s x s (s = input_size):
    the centre crop without augmentation, else random resized crops, flips and colour jitter."""
    import torch
    import torch.nn.functional as F

    S, s = spec.resize_size, spec.input_size
    x = batch.permute(0, 3, 1, 2)
    n = x.shape[0]
    dev = x.device

    def rand(*shape: int) -> Any:
        return torch.rand(*shape, generator=gen).to(dev)

    if "crop" in augment:
        out = torch.empty((n, 3, s, s), dtype=torch.float32, device=dev)
        # RandomResizedCrop with a milder scale range than torchvision's (0.08): small data sets
        # of whole objects (digits, faces) lose their object in tiny crops.
        area = (0.35 + 0.65 * torch.rand(n, generator=gen)) * S * S
        ratio = torch.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * torch.rand(n, generator=gen))
        for i in range(n):
            w = int(min(S, round(math.sqrt(area[i] * ratio[i]))))
            h = int(min(S, round(math.sqrt(area[i] / ratio[i]))))
            top = int(torch.randint(0, S - h + 1, (1,), generator=gen))
            left = int(torch.randint(0, S - w + 1, (1,), generator=gen))
            patch = x[i : i + 1, :, top : top + h, left : left + w].float()
            out[i] = F.interpolate(patch, size=(s, s), mode="bilinear", align_corners=False, antialias=True)[0]
    else:
        o = (S - s) // 2
        out = x[:, :, o : o + s, o : o + s].float()
    if "flip" in augment:
        flip = rand(n) < 0.5
        out = torch.where(flip.view(-1, 1, 1, 1), out.flip(3), out)
    if "color" in augment:
        bright = (0.8 + 0.4 * rand(n)).view(-1, 1, 1, 1)
        contrast = (0.8 + 0.4 * rand(n)).view(-1, 1, 1, 1)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * contrast + mean * bright
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _bar(total: int, desc: str, progress: bool | None) -> Any:
    if progress is False or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", delay=0.0 if progress else 2.0, mininterval=0.5)


# -- training --------------------------------------------------------------
def finetune_classifier(
    frame: Any,
    *,
    image: str = "image",
    label: str = "label",
    name: str | None = None,
    options: dict[str, Any] | None = None,
    replace: bool = False,
    progress: Any = None,
) -> Any:
    """Fine-tune the last blocks of a backbone and a new linear head on labelled images.

    Parameters
    ----------
    frame : a frame with an image column (paths, URLs, archive members or bytes) and a
        label column.
    options : ``model``, ``blocks`` (0: only the new head; at most the backbone's number of
        blocks), ``epochs``, ``lr``, ``augment`` ('flip', 'crop', 'color', comma-separated,
        or 'none'), ``optimizer`` ('sgd', 'adam', 'adamw'), ``momentum``, ``weight_decay``,
        ``schedule`` ('step': lr times ``gamma`` every ``step_size`` epochs; 'cosine'; 'none'),
        ``batch_size``, ``validation`` (a fraction of each class held out, or a frame of
        held-out images and labels of their own) or
        ``validation_where`` (a SQL condition on the frame's columns choosing the held-out
        rows), ``patience`` (epochs without a better validation accuracy before stopping),
        ``init_head`` ('probe': the new head starts as a logistic regression on the
        frozen features; 'random'), ``random_state``, ``device``.
    name : saves the head as ``name`` and the fine-tuned backbone as the model ``name``,
        so ``name(embed(path, model := 'name'))`` works in SQL in any kernel.
    replace : replace an existing head (and fine-tuned model) of that name; without it, a
        name already used is refused.
    progress : ``False`` hides the progress bars; a callable is also called after each epoch
        with ``(epoch, epochs, metrics)``.

    Images that cannot be read are reported (one warning) and left out.

    Examples
    --------
    >>> import mlnb
    >>> head = mlnb.finetune_classifier(df, image="path", name="digits_ft",
    ...                                 options={"epochs": 3, "blocks": 2})  # doctest: +SKIP
    >>> mlnb.sql("SELECT digits_ft(embed(path, model := 'digits_ft')) FROM new_digits")  # doctest: +SKIP
    """
    from . import store

    if name is not None:
        store.check_new_name(name)
    from .._frames import is_frame

    options = dict(options or {})
    held_out = None  # validation = <rows of their own>: a frame in Python, (SELECT ...) or a table in SQL
    for key in list(options):
        if str(key).lower() == "validation" and is_frame(options[key]):
            held_out = options.pop(key)
    opts = check_options(options)
    if held_out is not None and opts["validation_where"]:
        raise MlnbError("Give validation = <held-out rows> or validation_where = '...', not both.")
    df = _training_frame(frame)
    for col in (image, label):
        if col not in df.columns:
            raise MlnbError(f"No column {col!r} in the training data: fine-tuning needs an image column and a label column (columns: {', '.join(df.columns)}).")
    if df.height == 0:
        raise MlnbError("The training data has no rows.")
    held_out_mask = None
    if held_out is not None:
        df, held_out_mask = _with_held_out(df, _training_frame(held_out), image, label)
    dtype = df.schema[image]
    if dtype.is_numeric() or str(dtype).startswith(("Array", "List")):
        raise MlnbError(f"Column {image!r} holds {dtype}, not images: fine-tuning trains on images (paths, URLs or bytes), e.g. SELECT path AS image, label FROM ...")
    if name is not None and store.versions(name) and not replace:
        raise MlnbError(f"A classifier named {name!r} exists already. A fine-tuned classifier comes with its own model {name!r}: use CREATE OR REPLACE CLASSIFIER (replace=True) or another name.")
    from ..features.zoo import get_spec

    spec = get_spec(opts["model"])
    _check_trainable(spec)
    if name is not None:
        _check_model_name(name)
        _architecture(spec)
    if spec.transform is not None:
        raise MlnbError(f"Model {spec.name!r} has its own transform function; fine-tuning needs a model with the standard resize, crop and mean/std preprocessing.")
    net = _trainable_backbone(spec, opts["blocks"])  # blocks = 99 is refused before the images are read
    val_mask = _validation_mask(df, opts["validation_where"]) if opts["validation_where"] else held_out_mask
    split = f"validation_where = {opts['validation_where']!r}" if opts["validation_where"] else "The validation rows"
    labels = df.get_column(label)
    keep = ~labels.is_null().to_numpy() & ~df.get_column(image).is_null().to_numpy()
    if not keep.all():
        import warnings

        warnings.warn(f"{int((~keep).sum())} of {df.height} training rows have a null image or a null label and were skipped.", stacklevel=2)
    y_all = labels.cast(str).to_numpy()
    classes = np.unique(y_all[keep])
    if len(classes) < 2:
        if not len(classes):
            raise MlnbError(f"Every label in column {label!r} is NULL: a classifier needs labelled rows of at least two classes.")
        raise MlnbError(f"A classifier needs at least two classes; the training data has only {', '.join(map(repr, classes))}.")

    with collecting("images"):
        sources = df.get_column(image).to_list()
        todo = np.flatnonzero(keep)
        pixels, loaded_ok = _load_pixels(spec, [sources[i] for i in todo], progress=None if progress is None or callable(progress) else progress)
        if not loaded_ok.any():
            raise MlnbError(f"None of the {len(todo)} images could be read (a warning says why for each): nothing to fine-tune on.")
        rows = todo[loaded_ok]
        pixels = pixels[loaded_ok]
        y = y_all[rows]
        classes = np.unique(y)
        if len(classes) < 2:
            raise MlnbError(f"After leaving out unreadable images, the training data has only class {', '.join(map(repr, classes)) or 'none'}: a classifier needs at least two.")
        rng = np.random.default_rng(opts["random_state"])
        val = val_mask[rows] if val_mask is not None else _split(y, opts["validation"], rng)
        if val_mask is not None and (val.all() or not val.any()):
            if held_out_mask is not None:
                which = "training" if val.all() else "validation"
                raise MlnbError(f"None of the {which} rows has a readable image and a label (a warning says why).")
            raise MlnbError(f"{split} chose {'every' if val.all() else 'no'} training row: it must hold out some rows and leave the rest to train on.")
        if len(np.unique(y[~val])) < 2:
            raise MlnbError("The rows left for training (outside the validation split) hold only one class.")
        unseen = sorted(set(classes) - set(y[~val]))
        if unseen:  # only validation_where or rows of their own can do this: the fraction keeps a training row of every class
            raise MlnbError(
                f"{split} hold{'s' if opts['validation_where'] else ''} out every row of class {', '.join(map(repr, unseen[:5]))}: "
                "the head could never learn it. Leave some rows of each class to train on."
            )
        result = _train(spec, pixels, y, classes, val, opts, progress=progress, net=net)
    backbone, linear, history, best, train_seconds, device = result

    evaluated_on = f"validation ({int(val.sum())} rows)" if val.any() else "training data"
    evaluation: Evaluation = best["evaluation"]
    evaluation.point_rows_at(rows[np.flatnonzero(val)] if val.any() else rows)
    m = evaluation.metrics.row(0, named=True)
    model_name = name or f"{spec.name}_finetuned"
    head_est = _torch_head(linear, classes, opts)
    meta = {
        "algorithm": "finetune",
        "options": {k: v for k, v in opts.items() if k != "device"},
        "classes": [str(c) for c in classes],
        "feature_model": model_name,
        "layer": "pool",
        "dim": int(linear.in_features),
        "features_column": "features",
        "metrics": {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "log_loss": m["log_loss"], "evaluated_on": evaluated_on},
        "n_rows": int(len(y)),
        "data_hash": _images_hash([sources[i] for i in rows], y),
        "train_seconds": round(train_seconds, 3),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "mlnb_version": __version__,
        "backbone": _lineage(spec, name),
        "finetune": {"blocks": opts["blocks"], "best_epoch": best["epoch"], "epochs_run": sum(1 for r in history if r["epoch"]), "history": history, "device": str(device)},
    }
    from .head import Head, save_head

    head = Head(head_est, meta, evaluation)
    head.backbone_ = backbone
    if name is not None:
        from ..features import _user_models as um

        with _model_kept_until_committed(name):
            _persist_backbone(name, spec, backbone, meta, replace=replace or name in um.names())
            save_head(head, name, replace=replace)
    return head


@contextlib.contextmanager
def _model_kept_until_committed(name: str) -> Iterator[None]:
    """Write the fine-tuned backbone and then the head as one step: the persisted model
    ``name`` as it was (every file of its folder, hard-linked aside) is put back when anything
    in the block fails or is interrupted, and a model the block created is removed. Without
    this, a failed head save after the backbone was replaced left the old head scoring the
    new backbone's features."""
    from ..features import _user_models as um
    from ..workspace import atomic_write_bytes, get_workspace

    root = um.models_root(create=True)
    folder = root / name
    kept = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.kept-"))
    try:
        existed = (folder / "spec.json").is_file()
        if existed:
            for p in folder.iterdir():
                if p.is_file():
                    try:
                        os.link(p, kept / p.name)
                    except OSError:  # a file system without hard links
                        shutil.copy2(p, kept / p.name)
        try:
            yield
        except BaseException:
            try:
                with get_workspace().lock(f"model-{name}"):
                    if not existed:
                        shutil.rmtree(folder, ignore_errors=True)
                    else:
                        folder.mkdir(exist_ok=True)
                        old_files = {p.name for p in kept.iterdir()}
                        for f in old_files - {"spec.json"}:
                            os.replace(kept / f, folder / f)
                        atomic_write_bytes(folder / "spec.json", (kept / "spec.json").read_bytes())  # last: readers switch back at once
                        for p in folder.iterdir():  # the new weights
                            if p.name not in old_files:
                                shutil.rmtree(p) if p.is_dir() else p.unlink()
            except Exception as exc:  # noqa: BLE001 - the first failure is the one to report
                report_failure(f"model {name}", f"could not be put back as it was after the failed save: {exc}")
            raise
    finally:
        shutil.rmtree(kept, ignore_errors=True)


def _trainable_backbone(spec: Any, n_blocks: int) -> tuple[Any, list[list[Any]]]:
    """A copy of ``spec``'s network to train and its blocks; ``MlnbError`` when it is no torch
    module or has fewer than ``n_blocks`` blocks (checked before any image is read)."""
    from torch import nn

    backbone, _imagenet = spec.build()
    backbone = copy.deepcopy(backbone)  # never train the zoo's own (user models build the same object)
    if not isinstance(backbone, nn.Module):
        raise MlnbError(f"Model {spec.name!r} is not a torch module that can be trained (it is {type(backbone).__name__}).")
    blocks = backbone_blocks(backbone)
    if n_blocks > len(blocks):
        has = f"{len(blocks)} block{'s' if len(blocks) != 1 else ''}"
        raise MlnbError(f"blocks = {n_blocks} is more than {spec.name} has: it has {has}; use blocks = {len(blocks)} or fewer (0 trains only the new head).")
    return backbone, blocks


def _train(spec: Any, pixels: np.ndarray, y: np.ndarray, classes: np.ndarray, val: np.ndarray, opts: dict[str, Any], *, progress: Any, net: Any = None) -> tuple:
    import torch
    from torch import nn

    from .._context import current
    from ..device import autocast_dtype, resolve_device
    from ..features.engine import Loaded
    from .torch_head import TorchHead

    seed = opts["random_state"]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    device = resolve_device(opts["device"])
    amp = autocast_dtype(device)
    backbone, blocks = net if net is not None else _trainable_backbone(spec, opts["blocks"])
    for p in backbone.parameters():
        p.requires_grad_(False)
    trainable = [m for group in blocks[len(blocks) - opts["blocks"] :] for m in group]
    for mod in trainable:
        for p in mod.parameters():
            p.requires_grad_(True)
    # channels-last, as the engine runs it (inputs from Loaded._prepare are channels-last; a
    # module left in the default format falls onto slow mixed-format convolutions: 30x on CPU).
    backbone.to(device, memory_format=torch.channels_last)
    runner = Loaded(spec=spec, backbone=backbone, head=None, device=device, dtype=None)
    with torch.no_grad():
        probe = runner._prepare(np.zeros((1, spec.input_size, spec.input_size, 3), dtype=np.uint8))
        dim = int(backbone.eval()(probe).flatten(1).shape[1])
    linear = TorchHead(hidden=0)._build(dim, len(classes)).to(device)
    yi = np.searchsorted(classes, y)
    tr_rows, val_rows = np.flatnonzero(~val), np.flatnonzero(val)
    bs = opts["batch_size"]
    params = [p for p in backbone.parameters() if p.requires_grad] + list(linear.parameters())
    wd = opts["weight_decay"]
    if opts["optimizer"] == "sgd":
        opt = torch.optim.SGD(params, lr=opts["lr"], momentum=opts["momentum"], weight_decay=wd)
    elif opts["optimizer"] == "adam":
        opt = torch.optim.Adam(params, lr=opts["lr"], weight_decay=wd)
    else:
        opt = torch.optim.AdamW(params, lr=opts["lr"], weight_decay=wd)
    epochs = opts["epochs"]
    if opts["schedule"] == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=opts["step_size"] or max(1, epochs // 3), gamma=opts["gamma"])
    elif opts["schedule"] == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    else:
        sched = None
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    eval_rows = val_rows if len(val_rows) else tr_rows
    loss_fn = nn.CrossEntropyLoss()
    ctx = current()
    stop = ctx.stop if ctx is not None else None

    def autocast() -> Any:
        if amp is None:
            import contextlib

            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=amp)

    def set_mode(training: bool) -> None:
        # Batch norm stays in inference mode in the trained blocks too (its scale and shift still
        # learn): batch statistics of a few small batches would move the features the head was
        # fitted on (Keras's transfer-learning guide gives the same advice).
        backbone.eval()
        linear.train(training)

    def batch_of(idx: np.ndarray, augment: str) -> Any:
        x = torch.from_numpy(pixels[idx]).to(device, non_blocking=True)
        return runner._prepare(_augment(x, spec, augment, gen))

    def predict(idx: np.ndarray) -> tuple[np.ndarray, float]:
        set_mode(False)
        out, total = [], 0.0
        with torch.no_grad():
            for i in range(0, len(idx), max(bs, 32)):
                part = idx[i : i + max(bs, 32)]
                with autocast():
                    logits = linear(backbone(batch_of(part, "")).flatten(1)).float()
                total += float(loss_fn(logits, torch.from_numpy(yi[part]).to(device))) * len(part)
                out.append(torch.softmax(logits, 1).cpu().numpy())
        return np.concatenate(out), total / max(1, len(idx))

    history: list[dict[str, Any]] = []
    diverged = 0  # the epoch whose loss was not finite
    best: dict[str, Any] = {"score": None}
    bad = 0
    steps = math.ceil(len(tr_rows) / bs)
    bar = None if progress is False or callable(progress) else _bar(epochs * len(tr_rows), f"finetune {spec.name}", progress)
    t0 = time.perf_counter()
    epoch = 0
    def record(epoch: int, train_loss: float | None) -> bool:
        """Evaluate, remember the best state; True when patience has run out."""
        nonlocal best, bad
        proba, vloss = predict(eval_rows)
        ev = evaluate_predictions(y[eval_rows], proba, classes)
        acc = float(ev.metrics["accuracy"][0])
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": vloss, "val_accuracy": acc}
        history.append(row)
        if bar is not None:
            bar.set_postfix(loss=f"{train_loss or float('nan'):.3f}", val_acc=f"{acc:.3f}")
        if callable(progress):
            progress(epoch, epochs, row)
        score = (acc, -vloss)
        if math.isfinite(vloss) and (best["score"] is None or score > best["score"]):
            bad = 0
            best = {
                "score": score, "epoch": epoch, "evaluation": ev,
                "backbone": {k: v.detach().to("cpu", copy=True) for k, v in backbone.state_dict().items()},
                "linear": {k: v.detach().to("cpu", copy=True) for k, v in linear.state_dict().items()},
            }
            return False
        if len(val_rows):
            bad += 1
        return bad >= opts["patience"]

    stage = "while fitting the starting head"
    try:
        if opts["init_head"] == "probe":
            _probe(linear[0], backbone, runner, pixels, tr_rows, yi, len(classes), max(bs, 32))
        # Epoch 0 is the starting point (the linear probe on frozen features): when no epoch of
        # fine-tuning beats it on the validation rows, it is what is kept.
        if opts["init_head"] == "probe" and len(val_rows):
            record(0, None)
        for epoch in range(epochs):
            stage = f"during epoch {epoch + 1} of {epochs}"
            set_mode(True)
            order = tr_rows[torch.randperm(len(tr_rows), generator=gen).numpy()]
            total = 0.0
            for s in range(steps):
                if stop is not None and stop.is_set():
                    raise KeyboardInterrupt
                # A batch of one image trains too: batch norm stays in inference mode (set_mode).
                idx = order[s * bs : (s + 1) * bs]
                target = torch.from_numpy(yi[idx]).to(device)
                opt.zero_grad(set_to_none=True)
                with autocast():
                    loss = loss_fn(linear(backbone(batch_of(idx, opts["augment"])).flatten(1)).float(), target)
                if not torch.isfinite(loss):
                    diverged = epoch + 1
                    break
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                total += float(loss.detach()) * len(idx)
                if bar is not None:
                    bar.update(len(idx))
            if diverged:
                break
            if sched is not None:
                sched.step()
            if record(epoch + 1, total / max(1, len(tr_rows))):
                break
    except KeyboardInterrupt:
        raise Interrupted(f"fine-tuning stopped {stage}; nothing was saved") from None
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    if diverged:
        # The weights are NaN or infinite from here on: never save them.
        say = f"Fine-tuning diverged: the training loss became {float(loss.detach()):g} in epoch {diverged} (lr = {opts['lr']:g})"
        if best["score"] is None:
            raise MlnbError(f"{say}; nothing was saved. Lower lr (e.g. {opts['lr'] / 10:g}).")
        import warnings

        warnings.warn(f"{say}: training stopped and epoch {best['epoch']} is kept. A lower lr may do better.", stacklevel=3)
    backbone.load_state_dict(best["backbone"])
    linear.load_state_dict(best["linear"])
    for p in backbone.parameters():
        p.requires_grad_(False)
    backbone, linear = backbone.cpu().eval(), linear.cpu().eval()
    return backbone, linear[0], history, best, seconds, device


def _probe(linear: Any, backbone: Any, runner: Any, pixels: np.ndarray, rows: np.ndarray, yi: np.ndarray, k: int, bs: int) -> None:
    """Start the new head from a linear probe: logistic regression on the frozen backbone's
    features of the training images (centre crops). Fine-tuning from a fitted head rather than
    a random one keeps the first steps from wrecking the pretrained blocks (LP-FT, Kumar et
    al. 2022) and needs far fewer epochs on small data."""
    import torch
    from sklearn.linear_model import LogisticRegression

    spec = runner.spec
    backbone.eval()
    feats = []
    with torch.no_grad():
        for i in range(0, len(rows), bs):
            x = torch.from_numpy(pixels[rows[i : i + bs]]).to(runner.device)
            feats.append(backbone(runner._prepare(_augment(x, spec, "", None))).flatten(1).float().cpu().numpy())
    X = np.concatenate(feats).astype(np.float64)
    # Centre each feature and scale all by one number (as TorchHead does: pooled ReLU features are
    # sparse, and a per-feature std near zero would blow up a rare activation), then fold the
    # centring and scaling into the layer's weights so it takes the raw features.
    mu = X.mean(axis=0)
    s = float((X - mu).std()) + 1e-6
    y = yi[rows]
    # C = 0.1: a softer probe than the default. An over-confident start gives large gradients
    # that move the pretrained blocks too far in the first steps (measured on digits).
    lr = LogisticRegression(C=0.1, max_iter=1000).fit((X - mu) / s, y)
    W = np.zeros((k, X.shape[1]))
    b = np.zeros(k)
    if len(lr.classes_) == 2 and lr.coef_.shape[0] == 1:  # binary: one logit, as two with the same softmax
        W[lr.classes_[1]], b[lr.classes_[1]] = lr.coef_[0] / 2, lr.intercept_[0] / 2
        W[lr.classes_[0]], b[lr.classes_[0]] = -lr.coef_[0] / 2, -lr.intercept_[0] / 2
    else:
        W[lr.classes_], b[lr.classes_] = lr.coef_, lr.intercept_
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(W / s).float())
        linear.bias.copy_(torch.from_numpy(b - (W / s) @ mu).float())


def _torch_head(linear: Any, classes: np.ndarray, opts: dict[str, Any]) -> Any:
    """The trained linear layer as a :class:`TorchHead` (the store's torch format), taking the
    backbone's pooled features as they are (no centring or scaling)."""
    from torch import nn

    from .torch_head import TorchHead

    head = TorchHead(hidden=0, epochs=opts["epochs"], lr=opts["lr"], batch_size=opts["batch_size"], patience=opts["patience"], random_state=opts["random_state"])
    head.classes_ = np.array([str(c) for c in classes], dtype=object)
    head.n_features_in_ = int(linear.in_features)
    head.mean_ = np.zeros(linear.in_features, dtype=np.float32)
    head.scale_ = np.ones(linear.in_features, dtype=np.float32)
    head.n_epochs_ = int(opts["epochs"])
    head.model_ = nn.Sequential(linear).eval()
    return head


def _images_hash(sources: list[Any], y: np.ndarray) -> str:
    from ..images import source_key

    h = hashlib.sha1()
    for src, label in zip(sources, y):
        h.update(str(source_key(src) or repr(src)[:200]).encode())
        h.update(b"\x00" + str(label).encode() + b"\x01")
    return h.hexdigest()[:16]


# -- the fine-tuned backbone in the zoo ---------------------------------------
def _architecture(spec: Any) -> str:
    """The architecture mlnb rebuilds ``spec``'s network from when it loads the saved weights."""
    from ..features import _user_models as um

    if spec.name in um.architectures():
        return spec.name
    if um.lookup(spec.name) is spec or spec.name in um.names():
        stored = um.read_model_spec(spec.name)
        if stored.get("format") == "state_dict" and stored.get("architecture") and not stored.get("layer"):
            return str(stored["architecture"])
    raise MlnbError(
        f"Model {spec.name!r} cannot be saved once fine-tuned: mlnb saves fine-tuned backbones of known architectures "
        f"(efficientnet_lite0/1/2, torchvision models, or workspace models made from their weights). "
        "Leave out the name to fine-tune without saving."
    )


def _check_trainable(spec: Any) -> None:
    """Refuse, before any image is read, a base model whose weights mlnb cannot train."""
    from ..features import _user_models as um

    if spec.name in um.names():
        stored = um.read_model_spec(spec.name)
        fmt = stored.get("format")
        if stored.get("layer"):  # its features are an inner layer's: the blocks after it do not run
            raise MlnbError(
                f"Model {spec.name!r} gives the features of its inner layer {stored['layer']!r}: fine-tuning trains a network's "
                f"last blocks and its pooled features. Fine-tune a model made from the same weights without layer = ..., "
                f"or train a head on these features (CREATE CLASSIFIER ... USING logistic)."
            )
        if fmt in ("torchscript", "onnx"):
            kind = "a TorchScript" if fmt == "torchscript" else "an ONNX"
            raise MlnbError(
                f"Model {spec.name!r} is {kind} file: mlnb fine-tunes models it can rebuild from a state dict. "
                f"Use a model of the zoo, or make one from the weights: CREATE MODEL name FROM 'weights.pth' "
                f"WITH (architecture = 'resnet18'); or train a head on its features (CREATE CLASSIFIER ... USING logistic)."
            )


def _check_model_name(name: str) -> None:
    """Refuse, before training, a name the fine-tuned backbone cannot take."""
    from ..features import _user_models as um
    from ..features.zoo import _REGISTRY

    um.check_model_name(name)
    if name in _REGISTRY:
        raise MlnbError(f"{name!r} is the name of a model in the zoo: a fine-tuned classifier saves its backbone under its own name, so choose another name.")
    if name in um.names():
        owner = (um.read_model_spec(name).get("meta") or {}).get("classifier")
        if owner != name:
            raise MlnbError(f"The workspace has a model named {name!r} that is not the backbone of classifier {name!r}: a fine-tuned classifier saves its backbone under its own name. Choose another name, or DROP MODEL {name} first.")
        # Left by a classifier of this name that was dropped (DROP CLASSIFIER keeps models): the
        # new backbone takes its place. A classifier still there was refused before (no OR REPLACE).


def _lineage(spec: Any, name: str | None) -> str:
    """The model the backbone was fine-tuned from. CREATE OR REPLACE CLASSIFIER ft USING finetune
    WITH (model = 'ft') trains ft's own backbone again: its origin is what ft came from (the model
    'ft' is about to be replaced, so 'fine-tuned from ft' would name the result itself)."""
    if name is None or spec.name != name:
        return spec.name
    from ..features import _user_models as um

    with contextlib.suppress(MlnbError):
        before = (um.read_model_spec(name).get("meta") or {}).get("finetuned_from")
        if before:
            return str(before)
    return spec.name


def _persist_backbone(name: str, spec: Any, backbone: Any, meta: dict[str, Any], *, replace: bool) -> None:
    from ..features._user_models import persist_model

    persist_model(
        name,
        architecture=_architecture(spec),
        state_dict=backbone.state_dict(),
        input_size=spec.input_size,
        mean=spec.mean,
        std=spec.std,
        replace=replace,
        meta={"classifier": name, "finetuned_from": meta["backbone"], "data_hash": meta["data_hash"], "blocks": meta["finetune"]["blocks"]},
    )


# -- CREATE CLASSIFIER ... USING finetune --------------------------------------
def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def create_statement(session: Any, stmt: Any, name: str, opts: dict[str, Any], query: Any, ns: Any, *, replace: bool) -> Any:
    """The statement's result: one row saying what was trained and how well it did."""
    import polars as pl

    from ..exceptions import QueryError

    df = session._run_one(query, ns, lazy=False)
    held = next((k for k in opts if str(k).lower() == "validation"), None)
    value = opts.get(held) if held is not None else None
    if value is not None and not isinstance(value, (int, float)):  # rows of their own: (SELECT ...) or a table
        from ..sql._classifier_statements import Subquery
        from ..sql._errors import quote
        from ..sql._parse import parse

        if isinstance(value, Subquery):
            vq = value.statement
        elif isinstance(value, str) and value.strip() and not _is_number(value):
            vq = parse(f"SELECT * FROM {quote(value.strip())}")[0]
        else:
            raise QueryError(
                "validation is a fraction of the rows (validation = 0.2), a query in parentheses "
                f"(validation = (SELECT path AS image, label FROM held_out)) or a table name; got {value!r}.",
                statement=stmt.text,
            )
        opts = {**opts, held: session._run_one(vq, ns, lazy=False)}
    cols = list(df.columns)
    if "image" in cols and "label" in cols:
        image, label = "image", "label"
    elif len(cols) >= 2:
        image, label = cols[0], cols[1]
    else:
        raise QueryError("USING finetune trains on images: the query must return an image column and a label column, e.g. SELECT path AS image, label FROM ...", statement=stmt.text)
    head = finetune_classifier(df, image=image, label=label, name=name, options=opts, replace=replace)
    met, ft = head.meta["metrics"], head.meta["finetune"]
    return pl.DataFrame(
        {
            "classifier": [head.ref], "model": [head.meta["feature_model"]], "algorithm": ["finetune"],
            "backbone": [head.meta["backbone"]], "blocks": [ft["blocks"]], "classes": [len(head.meta["classes"])],
            "rows": [head.meta["n_rows"]], "evaluated_on": [met["evaluated_on"]], "accuracy": [met["accuracy"]],
            "macro_f1": [met["macro_f1"]], "log_loss": [met["log_loss"]], "best_epoch": [ft["best_epoch"]],
            "epochs_run": [ft["epochs_run"]], "device": [ft["device"]], "train_seconds": [head.meta["train_seconds"]],
        }
    )
