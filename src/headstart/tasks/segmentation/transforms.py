"""Joint image + mask transforms (torchvision v2, the mask a ``tv_tensors.Mask``) and the dataset.

The mask moves with the pixels: v2 resizes a ``Mask`` with nearest neighbour, pads it with 255
(ignore) where the image is padded, flips and crops it with the image; colour jitter and
normalisation touch the image alone. Augmentation is drawn from torch's generator seeded per
(seed, epoch, pair) (``item_rng``), so a view is reproducible and the feature cache can key it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from headstart.core.backbones.spec import BackboneSpec
from headstart.errors import DataError
from headstart.tasks.flips import DEFAULT, Flips
from headstart.tasks.image.dataset import item_rng
from headstart.tasks.image.decode import open_image, to_rgb
from headstart.tasks.image.transforms import describe  # noqa: F401 - the text of a pipeline, for cache keys
from headstart.tasks.segmentation.data import IGNORE_INDEX, SegSample

SCALE_RANGE = (0.5, 2.0)  # shorter side drawn in [0.5, 2] x size before the size x size crop
AUGMENTS = ("none", "light", "standard")


def _normalize(spec: BackboneSpec) -> list:
    return [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            v2.Normalize(list(spec.mean), list(spec.std))]


def eval_transform(spec: BackboneSpec, size: int) -> v2.Compose:
    """Shorter side resized to ``size`` (the mask with nearest neighbour), then normalised."""
    return v2.Compose([v2.Resize(size, antialias=True), *_normalize(spec)])


def train_transform(spec: BackboneSpec, size: int, augment: str = "standard", flips: Flips = DEFAULT) -> v2.Compose:
    """Scale jitter (shorter side in 0.5-2 x ``size``), a ``size`` x ``size`` crop (padded: image 0, mask 255),
    ``flips``; ``standard`` adds mild colour jitter (image only). ``none`` is the eval transform."""
    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {AUGMENTS}, not {augment!r}")
    if augment == "none":
        return eval_transform(spec, size)
    steps: list[Any] = [
        v2.RandomResize(round(size * SCALE_RANGE[0]), round(size * SCALE_RANGE[1]), antialias=True),
        v2.RandomCrop(size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}),
        *flips.steps(),
    ]
    if augment == "standard":
        steps.append(v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2))
    return v2.Compose([*steps, *_normalize(spec)])


def read_image(sample: SegSample, intensity: str = "off") -> Image.Image:
    """The pair's image at full size, EXIF-rotated, as 8-bit RGB (``decode.to_rgb`` with ``intensity``)."""
    return to_rgb(open_image(sample.source), intensity)


class SegmentationDataset(Dataset):
    """``(image float (3, H, W) normalised, mask int64 (H, W), 255 = ignore)``; seeded per (seed, epoch, pair).

    Decoded pairs are kept in memory (uint8) while they fit ``preload_mb``; set ``epoch`` before each epoch.
    """

    def __init__(self, samples: list[SegSample], transform: v2.Compose, intensity: str = "off", seed: int = 0,
                 preload_mb: int = 1024) -> None:
        self.samples, self.transform, self.intensity = samples, transform, intensity
        self.seed, self.epoch = seed, 0
        self.budget, self.used = preload_mb * 1024 * 1024, 0
        self.kept: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def pair(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoded image (3, H, W) and mask (H, W), uint8, before any transform."""
        if index in self.kept:
            return self.kept[index]
        sample = self.samples[index]
        image = torch.from_numpy(np.array(read_image(sample, self.intensity))).permute(2, 0, 1).contiguous()
        mask = torch.from_numpy(sample.read_mask())
        if tuple(mask.shape) != tuple(image.shape[1:]):  # checked by discover; files may change since
            raise DataError(f"{sample.mask or sample.image}: mask {tuple(mask.shape)} and image "
                            f"{tuple(image.shape[1:])} (height, width) differ in size")
        size = image.numel() + mask.numel()
        if self.used + size <= self.budget:
            self.kept[index] = (image, mask)
            self.used += size
        return image, mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.pair(index)
        sample = self.samples[index]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small per-image ops: extra threads only wait on each other
        try:
            with item_rng(self.seed, self.epoch, sample.key or str(sample.image)):
                image, mask = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        finally:
            torch.set_num_threads(threads)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).long()


def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack a batch; pairs of different sizes are padded right/bottom to the largest (image 0, mask 255)."""
    images, masks = zip(*batch)
    h = max(m.shape[-2] for m in masks)
    w = max(m.shape[-1] for m in masks)
    if all(m.shape[-2:] == (h, w) for m in masks):
        return torch.stack(images), torch.stack(masks)
    out_images = images[0].new_zeros((len(images), images[0].shape[0], h, w))
    out_masks = torch.full((len(masks), h, w), IGNORE_INDEX, dtype=masks[0].dtype)
    for i, (image, mask) in enumerate(zip(images, masks)):
        out_images[i, :, : image.shape[-2], : image.shape[-1]] = image
        out_masks[i, : mask.shape[-2], : mask.shape[-1]] = mask
    return out_images, out_masks
