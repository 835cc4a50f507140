"""Segmentation in the training loop: cached multi-scale frozen maps, pixel cross-entropy, mIoU.

When the frozen part of the backbone ends where the decoder starts (``linear``: every stage the
decoder reads), its outputs (every decoder input below the cut and the cut's input) are computed once
per augmentation view through the feature cache, with the masks of the same view, and the decoder
trains for many cheap epochs on them. ``partial:K`` caches the stages below the K trainable ones.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning_fabric import Fabric
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset, Subset

from headstart.config import RunConfig
from headstart.core import loop, strategies
from headstart.core.backbones.spec import BackboneSpec
from headstart.core.cache import FeatureCache
from headstart.progress import progress_bar
from headstart.tasks.flips import DEFAULT, Flips
from headstart.tasks.segmentation import transforms as seg_tf
from headstart.tasks.segmentation.data import IGNORE_INDEX, SegmentationSplits
from headstart.tasks.segmentation.metrics import confusion, segmentation_report
from headstart.tasks.segmentation.model import SegmentationModel


class SegData:
    """The splits with the backbone's preprocessing: seeded datasets per split and view, content keys."""

    def __init__(self, splits: SegmentationSplits, spec: BackboneSpec, size: int, augment: str, seed: int,
                 intensity: str = "off", flips: Flips = DEFAULT) -> None:
        self.splits, self.spec, self.size, self.augment, self.seed = splits, spec, size, augment, seed
        self.intensity, self.classes = intensity, splits.classes
        self.train_tf = seg_tf.train_transform(spec, size, augment, flips)
        self.eval_tf = seg_tf.eval_transform(spec, size)
        self.collate = seg_tf.collate
        self._sets: dict[tuple[str, bool], seg_tf.SegmentationDataset] = {}

    def samples(self, split: str) -> list:
        return getattr(self.splits, split)

    def keys(self, split: str) -> list[str]:
        return [s.key for s in self.samples(split)]

    def dataset(self, split: str, train: bool, view: int = 0) -> seg_tf.SegmentationDataset:
        """Items of ``split``: augmented (view or epoch ``view``, seeded) when ``train``, else the eval transform.

        One dataset per split and transform, so decoded pairs stay in memory across views and epochs.
        """
        key = (split, train)
        if key not in self._sets:
            self._sets[key] = seg_tf.SegmentationDataset(self.samples(split), self.train_tf if train else self.eval_tf,
                                                         self.intensity, self.seed)
        ds = self._sets[key]
        ds.epoch = view if train else 0
        return ds

    def transform_id(self, train: bool) -> str:
        tf = self.train_tf if train else self.eval_tf
        return f"{repr(tf)} size={self.size} intensity={self.intensity}".replace("\n", " ")


class _Recording(Dataset):
    """A dataset that keeps the mask of every item it served (uint8), so a cache miss reads each item once."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset, self.masks = dataset, {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        image, mask = self.dataset[i]
        self.masks[i] = mask.to(torch.uint8)
        return image, mask


class CachedViews(Dataset):
    """Cached frozen maps (``[views, items, dim]``) and the masks of each view; one view per item per epoch."""

    def __init__(self, views: torch.Tensor, masks: list[torch.Tensor], seed: int) -> None:
        self.views, self.masks = views, masks
        self.choice = torch.randint(views.shape[0], (views.shape[1],), generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return self.views.shape[1]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        v = int(self.choice[i])
        return self.views[v, i], self.masks[v][i]


def pixel_weights(counts: list[int]) -> torch.Tensor:
    """Loss weight per class from training pixel counts: inverse frequency, normalised to mean 1, capped at 10x."""
    c = torch.tensor(counts, dtype=torch.float).clamp(min=1)
    w = c.sum() / (len(c) * c)
    return (w / w.mean()).clamp(max=10.0)


def train_pixel_counts(splits: SegmentationSplits) -> list[int]:
    """Labelled pixels per class over the training masks (255 left out)."""
    import numpy as np

    n = len(splits.classes)
    total = np.zeros(n, dtype=np.int64)
    for s in splits.train:
        m = s.read_mask().ravel()
        total += np.bincount(m[m != IGNORE_INDEX], minlength=n)[:n]
    return total.tolist()


class SegmentationSteps:
    """The loop's ``Steps`` for a ``SegmentationModel``: validation mIoU selects the best epoch."""

    scores = ("loss", "miou", "pixel_accuracy")
    metric = "miou"

    def __init__(self, data: SegData, cfg: RunConfig, train_pixels: list[int]) -> None:
        self.data, self.cfg, self.train_pixels = data, cfg, train_pixels
        self.num_train, self.num_val = len(data.samples("train")), len(data.samples("val"))
        weight = pixel_weights(train_pixels) if cfg.train.class_weights else None
        self.criterion = nn.CrossEntropyLoss(weight=weight, ignore_index=IGNORE_INDEX)
        self.caches: list[FeatureCache] = []
        self.train_views: torch.Tensor | None = None
        self.train_masks: list[torch.Tensor] = []
        self.val_inputs: torch.Tensor | None = None
        self.val_masks: list[torch.Tensor] | None = None
        self.fabric: Fabric | None = None  # the training run's (set by train_loader): pixel counts across devices

    def cut(self, model: SegmentationModel, phase: strategies.Phase) -> int:
        if not model.cacheable:  # a torchvision segmenter: its encoder is not cut into cacheable stages
            return 0
        return model.cut_for(model.backbone.num_groups - phase.trainable)

    def _view_masks(self, dataset: Dataset, known: dict[int, torch.Tensor]) -> list[torch.Tensor]:
        return [known[i] if i in known else dataset[i][1].to(torch.uint8) for i in range(len(dataset))]

    def _frozen(self, fabric: Fabric, model: SegmentationModel, split: str, cut: int, train: bool,
                view: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        data, cfg = self.data, self.cfg
        namespace = loop.feature_namespace(model.backbone.spec, cfg, cut, data.transform_id(train), train, view,
                                           task="segmentation", parts=model.features.cached_parts(cut))
        what = f", view {view + 1}/{cfg.cache.views}" if train else ""
        dataset = _Recording(data.dataset(split, train=train, view=view))
        out, cache = loop.frozen_outputs(
            fabric, cfg, model.backbone, cut, data.keys(split), dataset, namespace,
            lambda x: model.run_frozen(x, cut), f"Extracting features ({split}{what})", data.collate,
            dtype=torch.float16)
        self.caches.append(cache)
        return out, self._view_masks(dataset.dataset, dataset.masks)

    def _val_masks(self) -> list[torch.Tensor]:
        if self.val_masks is None:
            ds = self.data.dataset("val", train=False)
            self.val_masks = [ds[i][1].to(torch.uint8) for i in range(len(ds))]
        return self.val_masks

    def prepare(self, fabric: Fabric, model: SegmentationModel, phase: strategies.Phase, cut: int,
                seconds: float | None = None) -> int | None:
        self.train_views = self.val_inputs = None
        if not cut:
            return None
        views = phase.views or min(self.cfg.cache.views, phase.epochs)
        clock = loop.ExtractionClock(fabric, seconds, self.num_train, self.num_val, self.caches)
        outs = clock.views(views, lambda v: self._frozen(fabric, model, "train", cut, True, v))
        self.train_views = torch.stack([o for o, _ in outs])
        self.train_masks = [torch.stack(m) for _, m in outs]  # train crops share one size
        masks = self._val_masks()
        if len({tuple(m.shape) for m in masks}) == 1:  # one size: validation runs on cached maps too
            self.val_inputs, self.val_masks = self._frozen(fabric, model, "val", cut, False, 0)
        return len(outs)

    def train_loader(self, fabric: Fabric, cut: int, epoch: int, seed: int):
        bs = self.cfg.train.batch_size  # per device: loop.loader splits each global batch between the devices
        self.fabric = fabric  # train_step sums the labelled pixels over the devices
        if cut:
            batches = loop.loader(CachedViews(self.train_views, self.train_masks, seed), bs, None, seed, fabric=fabric)
        else:
            batches = loop.loader(self.data.dataset("train", train=True, view=epoch), bs, self.data.collate, seed,
                                  self.cfg.data.num_workers, fabric)
        return fabric.setup_dataloaders(batches, use_distributed_sampler=False)

    def train_step(self, model: nn.Module, batch: Any, cut: int) -> tuple[torch.Tensor, dict, int]:
        x, masks = batch
        masks = masks.long()
        logits = model(loop.channels_last(x) if not cut else x, start=cut, size=tuple(masks.shape[-2:]))
        return self.pixel_loss(logits.float(), masks), {}, len(masks)

    def pixel_loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Cross-entropy averaged over the labelled pixels of the global batch.

        On one device that is ``criterion``. On several, each device's part holds its own number of labelled pixels:
        its summed loss is divided by the global batch's count (summed over the devices) times the devices, so the
        gradient DDP averages is the one device's mean over the whole batch, not a mean of per-device means.
        """
        fabric = self.fabric
        if fabric is None or fabric.world_size == 1:
            return self.criterion(logits, masks)
        weight = self.criterion.weight
        weight = weight.to(logits) if weight is not None else None
        total = F.cross_entropy(logits, masks, weight=weight, ignore_index=IGNORE_INDEX, reduction="sum")
        labelled = masks[masks != IGNORE_INDEX]
        count = weight[labelled].sum() if weight is not None else torch.tensor(float(labelled.numel()))
        count = fabric.all_reduce(count.detach().to(logits.device, torch.float64), reduce_op="sum")
        return total * fabric.world_size / count.clamp(min=1).to(total.dtype)

    def evaluate_batches(self, fabric: Fabric, model: SegmentationModel, cut: int) -> tuple[torch.Tensor, float]:
        """The validation confusion matrix and mean pixel loss at the eval transform's size.

        On several devices each runs its share of the frames and the sums are gathered (``loop.gather_split``): every
        device holds the whole split's confusion matrix.
        """
        n = len(self.data.classes)
        sums = loop.gather_split(fabric, self.num_val, lambda items: self._share_sums(fabric, model, cut, items)).sum(0)
        return sums[: n * n].long().reshape(n, n), float(sums[n * n]) / max(int(sums[n * n + 1]), 1)

    @torch.inference_mode()
    def _share_sums(self, fabric: Fabric, model: SegmentationModel, cut: int, items: range) -> torch.Tensor:
        """One float64 row over the validation frames ``items``: the confusion counts, the summed pixel loss, the
        labelled pixels (exact: counts stay below 2**53)."""
        model.eval()
        model.to(fabric.device)
        n, bs = len(self.data.classes), loop.inference_batch_size(self.cfg, fabric, size=self.cfg.segmentation.image_size)
        cm = torch.zeros(n, n, dtype=torch.long)
        loss_sum, pixels = 0.0, 0
        if cut and self.val_inputs is not None:
            inputs, masks = self.val_inputs[items.start: items.stop], torch.stack(self.val_masks[items.start: items.stop])
            chunks = [(inputs[i:i + bs], masks[i:i + bs]) for i in range(0, len(masks), bs)]
        else:
            cut = 0
            dataset = self.data.dataset("val", train=False)
            chunks = loop.loader(dataset if len(items) == len(dataset) else Subset(dataset, items), bs, self.data.collate)
        with progress_bar("Validating" + loop.share_note(fabric, items, self.num_val), len(chunks)) as advance:
            for x, y in chunks:
                y = fabric.to_device(y.long())
                with fabric.autocast():
                    x = fabric.to_device(x)
                    logits = model(loop.autocast_images(loop.channels_last(x)) if not cut else x, start=cut,
                                   size=tuple(y.shape[-2:])).float()
                valid = int((y != IGNORE_INDEX).sum())
                if valid:
                    loss_sum += float(F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum"))
                    pixels += valid
                cm += confusion(logits.argmax(1), y, n).cpu()
                advance()
        return torch.cat([cm.flatten().double(), torch.tensor([loss_sum, pixels], dtype=torch.float64)])[None]

    def validate(self, fabric: Fabric, model: SegmentationModel, cut: int) -> tuple[dict[str, float], torch.Tensor]:
        cm, loss = self.evaluate_batches(fabric, model, cut)
        report = segmentation_report(cm, self.data.classes, self.train_pixels)
        return {"loss": loss, "miou": report["miou"], "pixel_accuracy": report["pixel_accuracy"]}, cm
