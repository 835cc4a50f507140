"""Backbone: a pretrained network cut into ordered stages that match the spec's layer groups.

The stage layout is the one mechanism behind freezing, gradual unfreezing, discriminative learning
rates and the feature cache: ``extract(x, end)`` runs the first ``end`` stages (and the pooling when
``end`` is the last), ``forward(h, start)`` continues from stage ``start``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from headstart.core.backbones.spec import BackboneSpec, LayerGroup


def _matches(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


class Backbone(nn.Module):
    """A feature extractor with ordered layer groups.

    ``body`` holds all parameters (its state dict is the backbone's); ``stages`` are callables
    that run one group each, in order; ``pool`` turns the last stage's output into a
    ``(batch, feature_dim)`` tensor.
    """

    def __init__(
        self,
        body: nn.Module,
        stages: list[tuple[str, list[str], Callable[[torch.Tensor], torch.Tensor]]],
        pool: Callable[[torch.Tensor], torch.Tensor],
        spec: BackboneSpec,
    ) -> None:
        super().__init__()
        self.body = body
        self._stage_fns = [fn for _, _, fn in stages]
        self._pool = pool
        spec.groups = [LayerGroup(name, prefixes) for name, prefixes, _ in stages]
        self.spec = spec
        self.frozen: set[int] = set()
        self.batchnorm_statistics_frozen = False  # True: every BatchNorm normalises with its stored statistics
        self.regroup()

    def regroup(self) -> None:
        """Assign every parameter and module of ``body`` to its group (again after adding modules, e.g. LoRA)."""
        self._param_groups = {n: self._group_of(n) for n, _ in self.body.named_parameters()}
        self._module_groups = {n: self._group_of(n) for n, _ in self.body.named_modules()}

    def _group_of(self, name: str) -> int:
        """Index of the group owning a parameter or module name; unassigned names join the last."""
        best, best_len = len(self.spec.groups) - 1, -1
        for i, group in enumerate(self.spec.groups):
            for prefix in group.prefixes:
                if _matches(name, prefix) and len(prefix) > best_len:
                    best, best_len = i, len(prefix)
        return best

    @property
    def num_groups(self) -> int:
        return len(self._stage_fns)

    def group_parameters(self, index: int) -> Iterator[tuple[str, nn.Parameter]]:
        for name, param in self.body.named_parameters():
            if self._param_groups[name] == index:
                yield name, param

    def set_frozen(self, frozen: set[int]) -> None:
        """Freeze these groups: no gradients, and BatchNorm/Dropout kept in eval mode."""
        self.frozen = set(frozen)
        for name, param in self.body.named_parameters():
            param.requires_grad_(self._param_groups[name] not in self.frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        if mode and (self.frozen or self.batchnorm_statistics_frozen):
            for name, module in self.body.named_modules():
                if self._module_groups[name] in self.frozen or (
                        self.batchnorm_statistics_frozen and isinstance(module, nn.modules.batchnorm._BatchNorm)):
                    module.training = False
        return self

    def extract(self, x: torch.Tensor, end: int | None = None) -> torch.Tensor:
        """Run stages ``[0, end)``; when ``end`` is the number of groups, also pool."""
        end = self.num_groups if end is None else end
        for fn in self._stage_fns[:end]:
            x = fn(x)
        return self.pool(x) if end == self.num_groups else x

    def run_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Run stage ``index`` alone (multi-scale users such as detection necks take every stage's output)."""
        return self._stage_fns[index](x)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's output as ``(batch, feature_dim)`` features (spatial users such as heat maps run the
        stages themselves)."""
        return self._pool(x)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Continue from stage ``start`` (0: raw input; ``num_groups``: already pooled features)."""
        if start >= self.num_groups:
            return x
        for fn in self._stage_fns[start:]:
            x = fn(x)
        return self.pool(x)


def sequential(*modules: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Chain existing modules without registering them again."""

    def run(x: torch.Tensor) -> torch.Tensor:
        for m in modules:
            x = m(x)
        return x

    return run


def chain(root: nn.Module, *paths: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Run ``root``'s submodules at these dotted paths in order, looked up at call time.

    Looking them up on each call (instead of holding the modules) lets a submodule be swapped,
    e.g. a BatchNorm folded away by :mod:`headstart.core.backbones.fusion`.
    """

    def run(x: torch.Tensor) -> torch.Tensor:
        for path in paths:
            x = root.get_submodule(path)(x)
        return x

    return run


def channels_first(
        stages: list[tuple[str, list[str], Callable[[torch.Tensor], torch.Tensor]]],
) -> list[tuple[str, list[str], Callable[[torch.Tensor], torch.Tensor]]]:
    """Stages of a channels-last (NHWC) model, exchanging NCHW maps instead, like every other image backbone.

    Stage 0 takes the NCHW image as it is; later stages get their NHWC input back. Both permutes are views of
    the same memory (no copy), so the wrapped stages cost nothing and multi-scale users (detection) read
    ``(batch, channels, height, width)`` maps from every stage.
    """

    def wrap(fn: Callable[[torch.Tensor], torch.Tensor], first: bool) -> Callable[[torch.Tensor], torch.Tensor]:
        def run(x: torch.Tensor) -> torch.Tensor:
            y = fn(x if first or x.ndim != 4 else x.permute(0, 2, 3, 1))
            return y.permute(0, 3, 1, 2) if y.ndim == 4 else y

        return run

    return [(name, prefixes, wrap(fn, i == 0)) for i, (name, prefixes, fn) in enumerate(stages)]


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
