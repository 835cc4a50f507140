"""Segmentation metrics (torchmetrics): mean IoU, per-class IoU, pixel accuracy, the majority baseline, warnings.

Everything comes from one pixel confusion matrix (torchmetrics' ``multiclass_confusion_matrix`` with
``ignore_index=255``), summed over batches so that no image's logits are kept: IoU of class c is
``TP / (TP + FP + FN)`` (torchmetrics' ``MulticlassJaccardIndex`` accumulated over the whole split), mean
IoU averages the classes that occur in the truth or the predictions (a class absent from both has no IoU,
as in mmsegmentation), pixel accuracy is the share of labelled pixels predicted right.
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix

from headstart.tasks.segmentation.data import IGNORE_INDEX


def confusion(preds: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Pixel counts ``[true, predicted]`` of a batch; pixels labelled 255 are left out."""
    return multiclass_confusion_matrix(preds.reshape(-1), target.reshape(-1), num_classes,
                                       ignore_index=IGNORE_INDEX).long()


def iou_scores(cm: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """``(per-class IoU with NaN where a class is in neither truth nor prediction, mean IoU, pixel accuracy)``."""
    cm = cm.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    present = ~iou.isnan()
    total = cm.sum()
    return iou, float(iou[present].mean()) if present.any() else 0.0, float(tp.sum() / total) if total else 0.0


def majority_confusion(cm: torch.Tensor, majority: int) -> torch.Tensor:
    """The confusion matrix of predicting class ``majority`` for every pixel of the same truth."""
    base = torch.zeros_like(cm)
    base[:, majority] = cm.sum(1)
    return base


def segmentation_report(cm: torch.Tensor, classes: list[str], train_pixels: list[int] | None = None,
                        num_images: int | None = None, margin: float = 0.02) -> dict[str, Any]:
    """mIoU, pixel accuracy, per-class IoU / pixels / predicted share, the confusion matrix, baseline, warnings.

    The baseline predicts the most frequent training class (of ``train_pixels``; else of this truth) everywhere.
    """
    iou, miou, acc = iou_scores(cm)
    support, predicted = cm.sum(1), cm.sum(0)
    total = int(support.sum())
    counts = torch.tensor(train_pixels) if train_pixels else support
    majority = int(counts.argmax())
    _, base_miou, base_acc = iou_scores(majority_confusion(cm, majority))
    report: dict[str, Any] = {
        "miou": miou, "pixel_accuracy": acc, "num_pixels": total,
        "per_class": {c: {"iou": None if iou[i].isnan() else float(iou[i]), "pixels": int(support[i]),
                          "predicted_share": float(predicted[i]) / total if total else 0.0,
                          "recall": float(cm[i, i]) / int(support[i]) if support[i] else None}
                      for i, c in enumerate(classes)},
        "confusion_matrix": cm.tolist(),
        "baseline": {"class": classes[majority], "miou": base_miou, "pixel_accuracy": base_acc},
    }
    if num_images is not None:
        report["num_images"] = num_images
    report["warnings"] = collapse_warnings(report, classes, margin)
    return report


def collapse_warnings(report: dict[str, Any], classes: list[str], margin: float = 0.02) -> list[str]:
    """Loud warnings when the model is no better than the majority class or paints one class everywhere."""
    warnings = []
    used = [c for c, m in report["per_class"].items() if m["predicted_share"] > 0.0]
    if len(classes) > 1 and len(used) == 1 and report["num_pixels"] > 1:
        warnings.append(
            f"The model predicts one class ('{used[0]}') for every one of {report['num_pixels']:,} labelled pixels: it "
            "has collapsed and learned nothing. Try more epochs, another learning rate, another strategy, or "
            "train.class_weights=true.")
    enough = max(CLASS_PIXELS, CLASS_SHARE * report["num_pixels"])
    never = [(c, m["pixels"]) for c, m in report["per_class"].items() if m["pixels"] >= enough and m["predicted_share"] == 0]
    if never and len(used) > 1:  # a partial collapse: the thin or rare classes (poles, lesions) painted over
        shown = ", ".join(f"'{c}' ({k:,} pixels)" for c, k in never[:5]) + ("..." if len(never) > 5 else "")
        warnings.append(
            f"{len(never)} class(es) never predicted on these pixels, which hold them: {shown}. The model does not "
            "find them; weigh them up (train.class_weights=true), train longer, or add images of them.")
    base = report["baseline"]
    if report["miou"] <= base["miou"] + margin and report["pixel_accuracy"] <= base["pixel_accuracy"] + margin:
        warnings.append(
            f"Mean IoU {report['miou']:.3f} and pixel accuracy {report['pixel_accuracy']:.3f} are no better than "
            f"predicting the most frequent training class '{base['class']}' everywhere (mean IoU {base['miou']:.3f}, "
            f"pixel accuracy {base['pixel_accuracy']:.3f}).")
    return warnings


CLASS_PIXELS, CLASS_SHARE = 1000, 0.001  # labelled pixels of a class (and share of all) needed to say it is never found
