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
from typing import Any

import numpy as np  # numpy only: the ONNX engine, which runs without torch, flags inputs with this module too

KEPT = 2000  # training items whose features are kept (a seeded random subset of larger training sets)
K = 5  # the neighbour whose distance counts (the k-th nearest)
QUANTILE = 0.95  # the share of validation items within the cut (the literature's operating point: 95% kept)
FILE = "familiar.safetensors"  # in the run folder (and beside an ONNX export)


@dataclass
class Familiarity:
    """The kept training features (unit length) and the distance beyond which an input is unfamiliar."""

    bank: np.ndarray
    cut: float
    k: int = K

    def distances(self, features: Any, leave_one_out: bool = False) -> np.ndarray:
        """Cosine distance of each item to its ``k``-th nearest kept training item (``leave_one_out``: the items are
        the bank's own, each not counted as its own neighbour)."""
        return _kth_distances(_unit(features), self.bank, self.k, leave_one_out)

    def unfamiliar(self, features: Any) -> list[bool]:
        """Whether each item (a row of features: numpy, or a torch tensor on the CPU) lies farther than the cut."""
        return (self.distances(features) > self.cut).tolist()

    def summary(self) -> dict:
        """What metrics.json says of the check."""
        return {"kept_training_items": len(self.bank), "features": int(self.bank.shape[1]), "k": self.k,
                "cut": round(self.cut, 4), "validation_within": QUANTILE}

    def save(self, path: Path) -> None:
        """To ``path`` (a run folder's ``FILE``)."""
        from safetensors.numpy import save_file

        save_file({"bank": self.bank.astype(np.float16), "cut": np.array([self.cut], np.float64),
                   "k": np.array([self.k], np.int64)}, str(path))

    @classmethod
    def load(cls, path: Path) -> Familiarity | None:
        """The check saved at ``path``, or None (a run saved before this check, a task without it)."""
        from safetensors.numpy import load_file

        if not path.is_file():
            return None
        found = load_file(str(path))
        return cls(found["bank"].astype(np.float32), float(found["cut"][0]), int(found["k"][0]))


def warning(flags: list[bool], noun: str) -> str | None:
    """The one warning of a prediction call whose items include unfamiliar ones (None when none is)."""
    odd = sum(flags)
    if not odd:
        return None
    return (f"{odd} of {len(flags)} {noun} are unlike the training {noun} (farther from the nearest ones than "
            f"{QUANTILE:.0%} of the validation {noun}; 'unfamiliar' in the rows): their labels are guesses among "
            "classes they may belong to none of")


def kept_rows(n: int, seed: int = 0) -> list[int]:
    """The training rows whose features are kept: all of them, or ``KEPT`` drawn at random (seeded)."""
    if n <= KEPT:
        return list(range(n))
    return sorted(np.random.default_rng(seed).permutation(n)[:KEPT].tolist())


def fit(train_features: Any, val_features: Any) -> Familiarity:
    """The bank of training features, cut at the ``QUANTILE`` of the validation items' distances."""
    bank = _unit(train_features)
    k = min(K, len(bank))
    return Familiarity(bank, float(np.quantile(_kth_distances(_unit(val_features), bank, k), QUANTILE)), k)


def spread(found: Familiarity) -> float:
    """How far apart the bank's own items lie: the ``QUANTILE`` of their leave-one-out distances."""
    if len(found.bank) <= found.k:
        return found.cut
    return float(np.quantile(found.distances(found.bank, leave_one_out=True), QUANTILE))


def refitted(before: Familiarity, train_features: Any) -> Familiarity:
    """The bank of a refitted model's training features, its cut scaled from ``before``'s: the cut over the
    training spread, as measured before the refit, times the refitted bank's spread."""
    after = Familiarity(_unit(train_features), 0.0, min(K, len(train_features)))
    after.cut = before.cut / max(spread(before), 1e-6) * spread(after)
    return after


def _unit(features: Any) -> np.ndarray:
    x = np.asarray(features, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _kth_distances(items: np.ndarray, bank: np.ndarray, k: int, leave_one_out: bool = False,
                   chunk: int = 1024) -> np.ndarray:
    """1 - the cosine similarity of each unit row of ``items`` to its ``k``-th most similar row of ``bank``."""
    k = min(k, bank.shape[0])
    out = [np.empty(0, np.float32)]
    for start in range(0, len(items), chunk):
        sims = items[start:start + chunk] @ bank.T
        if leave_one_out:
            sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -2.0  # not its own neighbour
        out.append(1.0 - np.partition(sims, -k, axis=1)[:, -k])
    return np.concatenate(out)
