"""The training loop, on Lightning Fabric: phases, cached frozen features, checkpoints and resume.

Read top to bottom: ``fit`` walks the strategy's phases; each phase freezes groups, computes the
frozen part's outputs once through the feature cache when it can, builds the optimizer with
discriminative learning rates, and runs epochs. Every epoch ends with validation, the history
row, the best weights and an atomic checkpoint, so an interrupted run resumes exactly.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from lightning_fabric import Fabric
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from headstart import strategies
from headstart.backbones.fusion import batchnorm_folded
from headstart.cache import FeatureCache
from headstart.config import DeviceConfig, RunConfig
from headstart.metrics import classification_report, selection_metric
from headstart.progress import progress_bar, say

CHECKPOINT = "checkpoint.pt"


class TaskData(Protocol):
    """What the loop needs from a dataset of any modality (images, text...)."""

    classes: list[str]

    def keys(self, split: str) -> list[str]: ...  # content hashes (feature-cache keys)

    def labels(self, split: str) -> torch.Tensor: ...

    def dataset(self, split: str, train: bool, epoch: int) -> Dataset: ...

    def transform_id(self, train: bool) -> str: ...

    collate: Callable | None

    # Optional: ``train_batches(batch_size, seed) -> list[list[int]]``, the training split's batches for one
    # epoch (text: length-sorted buckets); ``class_weights``: a loss weight per class, or None.


@dataclass
class FitState:
    """Everything a checkpoint restores."""

    phase: int = 0
    epoch_in_phase: int = 0
    epoch: int = 0
    seconds: float = 0.0
    bad_epochs: int = 0
    best_score: float | None = None
    best_epoch: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)
    cache_hits: int = 0  # items served from the feature cache (this session)
    cache_computed: int = 0  # items whose frozen features were computed (this session)
    best_val_logits: torch.Tensor | None = None  # validation logits of the best epoch (the final model)


def augment_seed(cfg: RunConfig) -> int:
    """Seed of the augmentation draws: ``data.augment_seed``, else ``train.seed``."""
    return cfg.data.augment_seed if cfg.data.augment_seed is not None else cfg.train.seed


def make_fabric(cfg: DeviceConfig) -> Fabric:
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    precision = resolve_precision(cfg.precision, cfg.accelerator)
    fabric = Fabric(accelerator=cfg.accelerator, devices=cfg.devices, precision=precision, strategy=cfg.strategy)
    fabric.launch()
    return fabric


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """``auto``: bf16 mixed precision where the hardware computes bf16 natively, else fp32.

    On this project's 2-core CPU (avx512_bf16) bf16 autocast doubled extraction speed at the same
    validation accuracy (benchmarks/image_classification.py, README).
    """
    if precision != "auto":
        return precision
    if accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n", 1)[0].split()
    except (OSError, IndexError):
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def _loader(dataset: Dataset, batch_size: int, data: TaskData, shuffle_seed: int | None = None,
            num_workers: int = 0, fabric: Fabric | None = None, batches: list[list[int]] | None = None) -> DataLoader:
    if batches is not None:  # the task chose the batches (single device)
        return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=data.collate)
    generator = torch.Generator().manual_seed(shuffle_seed) if shuffle_seed is not None else None
    sampler = None
    if fabric is not None and fabric.world_size > 1 and shuffle_seed is not None:
        sampler = DistributedSampler(dataset, fabric.world_size, fabric.global_rank, shuffle=True, seed=shuffle_seed)
    n = len(dataset)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle_seed is not None and sampler is None,
        sampler=sampler, generator=generator, num_workers=num_workers, collate_fn=data.collate,
        drop_last=shuffle_seed is not None and n % batch_size == 1 and n > 1,  # BatchNorm needs 2+
        persistent_workers=False,
    )


def channels_last(x):
    """4-D image batches in channels-last layout: about 2x faster convolutions on CPUs."""
    return x.contiguous(memory_format=torch.channels_last) if isinstance(x, torch.Tensor) and x.ndim == 4 else x


def inference_batch_size(cfg: RunConfig, fabric: Fabric, modality: str = "image") -> int:
    """Items per forward pass when nothing trains: ``data.inference_batch_size``, else 8 images on a CPU.

    On CPUs the depthwise and 1x1 convolutions of mobile backbones are memory-bound; with 8 images
    their activations stay in cache and extraction runs about twice as fast as with 64
    (EfficientNet-Lite0 and MobileNetV2, bf16 and fp32, benchmarks/image_classification.py).
    """
    if cfg.data.inference_batch_size:
        return cfg.data.inference_batch_size
    return 8 if modality == "image" and fabric.device.type == "cpu" else cfg.train.batch_size * 2


def autocast_images(x):
    """Image batches in the active autocast dtype, as the first convolution would cast them anyway.

    Casting once up front makes everything before that convolution (TF-'same' padding in
    EfficientNet-Lite, channels-last copies) move half the bytes: 1.3 s of 9 s on hymenoptera's
    default run, fp32 channels-last padding being a slow path on CPUs.
    """
    if not (isinstance(x, torch.Tensor) and x.ndim == 4 and x.is_floating_point()):
        return x
    device = x.device.type
    return x.to(torch.get_autocast_dtype(device)) if torch.is_autocast_enabled(device) else x


@torch.inference_mode()
def run_batches(fabric: Fabric, fn: Callable, loader: DataLoader, desc: str) -> torch.Tensor:
    """``fn(batch)`` over a loader, outputs concatenated on the CPU, with a progress bar."""
    outputs = []
    with progress_bar(desc, len(loader)) as advance:
        for x, _ in loader:
            with fabric.autocast():
                outputs.append(fn(autocast_images(channels_last(fabric.to_device(x)))).float().cpu())
            advance()
    return torch.cat(outputs)


def predict_logits(fabric: Fabric, model: nn.Module, dataset: Dataset, data: TaskData, batch_size: int,
                   start: int = 0, desc: str = "Predicting") -> torch.Tensor:
    model.eval()
    model = model.to(fabric.device, memory_format=torch.channels_last)
    return run_batches(fabric, lambda x: model(x, start=start), _loader(dataset, batch_size, data), desc)


def feature_namespace(spec, transform_id: str, cfg: RunConfig, cut: int, train: bool, view: int) -> dict[str, Any]:
    """Everything besides an item's content that changes its cached features (the cache namespace)."""
    return {
        "version": 2,  # 2: BatchNorms folded into convolutions during extraction
        "backbone": spec.arch,
        "weights": spec.weights,
        "preprocessing": spec.preprocessing_key(),
        "cut": cut,
        "transform": transform_id,
        "view": view if train else 0,
        "seed": augment_seed(cfg) if train else 0,
        "precision": resolve_precision(cfg.device.precision, cfg.device.accelerator),
    }


def cached_features(fabric: Fabric, model: nn.Module, data: TaskData, cfg: RunConfig, split: str, cut: int,
                    train: bool, view: int, caches: list[FeatureCache]) -> torch.Tensor:
    """Outputs of backbone stages ``[0, cut)`` for a split, computed once and kept in the cache."""
    backbone = model.backbone
    cache = FeatureCache(feature_namespace(backbone.spec, data.transform_id(train), cfg, cut, train, view),
                         cfg.cache.dir)
    caches.append(cache)
    dataset = data.dataset(split, train=train, epoch=view)

    def compute(indices: list[int]) -> torch.Tensor:
        backbone.eval()
        backbone.to(fabric.device, memory_format=torch.channels_last)
        loader = _loader(Subset(dataset, indices), inference_batch_size(cfg, fabric, backbone.spec.modality), data,
                         num_workers=cfg.data.num_workers)
        what = f"view {view + 1}" if train else "val"
        with batchnorm_folded(backbone, cut, fabric.to_device(dataset[indices[0]][0])):
            out = run_batches(fabric, lambda x: backbone.extract(x, cut), loader, f"Extracting features ({split}, {what})")
        return out if cut == backbone.num_groups else out.half()

    return cache.get(data.keys(split), compute).float()


class _CachedDataset(Dataset):
    """Cached features of K views; each epoch picks one view per item (seeded)."""

    def __init__(self, views: torch.Tensor, labels: torch.Tensor, seed: int) -> None:
        self.views, self.labels = views, labels
        self.choice = torch.randint(views.shape[0], (views.shape[1],), generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return self.views.shape[1]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.views[self.choice[i], i], int(self.labels[i])


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def _print_groups(model: nn.Module, frozen: set[int], phase: strategies.Phase, cut: int) -> None:
    rows = strategies.describe(model, frozen)
    table = Table(title=f"Phase '{phase.name}': {phase.epochs} epoch(s)"
                  + (f", first {cut} group(s) served from the feature cache" if cut else ""))
    for col in ("group", "trainable", "total", "state"):
        table.add_column(col, justify="left" if col in ("group", "state") else "right")
    for name, trainable, total, is_frozen in rows:
        table.add_row(name, f"{trainable:,}", f"{total:,}", "[dim]frozen[/]" if is_frozen else "[green]trains[/]")
    t = sum(r[1] for r in rows)
    table.add_row("[bold]all", f"[bold]{t:,}", f"[bold]{sum(r[2] for r in rows):,}", "")
    say(table)


def fit(model: nn.Module, data: TaskData, cfg: RunConfig, run_dir: Path, resume: bool = False,
        fabric: Fabric | None = None) -> FitState:
    """Train ``model`` on ``data`` by the configured strategy; checkpoints in ``run_dir``."""
    fabric = fabric or make_fabric(cfg.device)
    tc = cfg.train
    backbone = model.backbone
    phases = strategies.plan(tc.strategy, backbone.num_groups, tc)
    pretrained = backbone.spec.weights is not None
    train_labels, val_labels = data.labels("train"), data.labels("val")
    train_counts = torch.bincount(train_labels, minlength=len(data.classes)).tolist()
    metric = selection_metric(tc.select_metric, train_counts)
    weight = getattr(data, "class_weights", None)
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=tc.label_smoothing).to(fabric.device)
    use_cache = cfg.cache.enabled and pretrained and fabric.world_size == 1
    if cfg.cache.enabled and not use_cache:
        say("[dim]Feature cache off: " + ("random initial weights" if not pretrained else "several devices") + "[/]")
    model.to(memory_format=torch.channels_last)
    backbone.batchnorm_statistics_frozen = pretrained and tc.batchnorm == "frozen"
    path = run_dir / CHECKPOINT
    state, ckpt = load_checkpoint(path, model, len(phases)) if resume else (FitState(), None)
    best_state = ckpt["best_model"] if ckpt else None
    caches: list[FeatureCache] = []
    last_saved = time.monotonic()

    for pi, phase in enumerate(phases):
        if pi < state.phase:
            continue
        if state.epoch_in_phase >= phase.epochs:  # checkpoint taken at the end of this phase
            state.phase, state.epoch_in_phase, state.bad_epochs = pi + 1, 0, 0
            continue
        frozen = strategies.apply(model, phase)
        cut = backbone.num_groups - phase.trainable if use_cache and phase.trainable < backbone.num_groups else 0
        if backbone.spec.modality == "text" and (cut < backbone.num_groups or phase.adapters):
            cut = 0  # text stages pass hidden states + masks: only pooled features are cached
        _print_groups(model, frozen, phase, cut)
        started = time.perf_counter()
        if cut:
            train_views = torch.stack([cached_features(fabric, model, data, cfg, "train", cut, True, v, caches)
                                       for v in range(min(cfg.cache.views, phase.epochs))])
            val_inputs = cached_features(fabric, model, data, cfg, "val", cut, False, 0, caches)
        groups = strategies.param_groups(model, phase, tc, discriminative=pretrained)
        optimizer = torch.optim.AdamW(groups)
        steps = math.ceil(len(train_labels) / tc.batch_size)
        total_steps = max(phase.epochs * steps + 1, 5)  # OneCycleLR divides 0 by 0 at 4 steps with pct_start 0.25
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in groups], total_steps=total_steps, pct_start=0.25,
            div_factor=10.0, final_div_factor=100.0,
        )
        fmodel, optimizer = fabric.setup(model, optimizer)
        if ckpt is not None and ckpt["state"]["phase"] == pi and state.epoch_in_phase > 0:
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
        state.seconds += time.perf_counter() - started

        while state.epoch_in_phase < phase.epochs:
            started = time.perf_counter()
            seed = _epoch_seed(tc.seed, state.epoch)
            torch.manual_seed(seed)
            batches = None
            if hasattr(data, "train_batches") and fabric.world_size == 1:
                batches = data.train_batches(tc.batch_size, seed)
            if cut:
                train_set = _CachedDataset(train_views, train_labels, seed)
                loader = _loader(train_set, tc.batch_size, _TensorData, seed, fabric=fabric, batches=batches)
            else:
                loader = _loader(data.dataset("train", train=True, epoch=state.epoch), tc.batch_size, data, seed,
                                 cfg.data.num_workers, fabric, batches=batches)
            if isinstance(loader.sampler, DistributedSampler):
                loader.sampler.set_epoch(state.epoch)
            loader = fabric.setup_dataloaders(loader, use_distributed_sampler=False)
            fmodel.train()
            total, count = 0.0, 0
            desc = f"Epoch {state.epoch + 1} [{phase.name}]"
            with progress_bar(desc, len(loader)) as advance:
                for x, y in loader:
                    optimizer.zero_grad(set_to_none=True)
                    with fabric.autocast():
                        loss = criterion(fmodel(channels_last(x), start=cut).float(), y)
                    fabric.backward(loss)
                    optimizer.step()
                    scheduler.step()
                    total += float(loss.detach()) * len(y)
                    count += len(y)
                    advance(info=f"loss {total / count:.4f}")
            if cut:
                model.eval()
                with torch.inference_mode():
                    logits = torch.cat([fmodel(fabric.to_device(chunk), start=cut).float().cpu()
                                        for chunk in val_inputs.split(256)])
            else:
                logits = predict_logits(fabric, model, data.dataset("val", train=False, epoch=0), data,
                                        inference_batch_size(cfg, fabric, backbone.spec.modality), desc="Validating")
            report = classification_report(logits, val_labels, data.classes, train_counts)
            state.seconds += time.perf_counter() - started
            row = {
                "epoch": state.epoch + 1, "phase": phase.name, "train_loss": round(total / max(count, 1), 5),
                "val_loss": round(report["loss"], 5), "val_accuracy": round(report["accuracy"], 5),
                "val_macro_f1": round(report["macro_f1"], 5),
                "lr_head": optimizer.param_groups[0]["lr"], "seconds": round(state.seconds, 2),
            }
            state.history.append(row)
            say(f"epoch {row['epoch']:>3} [{phase.name}] train loss {row['train_loss']:.4f}  val loss "
                f"{row['val_loss']:.4f}  val acc {row['val_accuracy']:.4f}  val macro-F1 {row['val_macro_f1']:.4f}")
            score = report[metric]
            if state.best_score is None or score > state.best_score:
                state.best_score, state.best_epoch, state.bad_epochs = score, state.epoch + 1, 0
                state.best_val_logits = logits
                best_state = copy.deepcopy(model.state_dict())
            else:
                state.bad_epochs += 1
            state.epoch += 1
            state.epoch_in_phase += 1
            if tc.early_stopping and state.bad_epochs >= tc.early_stopping:
                say(f"Early stopping: no better {metric} for {state.bad_epochs} epoch(s)")
                state.epoch_in_phase = phase.epochs
            # epochs on cached features take milliseconds: a checkpoint each would cost more than the epoch
            due = state.epoch_in_phase >= phase.epochs or time.monotonic() - last_saved >= tc.checkpoint_seconds
            if fabric.is_global_zero and due:
                _save_checkpoint(path, model, optimizer, scheduler, state, best_state)
                last_saved = time.monotonic()
        state.phase, state.epoch_in_phase, state.bad_epochs = pi + 1, 0, 0
    if best_state is not None:
        model.load_state_dict(best_state)
    state.cache_hits = sum(c.hits for c in caches)
    state.cache_computed = sum(c.computed for c in caches)
    return state


def load_checkpoint(path: Path, model: nn.Module, num_phases: int) -> tuple[FitState, dict | None]:
    """The saved state and checkpoint of an interrupted run (model weights restored), or a fresh state."""
    if not path.exists():
        return FitState(), None
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = FitState(**ckpt["state"])
    model.load_state_dict(ckpt["model"])
    say(f"Resuming at epoch {state.epoch + 1} (phase {state.phase + 1}/{num_phases})")
    return state, ckpt


class _TensorData:
    """Collate settings for cached tensors (the default collate)."""

    collate = None


def _save_checkpoint(path: Path, model: nn.Module, optimizer, scheduler, state: FitState, best_state) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "state": state.__dict__,
        "best_model": best_state,
    }, tmp)
    os.replace(tmp, path)
