"""Classifier heads: algorithms with the scikit-learn contract, evaluation,
a pickle-free store, and scorer functions callable from SQL."""

from __future__ import annotations

from . import functions as _functions  # noqa: F401 - heads of the workspace in use become SQL functions
from ._search import trials  # the SQL table function trials('name') and its Python twin
from .head import Head, classifiers, cross_validate, drop_classifier, load_classifier, save_head, train_classifier

__all__ = ["Head", "classifiers", "cross_validate", "drop_classifier", "load_classifier", "save_head", "train_classifier", "trials"]
