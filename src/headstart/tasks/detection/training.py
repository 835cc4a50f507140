"""Detection in the training loop: cached multi-scale frozen outputs, the detector's losses, COCO mAP.

When the frozen part of the backbone ends where the detector's trainable part starts, its outputs
(every FPN input below the cut and the cut's input) are computed once per augmentation view through
the feature cache, and the neck and heads train for many cheap epochs on them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning_fabric import Fabric
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from headstart.config import RunConfig
from headstart.core import loop, strategies
from headstart.core.cache import FeatureCache
from headstart.progress import progress_bar
from headstart.tasks.detection import clipped_to_image
from headstart.tasks.detection.data import DetectionData, collate
from headstart.tasks.detection.metrics import SELECT_METRIC, detection_report
from headstart.tasks.detection.model import DetectionModel


def batches(dataset: Dataset, batch_size: int, seed: int | None = None, collate_fn=collate,
            fabric: Fabric | None = None, num_workers: int | None = 0) -> DataLoader:
    """Detection batches (images stacked, targets listed), shuffled by ``seed``.

    With ``fabric`` on several devices, each device gets its part of the global batch of ``batch_size`` x devices
    items (``loop.loader`` splits the index batches, so images and their box lists stay together).
    ``num_workers``: decoding processes (``data.num_workers``; ``None``: ``loop.default_workers``, none on a CPU).
    """
    return loop.loader(dataset, batch_size, collate_fn, seed, num_workers, fabric=fabric)


def _placeholders(n: int, size: int, device: torch.device) -> list[torch.Tensor]:
    """Images of the right size whose content is never used (the cached features stand in for them)."""
    return [torch.zeros(3, size, size, device=device)] * n


class CachedViews(Dataset):
    """Cached frozen outputs (flattened, ``[views, items, dim]``) and the boxes of each view; one view per epoch item."""

    def __init__(self, views: torch.Tensor, targets: list[list[dict]], seed: int) -> None:
        self.views, self.targets = views, targets
        self.choice = torch.randint(views.shape[0], (views.shape[1],), generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return self.views.shape[1]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        v = int(self.choice[i])
        return self.views[v, i], self.targets[v][i]


def _unflatten(flat: torch.Tensor, shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
    sizes = [math.prod(s) for s in shapes]
    return [part.reshape(flat.shape[0], *s).contiguous(memory_format=torch.channels_last)
            for part, s in zip(flat.split(sizes, dim=1), shapes)]


def cached_shapes(model: DetectionModel, cut: int, size: int) -> list[tuple[int, ...]]:
    with torch.no_grad():
        was = model.training
        model.eval()
        outs = model.features.run_frozen(torch.zeros(1, 3, size, size), cut)
        model.train(was)
    return [tuple(o.shape[1:]) for o in outs]


def view_targets(data: DetectionData, split: str, train: bool, view: int) -> list[dict]:
    """The boxes of every item after the view's (seeded) augmentation, as the cached features saw them."""
    dataset = data.dataset(split, train=train, epoch=view)
    return [dataset[i][1] for i in range(len(dataset))]


def inside_images(preds: list[dict], extents: list[tuple[int, int]]) -> list[dict]:
    """Each image's detections (letterbox pixels) without those in the letterbox's padding, the others clipped to the
    image (``clipped_to_image``; ``extents``: ``DetectionData.extents``), as ``Detector.predict`` gives them."""
    out = []
    for pred, (width, height) in zip(preds, extents):
        boxes, keep = clipped_to_image(pred["boxes"].numpy(), width, height)
        kept = torch.from_numpy(keep)
        out.append({**pred, "boxes": torch.from_numpy(boxes)[kept], "scores": pred["scores"][kept],
                    "labels": pred["labels"][kept]})
    return out


@torch.inference_mode()
def predict_batches(fabric: Fabric, model: DetectionModel, batches, desc: str, total: int,
                    size: int, cut: int = 0, shapes: list | None = None) -> list[dict]:
    """Detections for ``(inputs, _)`` batches: images, or flattened cached features when ``cut``."""
    model.eval()
    model.to(fabric.device)
    out: list[dict] = []
    with progress_bar(desc, total) as advance:
        for inputs, _ in batches:
            inputs = fabric.to_device(inputs)
            if cut:
                model.features.cut, model.features.cached = cut, _unflatten(inputs.float(), shapes)
                images = _placeholders(len(inputs), size, fabric.device)
            else:
                images = list(inputs)
            try:
                detections = model(images)
            finally:
                if model.features is not None:
                    model.features.cached = None
            out += [{k: v.detach().cpu() for k, v in d.items()} for d in detections]
            advance()
    return out


class DetectionSteps:
    """The loop's ``Steps`` for a ``DetectionModel``: mAP@0.5 selects the best epoch."""

    scores = ("map", "map_50")
    metric = SELECT_METRIC

    def __init__(self, data: DetectionData, cfg: RunConfig) -> None:
        self.data, self.cfg, self.size = data, cfg, data.image_size
        self.num_train = len(data.splits["train"])
        self.caches: list[FeatureCache] = []
        self.val_set = data.dataset("val", train=False, epoch=0)
        self.val_targets = view_targets(data, "val", False, 0)
        self.val_extents = data.extents("val")
        self.shapes: list[tuple[int, ...]] = []
        self.train_views: torch.Tensor | None = None
        self.train_targets: list[list[dict]] = []
        self.val_inputs: torch.Tensor | None = None

    def cut(self, model: DetectionModel, phase: strategies.Phase) -> int:
        if model.features is None:  # a torchvision detector: its backbone is not cut into cacheable stages
            return 0
        frozen = model.backbone.num_groups - phase.trainable
        return min(frozen, max(model.features.levels) + 1) if frozen > 0 else 0

    def _frozen(self, fabric: Fabric, model: DetectionModel, split: str, cut: int, train: bool, view: int) -> torch.Tensor:
        data, cfg = self.data, self.cfg
        namespace = loop.feature_namespace(model.backbone.spec, cfg, cut, data.transform_id(train), train, view,
                                           task="detection", letterbox=data.image_size,
                                           parts=model.features.cached_parts(cut))
        what = f", view {view + 1}/{cfg.cache.views}" if train else ""
        out, cache = loop.frozen_outputs(
            fabric, cfg, model.backbone, cut, data.keys(split), data.dataset(split, train=train, epoch=view), namespace,
            lambda x: torch.cat([p.flatten(1) for p in model.features.run_frozen(x, cut)], dim=1),
            f"Extracting features ({split}{what})", collate,
            prepare=lambda images: model.detector.transform(list(images))[0].tensors, dtype=torch.float16)
        self.caches.append(cache)
        return out

    def prepare(self, fabric: Fabric, model: DetectionModel, phase: strategies.Phase, cut: int,
                seconds: float | None = None) -> int | None:
        if not cut:
            self.train_views = self.val_inputs = None
            return None
        views = phase.views or self.cfg.cache.views
        self.shapes = cached_shapes(model, cut, self.size)
        clock = loop.ExtractionClock(fabric, seconds, self.num_train, len(self.data.keys("val")), self.caches)
        frozen = clock.views(views, lambda v: self._frozen(fabric, model, "train", cut, True, v))
        self.train_views = torch.stack(frozen)
        self.train_targets = [view_targets(self.data, "train", True, v) for v in range(len(frozen))]
        self.val_inputs = self._frozen(fabric, model, "val", cut, False, 0)
        return len(frozen)

    def train_loader(self, fabric: Fabric, cut: int, epoch: int, seed: int) -> DataLoader:
        bs = self.cfg.train.batch_size
        if cut:  # cached features: nothing to decode
            loader = batches(CachedViews(self.train_views, self.train_targets, seed), bs, seed, fabric=fabric)
        else:
            loader = batches(self.data.dataset("train", True, epoch), bs, seed, fabric=fabric,
                             num_workers=self.cfg.data.num_workers)
        return fabric.setup_dataloaders(loader, use_distributed_sampler=False)

    def train_step(self, model: Any, batch: Any, cut: int) -> tuple[torch.Tensor, dict, int]:
        inputs, targets = batch
        features = getattr(model, "module", model).features  # the detector behind Fabric's wrapper
        if cut:
            features.cut, features.cached = cut, _unflatten(inputs.float(), self.shapes)
            images = _placeholders(len(inputs), self.size, inputs.device)
        else:
            images = list(inputs)
        try:
            losses = model(images, targets)
        finally:
            if features is not None:
                features.cached = None
        return sum(losses.values()), losses, len(images)

    def predict(self, fabric: Fabric, model: DetectionModel, cut: int) -> list[dict]:
        """Detections on the validation split (from its cached frozen outputs when ``cut``); on several devices each
        predicts its share of the images and every device gets all the detections (``loop.gather_split``)."""
        bs, n = loop.inference_batch_size(self.cfg, fabric, size=self.size), len(self.val_targets)

        def compute(items: range) -> list[dict]:
            desc = "Validating" + loop.share_note(fabric, items, n)
            if cut:
                inputs = self.val_inputs[items.start: items.stop]
                val = batches(TensorDataset(inputs, torch.zeros(len(inputs))), bs, collate_fn=None)
                return predict_batches(fabric, model, val, desc, len(val), self.size, cut, self.shapes)
            val = batches(self.val_set if len(items) == n else Subset(self.val_set, items), bs,
                          num_workers=self.cfg.data.num_workers)
            return predict_batches(fabric, model, val, desc, len(val), self.size)

        return inside_images(loop.gather_split(fabric, n, compute), self.val_extents)

    def validate(self, fabric: Fabric, model: DetectionModel, cut: int) -> tuple[dict[str, float], list[dict]]:
        preds = self.predict(fabric, model, cut)
        report = detection_report(preds, self.val_targets, self.data.classes)
        return {k: report[k] for k in self.scores}, preds
