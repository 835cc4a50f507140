"""The multi-label linear head fitted to convergence: one-vs-rest logistic regressions, all classes at once.

The single-label solver's pieces (``classification.probe``: standardised features, full-batch L-BFGS
with L2, the map back to raw features) with one binary cross-entropy per class; the one L2 strength
shared by every class is chosen by k-fold cross-validation on held-out mAP (every view of an item in
one fold, scored on the un-augmented rows), walking the grid from strong to weak with warm starts.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from headstart.core.scratch import Scratch
from headstart.tasks.classification.probe import (
    L2_GRID,
    LogisticFit,
    _fit_rows,
    _lbfgs,
    _select,
    _standardise,
    _standardise_,
    _to_raw,
)
from headstart.tasks.multilabel.metrics import label_scores, predict_tags


def fit_multilabel(x: torch.Tensor, y: torch.Tensor, l2: float = 1e-3, steps: int = 200,
                   pos_weight: torch.Tensor | None = None) -> LogisticFit:
    """One-vs-rest logistic regressions (multi-hot ``y``) with L2 on standardised features, by L-BFGS."""
    xs, mean, std = _standardise(x)
    weight, bias = _to_raw(*_lbfgs(xs, y.float(), y.shape[1], l2, steps, pos_weight, multilabel=True), mean, std)
    with torch.no_grad():
        loss = float(F.binary_cross_entropy_with_logits(x.float() @ weight.T + bias, y.float(), pos_weight=pos_weight))
    return LogisticFit(weight, bias, l2, loss, cv_metric="mAP")


def fit_multilabel_cv(x: torch.Tensor, y: torch.Tensor, groups: torch.Tensor | None = None,
                      plain: torch.Tensor | None = None, grid: tuple[float, ...] = L2_GRID, folds: int = 5,
                      seed: int = 0, pos_weight: torch.Tensor | None = None, steps: int = 100,
                      scratch: Scratch | None = None) -> LogisticFit:
    """The L2 strength with the best out-of-fold mAP (ties: the stronger), refitted on every row.

    Every fold's rows and the final fit's are standardised in one buffer (``scratch``: where it and the held-out rows
    go, as in ``fit_head_cv``): the features are in memory twice at most, not once more per fold.
    """
    scratch = Scratch() if scratch is None else scratch
    y = y.float()
    groups = torch.arange(len(y)) if groups is None else groups
    scored = torch.ones(len(y), dtype=torch.bool) if plain is None else plain
    ids = groups.unique()
    folds = max(2, min(folds, len(ids)))
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))
    fold_of = torch.empty(int(ids.max()) + 1, dtype=torch.long)
    fold_of[ids[order]] = torch.arange(len(ids)) % folds
    fold = fold_of[groups]
    path = sorted(grid, reverse=True)
    held_logits = {l2: torch.zeros(len(y), y.shape[1]) for l2 in path}
    buffer = scratch.empty((len(y), *x.shape[1:]))
    for k in range(folds):
        held = fold == k
        fit_rows = ~held
        xs, mean, std = _standardise_(_select(x, fit_rows, buffer))
        x_held = _select(x, held, scratch.empty((int(held.sum()), *x.shape[1:])))
        start = None
        for l2 in path:
            start = _lbfgs(xs, y[fit_rows], y.shape[1], l2, steps, pos_weight, start, multilabel=True)
            weight, bias = _to_raw(*start, mean, std)
            held_logits[l2][held] = x_held @ weight.T + bias
    scores = {}
    for l2 in path:
        probs = held_logits[l2][scored].sigmoid()
        scores[l2] = label_scores(probs, y[scored], predict_tags(probs, [0.5] * y.shape[1]))["map"]
    best = max(path, key=lambda l2: scores[l2])  # max keeps the first: the strongest of equal scores
    every = torch.ones(len(y), dtype=torch.bool)
    fit = _fit_rows(x, y, every, y.shape[1], best, 2 * steps, pos_weight, buffer, multilabel=True)
    fit.cv_accuracy = {l2: round(scores[l2], 4) for l2 in grid}
    return fit
