"""THE training loop, on Lightning Fabric: phases, cached frozen features, checkpoints and resume.

Every task trains here. Read top to bottom: ``fit`` walks the strategy's phases; each phase freezes
backbone groups, lets the task compute the frozen part's outputs once through the feature cache,
builds the optimizer with discriminative learning rates and runs epochs. An epoch ends with
validation (every ``train.eval_every`` epochs and at each phase end), the history row, the best
weights, early stopping, the time budget and a checkpoint, so an interrupted run resumes exactly.
What differs between tasks (batches, loss, validation scores) comes from the task's ``Steps``.
Checkpoints hold tensors and plain values only and load with ``torch.load(weights_only=True)``:
a run folder someone hands you cannot run code on your machine.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from lightning_fabric import Fabric
from rich.markup import escape
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from headstart.config import DeviceConfig, RunConfig
from headstart.core import strategies
from headstart.core.backbones.base import Backbone
from headstart.core.backbones.fusion import batchnorm_folded
from headstart.core.cache import FeatureCache
from headstart.errors import RunFolderError
from headstart.progress import console, progress_bar, say

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 2  # 2: loads with weights_only=True (tensors and plain values)
# with a time budget, a phase's augmented views are extracted while they fit this share of the time left (all of it
# for the last phase): on a large dataset or a slow machine, fewer views and time left for fine-tuning, instead of
# a budget overrun before fine-tuning starts
VIEWS_SHARE = 0.5
FEATURE_CACHE_VERSION = 4  # 3: one namespace builder for every task (BatchNorms folded since 2); 4: images with
# transparent pixels are decoded on white (``decode.on_white``), no longer on what the file keeps under them


class Steps(Protocol):
    """A task's side of the loop: its batches, its loss and its validation scores."""

    scores: tuple[str, ...]  # names of the validation scores (history columns ``val_<name>``)
    metric: str  # the score that selects the best epoch (higher is better)
    num_train: int  # training items per epoch
    caches: list[FeatureCache]  # feature caches used (their hit counts go into the metrics)

    def cut(self, model: nn.Module, phase: strategies.Phase) -> int:
        """Backbone stages ``[0, cut)`` served from the feature cache in this phase (0: none)."""

    def prepare(self, fabric: Fabric, model: nn.Module, phase: strategies.Phase, cut: int,
                seconds: float | None = None) -> int | None:
        """Compute (or read from the cache) the frozen part's outputs this phase trains on.

        ``seconds``: how long extracting augmented views may take (the time budget's share; None: no limit), for
        ``phase.views=None``. Returns the augmented views extracted (recorded, so a resume or refit uses as many),
        or None for a task without cached views.
        """

    def train_loader(self, fabric: Fabric, cut: int, epoch: int, seed: int) -> Iterable:
        """One epoch of training batches."""

    def train_step(self, model: nn.Module, batch: Any, cut: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        """``(loss, named loss parts, items in the batch)`` of one batch (inside autocast)."""

    def validate(self, fabric: Fabric, model: nn.Module, cut: int) -> tuple[dict[str, float], Any]:
        """``(scores, predictions)`` on the validation split; the best epoch's predictions are kept."""

    # Optional: ``solve(fabric, model, phase, cut) -> dict | None``: fit the phase's trainable part to convergence
    # without optimizer epochs (classification: the linear head by L-BFGS); returns ``{"loss": ..., parts...}``.


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
    best_output: Any = None  # validation predictions of the best epoch (the final model)
    phase_epochs: dict[str, int] = field(default_factory=dict)  # epochs decided at run time (auto), by phase index
    phase_notes: dict[str, str] = field(default_factory=dict)  # why a phase was skipped or stopped, by phase index
    phases: list[dict[str, Any]] = field(default_factory=list)  # ``phase_summary`` at the end of the fit
    compile_seconds: dict[str, float] = field(default_factory=dict)  # torch.compile's time (train.compile), by phase
    # each phase's whole time, by phase index: its preparation (feature extraction, the head's solve, timing a
    # candidate's epoch) and its epochs; ``history``'s ``epoch_seconds`` hold the epochs alone
    phase_seconds: dict[str, float] = field(default_factory=dict)
    phase_views: dict[str, int] = field(default_factory=dict)  # augmented views cached for each phase (``prepare``)


def augment_seed(cfg: RunConfig) -> int:
    """Seed of the augmentation draws: ``data.augment_seed``, else ``train.seed``."""
    return cfg.data.augment_seed if cfg.data.augment_seed is not None else cfg.train.seed


class _WithoutPrecisionLine(logging.Filter):
    """Lightning's 'Using bfloat16 Automatic Mixed Precision (AMP)', printed before anything else of every command
    (predict and evaluate too): a training run says its device and precision in its own Device line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Automatic Mixed Precision" not in record.getMessage()


_PRECISION_LINE = _WithoutPrecisionLine()
PRECISION_NAMES = {"bf16-mixed": "bf16 mixed precision", "16-mixed": "fp16 mixed precision", "32-true": "fp32",
                   "bf16-true": "bf16", "16-true": "fp16", "64-true": "fp64"}


def make_fabric(cfg: DeviceConfig, distributed: bool = False) -> Fabric:
    """The Fabric of a training run (``distributed``: on ``device.devices`` x ``device.num_nodes``) or of inference
    (one device: prediction and evaluation run in one process whatever the config trained with).

    With several devices ``launch`` starts the other processes (or joins those ``torchrun``/SLURM started); on a
    CPU the cores are shared between them, and only the first process (rank 0) prints.
    """
    several = distributed and (str(cfg.devices) != "1" or cfg.num_nodes > 1)
    listed = str(cfg.devices).strip("[]").split(",")  # 4, "4", "0,1", [0, 1]
    processes = (int(listed[0]) if len(listed) == 1 and listed[0].strip().isdigit() else len(listed)) if several else 1
    cores = int(os.environ.get("OMP_NUM_THREADS") or 0) or max((os.cpu_count() or 1) // processes, 1)
    torch.set_num_threads(cfg.threads or cores)
    precision = resolve_precision(cfg.precision, cfg.accelerator)
    lightning = logging.getLogger("lightning_fabric.utilities.rank_zero")
    if _PRECISION_LINE not in lightning.filters:
        lightning.addFilter(_PRECISION_LINE)
    fabric = Fabric(accelerator=cfg.accelerator, devices=cfg.devices if several else 1, precision=precision,
                    strategy=cfg.strategy if several else "auto", num_nodes=cfg.num_nodes if several else 1)
    fabric.launch()
    if fabric.device.type == "cuda":  # cuDNN picks the fastest convolution for each input shape (fixed image sizes)
        torch.backends.cudnn.benchmark = True
    if not fabric.is_global_zero:
        console.quiet = True  # the other ranks train the same model: one process reports
    return fabric


def device_line(fabric: Fabric, cfg: DeviceConfig) -> str:
    """What a training run computes on: ``cpu: 2 threads, bf16 mixed precision``, ``cuda:0 (NVIDIA H100...)``,
    ``cpu x 2 processes (ddp)``."""
    where = fabric.device.type if fabric.world_size == 1 else f"{fabric.device.type} x {fabric.world_size} processes"
    if fabric.device.type == "cuda":
        where = f"{fabric.device} ({torch.cuda.get_device_name(fabric.device)})" if fabric.world_size == 1 else where
    elif fabric.device.type == "cpu":
        where += f": {torch.get_num_threads()} thread(s){' each' if fabric.world_size > 1 else ''}"
    precision = resolve_precision(cfg.precision, cfg.accelerator)
    strategy = f" ({cfg.strategy})" if fabric.world_size > 1 else ""
    return f"Device {where}{strategy}, {PRECISION_NAMES.get(precision, precision)}"


def agree(fabric: Fabric, value: Any) -> Any:
    """Rank 0's ``value`` on every process (a decision taken from timings, which differ between processes)."""
    return fabric.broadcast(value, 0) if fabric.world_size > 1 else value


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


def on_cuda(fabric: Fabric | None = None) -> bool:
    """Whether this process computes on a CUDA device: ``fabric``'s, else whether it has started CUDA at all."""
    return fabric.device.type == "cuda" if fabric is not None else torch.cuda.is_initialized()


def default_workers(fabric: Fabric | None = None) -> int:
    """Loader worker processes when ``data.num_workers`` is not set: none on a CPU, where the cores compute the
    model (on the 2-core CPU workers only took cores from it); on a GPU one per core this process has
    (``torch.get_num_threads``: the cores shared between the devices' processes) but one, at most 8, so that
    decoding and augmentation run beside the GPU instead of before each of its steps.
    """
    return min(8, max(torch.get_num_threads() - 1, 1)) if on_cuda(fabric) else 0


def first_input(fabric: Fabric, dataset: Dataset, collate: Callable | None = None) -> Any:
    """The first item's input as a batch of one on the device (None for an empty dataset): the example
    ``batchnorm_folded`` checks its folding on."""
    if len(dataset) == 0:
        return None
    first = (collate or torch.utils.data.default_collate)([dataset[0]])[0]
    with torch.inference_mode():
        return fabric.to_device(first)


def loader(dataset: Dataset, batch_size: int, collate: Callable | None = None, shuffle_seed: int | None = None,
           num_workers: int | None = 0, fabric: Fabric | None = None, batches: list[list[int]] | None = None,
           pin_memory: bool | None = None) -> DataLoader:
    """Batches of ``dataset``: shuffled by ``shuffle_seed``, or the task's own ``batches``.

    On several devices (``fabric``) each global batch, of ``batch_size`` x devices items, is the batch one device
    would draw with that size, split between the devices: DDP then averages the gradient over the same items.
    ``num_workers=None`` (``data.num_workers`` unset): ``default_workers``. ``pin_memory=None``: pinned on CUDA
    (``on_cuda``), so that the host-to-device copies (``fabric.to_device``: non-blocking there) overlap compute.
    """
    num_workers = default_workers(fabric) if num_workers is None else num_workers
    pin_memory = on_cuda(fabric) if pin_memory is None else pin_memory
    world = fabric.world_size if fabric is not None else 1
    if batches is None and world > 1 and shuffle_seed is not None:
        batches = [b.tolist() for b in loader(range(len(dataset)), batch_size * world, shuffle_seed=shuffle_seed,
                                                 pin_memory=False)]
    if batches is not None:  # the task's batches (global ones on several devices)
        if world > 1:
            batches = shard_batches(batches, world, fabric.global_rank)
        return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=collate,
                          pin_memory=pin_memory)
    generator = torch.Generator().manual_seed(shuffle_seed) if shuffle_seed is not None else None
    n = len(dataset)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle_seed is not None,
        generator=generator, num_workers=num_workers, collate_fn=collate, pin_memory=pin_memory,
        drop_last=shuffle_seed is not None and n % batch_size == 1 and n > 1,  # BatchNorm needs 2+
        persistent_workers=False,
    )


def shard_batches(batches: list[list[int]], world: int, rank: int) -> list[list[int]]:
    """Rank ``rank``'s part of each global batch: items ``rank, rank + world, ...``.

    A batch of fewer than ``world`` items repeats some, so that every device takes a step on every batch.
    """
    out = []
    for batch in batches:
        batch = list(batch) * -(-world // max(len(batch), 1))
        out.append(batch[rank::world])
    return out


def share(n: int, world: int, rank: int) -> range:
    """Rank ``rank``'s contiguous share of ``n`` items (``n // world`` or one more; the shares in rank order)."""
    return range(rank * n // world, (rank + 1) * n // world)


def share_note(fabric: Fabric, items: range, n: int) -> str:
    """`` [K of N on this device]`` for a progress bar on several devices, else nothing."""
    return f" [{len(items)} of {n} on this device]" if fabric.world_size > 1 else ""


def gather_split(fabric: Fabric, n: int, compute: Callable[[range], Any]) -> Any:
    """``compute(items)`` for ``n`` items split between the devices; every device gets all the outputs, in order.

    Each device computes its contiguous ``share`` of ``range(n)`` (validation: each device predicts its part of the
    split instead of all of it); the shares' outputs are joined in rank order, which is the items' order, on every
    device, so that all of them compute the same scores. ``compute`` returns a CPU tensor (its rows are joined, on
    the CPU: shares differ by one item at most, padded to the largest for ``all_gather`` and trimmed) or a list
    (ragged outputs such as detection boxes: gathered as objects). A device whose share is empty (fewer items than
    devices) does not call ``compute``. On one device this is ``compute(range(n))``: no collective.
    """
    world = fabric.world_size
    if world == 1:
        return compute(range(n))
    items = share(n, world, fabric.global_rank)
    out = compute(items) if len(items) else None
    meta = (("tensor", tuple(out.shape), out.dtype) if isinstance(out, torch.Tensor) else
            ("list", len(out)) if out is not None else None)
    metas: list[Any] = [None] * world
    torch.distributed.all_gather_object(metas, meta)
    tensors = [m for m in metas if m is not None and m[0] == "tensor"]
    if not tensors:  # lists (or nothing anywhere)
        parts: list[Any] = [None] * world
        torch.distributed.all_gather_object(parts, list(out) if out is not None else [])
        return [x for part in parts for x in part]
    rows = [m[1][0] if m is not None else 0 for m in metas]
    _, shape, dtype = tensors[0]
    padded = torch.zeros((max(rows), *shape[1:]), dtype=dtype)
    if out is not None:
        padded[: len(out)] = out
    padded = padded.to(fabric.device)  # NCCL gathers device tensors
    gathered = [torch.empty_like(padded) for _ in range(world)]
    torch.distributed.all_gather(gathered, padded)
    return torch.cat([part[: rows[r]].cpu() for r, part in enumerate(gathered)])


def channels_last(x):
    """4-D image batches in channels-last layout: about 2x faster convolutions on CPUs."""
    return x.contiguous(memory_format=torch.channels_last) if isinstance(x, torch.Tensor) and x.ndim == 4 else x


def inference_batch_size(cfg: RunConfig, fabric: Fabric, modality: str = "image", size: int | None = None) -> int:
    """Items per forward pass when nothing trains: ``data.inference_batch_size``, else 8 images on a CPU.

    On CPUs the depthwise and 1x1 convolutions of mobile backbones are memory-bound; with 8 images
    their activations stay in cache and extraction runs about twice as fast as with 64
    (EfficientNet-Lite0 and MobileNetV2, bf16 and fp32, benchmarks/image_classification.py).
    On a CUDA device with 16 GiB or more, 256 images (at least 2 x train.batch_size): a mobile backbone's
    forward pass on a few dozen images is too short to cover a batch's fixed costs (kernel launches, the Python
    loop, the copy to the device), and 256 images at 224 px in bf16 keep the largest activation of
    EfficientNet-Lite0 (32 x 112 x 112 per image) near 200 MB, well within such a device. ``size``: the side of
    larger square inputs (detection's letterbox, segmentation's scale): the count shrinks with their pixels
    (320 px: 125 images, 512 px: 49), so that a batch's activations stay those of 256 images at 224 px.
    """
    if cfg.data.inference_batch_size:
        return cfg.data.inference_batch_size
    if modality == "image" and fabric.device.type == "cuda":
        memory = torch.cuda.get_device_properties(fabric.device).total_memory
        images = 256 if memory >= 16 * 2**30 else 64
        if size:
            images = max(int(images * (224 / max(size, 224)) ** 2), 8)
        return max(images, cfg.train.batch_size * 2)
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


def run_batches(fabric: Fabric, fn: Callable, batches: DataLoader, desc: str,
                dtype: torch.dtype = torch.float32, advance: Callable[[], None] | None = None,
                gradients: bool = False) -> torch.Tensor:
    """``fn(inputs)`` over ``(inputs, _)`` batches, outputs concatenated on the CPU in ``dtype``, with a progress bar
    (or ``advance()`` called per batch: a bar shown by the caller). ``fn`` runs in inference mode unless
    ``gradients`` (a pass that takes gradients, as heat maps do).

    On CUDA the outputs are copied back without waiting (into pinned memory), once at the end: the device is
    not stopped after every batch.
    """
    outputs = []
    cuda = fabric.device.type == "cuda"
    with torch.inference_mode(not gradients), progress_bar(desc, len(batches) if advance is None else 0) as own:
        for x, _ in batches:
            with fabric.autocast():
                outputs.append(fn(autocast_images(channels_last(fabric.to_device(x)))).to("cpu", dtype,
                                                                                          non_blocking=cuda))
            (advance or own)()
    synchronize(fabric)  # the asynchronous copies have landed before the host reads them
    return torch.cat(outputs)


def synchronize(fabric: Fabric) -> None:
    """Wait for the device's queued work (CUDA; elsewhere it is done already): before timing or host reads."""
    if fabric.device.type == "cuda":
        torch.cuda.synchronize(fabric.device)


# ------------------------------------------------------------------------------------------- feature cache
def feature_namespace(spec, cfg: RunConfig, cut: int, transform_id: str, train: bool, view: int,
                      **task: Any) -> dict[str, Any]:
    """Everything besides an item's content that changes its cached features (the one namespace builder).

    ``task`` adds what only one task's frozen outputs depend on (detection: letterbox size, stages kept).
    """
    namespace = {
        "version": FEATURE_CACHE_VERSION,
        "backbone": spec.arch,
        "weights": spec.weights,
        "preprocessing": spec.preprocessing_key(),
        "cut": cut,
        "transform": transform_id,
        "view": view if train else 0,
        "seed": augment_seed(cfg) if train else 0,
        "precision": resolve_precision(cfg.device.precision, cfg.device.accelerator),
        **task,
    }
    if spec.weights is None:  # a frozen random backbone: its weights are drawn from train.seed
        namespace["init_seed"] = cfg.train.seed
    return namespace


def frozen_outputs(fabric: Fabric, cfg: RunConfig, backbone: Backbone, cut: int, keys: list[str], dataset: Dataset,
                   namespace: dict[str, Any], run: Callable[[torch.Tensor], torch.Tensor], desc: str,
                   collate: Callable | None = None, prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   dtype: torch.dtype = torch.float32, side: tuple[int, dict[str, Any]] | None = None,
                   out_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, FeatureCache]:
    """``run(prepare(inputs))`` for every item of ``dataset``, computed once and kept in the feature cache.

    ``run`` computes backbone stages ``[0, cut)`` (frozen, eval mode, BatchNorms folded into their
    convolutions while it runs); ``prepare`` turns a loader batch into the backbone's input.
    ``side=(stage, namespace)`` with ``cut`` the pooled end: the items computed in this pass also keep their
    outputs of stages ``[0, stage)`` (float16) under ``namespace``, for a later phase that trains the stages above
    ``stage`` (``auto``'s partial candidate), so that phase reads them instead of running the images again.
    ``run`` is then not used: the pass is ``backbone.extract(x, stage)`` continued by ``backbone(mid, start=stage)``.
    ``dtype`` is what the cache stores; the result is ``out_dtype`` (default ``dtype``), converted as it is copied out
    of the memory-mapped shards: that copy is the only one of the features in memory.
    """
    cache = FeatureCache(namespace, cfg.cache.dir, cfg.cache.memory_mb)
    prepare = prepare or (lambda x: x)
    batch_size = inference_batch_size(cfg, fabric, backbone.spec.modality)
    bar: list[Callable[[], None]] = [lambda: None]  # advances the progress bar of the whole extraction (set below)

    def compute(indices: list[int]) -> torch.Tensor:
        backbone.eval()
        backbone.to(fabric.device, memory_format=torch.channels_last)
        batches = loader(Subset(dataset, indices), batch_size, collate, num_workers=cfg.data.num_workers)
        with torch.inference_mode():
            example = prepare(first_input(fabric, Subset(dataset, indices[:1]), collate))
        kept: list[torch.Tensor] = []

        def both(x: torch.Tensor) -> torch.Tensor:
            mid = backbone.extract(x, side[0])
            kept.append(mid.to("cpu", torch.float16, non_blocking=on_cuda(fabric)))  # lands by run_batches' sync
            return backbone(mid, start=side[0])

        with batchnorm_folded(backbone, cut, example):
            out = run_batches(fabric, lambda x: (both if side else run)(prepare(x)), batches, desc, dtype, bar[0])
        if side:
            mids, names = torch.cat(kept), [keys[i] for i in indices]
            stages = FeatureCache(side[1], cfg.cache.dir)  # per chunk: what it cannot store is not kept past it
            stages.fill(names, stages.missing(names), lambda missing: mids[missing])
        return out

    if side and side[0] >= cut:
        raise ValueError(f"side stage {side[0]} must lie below the cut {cut}")
    # rank 0's list on every device: a device that listed the cache after another had stored its first shard of this
    # pass would see fewer items missing, take another share of them, and leave items to no device (then computed by
    # every one of them); the broadcast also makes every device list before any writes
    missing = agree(fabric, cache.missing(keys))
    world, rank = fabric.world_size, fabric.global_rank
    mine = missing[rank * len(missing) // world: (rank + 1) * len(missing) // world]  # this device's share
    chunks = [mine[i: i + cache.CHUNK] for i in range(0, len(mine), cache.CHUNK)]
    with progress_bar(desc + (f" [{len(mine)} of {len(missing)} on this device]" if world > 1 else ""),
                      sum(math.ceil(len(c) / batch_size) for c in chunks)) as advance:
        bar[0] = advance
        cache.fill(keys, mine, compute)  # shard after shard: a stopped extraction resumes at the last one
    if world > 1:  # every device computed its share into the cache: all read all of it
        fabric.barrier()
        cache.refresh()
        cache.computed += len(missing) - len(mine)  # computed this session, by the other devices
    # what no device could store (a cache folder that cannot be written) is computed here
    out = cache.get(keys, compute, dtype=out_dtype)
    cache.hits = len(keys) - len(missing)  # served from earlier sessions (``get`` also counted this session's)
    cache.refresh()  # ``out`` holds the features: the cache's own copy of them is let go
    return out, cache


# ------------------------------------------------------------------------------------------- the loop
class ExtractionClock:
    """Whether one more extraction pass over the training items (and the validation pass after it) fits ``seconds``.

    Costed at the seconds per computed item of the passes timed so far (``timed``): items served from the feature
    cache cost nothing. ``seconds=None``: every pass fits. Rank 0 decides for every process (``agree``).
    """

    def __init__(self, fabric: Fabric, seconds: float | None, num_train: int, num_val: int,
                 caches: list[FeatureCache]) -> None:
        self.fabric, self.seconds, self.num_train, self.num_val, self.caches = fabric, seconds, num_train, num_val, caches
        self.deadline = None if seconds is None else time.perf_counter() + seconds
        self.per_item = 0.0

    def timed(self, extract: Callable[..., Any], *args: Any) -> Any:
        """``extract(*args)``, timed against the items it computed (the caches it added to ``caches``)."""
        started, before = time.perf_counter(), len(self.caches)
        out = extract(*args)
        computed = sum(c.computed for c in self.caches[before:])
        if computed:
            self.per_item = max(self.per_item, (time.perf_counter() - started) / computed)
        return out

    def fits(self) -> bool:
        """Whether another training pass and the validation pass end before the deadline."""
        if self.deadline is None:  # the same on every process (one config)
            return True
        ends = time.perf_counter() + self.per_item * (self.num_train + self.num_val)
        return bool(agree(self.fabric, ends <= self.deadline))

    def views(self, count: int, extract: Callable[[int], Any]) -> list[Any]:
        """``extract(v)`` for the views ``v < count``: the first always, each other while it fits, saying when not."""
        out = []
        for v in range(count):
            if v and not self.fits():
                say(f"Feature extraction: {v} of {count} augmented views fit the time budget ({self.describe()})")
                break
            out.append(self.timed(extract, v))
        return out

    def describe(self) -> str:
        """The cost and the allowance, for the message that says a pass did not fit."""
        return f"~{self.per_item * self.num_train:.0f} s per pass over them, {self.seconds:.0f} s for the views"


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def _print_groups(model: nn.Module, frozen: set[int], phase: strategies.Phase, cut: int, solved: bool) -> None:
    rows = strategies.describe(model, frozen)
    table = Table(title=f"Phase '{phase.name}': " + ("the head solved to convergence" if solved else
                                                      f"{phase.epochs} epoch(s)")
                  + (f", first {cut} group(s) served from the feature cache" if cut else ""))
    for col in ("group", "trainable", "total", "state"):
        table.add_column(col, justify="left" if col in ("group", "state") else "right")
    for name, trainable, total, is_frozen in rows:
        state = "[dim]frozen[/]" if is_frozen or (total and not trainable) else "[green]trains[/]"
        table.add_row(name, f"{trainable:,}", f"{total:,}", state)
    table.add_row("[bold]all", f"[bold]{sum(r[1] for r in rows):,}", f"[bold]{sum(r[2] for r in rows):,}", "")
    say(table)


def fit(model: nn.Module, steps: Steps, cfg: RunConfig, run_dir: Path, resume: bool = False,
        fabric: Fabric | None = None, replay: list[strategies.Phase] | None = None) -> FitState:
    """Train ``model`` (a ``backbone`` and a ``head``) by the configured strategy; checkpoints in ``run_dir``.

    ``replay``: run these phases as they are instead (``--refit``): no time budget, no early stopping, no
    validation, and the final weights are the last epoch's, because validation is no longer held out.
    """
    fabric = fabric or make_fabric(cfg.device)
    tc = cfg.train
    backbone = model.backbone
    steps_per_epoch = math.ceil(steps.num_train / (tc.batch_size * fabric.world_size))  # global batches
    phases = replay if replay is not None else strategies.plan(tc.strategy, backbone.num_groups, tc, steps_per_epoch)
    budget = None if replay is not None else strategies.time_budget(tc)
    pretrained = backbone.spec.weights is not None
    backbone.batchnorm_statistics_frozen = pretrained and tc.batchnorm == "frozen"
    model.to(memory_format=torch.channels_last)
    path = run_dir / CHECKPOINT
    state, ckpt = load_checkpoint(path, model, len(phases)) if resume else (FitState(), None)
    best_model = ckpt["best_model"] if ckpt else None
    last_saved, stop = time.monotonic(), False
    if budget and state.epoch == 0:
        say(f"Strategy auto: the linear head, then fine-tuning while validation improves, within {budget:.0f} s "
            "(--time-budget)" if tc.strategy == "auto" else f"Time budget {budget:.0f} s (--time-budget; 0: no "
            "limit): after the first phase, an epoch that would not fit is not started")

    for pi, phase in enumerate(phases):
        if stop and pi >= state.phase:
            state.phase_notes.setdefault(str(pi), "not tried: the time budget was used up")
        if pi < state.phase or stop:
            continue
        phase = dataclasses.replace(phase, epochs=state.phase_epochs.get(str(pi), phase.epochs))
        fresh = state.epoch_in_phase == 0
        if fresh and replay is None and state.best_score is not None and state.best_score >= 1.0 - 1e-9:
            # the final weights are the best validation epoch's and ties go to the earlier one: nothing this phase
            # trains could be chosen (lp-ft on a small validation split that the head already gets all right)
            _skip_phase(state, pi, phase, f"validation {steps.metric} is already 1.0, and no later epoch "
                        "can be chosen over the one that reached it")
            continue
        if phase.candidate and fresh:
            why = _candidate_skip_reason(state, steps.metric, phases[:pi])
            if why:
                _skip_phase(state, pi, phase, why)
                continue
            if best_model is not None:  # candidates start from the best weights so far
                model.load_state_dict(best_model)
        if state.epoch_in_phase >= phase.epochs:  # checkpoint taken at the end of this phase
            state.phase, state.epoch_in_phase, state.bad_epochs = pi + 1, 0, 0
            continue
        frozen = strategies.apply(model, phase)
        cut = steps.cut(model, phase) if cfg.cache.enabled else 0
        solves = getattr(steps, "solves", None)  # a head fitted by L-BFGS instead of epochs (classification)
        _print_groups(model, frozen, phase, cut, solves is not None and solves(model, phase, cut))
        started = time.perf_counter()
        # a phase whose views were decided (before an interruption) or are replayed (--refit) extracts as many again
        phase = dataclasses.replace(phase, views=state.phase_views.get(str(pi), phase.views))
        if cut and phase.trainable and phase.views is None and _views_hurt(state.history):
            say(f"Phase '{phase.name}' trains on the plain images only: the solved head's cross-validation found "
                "the augmented views hurt here")
            phase = dataclasses.replace(phase, views=0)
        views_time = (max(budget - state.seconds, 0.0) * (VIEWS_SHARE if pi + 1 < len(phases) else 1.0)
                      if budget and phase.views is None and fresh else None)
        views = steps.prepare(fabric, model, phase, cut, views_time)
        if views is not None:
            state.phase_views[str(pi)] = views
        solve = getattr(steps, "solve", None)
        solved = solve(fabric, model, phase, cut) if solve is not None and fresh else None
        groups = strategies.param_groups(model, phase, tc, discriminative=pretrained)
        adamw = torch.optim.AdamW(groups)
        # train.compile: only where the step runs backbone stages (a head on cached features is too small to pay)
        compiled = tc.compile and cut < backbone.num_groups
        first_steps: list[float] = []  # seconds of the compiled phase's first two training steps
        noted = False  # compile time reported (once per phase and session)
        # Fabric compiles its wrapper of the module (DDP's too); ``model`` itself stays uncompiled: checkpoints and
        # weights keep their keys (no ``_orig_mod.``), and validation runs it in eval mode as before
        if compiled:  # the graphs of an earlier phase (other trainable layers) are not reused: let them go, so that
            torch.compiler.reset()  # many phases (gradual) stay under dynamo's recompilation limit
        fmodel, optimizer = fabric.setup(torch.compile(model) if compiled else model, adamw)
        # a phase after the first (a model exists: the run may end without it) is fitted to the time left, as are
        # auto's candidates: lp-ft's fine-tuning on a big text table on a CPU (an epoch of hours) is not started
        if fresh and budget and (phase.candidate or state.best_score is not None):
            epoch_s = _estimate_epoch_seconds(fabric, fmodel, optimizer, steps, cut, tc.seed,
                                              first_steps if compiled else None)
            fits = agree(fabric, int((budget - state.seconds - (time.perf_counter() - started)) // epoch_s))
            if fits < 1:
                _note_compile(state, pi, phase, first_steps)
                _add_seconds(state, pi, time.perf_counter() - started)
                _skip_phase(state, pi, phase, f"an epoch takes about {epoch_s:.0f} s and "
                            f"{max(budget - state.seconds, 0):.0f} s of the {budget:.0f} s budget are left")
                continue
            if fits < phase.epochs:
                say(f"Phase '{phase.name}': {fits} of {phase.epochs} epochs fit the time left (~{epoch_s:.0f} s each)")
                phase = dataclasses.replace(phase, epochs=fits)
            state.phase_epochs[str(pi)] = phase.epochs
        # OneCycleLR needs 5+ steps and a warmup of more than one step (tiny data: 2 batches x 2 epochs)
        total_steps = max(phase.epochs * steps_per_epoch + 1, 5, math.floor(1 / tc.warmup) + 1)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            adamw, max_lr=[g["lr"] for g in groups], total_steps=total_steps, pct_start=tc.warmup,
            div_factor=10.0, final_div_factor=100.0,
        )
        if ckpt is not None and ckpt["state"]["phase"] == pi and not fresh:
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
        patience = max(tc.early_stopping, strategies.AUTO_PATIENCE) if phase.candidate else tc.early_stopping
        patience = 0 if replay is not None else patience
        _add_seconds(state, pi, time.perf_counter() - started)
        last_epoch_s = 0.0

        while state.epoch_in_phase < phase.epochs and not stop:
            # the first validated epoch always runs (a solved head's takes milliseconds): a run ends with a model,
            # even when extracting the features alone took the budget (a large folder)
            if agree(fabric, bool(budget) and state.best_score is not None and state.seconds + last_epoch_s > budget):
                say(f"Time budget of {budget:.0f} s: the next epoch (~{last_epoch_s:.0f} s) would not fit; "
                    f"stopping after epoch {state.epoch}")
                stop = True
                break
            started = time.perf_counter()
            seed = _epoch_seed(tc.seed, state.epoch)
            torch.manual_seed(seed)
            total, count, parts = 0.0, 0, {}
            if solved is not None:  # fitted to convergence: one validation closes the phase
                total, count, parts = solved["loss"], 1, {k: v for k, v in solved.items() if k != "loss"}
                state.epoch_in_phase = phase.epochs - 1
            batches = steps.train_loader(fabric, cut, state.epoch, seed) if solved is None else []
            fmodel.train()
            # the loss sums stay on the device (float64: the same sums as Python floats): reading a loss each step
            # would stop a GPU until it finished the step; they are read for the progress bar once a second
            sums: dict[str, torch.Tensor] = {}
            shown = time.monotonic()
            with progress_bar(f"Epoch {state.epoch + 1} [{phase.name}]", len(batches)) as advance:
                for i, batch in enumerate(batches):
                    timed = compiled and len(first_steps) < 2
                    if timed:
                        synchronize(fabric)
                        step_started = time.perf_counter()
                    optimizer.zero_grad(set_to_none=True)
                    with fabric.autocast():
                        loss, losses, n = steps.train_step(fmodel, batch, cut)
                    fabric.backward(loss)
                    if tc.clip_grad_norm:
                        fabric.clip_gradients(fmodel, optimizer, max_norm=tc.clip_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    if timed:
                        synchronize(fabric)
                        first_steps.append(time.perf_counter() - step_started)
                    count += n
                    for k, v in {"": loss, **losses}.items():  # "": the loss, then its named parts
                        v = v.detach().to(torch.float32 if v.device.type == "mps" else torch.float64) * n
                        sums[k] = sums[k].add_(v) if k in sums else v
                    if time.monotonic() - shown >= 1.0 or i == len(batches) - 1:
                        advance(info=f"loss {float(sums['']) / count:.4f}")
                        shown = time.monotonic()
                    else:
                        advance()
            if sums:
                total, parts = float(sums.pop("")), {k: float(v) for k, v in sums.items()}
            if compiled and first_steps and not noted:
                _note_compile(state, pi, phase, first_steps)
                noted = True
            if fabric.world_size > 1 and solved is None:  # the epoch's loss over every device's items
                sums = fabric.all_reduce(torch.tensor([total, count, *parts.values()], dtype=torch.float64),
                                         reduce_op="sum").tolist()
                total, count, parts = sums[0], int(sums[1]), dict(zip(parts, sums[2:]))
            state.epoch += 1
            state.epoch_in_phase += 1
            elapsed = time.perf_counter() - started
            out_of_time = agree(fabric, bool(budget) and state.seconds + elapsed >= budget)
            row: dict[str, Any] = {"epoch": state.epoch, "phase": phase.name, "train_loss": round(total / max(count, 1), 5),
                                   **{k: round(v / max(count, 1), 5) for k, v in parts.items()},
                                   **{f"val_{k}": None for k in steps.scores}}
            if replay is None and (state.epoch_in_phase >= phase.epochs or out_of_time or state.epoch % tc.eval_every
                                   == 0):  # a refit trains on the validation items: their scores would say nothing
                scores, output = steps.validate(fabric, model, cut)
                scores = agree(fabric, scores)  # every device stops and keeps the same epochs
                row.update({f"val_{k}": round(float(v), 5) for k, v in scores.items()})
                if state.best_score is None or scores[steps.metric] > state.best_score:
                    state.best_score, state.best_epoch, state.bad_epochs = scores[steps.metric], state.epoch, 0
                    state.best_output, best_model = output, copy.deepcopy(model.state_dict())
                else:
                    state.bad_epochs += 1
                if patience and state.bad_epochs >= patience and state.epoch_in_phase < phase.epochs:
                    say(f"Early stopping: no better {steps.metric} for {state.bad_epochs} validation(s)")
                    state.phase_notes[str(pi)] = f"stopped early: no better {steps.metric} in {patience} validations"
                    state.epoch_in_phase = phase.epochs
            last_epoch_s = time.perf_counter() - started
            _add_seconds(state, pi, last_epoch_s)
            row.update(lr_head=optimizer.param_groups[0]["lr"], epoch_seconds=round(last_epoch_s, 2),
                       seconds=round(state.seconds, 2))
            state.history.append(row)
            say(f"epoch {row['epoch']:>3} {escape(f'[{phase.name}]')} train loss {row['train_loss']:.4f}  " + "  ".join(
                f"val {k.replace('_', ' ')} {row[f'val_{k}']:.4f}" for k in steps.scores if row[f"val_{k}"] is not None))
            if out_of_time:
                say(f"Time budget of {budget:.0f} s used up after epoch {state.epoch}")
                stop = True
            # epochs on cached features take milliseconds: a checkpoint each would cost more than the epoch
            due = stop or state.epoch_in_phase >= phase.epochs or time.monotonic() - last_saved >= tc.checkpoint_seconds
            if fabric.is_global_zero and due:
                save_checkpoint(path, model, optimizer, scheduler, state, best_model)
                last_saved = time.monotonic()
        if stop:
            state.phase_notes.setdefault(str(pi), "stopped: time budget used up" if state.epoch_in_phase < phase.epochs
                                         else "the time budget was used up by its end")
        else:
            state.phase, state.epoch_in_phase, state.bad_epochs = pi + 1, 0, 0
    if best_model is not None and replay is None:
        model.load_state_dict(best_model)
    state.phases = phase_summary(phases, state, steps.metric)
    if len(phases) > 1 and replay is None:
        _print_phases(state.phases, steps.metric)
    state.cache_hits = sum(c.hits for c in steps.caches)
    state.cache_computed = sum(c.computed for c in steps.caches)
    return state


def _candidate_skip_reason(state: FitState, metric: str, before: list[strategies.Phase]) -> str:
    """Why an ``auto`` candidate is not worth trying (empty: try it).

    Candidates go from cheap to costly (gradual unfreezing): one is tried only when the candidate
    before it improved validation, so photos close to ImageNet, where adapting the top of the
    backbone does not help, do not pay for fine-tuning all of it.
    """
    previous = next((i for i in range(len(before) - 1, -1, -1) if before[i].candidate), None)
    if previous is not None:
        epochs = [r["epoch"] for r in state.history if r["phase"] == before[previous].name]  # none when skipped
        if state.best_epoch not in epochs:
            return f"'{before[previous].name}' did not improve validation {metric}"
    return ""


def _add_seconds(state: FitState, pi: int, seconds: float) -> None:
    """Count ``seconds`` of phase ``pi`` in the run's time (the budget's) and in the phase's own."""
    state.seconds += seconds
    state.phase_seconds[str(pi)] = state.phase_seconds.get(str(pi), 0.0) + seconds


def _views_hurt(history: list[dict[str, Any]]) -> bool:
    """Whether a solved head (an earlier phase) fitted on the plain images only, cross-validation having found the
    augmented views hurt: then a phase on cached features trains on the plain images too. ``auto`` on 902 mirrored
    digits (README, Flips): its partial candidate reached 0.762 on the plain images, 0.547 among the views (the
    head alone: 0.663)."""
    return any(row.get("head_augmented") == 0 for row in history)


def _skip_phase(state: FitState, pi: int, phase: strategies.Phase, why: str) -> None:
    say(f"Phase '{phase.name}' skipped: {why}")
    state.phase_notes[str(pi)] = f"skipped: {why}"
    state.phase_epochs[str(pi)] = 0
    state.phase, state.epoch_in_phase, state.bad_epochs = pi + 1, 0, 0


def _estimate_epoch_seconds(fabric: Fabric, fmodel: nn.Module, optimizer, steps: Steps, cut: int, seed: int,
                            first_steps: list[float] | None = None) -> float:
    """Seconds one epoch of this phase will take: a few training batches timed (no step taken), plus validation.

    Validation costs about a third of training per item (a forward pass, no backward). The batches after the first
    count (``steps.timed_batches`` of them, default 1: texts batched by length vary more): the first one's includes
    warming up (and ``torch.compile``: the first two batches' seconds go to ``first_steps``).
    """
    fmodel.train()
    times = []
    timed = getattr(steps, "timed_batches", 1)
    for i, batch in enumerate(steps.train_loader(fabric, cut, 0, seed)):
        synchronize(fabric)  # a GPU runs behind the host: its queued work is not this batch's
        started = time.perf_counter()
        with fabric.autocast():
            loss, _, n = steps.train_step(fmodel, batch, cut)
        fabric.backward(loss)
        synchronize(fabric)
        seconds = time.perf_counter() - started
        if first_steps is not None and len(first_steps) < 2:
            first_steps.append(seconds)
        times.append((seconds, max(n, 1)))
        if i == timed:
            break
    optimizer.zero_grad(set_to_none=True)
    counted = times[1:] or times
    per_item = sum(t for t, _ in counted) / sum(n for _, n in counted) if counted else 0.0
    # each device trains on its part of every batch and validates its share of the split (``gather_split``)
    return max(per_item * (steps.num_train + getattr(steps, "num_val", 0) / 3) / fabric.world_size * 1.1, 1e-3)


def _note_compile(state: FitState, pi: int, phase: strategies.Phase, first_steps: list[float]) -> None:
    """Report ``torch.compile``'s time in a phase: its first training step's seconds less the second's."""
    if not first_steps:
        return
    first, then = first_steps[0], (first_steps[1] if len(first_steps) > 1 else 0.0)
    state.compile_seconds[str(pi)] = round(max(first - then, 0.0), 2)
    say(f"torch.compile: phase '{phase.name}' compiled in ~{state.compile_seconds[str(pi)]:.1f} s (its first "
        f"training step took {first:.1f} s" + (f", the next {then:.2f} s)" if len(first_steps) > 1 else ")"))


def phase_summary(phases: list[strategies.Phase], state: FitState, metric: str) -> list[dict[str, Any]]:
    """What each phase did: epochs, its best validation ``metric``, seconds, and whether the final model is from it.

    ``seconds``: the phase's whole time, its preparation included (a linear phase on cached features spends nearly
    all of it extracting them and solving the head); ``epoch_seconds``: its epochs' alone.
    """
    rows = []
    for pi, phase in enumerate(phases):
        history = [r for r in state.history if r["phase"] == phase.name]
        scores = [r[f"val_{metric}"] for r in history if r.get(f"val_{metric}") is not None]
        epochs = [r["epoch"] for r in history]
        seconds = sum(r.get("epoch_seconds", 0.0) for r in history)
        rows.append({"phase": phase.name, "trainable_groups": phase.trainable, "epochs": len(history),
                     f"best_val_{metric}": max(scores) if scores else None, "epoch_seconds": round(seconds, 1),
                     "seconds": round(state.phase_seconds.get(str(pi), seconds), 1),
                     "kept": bool(epochs) and state.best_epoch in epochs,
                     "note": state.phase_notes.get(str(pi), ""),
                     **({"views": state.phase_views[str(pi)]} if str(pi) in state.phase_views else {}),
                     **({"compile_seconds": state.compile_seconds[str(pi)]} if str(pi) in state.compile_seconds
                        else {})})
    return rows


def refit_plan(model: nn.Module, steps: Steps, cfg: RunConfig, state: FitState) -> list[strategies.Phase]:
    """The phases that led to the final weights, each for the epochs up to the one the next phase (or the end) took.

    A candidate phase (``auto``) started from the best weights before it, any other phase from the last ones;
    walking back from the best epoch gives the path, e.g. ``linear`` 1, ``partial:2`` 3 of 5, ``fine-tune`` 2 of 4.
    """
    phases = strategies.plan(cfg.train.strategy, model.backbone.num_groups, cfg.train,
                             math.ceil(steps.num_train / cfg.train.batch_size))
    by_name = {p.name: p for p in phases}
    key, rows, path = f"val_{steps.metric}", state.history, []
    target = state.best_epoch
    while target > 0:
        name = next(r["phase"] for r in rows if r["epoch"] == target)
        in_phase = [r for r in rows if r["phase"] == name]
        phase = by_name[name]
        path.append(dataclasses.replace(phase, epochs=sum(r["epoch"] <= target for r in in_phase), candidate=False,
                                        views=state.phase_views.get(str(phases.index(phase)))))
        first = in_phase[0]["epoch"]
        if phase.candidate:
            before = [r for r in rows if r["epoch"] < first and r.get(key) is not None]
            target = max(before, key=lambda r: (r[key], -r["epoch"]))["epoch"] if before else 0
        else:
            target = first - 1
    path = path[::-1]
    # an extraction pass keeps a later phase's frozen outputs only when that phase is on the path
    return [dataclasses.replace(p, prefetch=p.prefetch if i + 1 < len(path) and path[i + 1].trainable == p.prefetch
                                else 0) for i, p in enumerate(path)]


def chosen_phase(rows: list[dict[str, Any]], metric: str) -> dict[str, str]:
    """Which phase the final weights come from, and why, in words (``auto``'s decision)."""
    key = f"best_val_{metric}"
    kept = next((r for r in rows if r["kept"]), None)
    if kept is None:
        return {"phase": "", "why": "no phase was validated"}
    tried = [r for r in rows if r is not kept and r[key] is not None]
    if not tried:
        return {"phase": kept["phase"], "why": f"the only phase validated ({metric} {kept[key]:.4f})"}
    others = ", ".join(f"{r['phase']} {r[key]:.4f}" for r in tried)
    return {"phase": kept["phase"], "why": f"best validation {metric}: {kept[key]:.4f} against {others} "
                                           "(ties go to the earlier, cheaper phase)"}


def _print_phases(rows: list[dict[str, Any]], metric: str) -> None:
    table = Table(title="Phases: what was tried and what was kept")
    for col in ("phase", "epochs", "cached views", f"best val {metric.replace('_', '-')}", "seconds", "kept", "note"):
        table.add_column(col, justify="left" if col in ("phase", "note") else "right")
    for r in rows:  # a note's kind ('skipped', 'stopped early'): the why was printed as it happened, and report.md
        # and metrics.json keep it (whole, it wrapped into a dozen lines a phase on an 80-column terminal)
        score = r[f"best_val_{metric}"]
        table.add_row(r["phase"], str(r["epochs"]), str(r.get("views", "")), "" if score is None else f"{score:.4f}",
                      f"{r['seconds']:.1f}", "[green]yes[/]" if r["kept"] else "", escape(r["note"].split(":")[0]))
    say(table)
    say(f"Final weights: {escape(chosen_phase(rows, metric)['why'])}")


# ------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, model: nn.Module, optimizer, scheduler, state: FitState, best_model) -> None:
    """Write the resume checkpoint atomically: tensors and plain values only (no pickled objects)."""
    tmp = path.with_suffix(".tmp")
    try:
        torch.save({"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "state": asdict(state), "best_model": best_model},
                   tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path, model: nn.Module, num_phases: int) -> tuple[FitState, dict | None]:
    """The saved state and checkpoint of an interrupted run (model weights restored), or a fresh state.

    Loaded with ``weights_only=True``: a checkpoint holding anything but tensors and plain values (a
    pickle that would run code) is refused, as is a damaged one or one from another model.
    """
    if not path.exists():
        return FitState(), None
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of a file it then refuses
            warnings.simplefilter("ignore", UserWarning)
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and tensor errors all mean: not a checkpoint we trust
        text = str(exc)  # torch's advice to load with weights_only=False is left out: that is what runs code
        why = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0] if "WeightsUnpickler error:" in text \
            else text.splitlines()[0] if text else type(exc).__name__
        raise RunFolderError(
            f"{path} cannot be loaded safely ({why[:200]}). It is damaged, was written by an "
            "older headstart, or holds objects other than tensors and plain values (which would run code when "
            f"loaded). Delete it to start the run again, or choose another --out") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise RunFolderError(f"{path} is not a headstart checkpoint of format {CHECKPOINT_FORMAT} (found {found}): "
                             "it was made by an older version; delete it to start the run again")
    try:
        state = FitState(**ckpt["state"])
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise RunFolderError(f"{path} does not fit this model ({model.backbone.spec.arch}): "
                             f"{' '.join(str(exc).split())[:300]}; resume needs the run's own checkpoint") from None
    say(f"Resuming at epoch {state.epoch + 1} (phase {state.phase + 1}/{num_phases})")
    return state, ckpt
