"""Fold frozen BatchNorms into the convolutions before them, for feature extraction.

A BatchNorm in eval mode is an affine map per channel, so ``bn(conv(x))`` equals a single
convolution with rescaled weights and a bias (``torch.nn.utils.fusion.fuse_conv_bn_weights``).
On a CPU the BatchNorm pass costs about a third of EfficientNet-Lite0's extraction time (see
``benchmarks/image_classification.py --profile``), and it is pure memory traffic; folding removes
it. The fold is found by watching one forward pass (a BatchNorm whose input is exactly a
convolution's output), applied in place for the duration of a ``with`` block, checked against the
unfolded output, and undone on exit, so the training model is never changed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from timm.layers import BatchNormAct2d
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from headstart.core.backbones.base import Backbone

_FOLDABLE = (nn.BatchNorm2d, BatchNormAct2d)


class _ActivationOnly(nn.Module):
    """What is left of timm's BatchNormAct2d once its normalisation is folded away."""

    def __init__(self, bn: BatchNormAct2d) -> None:
        super().__init__()
        self.drop, self.act = bn.drop, bn.act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(x))


def _pairs(backbone: Backbone, end: int, example: torch.Tensor) -> list[tuple[nn.Conv2d, nn.Module]]:
    """(conv, bn) pairs where the BatchNorm reads exactly the convolution's output, each run once."""
    calls: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []

    def record(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        calls.append((module, args[0], out))

    hooks = [m.register_forward_hook(record) for m in backbone.body.modules()
             if isinstance(m, nn.Conv2d) or type(m) in _FOLDABLE]
    try:
        with torch.inference_mode():
            backbone.extract(example, end)
    finally:
        for hook in hooks:
            hook.remove()
    runs = Counter(id(module) for module, _, _ in calls)
    producers = {id(out): m for m, _, out in calls if isinstance(m, nn.Conv2d)}
    pairs = []
    for module, inp, _ in calls:
        conv = producers.get(id(inp))
        if (type(module) in _FOLDABLE and conv is not None and module.running_mean is not None
                and runs[id(module)] == 1 and runs[id(conv)] == 1):
            pairs.append((conv, module))
    return pairs


@contextmanager
def batchnorm_folded(backbone: Backbone, end: int, example: torch.Tensor) -> Iterator[int]:
    """Inside the block, eval-mode BatchNorms of stages ``[0, end)`` are folded into their convolutions.

    ``example`` is one input image or batch (shape and device of the real ones). Yields the number of folded
    BatchNorms (0 when nothing was folded or the folded network disagreed with the original).
    """
    norms = [m for m in backbone.body.modules() if type(m) in _FOLDABLE]
    if not (isinstance(example, torch.Tensor) and example.ndim in (3, 4)) or not norms or any(
            m.training for m in norms):
        yield 0  # text, no BatchNorm, or BatchNorms using batch statistics (a probe would update them)
        return
    example = (example.unsqueeze(0) if example.ndim == 3 else example[:2]).float()
    example = example.contiguous(memory_format=torch.channels_last)
    pairs = _pairs(backbone, end, example)
    parents = {id(child): (parent, name) for parent in backbone.body.modules() for name, child in parent.named_children()}
    saved = []
    try:
        with torch.inference_mode():
            reference = backbone.extract(example, end)
        with torch.no_grad():
            for conv, bn in pairs:
                saved.append((conv, conv.weight.detach().clone(), conv.bias, bn))
                weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                                    bn.weight, bn.bias)
                conv.weight.copy_(weight)  # in place: the parameter object (and what refers to it) stays
                conv.bias = nn.Parameter(bias.detach().to(conv.weight.dtype), requires_grad=False)
                parent, name = parents[id(bn)]
                setattr(parent, name, nn.Identity() if type(bn) is nn.BatchNorm2d else _ActivationOnly(bn))
            with torch.inference_mode():
                folded = backbone.extract(example, end)
        agrees = torch.allclose(folded, reference, rtol=1e-3, atol=1e-4 + 1e-3 * float(reference.abs().max()))
        if not agrees:
            _restore(saved, parents)
            saved = []
        yield len(saved)
    finally:
        _restore(saved, parents)


def _restore(saved: list, parents: dict) -> None:
    with torch.no_grad():
        for conv, weight, bias, bn in saved:
            conv.weight.copy_(weight)
            conv.bias = bias
            parent, name = parents[id(bn)]
            setattr(parent, name, bn)
