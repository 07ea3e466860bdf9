"""Classifier heads: algorithms with the scikit-learn contract, evaluation,
a pickle-free store, and scorer functions callable from SQL."""

from __future__ import annotations

from . import functions as _functions  # noqa: F401 - heads of the workspace in use become SQL functions
from ._export import export_classifier
from ._finetune import finetune_classifier
from ._search import trials  # the SQL table function trials('name') and its Python twin
from .functions import classifier_confusion, classifier_folds, regressor_folds  # SQL tables with Python twins
from .head import Head, classifiers, cross_validate, drop_classifier, load_classifier, save_head, train_classifier
from .regressor import Regressor, drop_regressor, load_regressor, regressors, train_regressor

__all__ = [
    "Head", "Regressor", "classifier_confusion", "classifier_folds", "classifiers", "cross_validate", "drop_classifier",
    "drop_regressor", "export_classifier", "finetune_classifier", "load_classifier", "load_regressor", "regressor_folds", "regressors", "save_head",
    "train_classifier", "train_regressor", "trials",
]
