"""Training augmentation split between the loader and the model's device (``data.augment_on``).

The loader's worker does the per-item geometry as today (the crop box and the flip drawn inside ``item_rng``,
crop + resize on the decoded PIL image) and hands over a uint8 CHW tensor with the item's colour-jitter factors,
drawn there too, right after the geometry, as ``v2.ColorJitter`` draws them: the same draws as the loader path,
so runs still resume exactly. The device finishes each batch: uint8 -> float, colour jitter with per-sample
factors (torchvision's v2 transforms on a batch draw one set for the whole batch), normalisation, channels-last.
A uint8 batch is a quarter of the float32 bytes to pin and copy.

The batched jitter is torchvision's ``v2.functional`` formulas for float images (``adjust_brightness``:
``x * f``; ``adjust_contrast``: blend with the mean of the image's grayscale; ``adjust_saturation``: blend with
its grayscale; each clamped to [0, 1]), applied in each item's own random order. The loader path jitters PIL
images (PIL's uint8 kernels), so the two paths' jittered pixels differ slightly; without jitter they are equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

BRIGHTNESS, CONTRAST, SATURATION = 0, 1, 2  # v2.ColorJitter's op ids (3, hue, is not supported here)
# what the worker part runs
GEOMETRY = (v2.RandomResizedCrop, v2.RandomHorizontalFlip, v2.RandomVerticalFlip, v2.CenterCrop, v2.Resize)


def jitter_steps(jitter: v2.ColorJitter) -> torch.Tensor:
    """One item's colour jitter as ``[3, 3]`` float32 rows ``(op, factor, 1 - factor)`` in the order they apply.

    Draws exactly what ``jitter`` draws for one call (``make_params``: the order, then each factor); an op the
    jitter leaves out gets factor 1 (the identity). ``1 - factor`` is computed in double, as ``_blend`` does.
    """
    params = jitter.make_params([])
    factors = {BRIGHTNESS: params["brightness_factor"], CONTRAST: params["contrast_factor"],
               SATURATION: params["saturation_factor"]}
    rows = []
    for op in params["fn_idx"].tolist():
        if op in factors:
            f = 1.0 if factors[op] is None else float(factors[op])
            rows.append((float(op), f, 1.0 - f))
    return torch.tensor(rows, dtype=torch.float32)


def color_jitter(x: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Per-sample colour jitter of a float batch ``x`` ``[N, 3, H, W]`` in [0, 1]; ``steps``: ``[N, 3, 3]`` rows of
    ``jitter_steps``. Each step blends every image with its own reference (zeros for brightness, the mean of its
    grayscale for contrast, its grayscale for saturation) by its own factor, clamped to [0, 1].
    """
    shape = (-1, 1, 1, 1)
    for k in range(steps.shape[1]):
        op, f, g = (steps[:, k, i].view(shape) for i in range(3))
        gray = F.rgb_to_grayscale(x)  # [N, 1, H, W]: 0.2989 R + 0.587 G + 0.114 B, as adjust_contrast/saturation
        mean = gray.mean(dim=(-3, -2, -1), keepdim=True)
        ref = torch.where(op == CONTRAST, mean, gray)
        g = torch.where(op == BRIGHTNESS, torch.zeros_like(g), g)  # brightness: x * f, no reference
        x = torch.addcmul(x.mul(f), ref, g).clamp_(0, 1)
    return x


class ItemGeometry:
    """The loader worker's part: ``geometry`` on the decoded image, a uint8 CHW tensor, and (``jitter``) the
    item's colour-jitter steps; call it inside ``item_rng`` as the loader transform is."""

    def __init__(self, geometry: v2.Compose, jitter: v2.ColorJitter | None) -> None:
        self.geometry, self.jitter = geometry, jitter

    def __call__(self, image: Any) -> dict[str, torch.Tensor]:
        out = {"image": F.to_image(self.geometry(image)).as_subclass(torch.Tensor)}
        if self.jitter is not None:
            out["jitter"] = jitter_steps(self.jitter)
        return out

    def __repr__(self) -> str:
        return f"ItemGeometry({self.geometry!r}, jitter={self.jitter!r})".replace("\n", " ")


class BatchAugment:
    """The device's part, per batch of ``ItemGeometry`` items: float, per-sample jitter, normalise, channels-last."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        self.mean, self.std = list(mean), list(std)

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = batch["image"]
        with torch.autocast(x.device.type, enabled=False):  # float32 pixels, as the loader path makes them
            x = F.to_dtype(x.contiguous(memory_format=torch.channels_last), torch.float32, scale=True)
            if "jitter" in batch:
                x = color_jitter(x, batch["jitter"])
            x = F.normalize(x, self.mean, self.std)
        return x.contiguous(memory_format=torch.channels_last)

    def __repr__(self) -> str:
        return f"BatchAugment(mean={self.mean}, std={self.std})"


@dataclass
class SplitTransform:
    """A training transform cut in two: ``worker`` per item in the loader, ``device`` per batch."""

    worker: ItemGeometry
    device: BatchAugment


def split_transform(transform: v2.Compose) -> SplitTransform:
    """Cut ``transform`` (geometry steps, an optional ``ColorJitter``, then ``ToImage``, ``ToDtype(float32,
    scale=True)``, ``Normalize``: ``train_transform``'s and ``eval_transform``'s shape) into its two parts."""
    steps = list(transform.transforms)
    kinds = [type(s) for s in steps]
    if (kinds[-3:] != [v2.ToImage, v2.ToDtype, v2.Normalize] or steps[-2].dtype != torch.float32
            or not steps[-2].scale):
        raise ValueError(f"cannot split {transform!r}: expected it to end with ToImage, ToDtype(float32, scale=True), "
                         "Normalize")
    head = steps[:-3]
    jitter = None
    if head and isinstance(head[-1], v2.ColorJitter):
        jitter = head.pop()
        if jitter.hue is not None:
            raise ValueError(f"cannot jitter hue on the device ({jitter!r}): augment in the loader")
    odd = [s for s in head if not isinstance(s, GEOMETRY)]
    if odd:
        raise ValueError(f"cannot split {transform!r}: {odd[0]!r} is not a geometric step (the device path takes "
                         f"{', '.join(t.__name__ for t in GEOMETRY)}, then ColorJitter)")
    normalize = steps[-1]
    return SplitTransform(ItemGeometry(v2.Compose(head), jitter), BatchAugment(normalize.mean, normalize.std))

