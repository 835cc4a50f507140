"""What trains, at what learning rate, and when: all built on the backbone's layer groups.

Strategies:
  ``linear``     frozen backbone, new head only (feature extraction)
  ``partial:K``  the last K layer groups and the head train
  ``full``       everything trains
  ``gradual``    head first, then one more group unfrozen per epoch, top down
  ``lp-ft``      a linear phase (``head_epochs``), then everything with discriminative LRs
  ``lora``       a linear phase (``head_epochs``), then LoRA adapters on the attention projections and the head
                 train while the backbone's own weights stay frozen (the task adds the adapters before
                 training: ``lora.prepare``); adapters learn at ``LORA_LR_FACTOR`` x the top group's LR
  ``auto``       the default: the linear phase (the head fitted to convergence), then fine-tuning candidates,
                 cheapest first (the top third of the groups, then all of them), each starting from the best
                 weights so far, tried only while ``train.time_budget`` holds an epoch of it, stopped when
                 validation stops improving, and kept only where validation improved (the loop does this)
Fine-tuning phases run at least ``train.min_steps`` optimizer steps when no epoch count is given,
however small the data is (``plan``'s ``steps_per_epoch``).
Discriminative learning rates: the top backbone group gets ``lr * backbone_lr_ratio``, each group
below it ``layer_decay`` times the one above (``layer_decay=1``: the same LR for all groups).
From random initial weights (``--no-pretrained``) every group and the head get ``lr / 10``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from headstart.config import TrainConfig
from headstart.errors import ConfigError

SCRATCH_LR_SCALE = 0.1
STRATEGIES = ("auto", "linear", "partial:K", "full", "gradual", "lp-ft", "lora")
AUTO_BUDGET = 300.0  # seconds of training for ``auto`` when ``train.time_budget`` is not set: a laptop CPU's 5 minutes
AUTO_PATIENCE = 3  # validations without a better score before an ``auto`` candidate stops
LORA_LR_FACTOR = 10.0  # low-rank adapters take about 10x the LR of full fine-tuning


@dataclass(frozen=True)
class Phase:
    """A stretch of epochs with a fixed set of trainable groups (the top ``trainable`` ones)."""

    name: str
    epochs: int
    trainable: int  # backbone groups that train, counted from the top; 0: head only
    head_lr_scale: float = 1.0
    adapters: bool = False  # only adapter parameters (``lora_*``) of the backbone train, all at the head's LR
    candidate: bool = False  # ``auto``: starts from the best weights so far; fitted to the time left, or skipped
    prefetch: int = 0  # a later phase trains this many top groups: keep its frozen outputs from this phase's pass
    views: int | None = None  # augmented views of the cached training features; None: ``cache.views`` (time allowing)


def parse(strategy: str, num_groups: int) -> tuple[str, int]:
    """``(kind, K)``; K is the number of trainable groups for ``partial``."""
    kind, _, arg = strategy.partition(":")
    if kind not in {"auto", "linear", "partial", "full", "gradual", "lp-ft", "lora"}:
        raise ConfigError(f"Unknown strategy '{strategy}'; expected one of {', '.join(STRATEGIES)}")
    if kind == "partial":
        try:
            k = int(arg)
        except ValueError:
            raise ConfigError(f"Strategy '{strategy}': expected partial:K with an integer K, e.g. partial:2") from None
        if not 1 <= k <= num_groups:
            raise ConfigError(f"Strategy '{strategy}': K must be between 1 and {num_groups} (this backbone's groups)")
        return kind, k
    if arg:
        raise ConfigError(f"Strategy '{kind}' takes no argument, found '{strategy}'")
    return kind, 0


def plan(strategy: str, num_groups: int, cfg: TrainConfig, steps_per_epoch: int = 0) -> list[Phase]:
    """The phases of a strategy; with ``steps_per_epoch``, fine-tuning phases get at least ``cfg.min_steps`` steps."""
    kind, k = parse(strategy, num_groups)
    epochs = cfg.epochs or default_epochs(kind, num_groups)
    if not cfg.epochs and steps_per_epoch and kind not in ("linear", "gradual"):
        epochs = max(epochs, math.ceil(cfg.min_steps / steps_per_epoch))
    if kind == "auto":
        # from a converged head the head learns at the top group's LR (LP-FT: one small LR keeps features intact)
        top, scale = max(1, num_groups // 3), cfg.backbone_lr_ratio
        # the head's extraction also keeps the partial candidate's frozen outputs: one pass over the images, not two
        head = [Phase("linear", cfg.head_epochs or default_epochs("linear", num_groups), 0,
                      prefetch=top if top < num_groups else 0)]
        partial = [Phase(f"partial:{top}", epochs, top, scale, candidate=True)] if top < num_groups else []
        return [*head, *partial, Phase("fine-tune", epochs, num_groups, scale, candidate=True)]
    if kind == "linear":
        return [Phase("linear", epochs, 0)]
    if kind == "partial":
        return [Phase(f"partial:{k}", epochs, k)]
    if kind == "full":
        return [Phase("full", epochs, num_groups)]
    if kind == "lora":
        phases = [Phase("linear", cfg.head_epochs, 0)] if cfg.head_epochs else []
        return [*phases, Phase("lora", epochs, num_groups, head_lr_scale=0.5 if phases else 1.0, adapters=True)]
    if kind == "lp-ft":
        phases = [Phase("linear", cfg.head_epochs, 0)] if cfg.head_epochs else []
        # a head solved to convergence fine-tunes at the top group's LR (LP-FT); one fitted by AdamW epochs at half its own
        scale = (cfg.backbone_lr_ratio if cfg.head_solver == "lbfgs" else 0.5) if phases else 1.0
        return [*phases, Phase("fine-tune", epochs, num_groups, head_lr_scale=scale)]
    phases: list[Phase] = []  # gradual
    for epoch in range(epochs):
        trainable = min(epoch, num_groups)
        if phases and phases[-1].trainable == trainable:
            last = phases[-1]
            phases[-1] = Phase(last.name, last.epochs + 1, trainable)
        else:
            phases.append(Phase(f"gradual:{trainable}", 1, trainable))
    return phases


def time_budget(cfg: TrainConfig) -> float:
    """Seconds of training allowed (0: no limit): ``train.time_budget``, else ``AUTO_BUDGET`` for ``auto``."""
    if cfg.time_budget is not None:
        return cfg.time_budget
    return AUTO_BUDGET if parse(cfg.strategy, 10**6)[0] == "auto" else 0.0


def default_epochs(kind: str, num_groups: int) -> int:
    """Epochs of the main phase when none are given: cheap cached phases get more."""
    return {"linear": 10, "partial": 5, "gradual": num_groups + 1, "auto": 5}.get(kind, 3)


def group_lrs(num_groups: int, cfg: TrainConfig, discriminative: bool = True) -> list[float]:
    """Learning rate of each backbone group, bottom (stem) to top."""
    if not discriminative:  # random initial weights: one LR, a tenth of the head's (AdamW's usual 1e-3)
        return [cfg.lr * SCRATCH_LR_SCALE] * num_groups
    top = cfg.lr * cfg.backbone_lr_ratio
    return [top * cfg.layer_decay ** (num_groups - 1 - g) for g in range(num_groups)]


def apply(model: nn.Module, phase: Phase) -> set[int]:
    """Freeze all but the top ``phase.trainable`` groups; returns the frozen group indices."""
    n = model.backbone.num_groups
    frozen = set(range(n - phase.trainable))
    model.backbone.set_frozen(frozen)
    if phase.adapters:
        adapters = 0
        for name, param in model.backbone.body.named_parameters():
            param.requires_grad_("lora_" in name)
            adapters += "lora_" in name
        if not adapters:
            raise ConfigError(f"Strategy 'lora' found no LoRA adapters in {model.backbone.spec.arch}: the task adds "
                              "them to transformers (text encoders, ViTs: core/backbones/lora.py); use linear, "
                              "partial:K, full, gradual or lp-ft here")
    return frozen


def param_groups(model: nn.Module, phase: Phase, cfg: TrainConfig, discriminative: bool = True) -> list[dict]:
    """Optimizer parameter groups: the head, then each trainable backbone group with its LR.

    Biases and normalisation weights (1-D tensors) get no weight decay.
    """
    groups: list[dict] = []

    def add(params: list[tuple[str, nn.Parameter]], lr: float, name: str) -> None:
        decay = [p for _, p in params if p.requires_grad and p.ndim > 1]
        no_decay = [p for _, p in params if p.requires_grad and p.ndim <= 1]
        if decay:
            groups.append({"params": decay, "lr": lr, "weight_decay": cfg.weight_decay, "name": name})
        if no_decay:
            groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": name + ".no_decay"})

    head_lr = cfg.lr * phase.head_lr_scale * (1.0 if discriminative else SCRATCH_LR_SCALE)
    add(list(model.head.named_parameters()), head_lr, "head")
    backbone = model.backbone
    lrs = group_lrs(backbone.num_groups, cfg, discriminative)
    if phase.adapters:
        lrs = [cfg.lr * cfg.backbone_lr_ratio * LORA_LR_FACTOR] * backbone.num_groups
    for g in range(backbone.num_groups - phase.trainable, backbone.num_groups):
        add(list(backbone.group_parameters(g)), lrs[g], backbone.spec.groups[g].name)
    return groups


def backbone_rows(backbone: nn.Module, frozen: set[int]) -> list[tuple[str, int, int, bool]]:
    """``(group, trainable params, total params, frozen)`` of each backbone group, stem first."""
    rows = []
    for g, group in enumerate(backbone.spec.groups):
        params = [p for _, p in backbone.group_parameters(g)]
        rows.append((group.name, sum(p.numel() for p in params if p.requires_grad),
                     sum(p.numel() for p in params), g in frozen))
    return rows


def describe(model: nn.Module, frozen: set[int]) -> list[tuple[str, int, int, bool]]:
    """``(group, trainable params, total params, frozen)`` rows: backbone groups stem first, then the head's parts."""
    rows = backbone_rows(model.backbone, frozen)
    parts = model.head.items() if isinstance(model.head, nn.ModuleDict) else [("head", model.head)]
    for name, module in parts:  # detection: neck and heads; classification: the head
        params = list(module.parameters())
        rows.append((f"{name} (new)" if name in ("head", "heads") else name,
                     sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params), False))
    return rows
