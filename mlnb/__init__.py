"""mlnb: SQL with CNN features and classifier heads, inside Jupyter.

>>> import mlnb
>>> mlnb.sql("SELECT 42 AS answer")  # doctest: +SKIP

In a notebook: ``%load_ext mlnb``, then ``%%mlsql`` cells.
Heavy libraries (torch, umap, plotly) load only when a function needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._report import ImageLoadWarning
from ._version import __version__
from .config import config
from .exceptions import (
    ImageLoadError,
    MissingDependencyError,
    MlnbError,
    ModelNotFoundError,
    NotFittedError,
    QueryError,
    WorkspaceError,
)

# The subpackages ``mlnb.functions`` and ``mlnb.sql`` are light (no heavy
# imports); importing them first lets the same-named functions below win the
# attribute, so ``mlnb.sql(...)`` and ``mlnb.functions()`` are the functions.
from .functions import function, functions  # noqa: E402
from .sql import sql  # noqa: E402

# name -> module that defines it; imported on first access.
_LAZY = {
    "read_images": "mlnb.functions.read_images",
    "Workspace": "mlnb.workspace",
    "get_workspace": "mlnb.workspace",
    "load_image": "mlnb.images",
    "embed": "mlnb.features",
    "imagenet_labels": "mlnb.features",
    "register_model": "mlnb.features",
    "list_models": "mlnb.features",
    "cache": "mlnb.features",
    "datasets": "mlnb.datasets",
    "label": "mlnb.widgets",
    "explore": "mlnb.widgets",
    "train": "mlnb.widgets",
    "embed_frame": "mlnb.features",
    "train_classifier": "mlnb.heads",
    "load_classifier": "mlnb.heads",
    "classifiers": "mlnb.heads",
    "train_regressor": "mlnb.heads",
    "load_regressor": "mlnb.heads",
    "regressors": "mlnb.heads",
    "trials": "mlnb.heads",
    "finetune_classifier": "mlnb.heads",
    "export_classifier": "mlnb.heads",
    "last_failures": "mlnb._report",
    "label_issues": "mlnb.quality",
    "near_duplicates": "mlnb.quality",
    "duplicate_groups": "mlnb.quality",
    "outliers": "mlnb.quality",
    "create_function": "mlnb.sql._persisted",
    "drop_function": "mlnb.sql._persisted",
    "persisted_functions": "mlnb.sql._persisted",
    "create_model": "mlnb.features._user_models",
    "drop_model": "mlnb.features._user_models",
    "persist_model": "mlnb.features._user_models",
}

from . import exceptions as _exceptions  # noqa: E402

__all__ = sorted(
    [
        *_exceptions.__all__,
        "ImageLoadWarning",
        "__version__",
        "config",
        "function",
        "functions",
        "sql",
        "load_ipython_extension",
        *_LAZY,
    ]
)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlnb' has no attribute {name!r}")
    mod = importlib.import_module(module)
    value = getattr(mod, name, mod)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


def _ensure_builtins() -> None:
    """Register the built-in functions (cheap: nothing heavy is imported)."""
    importlib.import_module("mlnb.functions.read_images")
    importlib.import_module("mlnb.features")
    importlib.import_module("mlnb.heads")
    importlib.import_module("mlnb.quality")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext mlnb``: register ``%%mlsql``, ``%mlsql`` and ``%embed``."""
    from .magics import load_ipython_extension as _load

    _load(ipython)
