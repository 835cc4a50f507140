"""Multi-label metrics (torchmetrics): mAP, micro/macro F1 at per-class thresholds, and the frequency baseline.

The baseline is the model that knows only how often each label occurs in training: it gives every
image each label's training frequency as its score. Its AP per class is that class's prevalence;
at its own best thresholds it predicts every label for every image, which is its F1.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch.nn import functional as F
from torchmetrics.functional.classification import (
    multilabel_auroc,
    multilabel_average_precision,
    multilabel_f1_score,
    multilabel_precision,
    multilabel_recall,
)

from headstart.tasks.classification.operating_point import EDGE, TIE  # what another runtime's rounding could reorder

FALLBACK_THRESHOLD = 0.5  # a class without a positive validation image


def tune_thresholds(probs: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """Per class, the threshold (``prob >= t`` is predicted) with the best F1 on these items.

    Candidate cuts lie between consecutive distinct probabilities, halfway in logit space, and one logit below the
    lowest (predict all); ties of F1 go to the higher threshold. A class with no positive gets 0.5. No cut sits on
    or near an item's probability: probabilities within ``EDGE`` of 0 or 1 are one value (float32 rounds a confident
    head's to exactly 1.0, another runtime to 0.99999), and so are probabilities whose logits differ by under
    ``TIE`` (a label the head gives every image alike, up to the 8th digit), so a validation image's tags do not
    flip with the last digits of another runtime's arithmetic (ONNX, fp16).
    """
    thresholds = []
    for c in range(probs.shape[1]):
        p, t = probs[:, c].double().clamp(EDGE, 1 - EDGE), targets[:, c].double()
        positives = float(t.sum())
        if positives == 0:
            thresholds.append(FALLBACK_THRESHOLD)
            continue
        order = p.argsort(descending=True)
        p, t = p[order], t[order]
        true_pos = t.cumsum(0)
        predicted = torch.arange(1, len(p) + 1, dtype=torch.double)
        f1 = 2 * true_pos / (predicted + positives)
        z = p.logit()
        cut = torch.ones(len(p), dtype=torch.bool)  # a cut after item k only where the next probability is lower
        cut[:-1] = z[:-1] - z[1:] > TIE
        f1[~cut] = -1.0
        k = int(f1.argmax())  # the first (highest-threshold) best
        below = z[k + 1] if k + 1 < len(p) else z[k] - 2.0  # halfway to it: one logit under the lowest
        thresholds.append(float(((z[k] + below) / 2).sigmoid()))
    return thresholds


def predict_tags(probs: torch.Tensor, thresholds: list[float] | torch.Tensor) -> torch.Tensor:
    """0/1 predictions: each label whose probability reaches its class's threshold."""
    return (probs >= torch.as_tensor(thresholds, dtype=probs.dtype)[None]).long()


def label_scores(probs: torch.Tensor, targets: torch.Tensor, preds: torch.Tensor) -> dict[str, Any]:
    """mAP over the classes present, micro/macro F1, and the per-class AP/precision/recall/F1."""
    n = probs.shape[1]
    target = targets.long()
    present = target.sum(0) > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics warns about classes without positives (left out of mAP)
        ap = (multilabel_average_precision(probs.float(), target, num_labels=n, average=None) if len(target)
              else torch.zeros(n))
    args = {"preds": preds, "target": target, "num_labels": n, "zero_division": 0}
    f1 = multilabel_f1_score(**args, average=None)
    return {
        "map": float(ap[present].mean()) if present.any() else 0.0,
        "micro_f1": float(multilabel_f1_score(**args, average="micro")),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "ap": ap, "f1": f1, "present": present,
        "precision": multilabel_precision(**args, average=None), "recall": multilabel_recall(**args, average=None),
    }


def multilabel_report(probs: torch.Tensor, targets: torch.Tensor, classes: list[str], train_counts: list[int],
                      num_train: int, thresholds: list[float] | None = None) -> dict[str, Any]:
    """mAP, micro/macro F1 at ``thresholds`` (None: tuned on these items), per-class scores, baseline, warnings.

    ``probs``: the model's sigmoid outputs, one column per class; ``targets``: multi-hot rows.
    """
    probs = probs.float()
    if thresholds is None:
        thresholds = tune_thresholds(probs, targets)
    model = label_scores(probs, targets, predict_tags(probs, thresholds))
    frequency = torch.tensor(train_counts, dtype=torch.float) / max(num_train, 1)
    constant = frequency[None].expand(len(targets), -1)
    base = label_scores(constant, targets, torch.ones_like(targets, dtype=torch.long))
    support = targets.sum(0).long()
    both = (support > 0) & (support < len(targets))  # AUROC needs images with and without the label
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auroc = (multilabel_auroc(probs, targets.long(), num_labels=len(classes), average=None) if len(targets)
                 else torch.zeros(len(classes)))
    report: dict[str, Any] = {
        "num_samples": int(len(targets)),
        "map": model["map"], "micro_f1": model["micro_f1"], "macro_f1": model["macro_f1"],
        "loss": float(F.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), targets.float())) if len(targets) else 0.0,
        "labels_per_item": float(targets.sum(1).float().mean()) if len(targets) else 0.0,
        "predicted_per_item": float(predict_tags(probs, thresholds).sum(1).float().mean()) if len(targets) else 0.0,
        "thresholds": dict(zip(classes, thresholds)),
        "per_class": {
            c: {"ap": float(model["ap"][i]) if model["present"][i] else None, "precision": float(model["precision"][i]),
                "recall": float(model["recall"][i]), "f1": float(model["f1"][i]), "support": int(support[i]),
                "threshold": thresholds[i], "train_frequency": round(float(frequency[i]), 4),
                "auroc": float(auroc[i]) if both[i] else None,
                "baseline_ap": float(base["ap"][i]) if base["present"][i] else None}
            for i, c in enumerate(classes)
        },
        "baseline": {"name": "each label's training frequency", "map": base["map"], "micro_f1": base["micro_f1"],
                     "macro_f1": base["macro_f1"]},
    }
    report["warnings"] = baseline_warnings(report)
    return report


def baseline_warnings(report: dict[str, Any], margin: float = 0.02) -> list[str]:
    """Loud warnings when the model is no better than predicting each label's training frequency."""
    base, out = report["baseline"], []
    if report["num_samples"] and report["map"] <= base["map"] + margin:
        out.append(f"mAP {report['map']:.3f} is no better than predicting each label's training frequency "
                   f"(mAP {base['map']:.3f}): the model has not learned which images carry which labels. Try another "
                   "strategy or backbone, more epochs, or more images of the rare labels")
    if report["num_samples"] and (report["micro_f1"] <= base["micro_f1"] + margin
                                  and report["macro_f1"] <= base["macro_f1"] + margin):
        out.append(f"Micro-F1 {report['micro_f1']:.3f} and macro-F1 {report['macro_f1']:.3f} are no better than the "
                   f"frequency baseline, which predicts every label for every image (micro-F1 {base['micro_f1']:.3f}, "
                   f"macro-F1 {base['macro_f1']:.3f})")
    n = report["num_samples"]
    unlearned = [(c, r) for c, r in report["per_class"].items()
                 if r.get("auroc") is not None and r["baseline_ap"] is not None and r["baseline_ap"] < COMMON_LABEL
                 and min(r["support"], n - r["support"]) >= LABEL_EVIDENCE and r["auroc"] <= CHANCE_AUROC]
    if unlearned:
        shown = ", ".join(f"{c} (AUROC {r['auroc']:.2f}, AP {r['ap']:.3f} against its frequency's {r['baseline_ap']:.3f})"
                          for c, r in unlearned[:5])
        out.append(f"{len(unlearned)} label(s) ranked no better than chance: {shown}"
                   f"{'...' if len(unlearned) > 5 else ''}. The model has not learned to tell them: their predictions "
                   "are guesses; check their labels, or add images that show them")
    return out


CHANCE_AUROC = 0.55  # a label the scores rank no better than this is not learned (random ranking: 0.5)
COMMON_LABEL = 0.8  # a label on this share of the images or more has little to tell: not warned of alone
LABEL_EVIDENCE = 5  # images with and without a label needed to say the model has not learned it


def positive_weights(train_counts: list[int], num_train: int, cap: float = 100.0) -> torch.Tensor:
    """BCE ``pos_weight`` per class: negatives / positives for rare labels (at least 1, at most ``cap``)."""
    pos = torch.tensor(train_counts, dtype=torch.float).clamp(min=1)
    return ((num_train - pos) / pos).clamp(min=1.0, max=cap)
