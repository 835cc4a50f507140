"""Multi-label classification in the training loop: single-label's steps with sigmoid outputs.

``ClassificationSteps`` (caches, cached views, loaders, validation) with multi-hot targets:
positives per class instead of class counts, BCE-with-logits (``train.class_weights``: each rare
label's positives weighted by negatives / positives), mAP as the selection metric, and the L-BFGS
head as one-vs-rest logistic regressions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from headstart.config import RunConfig
from headstart.core.scratch import Scratch
from headstart.errors import ConfigError
from headstart.tasks.classification.probe import LogisticFit
from headstart.tasks.classification.training import ClassificationSteps
from headstart.tasks.multilabel.metrics import multilabel_report, positive_weights
from headstart.tasks.multilabel.probe import fit_multilabel_cv


class MultiLabelSteps(ClassificationSteps):
    """The loop's ``Steps`` for a ``TransferClassifier`` with one sigmoid output per class."""

    scores = ("loss", "map", "macro_f1")

    def __init__(self, data: Any, cfg: RunConfig) -> None:
        if cfg.train.balanced_sampling:
            raise ConfigError("train.balanced_sampling draws one class per item; a multi-label item has several: use "
                              "train.class_weights=true (rare labels' positives weigh more in the loss)")
        super().__init__(data, cfg)

    def class_counts(self, labels: torch.Tensor) -> list[int]:
        """Training items carrying each label."""
        return labels.sum(0).long().tolist()

    def selection_metric(self) -> str:
        return "macro_f1" if self.cfg.train.select_metric == "macro_f1" else "map"

    def make_criterion(self) -> nn.Module:
        weights = positive_weights(self.train_counts, self.num_train) if self.cfg.train.class_weights else None
        return nn.BCEWithLogitsLoss(pos_weight=weights)

    def report(self, logits: torch.Tensor) -> dict[str, Any]:
        return multilabel_report(logits.float().sigmoid(), self.val_labels, self.data.classes, self.train_counts, self.num_train)

    def fit_head(self, x: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, plain: torch.Tensor) -> LogisticFit:
        return fit_multilabel_cv(x, labels, groups, plain, seed=self.cfg.train.seed, pos_weight=self.criterion.pos_weight,
                                 scratch=Scratch.of(self.cfg.cache))
