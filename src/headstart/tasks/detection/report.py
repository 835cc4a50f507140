"""Detection outputs people look at: boxes drawn on images, the PR curve, report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from rich.table import Table  # noqa: E402

from headstart.core.report import html_report as hr  # noqa: E402
from headstart.core.report.html_report import Section  # noqa: E402
from headstart.core.report.outputs import md_text, test_model  # noqa: E402
from headstart.progress import say, warn  # noqa: E402

TRUE_COLOUR, PRED_COLOUR = (40, 200, 40), (230, 40, 40)


def draw_boxes(image: Image.Image, boxes: torch.Tensor, names: list[str], scores: torch.Tensor | None = None,
               colour: tuple[int, int, int] = PRED_COLOUR, width: int = 2) -> Image.Image:
    """A copy of ``image`` with labelled boxes (``xyxy`` pixels)."""
    image = image.convert("RGB").copy()
    draw = ImageDraw.Draw(image)
    for i, box in enumerate(boxes.tolist()):
        draw.rectangle(box, outline=colour, width=width)
        text = names[i] + (f" {float(scores[i]):.2f}" if scores is not None else "")
        x, y = box[0], max(0, box[1] - 11)
        draw.rectangle(draw.textbbox((x, y), text), fill=colour)
        draw.text((x, y), text, fill=(255, 255, 255))
    return image


def plot_predictions(images: list[torch.Tensor], preds: list[dict], targets: list[dict], classes: list[str],
                     min_score: float, path: Path, columns: int = 4) -> None:
    """A grid of validation images: true boxes in green, predictions above ``min_score`` in red."""
    tiles = []
    for image, pred, target in zip(images, preds, targets):
        pil = Image.fromarray((image.clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy())
        pil = draw_boxes(pil, target["boxes"], [classes[int(c) - 1] for c in target["labels"]], colour=TRUE_COLOUR)
        keep = pred["scores"] >= min_score
        pil = draw_boxes(pil, pred["boxes"][keep], [classes[int(c) - 1] for c in pred["labels"][keep]],
                         pred["scores"][keep])
        tiles.append(pil)
    if not tiles:
        return
    w, h = tiles[0].size
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (w * min(columns, len(tiles)), h * rows), (255, 255, 255))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * w, (i // columns) * h))
    sheet.save(path)


def plot_pr_curves(report: dict[str, Any], path: Path, max_classes: int = 10) -> None:
    """Precision against recall at IoU 0.5 (COCO's 101 recall points) for the classes with most boxes."""
    curves = report["pr_curve_iou50"]
    ranked = sorted(curves, key=lambda c: -report["per_class"][c]["boxes"])[:max_classes]
    recall = [i / 100 for i in range(101)]
    fig, ax = plt.subplots(figsize=(6, 5))
    for name in ranked:
        ap = report["per_class"][name]["ap_50"]
        ax.plot(recall, curves[name], label=f"{name} (AP@0.5 {ap:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if ranked:
        ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"Precision-recall at IoU 0.5 (mAP@0.5 {report['map_50']:.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_metrics(report: dict[str, Any], title: str) -> None:
    table = Table(title=title)
    for col in ("class", "AP@0.5:0.95", "AP@0.5", "boxes", "detections"):
        table.add_column(col, justify="left" if col == "class" else "right")
    table.add_row("[bold]all", f"[bold]{report['map']:.4f}", f"[bold]{report['map_50']:.4f}",
                  str(sum(m["boxes"] for m in report["per_class"].values())),
                  str(sum(m["detections"] for m in report["per_class"].values())))
    for name, m in report["per_class"].items():
        if m["boxes"] or m["detections"]:
            table.add_row(name, "-" if m["ap"] is None else f"{m['ap']:.4f}",
                          "-" if m["ap_50"] is None else f"{m['ap_50']:.4f}", str(m["boxes"]), str(m["detections"]))
    say(table)  # quiet (HEADSTART_QUIET, compare's cells) like the classifiers' table; warnings still print
    for w in report["warnings"]:
        warn(w)


def write_report_md(run: Path, metrics: dict[str, Any]) -> None:
    val = metrics["val"]
    lines = [
        f"# headstart detection run: {metrics['model']} / {metrics['family']} / {metrics['strategy']}",
        "",
        f"Data: `{metrics['data']}` ({md_text(metrics['layout'])}); classes: "
        f"{', '.join(md_text(c) for c in metrics['classes'])}.",
        f"Train images: {metrics['num_train']}, validation images: {metrics['num_val']}; "
        f"data issues: {metrics['data_issues'] or 'none'}.",
        f"Training time: {metrics['train_seconds']:.1f} s on {metrics['device']} "
        f"({metrics['seconds_per_epoch']} s per epoch by phase).",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| mAP@0.5:0.95 | {val['map']:.4f} |",
        f"| mAP@0.5 | {val['map_50']:.4f} |",
        f"| mAP@0.75 | {val['map_75']:.4f} |",
        f"| recall@100 | {val['mar_100']:.4f} |",
        "",
        *_test_line(metrics),
        "| class | AP@0.5:0.95 | AP@0.5 | boxes | detections |",
        "| --- | --- | --- | --- | --- |",
        *[f"| {md_text(c)} | {m['ap']} | {m['ap_50']} | {m['boxes']} | {m['detections']} |"
          for c, m in val["per_class"].items() if m["boxes"] or m["detections"]],
        "",
        *([f"- **{md_text(w)}**" for w in val["warnings"]] + [""] if val["warnings"] else []),
        "![PR curve](pr_curve.png)",
        "",
        "![validation predictions (green: true, red: predicted)](val_predictions.png)",
        "",
    ]
    (run / "report.md").write_text("\n".join(lines))


# ------------------------------------------------------------------------------------------ report.html
def _ap(value: float | None) -> str:
    """An AP for the report: '-' when the class has no AP (no true box, or COCO marked it undefined with -1)."""
    return "-" if value is None or value < 0 else f"{value:.4f}"


def _test_line(metrics: dict[str, Any]) -> list[str]:
    """report.md's line on DATA's test split, when it has one."""
    test = metrics.get("test")
    if not test:
        return []
    return [f"Test ({test['num_images']} images, {test_model(metrics)}): mAP@0.5:0.95 {test['map']:.4f}, "
            f"mAP@0.5 {test['map_50']:.4f} (a detector that finds nothing: 0).", ""]


def _map_rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """mAP lines beside the baseline of a detector that finds nothing (0)."""
    return [(name, f"{report[key]:.4f}", f"{0:.4f}") for name, key in
            (("mAP@0.5:0.95", "map"), ("mAP@0.5", "map_50"), ("mAP@0.75", "map_75"), ("mAR@100", "mar_100"))]


def html_sections(run: Path, metrics: dict[str, Any]) -> list[Section]:
    """The sections of a detection run's report.html: summary, mAP against a detector that finds nothing,
    per-class AP, the PR curve and the validation images with their boxes drawn, and the warnings."""
    run = Path(run)
    val = metrics["val"]
    train_boxes = metrics.get("train_boxes") or {}
    summary = [("model", metrics.get("model", "")), ("family", metrics.get("family", "")),
               ("strategy", metrics.get("strategy", ""))]
    summary += [(k, metrics[k]) for k in ("data", "layout", "device", "best_epoch", "epochs_run") if k in metrics]
    summary += [("classes", list(val["per_class"])), ("train images", metrics.get("num_train", "")),
                ("validation images", metrics.get("num_val", "")),
                ("train boxes", sum(train_boxes.values()) if train_boxes else ""),
                ("validation boxes", sum(m["boxes"] for m in val["per_class"].values())),
                ("training seconds", metrics.get("train_seconds", ""))]
    if "cache" in metrics:
        summary.append(("feature cache", f"{metrics['cache']['items_served']} served, "
                                         f"{metrics['cache']['items_computed']} computed"))
    per_class = [(name, _ap(m.get("ap")), _ap(m.get("ap_50")), m["boxes"], m["detections"], train_boxes.get(name, ""))
                 for name, m in val["per_class"].items()]
    return [
        hr.summary_section(summary),
        hr.metrics_section(_map_rows(val), "baseline (finds nothing)", title="Validation mAP", table_id="map",
                           anchor="sec-map", note="COCO box mAP over the validation images. A detector that finds "
                           "nothing scores 0 on every line: the baseline column."),
        *([hr.metrics_section(_map_rows(metrics["test"]), "baseline (finds nothing)",
                              title=f"Test mAP ({test_model(metrics)})", table_id="test-map",
                              anchor="sec-test-map", note=f"DATA's test split ({metrics['test']['num_images']} "
                              "images), held out of training and of model selection.",
                              warnings=metrics["test"].get("warnings", []))] if metrics.get("test") else []),
        Section("Per-class AP", hr.table(["class", "AP@0.5:0.95", "AP@0.5", "val boxes", "detections",
                                             "train boxes"], per_class, "per-class-ap"), anchor="sec-per-class-ap"),
        hr.figures_section([(run / "pr_curve.png", "Precision against recall at IoU 0.5, per class", "pr-curve"),
                            (run / "val_predictions.png", "Validation images: true boxes in green, predicted in red",
                             "val-predictions")], "Precision-recall curve and predicted boxes"),
        Section("Warnings", hr.warnings_html(val.get("warnings", []), empty="No warnings."), anchor="sec-warnings"),
    ]


def write_detection_report(run: Path, metrics: dict[str, Any], cfg_dict: dict[str, Any] | None = None,
                           env: dict[str, Any] | None = None) -> Path:
    """``run/report.html`` of a detection run through the one report writer; returns its path.

    ``env`` defaults to the environment of this process with the seeds of ``cfg_dict`` and the data
    fingerprint of the run folder's metadata.
    """
    run = Path(run)
    if env is None:
        seeds = None
        if cfg_dict:
            seeds = {"train.seed": (cfg_dict.get("train") or {}).get("seed"),
                     "data.augment_seed": (cfg_dict.get("data") or {}).get("augment_seed")}
        env = hr.run_environment(run, metrics.get("device"), seeds)
    title = (f"headstart detection run: {metrics.get('model', '')} / {metrics.get('family', '')} / "
             f"{metrics.get('strategy', '')}")
    return hr.write_report(run / "report.html", title, html_sections(run, metrics), env, cfg_dict)
