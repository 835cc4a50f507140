"""The detection loop on Lightning Fabric: phases, cached frozen features, mAP, checkpoints and resume.

Read top to bottom like ``engine.fit``: each phase of the strategy freezes backbone groups; when the
frozen part ends where the detector's trainable part starts, its outputs (every FPN input below the
cut and the cut's input) are computed once per augmentation view through the feature cache, and the
neck and heads train for many cheap epochs on them. Validation computes COCO mAP with torchmetrics.
"""

from __future__ import annotations

import copy
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from lightning_fabric import Fabric
from rich.markup import escape
from rich.table import Table
from torch.utils.data import DataLoader, Dataset, Subset

from headstart import strategies
from headstart.backbones.fusion import batchnorm_folded
from headstart.cache import FeatureCache
from headstart.config import RunConfig
from headstart.data.detection import DetectionData, collate
from headstart.engine import CHECKPOINT, FitState, augment_seed, load_checkpoint, make_fabric
from headstart.errors import ConfigError
from headstart.progress import console, progress_bar, say
from headstart.tasks.detection import DetectionModel, describe

SELECT_METRIC = "map_50"


# ------------------------------------------------------------------------------------------- metrics
def _map_metric():
    from torchmetrics.detection import MeanAveragePrecision

    last: Exception | None = None
    for backend in ("faster_coco_eval", "pycocotools"):
        try:
            return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=True,
                                        extended_summary=True, backend=backend)
        except (ModuleNotFoundError, ImportError) as exc:
            last = exc
    raise ConfigError(f"Detection metrics need a COCO backend: pip install faster-coco-eval (or pycocotools); {last}")


def detection_report(preds: list[dict], targets: list[dict], classes: list[str]) -> dict[str, Any]:
    """COCO mAP@0.5:0.95, mAP@0.5, mAP@0.75, recall, per-class AP and the PR curve at IoU 0.5 (labels 1..N)."""
    metric = _map_metric()
    metric.update([{k: v.float() if k != "labels" else v for k, v in p.items()} for p in preds], targets)
    r = metric.compute()
    present = [int(c) for c in torch.atleast_1d(r["classes"]).tolist()]
    per_class_ap = torch.atleast_1d(r["map_per_class"]).tolist()
    per_class_ap50: dict[int, float] = {}
    precision = r["precision"]  # [IoU thresholds, recall thresholds, classes, areas, max detections]
    curves = {}
    for k, c in enumerate(present):
        p = precision[0, :, k, 0, -1]
        valid = p[p > -1]
        per_class_ap50[c] = float(valid.mean()) if len(valid) == len(p) else -1.0
        curves[c] = [round(float(v), 4) for v in p.clamp(min=0)]
    gt = torch.bincount(torch.cat([t["labels"] for t in targets]) if targets else torch.zeros(0, dtype=torch.long),
                        minlength=len(classes) + 1)
    found = torch.bincount(torch.cat([p["labels"] for p in preds]) if preds else torch.zeros(0, dtype=torch.long),
                           minlength=len(classes) + 1)
    report: dict[str, Any] = {
        "num_images": len(targets),
        "map": float(r["map"]), "map_50": float(r["map_50"]), "map_75": float(r["map_75"]),
        "mar_100": float(r["mar_100"]),
        "per_class": {
            name: {"ap": round(per_class_ap[present.index(i + 1)], 5) if i + 1 in present else None,
                   "ap_50": round(per_class_ap50[i + 1], 5) if i + 1 in present else None,
                   "boxes": int(gt[i + 1]), "detections": int(found[i + 1])}
            for i, name in enumerate(classes)
        },
        "pr_curve_iou50": {classes[c - 1]: v for c, v in curves.items() if 0 < c <= len(classes)},
        "warnings": [],
    }
    if int(gt.sum()) and report["map_50"] < 0.01:
        report["warnings"].append(
            f"mAP@0.5 is {report['map_50']:.4f}: the detector found almost none of the {int(gt.sum())} boxes. "
            "Train longer (train.head_epochs / train.epochs), use a pretrained backbone, or lower detection.image_size "
            "only if objects are large."
        )
    return report


# ------------------------------------------------------------------------------------------- helpers
def _loader(dataset: Dataset, batch_size: int, seed: int | None = None, collate_fn=collate) -> DataLoader:
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=seed is not None, generator=generator,
                      collate_fn=collate_fn, drop_last=seed is not None and len(dataset) % batch_size == 1)


def _placeholders(n: int, size: int, device: torch.device) -> list[torch.Tensor]:
    """Images of the right size whose content is never used (the cached features stand in for them)."""
    return [torch.zeros(3, size, size, device=device)] * n


class _CachedViews(Dataset):
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


def cached_frozen(fabric: Fabric, model: DetectionModel, data: DetectionData, cfg: RunConfig, split: str, cut: int,
                  train: bool, view: int, caches: list[FeatureCache]) -> torch.Tensor:
    """Flattened outputs of the frozen stages ``[0, cut)`` for a split and view, through the feature cache."""
    spec = model.backbone.spec
    namespace = {
        # version 2: BatchNorms folded into the convolutions during extraction
        "version": 2, "task": "detection", "backbone": spec.arch, "weights": spec.weights,
        "mean": list(spec.mean), "std": list(spec.std), "letterbox": data.image_size, "cut": cut,
        "parts": model.features.cached_parts(cut), "transform": data.transform_id(train),
        "view": view if train else 0, "seed": augment_seed(cfg) if train else 0, "precision": "32-true",
    }
    if spec.weights is None:  # random initial weights, drawn from train.seed
        namespace["init_seed"] = cfg.train.seed
    cache = FeatureCache(namespace, cfg.cache.dir)
    caches.append(cache)
    dataset = data.dataset(split, train=train, epoch=view)

    def compute(indices: list[int]) -> torch.Tensor:
        model.eval()
        model.to(fabric.device)
        outputs = []
        what = f"view {view + 1}/{cfg.cache.views}" if train else "val"
        loader = _loader(Subset(dataset, indices), cfg.train.batch_size)
        example = model.detector.transform([fabric.to_device(dataset[indices[0]][0])])[0].tensors
        with batchnorm_folded(model.features.backbone, cut, example), torch.inference_mode(), \
                progress_bar(f"Extracting features ({split}, {what})", len(loader)) as advance:
            for images, _ in loader:
                x = model.detector.transform(list(fabric.to_device(images)))[0].tensors
                parts = model.features.run_frozen(x, cut)
                outputs.append(torch.cat([p.flatten(1) for p in parts], dim=1).half().cpu())
                advance()
        return torch.cat(outputs)

    return cache.get(data.keys(split), compute)


def view_targets(data: DetectionData, split: str, train: bool, view: int) -> list[dict]:
    """The boxes of every item after the view's (seeded) augmentation, as the cached features saw them."""
    dataset = data.dataset(split, train=train, epoch=view)
    return [dataset[i][1] for i in range(len(dataset))]


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


def _print_groups(model: DetectionModel, frozen: set[int], phase: strategies.Phase, cut: int) -> None:
    rows = describe(model, frozen)
    table = Table(title=f"Phase '{phase.name}': {phase.epochs} epoch(s)"
                  + (f", first {cut} group(s) served from the feature cache" if cut else ""))
    for col in ("group", "trainable", "total", "state"):
        table.add_column(col, justify="left" if col in ("group", "state") else "right")
    for name, trainable, total, is_frozen in rows:
        state = "[dim]frozen[/]" if is_frozen or (total and not trainable) else "[green]trains[/]"
        table.add_row(name, f"{trainable:,}", f"{total:,}", state)
    table.add_row("[bold]all", f"[bold]{sum(r[1] for r in rows):,}", f"[bold]{sum(r[2] for r in rows):,}", "")
    console.print(table)


def _save_checkpoint(path: Path, model: DetectionModel, optimizer, scheduler, state: FitState, best_state) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "state": state.__dict__, "best_model": best_state}, tmp)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------- the loop
def fit(model: DetectionModel, data: DetectionData, cfg: RunConfig, run_dir: Path, resume: bool = False,
        fabric: Fabric | None = None) -> tuple[FitState, list[dict] | None]:
    """Train ``model`` on ``data`` by the configured strategy; checkpoints in ``run_dir`` after every epoch.

    Returns the state and the validation detections of the best (returned) weights when this session
    computed them (None after a resume that found its best epoch in the checkpoint).
    """
    fabric = fabric or make_fabric(cfg.device)
    tc, dc = cfg.train, cfg.detection
    backbone, size = model.backbone, data.image_size
    phases = strategies.plan(tc.strategy, backbone.num_groups, tc)
    pretrained = backbone.spec.weights is not None
    # A frozen random backbone is cached too: its weights are fixed by train.seed (part of the cache key).
    use_cache = cfg.cache.enabled and model.features is not None and fabric.world_size == 1
    if cfg.cache.enabled and not use_cache:
        say(f"[dim]Feature cache off: {'a torchvision detector' if model.features is None else 'several devices'}[/]")
    path = run_dir / CHECKPOINT
    state, ckpt = load_checkpoint(path, model, len(phases)) if resume else (FitState(), None)
    best_state = ckpt["best_model"] if ckpt else None
    best_preds: list[dict] | None = None
    caches: list[FeatureCache] = []
    val_set = data.dataset("val", train=False, epoch=0)
    val_targets = view_targets(data, "val", False, 0)
    stop = False

    for pi, phase in enumerate(phases):
        if pi < state.phase or stop:
            continue
        if state.epoch_in_phase >= phase.epochs:  # checkpoint taken at the end of this phase
            state.phase, state.epoch_in_phase, state.bad_epochs = pi + 1, 0, 0
            continue
        frozen = strategies.apply(model, phase)
        model.apply_frozen_bn()
        cut = len(frozen) if use_cache and len(frozen) > 0 else 0
        cut = min(cut, max(model.features.levels) + 1) if cut else 0
        _print_groups(model, frozen, phase, cut)
        started = time.perf_counter()
        if cut:
            shapes = cached_shapes(model, cut, size)
            train_views = torch.stack([cached_frozen(fabric, model, data, cfg, "train", cut, True, v, caches)
                                       for v in range(cfg.cache.views)])
            train_targets = [view_targets(data, "train", True, v) for v in range(cfg.cache.views)]
            val_inputs = cached_frozen(fabric, model, data, cfg, "val", cut, False, 0, caches)
        groups = strategies.param_groups(model, phase, tc, discriminative=pretrained)
        optimizer = torch.optim.AdamW(groups)
        steps = math.ceil(len(data.splits["train"]) / tc.batch_size)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in groups], total_steps=phase.epochs * steps + 1, pct_start=0.2,
            div_factor=10.0, final_div_factor=100.0)
        fmodel, optimizer = fabric.setup(model, optimizer)
        if ckpt is not None and ckpt["state"]["phase"] == pi and state.epoch_in_phase > 0:
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
        state.seconds += time.perf_counter() - started

        while state.epoch_in_phase < phase.epochs and not stop:
            started = time.perf_counter()
            seed = tc.seed * 100_003 + state.epoch
            torch.manual_seed(seed)
            if cut:
                loader = _loader(_CachedViews(train_views, train_targets, seed), tc.batch_size, seed)
            else:
                loader = fabric.setup_dataloaders(_loader(data.dataset("train", True, state.epoch), tc.batch_size, seed))
            fmodel.train()
            total, count, parts = 0.0, 0, {}
            with progress_bar(f"Epoch {state.epoch + 1} [{phase.name}]", len(loader)) as advance:
                for inputs, targets in loader:
                    inputs, targets = fabric.to_device(inputs), fabric.to_device(targets)
                    if cut:
                        model.features.cut, model.features.cached = cut, _unflatten(inputs.float(), shapes)
                        images = _placeholders(len(inputs), size, fabric.device)
                    else:
                        images = list(inputs)
                    optimizer.zero_grad(set_to_none=True)
                    try:
                        with fabric.autocast():
                            losses = fmodel(images, targets)
                    finally:
                        if model.features is not None:
                            model.features.cached = None
                    loss = sum(losses.values())
                    fabric.backward(loss)
                    fabric.clip_gradients(fmodel, optimizer, max_norm=10.0)
                    optimizer.step()
                    scheduler.step()
                    total += float(loss.detach()) * len(images)
                    count += len(images)
                    for k, v in losses.items():
                        parts[k] = parts.get(k, 0.0) + float(v.detach()) * len(images)
                    advance(info=f"loss {total / count:.4f}")
            state.epoch += 1
            state.epoch_in_phase += 1
            last = state.epoch_in_phase >= phase.epochs
            out_of_time = bool(dc.time_budget) and state.seconds + time.perf_counter() - started >= dc.time_budget
            row: dict[str, Any] = {"epoch": state.epoch, "phase": phase.name, "train_loss": round(total / max(count, 1), 5),
                                   **{k: round(v / max(count, 1), 5) for k, v in parts.items()},
                                   "train_seconds_epoch": round(time.perf_counter() - started, 2),
                                   "val_map": None, "val_map_50": None}
            if last or out_of_time or state.epoch % dc.eval_every == 0:
                if cut:
                    batches = _loader(torch.utils.data.TensorDataset(val_inputs, torch.zeros(len(val_inputs))),
                                      tc.batch_size * 2, collate_fn=None)
                    preds = predict_batches(fabric, model, batches, "Validating", len(batches), size, cut, shapes)
                else:
                    batches = _loader(val_set, tc.batch_size * 2)
                    preds = predict_batches(fabric, model, batches, "Validating", len(batches), size)
                report = detection_report(preds, val_targets, data.classes)
                row.update(val_map=round(report["map"], 5), val_map_50=round(report["map_50"], 5))
                score = report[SELECT_METRIC]
                if state.best_score is None or score > state.best_score:
                    state.best_score, state.best_epoch, state.bad_epochs = score, state.epoch, 0
                    best_state, best_preds = copy.deepcopy(model.state_dict()), preds
                else:
                    state.bad_epochs += 1
                if tc.early_stopping and state.bad_epochs >= tc.early_stopping:
                    say(f"Early stopping: no better {SELECT_METRIC} for {state.bad_epochs} evaluation(s)")
                    state.epoch_in_phase = phase.epochs
            state.seconds += time.perf_counter() - started
            row.update(lr_head=optimizer.param_groups[0]["lr"], seconds=round(state.seconds, 2))
            state.history.append(row)
            say(f"epoch {row['epoch']:>3} {escape(f'[{phase.name}]')} train loss {row['train_loss']:.4f}"
                + (f"  val mAP {row['val_map']:.4f}  mAP@0.5 {row['val_map_50']:.4f}" if row["val_map"] is not None else "")
                + f"  ({row['train_seconds_epoch']:.1f} s)")
            if out_of_time:
                say(f"Time budget of {dc.time_budget:.0f} s used up after epoch {state.epoch}")
                stop = True
            if fabric.is_global_zero:
                _save_checkpoint(path, model, optimizer, scheduler, state, best_state)
        if not stop:
            state.phase, state.epoch_in_phase, state.bad_epochs = pi + 1, 0, 0
    if best_state is not None:
        model.load_state_dict(best_state)
    state.cache_hits = sum(c.hits for c in caches)
    state.cache_computed = sum(c.computed for c in caches)
    return state, best_preds
