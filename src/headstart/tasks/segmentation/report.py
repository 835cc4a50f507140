"""Segmentation outputs people look at: coloured masks and overlays, the confusion matrix, report.md/html."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.table import Table

from headstart.core.report import html_report as hr
from headstart.core.report.html_report import Section
from headstart.core.report.outputs import md_table, md_text, plot_confusion_matrix
from headstart.progress import say, warn
from headstart.tasks.segmentation.data import IGNORE_INDEX

SCORES = (("miou", "mean IoU"), ("pixel_accuracy", "pixel accuracy"))
_BASE_COLOURS = [(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
                 (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192), (230, 25, 75),
                 (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
                 (240, 50, 230), (210, 245, 60)]


def palette(num_classes: int) -> np.ndarray:
    """``(256, 3)`` uint8 colours: fixed, distinct ones for the first classes, seeded ones after; 255 is black."""
    rng = np.random.default_rng(0)
    colours = np.array(_BASE_COLOURS + [tuple(rng.integers(0, 256, 3)) for _ in range(256 - len(_BASE_COLOURS))],
                       dtype=np.uint8)
    colours[IGNORE_INDEX] = 0
    return colours


def colourise(mask: np.ndarray, num_classes: int) -> np.ndarray:
    return palette(num_classes)[mask]


def overlay(image: Image.Image, mask: np.ndarray, num_classes: int, alpha: float = 0.5) -> Image.Image:
    """The classes' colours blended over ``image`` (pixels labelled 255 left as they are)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    colour = colourise(mask, num_classes).astype(np.float32)
    blend = np.where((mask == IGNORE_INDEX)[..., None], rgb, (1 - alpha) * rgb + alpha * colour)
    return Image.fromarray(blend.clip(0, 255).astype(np.uint8))


def save_mask(mask: np.ndarray, image: Image.Image, classes: list[str], folder: Path, stem: str) -> None:
    """``stem.png``: the class indices as a palette PNG (reading it gives the indices); ``stem_overlay.png``."""
    index = Image.fromarray(mask, mode="P")
    index.putpalette(palette(len(classes)).ravel().tolist())
    index.save(folder / f"{stem}.png")
    overlay(image, mask, len(classes)).save(folder / f"{stem}_overlay.png")


def plot_overlays(items: list[tuple[Path | bytes, np.ndarray, np.ndarray]], classes: list[str], path: Path,
                  width: int = 240) -> None:
    """Rows of image | truth | prediction (coloured by class) for a few validation images, with a legend."""
    if not items:
        return
    from PIL import ImageDraw

    from headstart.tasks.image.decode import open_image, to_rgb

    tiles = []
    for image_path, truth, pred in items:
        image = to_rgb(open_image(image_path))
        h = max(1, round(image.height * width / image.width))
        row = [image.resize((width, h)),
               Image.fromarray(colourise(truth, len(classes))).resize((width, h), Image.Resampling.NEAREST),
               Image.fromarray(colourise(pred, len(classes))).resize((width, h), Image.Resampling.NEAREST)]
        tiles.append(row)
    heights = [r[0].height for r in tiles]
    legend_h = 18 * ((len(classes) + 5) // 6) + 24
    sheet = Image.new("RGB", (3 * width + 8, sum(heights) + 4 * len(tiles) + legend_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for j, title in enumerate(("image", "truth", "prediction")):
        draw.text((j * (width + 4) + 4, 4), title, fill=(0, 0, 0))
    y = 18
    for row, h in zip(tiles, heights):
        for j, tile in enumerate(row):
            sheet.paste(tile, (j * (width + 4), y))
        y += h + 4
    colours = palette(len(classes))
    for i, name in enumerate(classes):
        x, yy = (i % 6) * (sheet.width // 6) + 4, y + 4 + 18 * (i // 6)
        draw.rectangle((x, yy, x + 12, yy + 12), fill=tuple(int(v) for v in colours[i]))
        draw.text((x + 16, yy), name, fill=(0, 0, 0))
    sheet.save(path)


def plot_confusion(report: dict[str, Any], classes: list[str], path: Path) -> None:
    """The pixel confusion matrix, each true class's row in percent of its pixels."""
    cm = np.array(report["confusion_matrix"], dtype=np.float64)
    rows = cm.sum(1, keepdims=True)
    pct = np.where(rows > 0, 100 * cm / np.maximum(rows, 1), 0).round().astype(int).tolist()
    plot_confusion_matrix(pct, classes, path, "Validation pixels: % of each true class (rows)")


def _iou(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def per_class_rows(report: dict[str, Any], train_pixels: dict[str, int] | None = None) -> list[tuple]:
    total = sum(train_pixels.values()) if train_pixels else 0
    return [(c, _iou(m["iou"]), "-" if m["recall"] is None else f"{m['recall']:.4f}", f"{m['pixels']:,}",
             f"{m['predicted_share']:.2%}", f"{train_pixels.get(c, 0) / total:.2%}" if total else "")
            for c, m in report["per_class"].items()]


PER_CLASS = ("class", "IoU", "recall", "val pixels", "predicted share", "train share")


def print_metrics(report: dict[str, Any], title: str) -> None:
    """mIoU and pixel accuracy beside the majority-class baseline, IoU per class, warnings in bold."""
    base = report["baseline"]
    table = Table(title=title)
    for col in ("metric", "model", f"baseline: '{base['class']}' everywhere"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for key, label in SCORES:
        table.add_row(label, f"{report[key]:.4f}", f"{base[key]:.4f}")
    table.add_row("labelled pixels", f"{report['num_pixels']:,}", "")
    say(table)
    per = Table(title="per class")
    for col in PER_CLASS[:-1]:
        per.add_column(col, justify="left" if col == "class" else "right")
    for row in per_class_rows(report):
        per.add_row(*map(str, row[:-1]))
    say(per)
    for w in report["warnings"]:
        warn(w)


def write_report_md(run: Path, metrics: dict[str, Any]) -> None:
    val, base = metrics["val"], metrics["val"]["baseline"]
    lines = [
        f"# headstart segmentation run: {metrics['model']} / {metrics['segmenter']} / {metrics['strategy']}", "",
        f"Data: `{metrics['data']}` ({md_text(metrics['layout'])}); classes: "
        f"{', '.join(md_text(c) for c in metrics['classes'])}.",
        f"Train images: {metrics['num_train']}, validation images: {metrics['num_val']}, skipped: {metrics['skipped']}. "
        f"Training time: {metrics['train_seconds']:.1f} s on {metrics['device']}.", "",
        f"| metric | model | baseline: '{md_text(base['class'])}' everywhere |", "| --- | --- | --- |",
        *[f"| {label} | {val[key]:.4f} | {base[key]:.4f} |" for key, label in SCORES], "",
        "Scores at each validation image's own size (logits upsampled), pixels labelled 255 left out.", "",
    ]
    if val["warnings"]:
        lines += ["## Warnings", "", *[f"- **{md_text(w)}**" for w in val["warnings"]], ""]
    lines += [*md_table(PER_CLASS, per_class_rows(val, metrics.get("train_pixels"))), "",
              "![learning curve](learning_curve.png)", "", "![confusion matrix](confusion_matrix.png)", "",
              "![validation: image, truth, prediction](val_overlays.png)", "",
              "Files: `metrics.json`, `history.csv`, `config.yaml`, `spec.json`, `model.safetensors`.", ""]
    (run / "report.md").write_text("\n".join(lines))


def html_sections(run: Path, metrics: dict[str, Any]) -> list[Section]:
    """Summary, mIoU and pixel accuracy beside the baseline, phases, per-class IoU, figures, warnings."""
    val, base = metrics["val"], metrics["val"]["baseline"]
    summary = [(k.replace("_", " "), metrics[k]) for k in ("model", "segmenter", "strategy", "data", "layout",
                                                           "image_size", "device", "best_epoch", "epochs_run",
                                                           "num_train", "num_val", "train_seconds") if k in metrics]
    summary.append(("feature cache", f"{metrics['cache']['items_served']} served, "
                                     f"{metrics['cache']['items_computed']} computed"))
    rows = [(label, f"{val[key]:.4f}", f"{base[key]:.4f}") for key, label in SCORES]
    rows.append(("labelled pixels", f"{val['num_pixels']:,}", ""))
    test = metrics.get("test")
    if test:
        rows += [(f"test {label}", f"{test[key]:.4f}", f"{test['baseline'][key]:.4f}") for key, label in SCORES]
    note = ("Scores at each validation image's own size: the image resized to the training scale, its logits "
            "upsampled back; pixels labelled 255 are left out. Mean IoU averages the classes present in the truth "
            f"or the prediction. The baseline predicts the most frequent training class ('{base['class']}') "
            "everywhere.")
    return [
        hr.summary_section(summary),
        hr.metrics_section(rows, f"baseline: '{base['class']}' everywhere", title="Validation mean IoU",
                           table_id="miou", anchor="sec-miou", warnings=val.get("warnings", []), note=note),
        *hr.phases_section(metrics),
        Section("Per-class IoU", hr.table(list(PER_CLASS), per_class_rows(val, metrics.get("train_pixels")),
                                          "per-class-iou"), anchor="sec-per-class-iou"),
        hr.figures_section([(run / "val_overlays.png", "Validation images: image | truth | prediction",
                             "val-overlays"),
                            (run / "learning_curve.png", "Loss and validation scores per epoch", "learning-curve"),
                            (run / "confusion_matrix.png", "Validation pixel confusion matrix (row %)",
                             "confusion-matrix")], "Overlays, learning curve and confusion matrix"),
    ]


def write_segmentation_report(run: Path, metrics: dict[str, Any], cfg_dict: dict[str, Any] | None = None) -> Path:
    """``run/report.html`` of a segmentation run through the one report writer."""
    run = Path(run)
    seeds = None
    if cfg_dict:
        seeds = {"train.seed": (cfg_dict.get("train") or {}).get("seed"),
                 "data.augment_seed": (cfg_dict.get("data") or {}).get("augment_seed")}
    env = hr.run_environment(run, metrics.get("device"), seeds)
    title = f"headstart segmentation run: {metrics['model']} / {metrics['segmenter']} / {metrics['strategy']}"
    return hr.write_report(run / "report.html", title, html_sections(run, metrics), env, cfg_dict)
