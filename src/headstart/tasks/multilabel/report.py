"""Multi-label outputs people look at: PR curves per class, the metrics beside the baseline, report.md/html."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from rich.table import Table  # noqa: E402
from torchmetrics.functional.classification import multilabel_precision_recall_curve  # noqa: E402

from headstart.core.report import html_report as hr  # noqa: E402
from headstart.core.report.outputs import calibration_text, md_table, md_text  # noqa: E402
from headstart.progress import say, warn  # noqa: E402

SCORES = (("map", "mAP"), ("micro_f1", "micro-F1"), ("macro_f1", "macro-F1"))


def plot_pr_curves(probs: torch.Tensor, targets: torch.Tensor, classes: list[str], path: Path,
                   max_classes: int = 20) -> None:
    """Precision against recall per class on validation (the classes with most positives), each beside its
    frequency baseline (precision = the class's prevalence at every recall)."""
    support = targets.sum(0)
    shown = [int(i) for i in support.argsort(descending=True)[:max_classes] if support[i] > 0]
    if not shown:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        precision, recall, _ = multilabel_precision_recall_curve(probs.float(), targets.long(), num_labels=len(classes))
    columns = min(4, len(shown))
    rows = (len(shown) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.0 * rows), squeeze=False)
    for ax, i in zip(axes.flat, shown):
        ax.plot(recall[i].numpy(), precision[i].numpy(), "-", drawstyle="steps-post")
        prevalence = float(support[i]) / len(targets)
        ax.axhline(prevalence, color="grey", linestyle="--", label=f"baseline {prevalence:.2f}")
        ax.set_title(f"{classes[i]} ({int(support[i])} positive)", fontsize=9)
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall", fontsize=8)
        ax.set_ylabel("precision", fontsize=8)
        ax.legend(fontsize=7, loc="lower left")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.suptitle("Validation precision-recall per class (dashed: the training-frequency baseline)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def per_class_rows(report: dict[str, Any]) -> list[tuple]:
    return [(c, _num(m["ap"]), _num(m["baseline_ap"]), _num(m["precision"]), _num(m["recall"]), _num(m["f1"]),
             f"{m['threshold']:.3f}", m["support"]) for c, m in report["per_class"].items()]


PER_CLASS = ("label", "AP", "baseline AP", "precision", "recall", "F1", "threshold", "support")


def print_metrics(report: dict[str, Any], title: str) -> None:
    """The scores beside the frequency baseline, the per-class table, warnings in bold."""
    base = report["baseline"]
    table = Table(title=title)
    for col in ("metric", "model", "baseline: training frequency"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for key, label in SCORES:
        table.add_row(label, f"{report[key]:.4f}", f"{base[key]:.4f}")
    if "calibration" in report:
        table.add_row("calibration error (ECE)", calibration_text(report["calibration"], "sigmoid"), "")
    table.add_row("samples", str(report["num_samples"]), "")
    say(table)
    per = Table(title="per label (F1, precision, recall at the tuned thresholds)")
    for col in PER_CLASS:
        per.add_column(col, justify="left" if col == "label" else "right")
    for row in per_class_rows(report):
        per.add_row(*map(str, row))
    say(per)
    for w in report["warnings"]:
        warn(w)


def write_report_md(run: Path, metrics: dict[str, Any], summary: dict[str, Any]) -> None:
    val, noun = metrics["val"], summary.get("items", "images")
    base = val["baseline"]
    lines = [
        f"# headstart run (multi-label): {summary['model']} / {summary['strategy']}", "",
        f"Data: `{summary['data']}` ({md_text(summary['layout'])}); labels: "
        f"{', '.join(md_text(c) for c in summary['classes'])}.",
        f"Train {noun}: {summary['num_train']}, validation {noun}: {summary['num_val']}, skipped: "
        f"{summary['num_skipped']}. Training time: {metrics['train_seconds']:.1f} s on {summary['device']}.", "",
        "| metric | model | baseline: training frequency |", "| --- | --- | --- |",
        *[f"| {label} | {val[key]:.4f} | {base[key]:.4f} |" for key, label in SCORES], "",
        "F1, precision and recall are at per-label thresholds tuned on validation (saved in spec.json).", "",
    ]
    if metrics.get("test"):
        test = metrics["test"]
        lines += [f"Test ({test['num_samples']} {noun}, the validation thresholds): " + ", ".join(
            f"{label} {test[key]:.4f} (baseline {test['baseline'][key]:.4f})" for key, label in SCORES) + ".", ""]
    cal = val.get("calibration")
    if cal:
        lines += [f"Probabilities are `sigmoid(logits / {cal['temperature']:g})`, one temperature for every label: "
                  f"{md_text(cal.get('temperature_fit', ''))}. Calibration error (ECE over all (item, label) pairs; 0: "
                  "a label given probability 0.9 applies 90% of the time): validation "
                  f"{calibration_text(cal, 'sigmoid')}"
                  + (f", test {calibration_text(metrics['test']['calibration'], 'sigmoid')}"
                     if metrics.get("test") and "calibration" in metrics["test"] else "") + ".", ""]
    if val["warnings"]:
        lines += ["## Warnings", "", *[f"- **{md_text(w)}**" for w in val["warnings"]], ""]
    lines += [*md_table(PER_CLASS, per_class_rows(val)), "",
              "![learning curve](learning_curve.png)", "", "![precision-recall per label](pr_curves.png)", "",
              "Files: `metrics.json`, `history.csv`, `config.yaml`, `spec.json`, `model.safetensors`.", ""]
    (run / "report.md").write_text("\n".join(lines))


def confident_mistakes(items: list[Path] | list[str], probs: torch.Tensor, targets: torch.Tensor,
                       thresholds: list[float], classes: list[str], k: int = 12,
                       is_image: bool = True) -> list[hr.Mistake]:
    """The ``k`` validation items whose wrong label is the most confident (a false tag or a missed one); images are
    shown as thumbnails, texts as text (``is_image``)."""
    thr = torch.tensor(thresholds)[None]
    predicted = probs >= thr
    wrong = predicted != targets.bool()
    confidence = torch.where(predicted, probs, 1 - probs).masked_fill(~wrong, -1.0)
    worst, label = confidence.max(1)
    order = [int(i) for i in worst.argsort(descending=True) if worst[i] >= 0][:k]

    def names(row: torch.Tensor) -> str:
        return ", ".join(classes[int(j)] for j in row.nonzero().flatten()) or "(none)"

    return [hr.Mistake(str(items[i]), names(targets[i]), names(predicted[i]), float(worst[i]), is_image, index=i,
                       target=int(label[i])) for i in order]


def html_sections(run: Path, metrics: dict[str, Any], summary: dict[str, Any],
                  mistakes: list[hr.Mistake]) -> list[hr.Section]:
    """Summary, scores beside the baseline, phases, learning curve and PR curves, per-label table, mistakes."""
    val, noun = metrics["val"], summary.get("items", "images")
    base = val["baseline"]
    rows = [(label, f"{val[key]:.4f}", f"{base[key]:.4f}") for key, label in SCORES]
    if "calibration" in val:
        rows.append(("calibration error (ECE)", calibration_text(val["calibration"], "sigmoid"), ""))
    rows.append((noun, val["num_samples"], ""))
    test = metrics.get("test")
    if test:
        rows += [(f"test {label}", f"{test[key]:.4f}", f"{test['baseline'][key]:.4f}") for key, label in SCORES]
        rows.append((f"test {noun}", test["num_samples"], ""))
    note = ("F1, precision and recall at per-label thresholds tuned on validation (each label's best F1; 0.5 for a "
            "label without a validation positive). The baseline scores every item with each label's training "
            "frequency; at its best thresholds it predicts every label for every item.")
    summary_rows = [*summary.items(), ("training seconds", metrics.get("train_seconds", ""))]
    return [
        hr.summary_section(summary_rows),
        hr.metrics_section(rows, "baseline: training frequency", warnings=val.get("warnings", []), note=note),
        *hr.phases_section(metrics),
        hr.figures_section([(run / "learning_curve.png", "Loss and validation scores per epoch", "learning-curve"),
                            (run / "pr_curves.png", "Validation precision-recall per label", "pr-curves")],
                           "Learning curve and precision-recall curves"),
        hr.Section("Per-label metrics", hr.table(list(PER_CLASS), per_class_rows(val), "per-class"),
                   anchor="sec-per-class"),
        hr.mistakes_section(mistakes),
    ]
