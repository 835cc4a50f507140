"""Classification metrics (torchmetrics), the majority-class baseline, and collapse warnings."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from headstart.tasks.classification import calibration, operating_point
from headstart.tasks.classification.operating_point import OperatingPoint


def classification_report(
    logits: torch.Tensor, targets: torch.Tensor, classes: list[str], train_counts: list[int] | None = None,
    temperature: float = 1.0, point: OperatingPoint | None = None,
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class metrics, confusion matrix, baseline, warnings, and the calibration of the
    probabilities ``softmax(logits / temperature)`` (``calibration.summary``). The decisions are the argmax, or with
    an operating ``point`` its threshold on those probabilities (``operating_point``: its rates and intervals here)."""
    n = len(classes)
    probs = (logits.float() / temperature).softmax(dim=1)
    preds = logits.argmax(dim=1) if point is None else point.decide(probs)
    args = {"preds": preds, "target": targets, "num_classes": n}
    precision = multiclass_precision(**args, average=None, zero_division=0)
    recall = multiclass_recall(**args, average=None, zero_division=0)
    f1 = multiclass_f1_score(**args, average=None, zero_division=0)
    support = torch.bincount(targets, minlength=n)
    present = support > 0
    report: dict[str, Any] = {
        "num_samples": int(targets.numel()),
        "accuracy": float(multiclass_accuracy(**args, average="micro")),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "loss": float(torch.nn.functional.cross_entropy(logits.float(), targets)),
        "per_class": {
            c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                "support": int(support[i])}
            for i, c in enumerate(classes)
        },
        "auroc": auroc(logits, targets, n),
        "confusion_matrix": multiclass_confusion_matrix(**args).tolist(),
        "predicted_counts": dict(zip(classes, torch.bincount(preds, minlength=n).tolist())),
        "calibration": calibration.summary(logits, targets, temperature),
    }
    if point is not None:
        report["operating_point"] = {**point.to_dict(classes), **operating_point.rates(
            probs[:, point.positive].tolist(), (targets == point.positive).tolist(), point.threshold)}
    report["baseline"] = majority_baseline(targets, n, classes, train_counts)
    report["warnings"] = collapse_warnings(report, classes)
    return report


def auroc(logits: torch.Tensor, targets: torch.Tensor, n: int) -> float | None:
    """The area under the ROC curve: of the positive class for two classes, else one class against the rest averaged
    over the classes present (None with fewer than two). It does not depend on a threshold or a temperature: how well
    the scores rank the items (0.5: no better than chance; what a constant score, such as the baseline's, gets)."""
    present = torch.bincount(targets, minlength=n) > 0
    if int(present.sum()) < 2:
        return None
    per_class = multiclass_auroc(logits.float().softmax(dim=1), targets, num_classes=n, average=None, thresholds=None)
    return float(per_class[present].mean())


def majority_baseline(targets: torch.Tensor, n: int, classes: list[str], train_counts: list[int] | None) -> dict:
    """Scores of always predicting the most frequent class (of the training data when known)."""
    counts = torch.tensor(train_counts) if train_counts else torch.bincount(targets, minlength=n)
    majority = int(counts.argmax())
    preds = torch.full_like(targets, majority)
    support = torch.bincount(targets, minlength=n)
    f1 = multiclass_f1_score(preds, targets, num_classes=n, average=None, zero_division=0)
    present = support > 0
    return {
        "class": classes[majority],
        "accuracy": float((targets == majority).float().mean()) if targets.numel() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "balanced_accuracy": float(present[majority]) / int(present.sum()) if present.any() else 0.0,
        "auroc": 0.5,  # one score for every item ranks none above another
    }


def collapse_warnings(report: dict, classes: list[str], margin: float = 0.02) -> list[str]:
    """Loud warnings when the model learned nothing useful."""
    warnings = []
    used = [c for c, k in report["predicted_counts"].items() if k > 0]
    if len(classes) > 1 and len(used) == 1 and report["num_samples"] > 1:
        warnings.append(
            f"The model predicts one class ('{used[0]}') for every one of {report['num_samples']} samples: "
            "it has collapsed and learned nothing. Try another strategy, a lower learning rate, more "
            "epochs, or class weighting."
        )
    never = [(c, r["support"]) for c, r in report["per_class"].items()
             if r["support"] >= CLASS_EVIDENCE and report["predicted_counts"].get(c, 0) == 0]
    if never and len(used) > 1:  # a partial collapse: the rare classes of medical sets, most often
        shown = ", ".join(f"'{c}' ({k} samples)" for c, k in never[:5]) + ("..." if len(never) > 5 else "")
        warnings.append(
            f"{len(never)} class(es) never predicted on these {report['num_samples']} samples, which hold them: "
            f"{shown}. The model does not tell them apart; weigh them up (train.class_weights=true) or add "
            "images of them."
        )
    base = report["baseline"]
    if report["accuracy"] <= base["accuracy"] + margin and report["macro_f1"] <= base["macro_f1"] + margin:
        warnings.append(
            f"Accuracy {report['accuracy']:.3f} and macro-F1 {report['macro_f1']:.3f} are no better than always "
            f"predicting the majority class '{base['class']}' (accuracy {base['accuracy']:.3f}, "
            f"macro-F1 {base['macro_f1']:.3f})."
        )
    return warnings


CLASS_EVIDENCE = 5  # samples of a class needed to say the model never predicts it


def selection_metric(setting: str, train_counts: list[int]) -> str:
    """``accuracy`` for balanced data, ``macro_f1`` when classes are imbalanced (``auto``)."""
    if setting != "auto":
        return setting
    present = [c for c in train_counts if c > 0]
    return "macro_f1" if present and max(present) > 1.5 * min(present) else "accuracy"
