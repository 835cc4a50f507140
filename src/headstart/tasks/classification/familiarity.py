"""Inputs unlike anything the model learned from: how far an item's features lie from the nearest training items.

A classifier gives every input one of its classes, often with a high probability: a photo of a cat, given to an
ants-or-bees model, is an ant or a bee. The softmax says which class is nearer, not whether the input is like the
training data. Deep nearest neighbours do (Sun et al., "Out-of-Distribution Detection with Deep Nearest Neighbors",
ICML 2022): the cosine distance from an input's normalised features (the backbone's output, the head's input) to
its ``K``-th nearest training item. The cut is the 95th percentile of that distance over the validation items,
which the model did not train on: about 5% of inputs like the training data are flagged (the least typical ones),
and inputs far from all of it are. After a refit (validation joins training, so no item is held out), the cut is the
new training items' leave-one-out distance percentile times the ratio of the two measured before the refit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

KEPT = 2000  # training items whose features are kept (a seeded random subset of larger training sets)
K = 5  # the neighbour whose distance counts (the k-th nearest)
QUANTILE = 0.95  # the share of validation items within the cut (the literature's operating point: 95% kept)
FILE = "familiar.safetensors"  # in the run folder


@dataclass
class Familiarity:
    """The kept training features (unit length) and the distance beyond which an input is unfamiliar."""

    bank: torch.Tensor
    cut: float
    k: int = K

    def distances(self, features: torch.Tensor, leave_one_out: bool = False) -> torch.Tensor:
        """Cosine distance of each item to its ``k``-th nearest kept training item (``leave_one_out``: the items are
        the bank's own, each not counted as its own neighbour)."""
        return _kth_distances(_unit(features), self.bank, self.k, leave_one_out)

    def summary(self) -> dict:
        """What metrics.json says of the check."""
        return {"kept_training_items": len(self.bank), "features": self.bank.shape[1], "k": self.k,
                "cut": round(self.cut, 4), "validation_within": QUANTILE}

    def unfamiliar(self, features: torch.Tensor) -> list[bool]:
        """Whether each item lies farther from the training items than the cut."""
        return (self.distances(features) > self.cut).tolist()

    def save(self, run: Path) -> None:
        from safetensors.torch import save_file

        save_file({"bank": self.bank.to(torch.float16).contiguous(), "cut": torch.tensor([self.cut]),
                   "k": torch.tensor([self.k])}, str(run / FILE))

    @classmethod
    def load(cls, run: Path) -> Familiarity | None:
        """The run's, or None (a run saved before this check, a task without it)."""
        from safetensors.torch import load_file

        path = run / FILE
        if not path.is_file():
            return None
        found = load_file(str(path))
        return cls(found["bank"].float(), float(found["cut"][0]), int(found["k"][0]))


def kept_rows(n: int, seed: int = 0) -> torch.Tensor:
    """The training rows whose features are kept: all of them, or ``KEPT`` drawn at random (seeded)."""
    if n <= KEPT:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:KEPT].sort().values


def fit(train_features: torch.Tensor, val_features: torch.Tensor) -> Familiarity:
    """The bank of training features, cut at the ``QUANTILE`` of the validation items' distances."""
    bank = _unit(train_features)
    k = min(K, len(bank))
    cut = float(torch.quantile(_kth_distances(_unit(val_features), bank, k), QUANTILE))
    return Familiarity(bank, cut, k)


def spread(found: Familiarity) -> float:
    """How far apart the bank's own items lie: the ``QUANTILE`` of their leave-one-out distances."""
    return float(torch.quantile(found.distances(found.bank, leave_one_out=True), QUANTILE)) if len(found.bank) > found.k \
        else found.cut


def refitted(before: Familiarity, train_features: torch.Tensor) -> Familiarity:
    """The bank of a refitted model's training features, its cut scaled from ``before``'s: the cut over the
    training spread, as measured before the refit, times the refitted bank's spread."""
    after = Familiarity(_unit(train_features), 0.0, min(K, len(train_features)))
    ratio = before.cut / max(spread(before), 1e-6)
    after.cut = ratio * spread(after)
    return after


def _unit(features: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(features.float(), dim=1)


def _kth_distances(items: torch.Tensor, bank: torch.Tensor, k: int, leave_one_out: bool = False,
                   chunk: int = 1024) -> torch.Tensor:
    """1 - the cosine similarity of each unit row of ``items`` to its ``k``-th most similar row of ``bank``."""
    out = []
    for start in range(0, len(items), chunk):
        sims = items[start:start + chunk] @ bank.T
        if leave_one_out:
            rows = torch.arange(start, start + len(sims))
            sims[torch.arange(len(sims)), rows] = -2.0  # not its own neighbour
        out.append(1.0 - sims.topk(min(k, bank.shape[0]), dim=1).values[:, -1])
    return torch.cat(out) if out else torch.empty(0)
