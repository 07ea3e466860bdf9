"""Widgets: a Python controller per widget (state, logic, persistence) and a thin
anywidget view: the labeler, the embedding explorer, the trainer."""

from __future__ import annotations

from .explorer import Explorer, explore
from .labeler import Labeler, label
from .trainer import Trainer, train

__all__ = ["Explorer", "Labeler", "Trainer", "explore", "label", "train"]
