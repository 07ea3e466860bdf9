"""Widgets: a Python controller per widget (state, logic, persistence) and a thin
anywidget view. Only the labeler exists so far; the explorer and trainer are to come."""

from __future__ import annotations

from .explorer import Explorer, explore
from .labeler import Labeler, label
from .trainer import Trainer, train

__all__ = ["Explorer", "Labeler", "Trainer", "explore", "label", "train"]
