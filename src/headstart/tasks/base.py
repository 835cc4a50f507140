"""The Task protocol: what a task declares so that the CLI, the Python API, compare and advise can use it.

A task is data, importable without torch: its names, its config defaults and section, its keyword
shortcuts, what ``predict`` takes, and where its estimator class lives (imported only when used).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Task:
    """One task headstart trains (image classification, text classification, detection...)."""

    name: str  # what ``--task`` takes, e.g. "image"
    estimator: str | type  # the Python API class, or "module:Class" (imported on first use)
    run_kind: str  # recorded in a run folder's headstart.json, e.g. "image-classification"
    summary: str  # one line for --help
    aliases: tuple[str, ...] = ()
    section: str | None = None  # the config section only this task reads (e.g. "text", "detection")
    defaults: dict[str, Any] = field(default_factory=dict)  # config defaults, under YAML file and overrides
    shortcuts: dict[str, str] = field(default_factory=dict)  # estimator keyword -> config key, besides the common ones
    inputs: str = "images"  # what predict takes: "images" (files, folders) or "texts"
    metric: str = "accuracy"  # the headline validation score (compare and advise rank by it)

    def estimator_class(self) -> type:
        """The task's estimator class (``ImageClassifier``...), imported now."""
        if isinstance(self.estimator, type):
            return self.estimator
        module, _, name = self.estimator.partition(":")
        return getattr(importlib.import_module(module), name)


# Keyword arguments every estimator takes, and the config keys they set.
COMMON_SHORTCUTS = {
    "model": "model.name", "weights": "model.weights", "pretrained": "model.pretrained",
    "strategy": "train.strategy", "epochs": "train.epochs", "head_epochs": "train.head_epochs",
    "lr": "train.lr", "batch_size": "train.batch_size", "seed": "train.seed",
    "early_stopping": "train.early_stopping", "time_budget": "train.time_budget", "cache": "cache.enabled",
    "cache_views": "cache.views", "strict": "data.strict", "val_fraction": "data.val_fraction",
    "class_weights": "train.class_weights", "balanced_sampling": "train.balanced_sampling", "refit": "train.refit",
    "operating_point": "train.operating_point",
}
