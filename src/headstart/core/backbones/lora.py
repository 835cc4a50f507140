"""LoRA adapters (peft) on a transformer backbone's attention projections: strategy ``lora``.

Where they go, by the module names the architectures use:
  BERT-family text encoders   ``query``, ``key``, ``value`` (BERT, RoBERTa, ELECTRA; DistilBERT ``q_lin``...;
                              DeBERTa-v2/v3 ``query_proj``...; DeBERTa's fused ``in_proj``; others ``q_proj``...)
  timm ViT, DeiT, BEiT, Swin  ``qkv``: the fused query/key/value projection of each block
A network without any of these (a convolutional one) is refused with a ``ConfigError`` naming what to use instead,
and so is one whose attention is an ``nn.MultiheadAttention`` (torchvision's ViT): peft adapts one by swapping its
merged weights in and out on every forward pass, which leaves them inference tensors after a pass under
``torch.inference_mode`` (validation), so that loading the best epoch's weights fails (peft PR #1324 keeps this case
as a known failure); timm's ViT of the same architecture has a plain ``qkv`` projection.
The settings are recorded in ``spec.extra["lora"]``, so that ``registry.rebuild`` re-creates the same modules and a
saved run (base weights + adapters + head) reloads to the same predictions.
"""

from __future__ import annotations

from torch import nn

from headstart.config import TrainConfig
from headstart.core.backbones.base import Backbone
from headstart.errors import ConfigError

ATTENTION = ("query", "key", "value", "q_lin", "k_lin", "v_lin", "query_proj", "key_proj", "value_proj", "in_proj",
             "q_proj", "k_proj", "v_proj", "qkv")


def targets(backbone: Backbone) -> list[str]:
    """The names of the attention projections LoRA adapts in ``backbone`` (``ConfigError`` when it has none)."""
    found = {name.rsplit(".", 1)[-1] for name, m in backbone.body.named_modules() if isinstance(m, nn.Linear)}
    chosen = sorted(found & set(ATTENTION))
    if not chosen:
        _refuse_multihead(backbone, None)
        raise ConfigError(
            f"Strategy 'lora' adapts a transformer's attention projections ({', '.join(ATTENTION)}); "
            f"{backbone.spec.name} ({backbone.spec.arch}) has none (a convolutional network?): use linear, partial:K, "
            "lp-ft or full with it, or a transformer (text encoders; images: timm:vit_small_patch16_224, "
            "timm:deit_small_patch16_224, timm:swin_tiny_patch4_window7_224...), or name the modules to adapt "
            "(train.lora_targets)")
    return chosen


def _refuse_multihead(backbone: Backbone, names: list[str] | None) -> None:
    """``ConfigError`` when the attention to adapt (``names``; None: any) is an ``nn.MultiheadAttention``."""
    multihead = [name for name, m in backbone.body.named_modules() if isinstance(m, nn.MultiheadAttention)
                 and (names is None or name.rsplit(".", 1)[-1] in names)]
    if multihead:
        raise ConfigError(
            f"Strategy 'lora': {backbone.spec.name} computes attention in torch.nn.MultiheadAttention "
            f"({multihead[0]}...), which peft's LoRA does not adapt reliably (its weights break on reloading after "
            "a validation pass); use timm's ViT of the same architecture, whose attention is a plain qkv projection "
            "(tv:vit_b_16 -> timm:vit_base_patch16_224.augreg2_in21k_ft_in1k, tv:vit_l_16 -> "
            "timm:vit_large_patch16_224.augreg_in21k_ft_in1k), or another strategy (lp-ft, partial:K)")


def add(backbone: Backbone, r: int = 8, alpha: int = 16, dropout: float = 0.1,
        names: list[str] | None = None) -> int:
    """Inject LoRA adapters into ``names`` (default: ``targets``) in place; returns the adapter parameter count."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as exc:
        raise ConfigError("The 'lora' strategy needs the 'peft' package: pip install 'headstart[text]'") from exc
    if names:  # named by hand (train.lora_targets); ``targets`` finds Linear projections only
        _refuse_multihead(backbone, names)
    names = list(names) if names else targets(backbone)
    try:
        inject_adapter_in_model(LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=names,
                                           bias="none"), backbone.body)
    except ValueError as exc:  # peft: "Target modules {...} not found in the base model"
        raise ConfigError(f"train.lora_targets {names}: {exc}") from None
    backbone.regroup()
    backbone.spec.extra["lora"] = {"r": r, "alpha": alpha, "dropout": dropout, "targets": names}
    return sum(p.numel() for n, p in backbone.body.named_parameters() if "lora_" in n)


def prepare(backbone: Backbone, train: TrainConfig) -> None:
    """Strategy ``lora``: the adapters of ``train.lora_*`` added to ``backbone`` before training, and said; any other
    strategy: nothing."""
    from headstart.core import strategies
    from headstart.progress import say

    if strategies.parse(train.strategy, backbone.num_groups)[0] != "lora":
        return
    n = add(backbone, train.lora_r, train.lora_alpha, train.lora_dropout, train.lora_targets)
    settings = backbone.spec.extra["lora"]
    say(f"LoRA adapters (r={settings['r']}, alpha={settings['alpha']}) on {settings['targets']}: {n:,} parameters "
        f"({n / max(backbone.spec.num_params, 1):.2%} of the backbone's)")
