"""Detection metrics: COCO mAP with torchmetrics, per-class AP and the PR curve at IoU 0.5."""

from __future__ import annotations

from typing import Any

import torch

from headstart.errors import ConfigError

SELECT_METRIC = "map_50"


def _map_metric():
    from torchmetrics.detection import MeanAveragePrecision

    last: Exception | None = None
    for backend in ("faster_coco_eval", "pycocotools"):
        try:
            return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=True,
                                        extended_summary=True, backend=backend)
        except (ModuleNotFoundError, ImportError) as exc:
            last = exc
    raise ConfigError(f"Detection metrics need a COCO backend: pip install faster-coco-eval (or pycocotools); {last}")


def detection_report(preds: list[dict], targets: list[dict], classes: list[str]) -> dict[str, Any]:
    """COCO mAP@0.5:0.95, mAP@0.5, mAP@0.75, recall, per-class AP and the PR curve at IoU 0.5 (labels 1..N)."""
    metric = _map_metric()
    metric.update([{k: v.float() if k != "labels" else v for k, v in p.items()} for p in preds], targets)
    r = metric.compute()
    present = [int(c) for c in torch.atleast_1d(r["classes"]).tolist()]
    per_class_ap = torch.atleast_1d(r["map_per_class"]).tolist()
    per_class_ap50: dict[int, float] = {}
    precision = r["precision"]  # [IoU thresholds, recall thresholds, classes, areas, max detections]
    curves = {}
    for k, c in enumerate(present):
        p = precision[0, :, k, 0, -1]
        valid = p[p > -1]
        per_class_ap50[c] = float(valid.mean()) if len(valid) == len(p) else -1.0
        curves[c] = [round(float(v), 4) for v in p.clamp(min=0)]
    gt = torch.bincount(torch.cat([t["labels"] for t in targets]) if targets else torch.zeros(0, dtype=torch.long),
                        minlength=len(classes) + 1)
    found = torch.bincount(torch.cat([p["labels"] for p in preds]) if preds else torch.zeros(0, dtype=torch.long),
                           minlength=len(classes) + 1)
    report: dict[str, Any] = {
        "num_images": len(targets),
        "map": float(r["map"]), "map_50": float(r["map_50"]), "map_75": float(r["map_75"]),
        "mar_100": float(r["mar_100"]),
        "per_class": {
            name: {"ap": round(per_class_ap[present.index(i + 1)], 5) if i + 1 in present else None,
                   "ap_50": round(per_class_ap50[i + 1], 5) if i + 1 in present else None,
                   "boxes": int(gt[i + 1]), "detections": int(found[i + 1])}
            for i, name in enumerate(classes)
        },
        "pr_curve_iou50": {classes[c - 1]: v for c, v in curves.items() if 0 < c <= len(classes)},
        "warnings": [],
    }
    if int(gt.sum()) and report["map_50"] < 0.01:
        report["warnings"].append(
            f"mAP@0.5 is {report['map_50']:.4f}: the detector found almost none of the {int(gt.sum())} boxes. "
            "Train longer (train.head_epochs / train.epochs), use a pretrained backbone, or lower detection.image_size "
            "only if objects are large."
        )
    missed = [(c, m["boxes"]) for c, m in report["per_class"].items()
              if m["boxes"] >= CLASS_BOXES and (m["ap_50"] or 0.0) < 0.01]
    if missed and report["map_50"] >= 0.01:  # one class lost while the others are found (small or rare objects)
        shown = ", ".join(f"'{c}' ({k} boxes)" for c, k in missed[:5]) + ("..." if len(missed) > 5 else "")
        report["warnings"].append(
            f"{len(missed)} class(es) found almost never (AP@0.5 under 0.01), though these images hold them: {shown}. "
            "Small objects need a larger detection.image_size; rare ones more images, or train longer.")
    return report


CLASS_BOXES = 5  # boxes of a class needed to say the detector never finds it
