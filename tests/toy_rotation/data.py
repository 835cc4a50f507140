"""A toy task's data: unlabelled images, each shown in 4 rotations labelled by the rotation (self-supervised)."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from headstart.tasks.image.data import ImageSplits, Sample, image_files
from headstart.tasks.image.dataset import ImageData, ImageDataset

ROTATIONS = ["0", "90", "180", "270"]


class RotatedDataset(ImageDataset):
    """The image turned by its label times 90 degrees, after the usual transform."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x, label = super().__getitem__(index)
        return torch.rot90(x, k=max(label, 0), dims=(1, 2)), label


class RotationData(ImageData):
    """ImageData whose items are (image, rotation) pairs; cache keys tell the rotations apart."""

    def __init__(self, splits: ImageSplits, spec, seed: int = 0) -> None:
        super().__init__(splits, spec, augment="none", seed=seed)
        for samples in self.splits.values():
            for s in samples:
                s.key = f"{s.key}:rot{s.label}"

    def dataset(self, split: str, train: bool, epoch: int) -> RotatedDataset:
        ds = RotatedDataset(self.splits[split], self.store, self.train_tf if train else self.eval_tf, self.seed)
        ds.epoch = epoch
        return ds

    def transform_id(self, train: bool) -> str:
        return "rot90 " + super().transform_id(train)


def read(folder: str | Path, val_fraction: float, seed: int) -> ImageSplits:
    """Every image of ``folder`` in 4 rotations; whole images go to train or to validation (seeded).

    ``val_fraction=1``: every image in validation (for evaluate and predict).
    """
    files = image_files([folder])
    random.Random(seed).shuffle(files)
    if val_fraction >= 1:
        return ImageSplits(ROTATIONS, [Sample(files[0], label=0)],
                           [Sample(f, label=k) for f in files for k in range(len(ROTATIONS))], layout="all images")
    n_val = max(1, round(len(files) * val_fraction))
    rotated = [[Sample(f, label=k) for k in range(len(ROTATIONS))] for f in files]
    return ImageSplits(ROTATIONS, [s for group in rotated[n_val:] for s in group],
                       [s for group in rotated[:n_val] for s in group], layout="images in 4 rotations")
