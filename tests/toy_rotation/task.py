"""A toy task, registered from outside the package: which way is this image turned? (0, 90, 180, 270)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from toy_rotation.data import RotationData, read

from headstart.core import loop
from headstart.core.backbones import registry
from headstart.core.estimator import Prepared
from headstart.tasks import register
from headstart.tasks.base import Task
from headstart.tasks.classification.estimator import ClassifierEstimator
from headstart.tasks.classification.metrics import classification_report
from headstart.tasks.classification.model import TransferClassifier
from headstart.tasks.classification.training import predict_logits


class RotationClassifier(ClassifierEstimator):
    """Learns the rotation of images from a folder of unlabelled images."""

    TASK = "rotation"
    NOUN = "images"

    def _data(self, folder: str | Path, val_fraction: float, backbone_spec) -> RotationData:
        return RotationData(read(folder, val_fraction, self.config.train.seed), backbone_spec, self.config.train.seed)

    def _prepare(self, data: str | Path, run: Path) -> Prepared:
        cfg = self.config
        backbone = registry.create_backbone(cfg.model.name, cfg.model.pretrained, cfg.model.weights)
        splits = read(data, cfg.data.val_fraction, cfg.train.seed)
        rotations = RotationData(splits, backbone.spec, cfg.train.seed)
        model = TransferClassifier(backbone, len(rotations.classes), cfg.model.dropout)
        return Prepared(model, rotations, splits)

    def _report_item(self, sample: Any) -> Path:
        return sample.path

    def _logits(self, data: RotationData, split: str) -> torch.Tensor:
        fabric = loop.make_fabric(self.config.device)
        return predict_logits(fabric, self._require_fitted(), data.dataset(split, False, 0), 8)

    def predict_proba(self, inputs: Any) -> tuple[list[Path], torch.Tensor]:
        """Rotation probabilities of each image as it is stored."""
        data = self._data(inputs[0] if isinstance(inputs, list) else inputs, 1.0, self.model_.backbone.spec)
        samples = [s for s in data.splits["val"] if s.label == 0]
        data.splits["val"] = samples
        return [s.path for s in samples], self._logits(data, "val").softmax(dim=1)

    def evaluate(self, data: str | Path) -> dict[str, Any]:
        """Accuracy over every image of a folder in its 4 rotations."""
        rotations = self._data(data, 1.0, self.model_.backbone.spec)
        return classification_report(self._logits(rotations, "val"), rotations.labels("val"), self.classes_,
                                      self.train_counts_)


TASK = register(Task(name="rotation", estimator=RotationClassifier, run_kind="rotation",
                     summary="a folder of images; learns which way each is turned",
                     defaults={"model": {"name": "mobilenet_v2"}, "train": {"epochs": 5}, "cache": {"views": 1}}))
