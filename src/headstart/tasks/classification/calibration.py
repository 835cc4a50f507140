"""Probabilities that mean what they say: one temperature fitted on validation, and how far confidence is from accuracy.

A fine-tuned classifier's softmax is rarely calibrated: trained with label smoothing (headstart's default) it says 0.8
where it is right 97% of the time, and a network fitted hard to a small training set says 0.99 where it is right 85% of
the time. Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", 2017) divides the logits by one
number ``T`` chosen to minimise the validation negative log-likelihood: the predicted classes (and so accuracy and F1)
do not change, the probabilities do. The expected calibration error (ECE, torchmetrics' 15 equal-width bins) measures
the gap: the mean |accuracy - confidence| over bins of the top probability, weighted by the items in each bin.

Multi-label classifiers (``sigmoid=True``) get one temperature for all their labels, minimising the validation binary
cross-entropy: a classifier fitted hard to few images says 0.999 for a label it gets wrong, and one shared number is
what a validation split with a handful of positives of its rarer labels can estimate. Their ECE is over every
(item, label) probability: the mean |frequency of the label - probability| per bin.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

BINS = 15  # equal-width confidence bins of the ECE and the reliability diagram
MIN_ITEMS = 30  # fewer validation items: no temperature is fitted (T = 1)
T_RANGE = (0.05, 20.0)  # the temperatures searched
MIN_GAIN = 0.01  # a temperature that lowers the validation NLL by less than this share is not used


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, sigmoid: bool = False) -> tuple[float, str]:
    """``(T, how)``: the temperature minimising the NLL of ``softmax(logits / T)`` on these labelled items (``sigmoid``:
    the binary cross-entropy of ``sigmoid(logits / T)`` against multi-hot ``targets``), and how it was found (or why
    it is 1: too few items, or no mistake, where any sharper T lowers the NLL without end).

    The NLL is convex in ``1 / T``, so a golden-section search over ``log(1 / T)`` finds its minimum.
    """
    logits = logits.detach().float()
    targets = targets.float() if sigmoid else targets.long()
    n = int(len(targets))
    if n < MIN_ITEMS:
        return 1.0, f"not fitted: {n} validation items, fewer than {MIN_ITEMS}"
    right = (logits > 0) == targets.bool() if sigmoid else logits.argmax(1) == targets
    if bool(right.all()):
        return 1.0, "not fitted: no validation mistake to calibrate against"
    loss = torch.nn.functional.binary_cross_entropy_with_logits if sigmoid else torch.nn.functional.cross_entropy

    def nll(log_beta: float) -> float:
        return float(loss(logits * math.exp(log_beta), targets))

    lo, hi = -math.log(T_RANGE[1]), -math.log(T_RANGE[0])
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    while hi - lo > 1e-4:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    temperature = round(math.exp(-(lo + hi) / 2), 4)
    before, after = nll(0.0), nll(-math.log(temperature))
    if after > before * (1 - MIN_GAIN):  # the model's own probabilities are as good: no change for noise's sake
        return 1.0, (f"1 kept: the best, {temperature:g}, lowers the negative log-likelihood of {n} validation items "
                     f"by under {MIN_GAIN:.0%} ({before:.4f} to {after:.4f})")
    return temperature, (f"fitted on {n} validation items (negative log-likelihood {before:.4f} at T 1, "
                         f"{after:.4f} at T {temperature:g})")


def ece(probs: torch.Tensor, targets: torch.Tensor, sigmoid: bool = False) -> float:
    """Expected calibration error of the top-1 probabilities (0: confidence equals accuracy); ``sigmoid``: of every
    (item, label) probability against its multi-hot target."""
    if not targets.numel():
        return 0.0
    if sigmoid:
        return float(binary_calibration_error(probs.float().flatten(), targets.long().flatten(), n_bins=BINS, norm="l1"))
    return float(multiclass_calibration_error(probs.float(), targets.long(), num_classes=probs.shape[1],
                                              n_bins=BINS, norm="l1"))


def summary(logits: torch.Tensor, targets: torch.Tensor, temperature: float, sigmoid: bool = False) -> dict[str, Any]:
    """A report's ``calibration``: the ECE of the probabilities the model gives (``softmax(logits / T)``; ``sigmoid``:
    ``sigmoid(logits / T)``), and at ``T != 1`` the ECE it had without the temperature."""
    logits = logits.detach().float()

    def activate(z: torch.Tensor) -> torch.Tensor:
        return z.sigmoid() if sigmoid else z.softmax(1)

    out: dict[str, Any] = {"temperature": temperature,
                           "ece": round(ece(activate(logits / temperature), targets, sigmoid), 4)}
    if temperature != 1.0:
        out["ece_uncalibrated"] = round(ece(activate(logits), targets, sigmoid), 4)
    return out


ACCURACY_TARGETS = (0.9, 0.95, 0.99)  # the accuracies report.md's "acting on confident predictions" table aims at


def selective_thresholds(confidence: torch.Tensor, correct: torch.Tensor,
                         targets: tuple[float, ...] = ACCURACY_TARGETS) -> list[tuple[float, float | None]]:
    """Acting on confident predictions only (the rest go to a person): for each target accuracy, the lowest
    probability ``p`` such that the items predicted with probability >= ``p`` are right at least that often here
    (None where no confident subset reaches it; items of one confidence are kept or dropped together). ``p`` sits
    halfway to the next lower confidence."""
    n = int(confidence.numel())
    order = confidence.float().argsort(descending=True, stable=True)
    conf, right = confidence.float()[order].tolist(), correct[order].long().cumsum(0).tolist()
    kept = [k for k in range(1, n + 1) if k == n or conf[k] < conf[k - 1]]  # cuts between distinct confidences
    chosen: list[tuple[float, float | None]] = []
    for target in targets:
        reached = [k for k in kept if right[k - 1] / k >= target - 1e-12]
        k = reached[-1] if reached else None
        chosen.append((target, None if k is None else (conf[k - 1] + conf[k]) / 2 if k < n else conf[k - 1]))
    return chosen


def selective(confidence: torch.Tensor, correct: torch.Tensor,
              thresholds: list[tuple[float, float | None]]) -> list[dict[str, Any]]:
    """For each ``(target accuracy, threshold)`` (``selective_thresholds``, chosen on validation): the items predicted
    with probability >= the threshold, their share (coverage) and their accuracy with its Wilson 95 % interval."""
    from headstart.core.intervals import wilson

    rows = []
    for target, threshold in thresholds:
        kept = confidence.float() >= threshold if threshold is not None else torch.zeros_like(correct, dtype=bool)
        k, right = int(kept.sum()), int((kept & correct.bool()).sum())
        rows.append({"target": target, "threshold": threshold, "kept": k,
                     "coverage": round(k / max(int(confidence.numel()), 1), 4),
                     "accuracy": round(right / k, 4) if k else None,
                     "ci95": [round(v, 4) for v in wilson(right, k)] if k else None})
    return rows


def reliability(probs: torch.Tensor, targets: torch.Tensor) -> list[tuple[float, float, int]]:
    """The reliability diagram's bins: ``(mean confidence, accuracy, items)`` of each non-empty equal-width bin of
    the top-1 probability."""
    confidence, predicted = probs.float().max(1)
    correct = (predicted == targets).float()
    which = (confidence * BINS).long().clamp(max=BINS - 1)
    return [(float(confidence[which == b].mean()), float(correct[which == b].mean()), int((which == b).sum()))
            for b in range(BINS) if (which == b).any()]


def plot(logits: torch.Tensor, targets: torch.Tensor, temperature: float, path: Any, title: str) -> None:
    """The reliability diagram: accuracy against confidence per bin, before and after the temperature (a point's
    area is its item count; the diagonal is perfect calibration)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logits = logits.detach().float()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    shown = [(1.0, "o-", "softmax")] + ([(temperature, "s-", f"softmax(logits / {temperature:.3g})")]
                                         if temperature != 1.0 else [])
    for t, style, name in shown:
        probs = (logits / t).softmax(1)
        bins = reliability(probs, targets)
        total = max(sum(k for _, _, k in bins), 1)
        line, = ax.plot([c for c, _, _ in bins], [a for _, a, _ in bins], style, markersize=3,
                        label=f"{name}: ECE {ece(probs, targets):.3f}")
        ax.scatter([c for c, _, _ in bins], [a for _, a, _ in bins], s=[600 * k / total for _, _, k in bins],
                   color=line.get_color(), alpha=0.3)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
