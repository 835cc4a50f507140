"""Linear heads fitted to convergence: multinomial logistic regression by full-batch L-BFGS.

One implementation for the advisor's probes and for the training loop's solved linear phase
(``train.head_solver=lbfgs``): features are standardised (``STD_FLOOR``), the L2 strength is chosen by stratified
k-fold cross-validation on the training split (folds keep every augmented view of an item
together), and the solution is mapped back to the raw feature space so that it drops into the
model's ``nn.Linear`` head.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from headstart.core.scratch import Scratch

L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
# A feature that barely varies in training (a ReLU channel the training images all but never wake) is not blown up
# to unit variance: the L2 penalty would then cost it nothing, and the head gave it raw weights in the thousands, so
# that a held-out image waking the channel a little (0.05) moved its logits by hundreds. Its scale is floored at
# this share of the features' RMS standard deviation. EfficientNet-Lite0 on 300 tiny digits (269 of 1,280 channels
# dead on the training images), 5 draws of 210 training / 90 held-out: the head alone on the same cached features,
# held-out accuracy 0.820 -> 0.871; the whole default, macro-F1 0.800 -> 0.854 (scikit-learn's LogisticRegressionCV:
# 0.850). Hymenoptera, blood_cells, faces and SMS texts unchanged (``benchmarks/recipes.py --draws``, README).
STD_FLOOR = 0.03


@dataclass
class LogisticFit:
    """A fitted head: ``logits = x @ weight.T + bias`` on raw features."""

    weight: torch.Tensor  # [classes, features]
    bias: torch.Tensor  # [classes]
    l2: float
    train_loss: float
    cv_accuracy: dict[float, float] = field(default_factory=dict)  # L2 -> mean held-out accuracy
    augmented: bool = True  # fitted on the augmented rows too (False: the plain rows only, cross-validation chose)
    cv_accuracy_plain: dict[float, float] = field(default_factory=dict)  # the same, fitted on the plain rows only
    cv_metric: str = "accuracy"  # what ``cv_accuracy`` holds (multi-label heads: mAP)
    # the chosen L2's held-out predictions of each scored (plain) row, by the fold's head that did not fit on it:
    # the probability of its own label, the class predicted and its probability (``label_doubts``)
    held_out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None


DOUBT_OWN, DOUBT_OTHER = 0.1, 0.7  # a label is doubted: below 10% held out, another class above 70%


def label_doubts(held_out: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                 labels: torch.Tensor) -> list[tuple[int, int, float, float]]:
    """The scored rows whose label the held-out heads doubt: ``(row, predicted class, probability of its label,
    probability of the predicted class)``, the most doubted first. A head that did not fit on a row gave its own
    label under ``DOUBT_OWN`` and another class over ``DOUBT_OTHER`` (confident learning's idea, with fixed
    thresholds): a mislabelled item, or one of two classes that overlap."""
    own, guess, sure = held_out
    doubted = ((own < DOUBT_OWN) & (sure > DOUBT_OTHER) & (guess != labels[: len(own)])).nonzero().squeeze(1)
    order = sorted(doubted.tolist(), key=lambda i: (float(own[i]), -float(sure[i])))
    return [(i, int(guess[i]), float(own[i]), float(sure[i])) for i in order]


def _scale(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each feature's mean and the scale it is divided by: its standard deviation, at least ``STD_FLOOR`` times
    the features' root-mean-square standard deviation."""
    mean, std = x.mean(0), x.std(0)
    return mean, std.clamp_min(max(1e-6, STD_FLOOR * float(std.square().mean().sqrt())))


def _standardise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = x.float()
    mean, std = _scale(x)
    return (x - mean) / std, mean, std


def _select(x: torch.Tensor, rows: torch.Tensor, buffer: torch.Tensor) -> torch.Tensor:
    """``x[rows].float()`` written into the first rows of ``buffer`` (float32, reused: no new copy of the features)."""
    index = rows.nonzero().squeeze(1)
    out = buffer[: len(index)]
    if x.dtype == out.dtype:
        return torch.index_select(x, 0, index, out=out)
    return out.copy_(x[index])


def _standardise_(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``_standardise`` of a float32 ``x`` in place: the same numbers, no second copy."""
    mean, std = _scale(x)
    return x.sub_(mean).div_(std), mean, std


def _lbfgs(xs: torch.Tensor, y: torch.Tensor, classes: int, l2: float, steps: int,
           class_weight: torch.Tensor | None, start: tuple[torch.Tensor, torch.Tensor] | None = None,
           multilabel: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w [features, classes], b)`` minimising mean cross-entropy + ``l2 * |w|^2`` on standardised ``xs``.

    ``multilabel``: ``y`` is multi-hot and the loss is one binary cross-entropy per class (one-vs-rest logistic
    regressions fitted together), ``class_weight`` then weighs each class's positives (``pos_weight``).
    The gradient is written out (``softmax - one-hot``, ``sigmoid - target``) instead of taken by autograd, and
    L-BFGS keeps 10 curvature pairs (scipy's and so scikit-learn's default): on a few hundred rows both the autograd
    graph and the two-loop recursion over 100 pairs cost more than the arithmetic (the cross-validated head of 80
    digits: 3.4 s -> 2.2 s on 2 cores, the same head to the tolerance of the solver).
    """
    w = start[0].clone() if start else torch.zeros(xs.shape[1], classes)
    b = start[1].clone() if start else torch.zeros(classes)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, tolerance_grad=1e-5, tolerance_change=1e-7,
                            history_size=10, line_search_fn="strong_wolfe")
    if multilabel:
        positive = y if class_weight is None else y * class_weight  # pos_weight x target
        scale = 1.0 / len(y)  # the mean over rows and classes, times the classes
    else:
        target = F.one_hot(y, classes).to(xs.dtype)
        rows = torch.ones(len(y)) if class_weight is None else class_weight[y]  # F.cross_entropy's weighted mean
        target = target * (rows / rows.sum())[:, None]

    def closure() -> torch.Tensor:
        logits = xs @ w + b
        if multilabel:
            loss = F.binary_cross_entropy_with_logits(logits, y, pos_weight=class_weight) * classes
            grad = (logits.sigmoid() * (positive + 1 - y) - positive) * scale
        else:
            loss = F.cross_entropy(logits, y, weight=class_weight)
            grad = logits.softmax(1) * target.sum(1, keepdim=True) - target
        w.grad, b.grad = torch.addmm(w, xs.T, grad, alpha=1.0, beta=2 * l2), grad.sum(0)
        return loss + l2 * (w * w).sum()

    with torch.no_grad():
        opt.step(closure)
    return w, b


def _to_raw(w: torch.Tensor, b: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised-space ``(w, b)`` as ``(weight [classes, features], bias)`` on raw features."""
    return (w / std[:, None]).T.contiguous(), b - (mean / std) @ w


def fit_logistic(x: torch.Tensor, y: torch.Tensor, classes: int, l2: float = 1e-3, steps: int = 200,
                 class_weight: torch.Tensor | None = None) -> LogisticFit:
    """Multinomial logistic regression with L2 (on standardised features), full-batch L-BFGS."""
    xs, mean, std = _standardise(x)
    weight, bias = _to_raw(*_lbfgs(xs, y, classes, l2, steps, class_weight), mean, std)
    with torch.no_grad():
        loss = float(F.cross_entropy(x.float() @ weight.T + bias, y, weight=class_weight))
    return LogisticFit(weight, bias, l2, loss)


def logistic_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, classes: int,
                   l2: float = 1e-3, steps: int = 100) -> torch.Tensor:
    """Validation logits of a logistic regression fitted on the training features."""
    fit = fit_logistic(x_train, y_train, classes, l2, steps)
    return x_val.float() @ fit.weight.T + fit.bias


def _fit_rows(x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, classes: int, l2: float, steps: int,
              class_weight: torch.Tensor | None, buffer: torch.Tensor, multilabel: bool = False) -> LogisticFit:
    """``fit_logistic(x[rows], y[rows], ...)`` worked out in ``buffer``: the same fit, no copies of the features.

    ``multilabel``: the one-vs-rest fit of multi-hot ``y`` (``multilabel.probe.fit_multilabel``'s), ``class_weight``
    then each class's ``pos_weight``.
    """
    xs, mean, std = _standardise_(_select(x, rows, buffer))
    y = y[rows]
    weight, bias = _to_raw(*_lbfgs(xs, y, classes, l2, steps, class_weight, multilabel=multilabel), mean, std)
    raw = _select(x, rows, buffer)  # the standardised rows are spent: the raw ones again, for the training loss
    with torch.no_grad():
        logits = raw @ weight.T + bias
        loss = float(F.binary_cross_entropy_with_logits(logits, y, pos_weight=class_weight) if multilabel
                     else F.cross_entropy(logits, y, weight=class_weight))
    return LogisticFit(weight, bias, l2, loss, cv_metric="mAP" if multilabel else "accuracy")


def _groups_by_class(y: torch.Tensor, groups: torch.Tensor) -> dict[int, list[int]]:
    """The groups (items) of each class, in order of appearance."""
    first: dict[int, int] = {}
    for i, g in enumerate(groups.tolist()):
        first.setdefault(g, i)
    by_class: dict[int, list[int]] = defaultdict(list)
    for g, i in first.items():
        by_class[int(y[i])].append(g)
    return by_class


def stratified_folds(y: torch.Tensor, groups: torch.Tensor, folds: int, seed: int = 0) -> torch.Tensor:
    """Fold index of each row; every group (an item's views) in one fold, classes spread over the folds."""
    by_class = _groups_by_class(y, groups)
    generator = torch.Generator().manual_seed(seed)
    fold_of: dict[int, int] = {}
    offset = 0
    for label in sorted(by_class):
        members = by_class[label]
        order = torch.randperm(len(members), generator=generator).tolist()
        for rank, j in enumerate(order):
            fold_of[members[j]] = (rank + offset) % folds
        offset += len(members)
    return torch.tensor([fold_of[g] for g in groups.tolist()])


def fit_head_cv(x: torch.Tensor, y: torch.Tensor, classes: int, groups: torch.Tensor | None = None,
                grid: tuple[float, ...] = L2_GRID, folds: int = 5, seed: int = 0,
                class_weight: torch.Tensor | None = None, steps: int = 100,
                plain: torch.Tensor | None = None, scratch: Scratch | None = None) -> LogisticFit:
    """The L2 strength with the best k-fold held-out accuracy (ties: the stronger), refitted on everything.

    Each fold walks the grid from the strongest L2 to the weakest, every fit starting from the previous
    solution (a regularisation path, as glmnet and scikit-learn's ``LogisticRegressionCV`` do): on
    851 x 5 rows of 1,280 features that is several times faster than six cold fits.

    ``plain`` marks the un-augmented rows (the others are augmented views of the same items). Then the
    held-out score counts the plain rows only, as validation and prediction see items, and the folds also
    fit on the plain rows alone: the augmented views are kept only where they help (a flip turns a 2
    into something else; on 8x8 digits the views cost the head points).

    ``scratch``: where the copies of the rows go (``Scratch.of(cfg.cache)``: above ``cache.memory_mb``, memory-mapped
    files beside the feature cache; default: the temporary folder above 1 GB). Only where the bytes live changes.
    """
    scratch = Scratch() if scratch is None else scratch
    groups = torch.arange(len(y)) if groups is None else groups
    folds = max(2, min(folds, min(len(g) for g in _groups_by_class(y, groups).values())))
    fold = stratified_folds(y, groups, folds, seed)
    scored = torch.ones(len(y), dtype=torch.bool) if plain is None else plain
    variants = {True: torch.ones(len(y), dtype=torch.bool)}
    if plain is not None and not bool(plain.all()):
        variants[False] = plain  # fitted on the plain rows only
    path = sorted(grid, reverse=True)
    correct = {(v, l2): 0 for v in variants for l2 in path}
    rows_scored = scored.nonzero().squeeze(1)
    position = torch.full((len(y),), -1, dtype=torch.long)
    position[rows_scored] = torch.arange(len(rows_scored))
    held_out = {key: (torch.full((len(rows_scored),), float("nan")), torch.full((len(rows_scored),), -1),
                      torch.full((len(rows_scored),), float("nan"))) for key in correct}
    # every fold's standardised rows and the final fit's are written into this one buffer in turn: the features are
    # in memory twice at most (before: a new copy per fold and variant, each standardised into another)
    buffer = scratch.empty((len(y), *x.shape[1:]))
    for k in range(folds):
        held = fold == k
        if held.all() or not held.any():
            continue
        test = held & scored
        x_test, y_test = _select(x, test, scratch.empty((int(test.sum()), *x.shape[1:]))), y[test]
        for augmented, rows in variants.items():
            fit_rows = rows & ~held
            xs, mean, std = _standardise_(_select(x, fit_rows, buffer))
            start = None
            for l2 in path:
                start = _lbfgs(xs, y[fit_rows], classes, l2, steps, class_weight, start)
                weight, bias = _to_raw(*start, mean, std)
                probs = (x_test @ weight.T + bias).softmax(1)
                sure, predicted = probs.max(1)
                correct[augmented, l2] += int((predicted == y_test).sum())
                own, guess, guess_p = held_out[augmented, l2]
                at = position[test]
                own[at], guess[at], guess_p[at] = probs.gather(1, y_test[:, None]).squeeze(1), predicted, sure
    n = int(scored.sum())
    scores = {key: value / n for key, value in correct.items()}
    # ties: with the augmented views (more data), then the stronger L2
    best_views, best = max(((v, l2) for v in variants for l2 in path), key=lambda key: scores[key])
    fit = _fit_rows(x, y, variants[best_views], classes, best, 2 * steps, class_weight, buffer)
    fit.augmented = best_views
    fit.held_out = held_out[best_views, best]
    fit.cv_accuracy = {l2: round(scores[True, l2], 4) for l2 in grid}
    if False in variants:
        fit.cv_accuracy_plain = {l2: round(scores[False, l2], 4) for l2 in grid}
    return fit
