"""Run outputs people read: history CSV, metrics JSON, learning-curve, confusion-matrix and ROC PNGs, report.md."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.table import Table  # noqa: E402

from headstart.progress import say, warn  # noqa: E402


def write_history(history: list[dict[str, Any]], path: Path) -> None:
    if not history:
        return
    fields = list(history[0])
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(history)


def write_json(data: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(data, indent=2))


def plot_learning_curve(history: list[dict[str, Any]], path: Path, metric: str,
                        scores: tuple[tuple[str, str], ...] = (("accuracy", "val accuracy"),
                                                               ("macro_f1", "val macro-F1"))) -> None:
    """Train/val loss and the validation ``scores`` (history key after ``val_``, legend) per epoch; phases marked."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "o-", label="val loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    for (key, label), style in zip(scores, ("o-", "s--", "^:")):
        ax_metric.plot(epochs, [h[f"val_{key}"] for h in history], style, label=label)
    ax_metric.set_xlabel("epoch")
    ax_metric.set_ylim(0, 1.02)
    ax_metric.legend(loc="lower right")
    for ax in (ax_loss, ax_metric):
        for prev, cur in zip(history, history[1:]):
            if prev["phase"] != cur["phase"]:
                ax.axvline(cur["epoch"] - 0.5, color="grey", linestyle=":")
                ax.text(cur["epoch"] - 0.45, ax.get_ylim()[1], cur["phase"], fontsize=8, va="top", color="grey")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Learning curve (selection metric: {metric})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion_matrix(matrix: list[list[int]], classes: list[str], path: Path, title: str) -> None:
    n = len(classes)
    size = min(4 + 0.45 * n, 18)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=45 if n > 3 else 0, ha="right" if n > 3 else "center")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = max((max(row) for row in matrix), default=0)
    if n <= 30:
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center", color="white" if v > peak / 2 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


ROC_CURVES = 10  # classes drawn with a legend; more are drawn thin, unnamed


def plot_roc(logits: Any, targets: Any, classes: list[str], path: Path, title: str, point: Any = None,
             positive: str | None = None) -> dict[str, float]:
    """ROC curves, one class against the rest, with the point of the model's own decisions on each (its recall
    against its false-positive rate; ``point``: at an operating point). Two classes: the ``positive`` one's
    curve alone (default: the rarer; the other's is the same curve). Returns the area under each curve drawn."""
    import torch
    from torchmetrics.functional.classification import multiclass_roc

    from headstart.tasks.classification.operating_point import decisions

    n = len(classes)
    probs = logits.detach().float().softmax(dim=1)
    pred = decisions(logits.detach(), point)[1]
    support = torch.bincount(targets, minlength=n)
    drawn = [c for c in range(n) if 0 < support[c] < len(targets)]
    if n == 2 and len(drawn) == 2:
        drawn = [classes.index(positive) if positive in classes else
                 int(support.argmin()) if support[0] != support[1] else 1]
    fig, ax = plt.subplots(figsize=(5.2, 5))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance (AUROC 0.5)")
    areas = {}
    if drawn:
        fpr, tpr, _ = multiclass_roc(probs, targets, num_classes=n, thresholds=None)
        named = len(drawn) <= ROC_CURVES
        for c in drawn:
            positive, chosen = targets == c, pred == c
            area = areas[classes[c]] = float(torch.trapezoid(tpr[c], fpr[c]))
            line, = ax.plot(fpr[c].numpy(), tpr[c].numpy(), lw=1.5 if named else 0.7, alpha=1 if named else 0.4,
                            label=f"{classes[c]} vs {classes[1 - c] if n == 2 else 'rest'}: AUROC {area:.3f}"
                            if named else None)
            ax.plot([float((chosen & ~positive).sum() / (~positive).sum())],
                    [float((chosen & positive).sum() / positive.sum())], "o", color=line.get_color(), markersize=5)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("false-positive rate (1 - specificity)")
    ax.set_ylabel("true-positive rate (recall, sensitivity)")
    ax.legend(loc="lower right", fontsize=8, title="dot: the model's decisions" + (
        f" ({point.describe(classes)})" if point is not None else ""), title_fontsize=7)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return areas


def print_metrics(report: dict[str, Any], title: str) -> None:
    """The score beside the majority-class baseline; warnings in bold."""
    base = report["baseline"]
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("model", justify="right")
    table.add_column(f"majority baseline ('{base['class']}')", justify="right")
    for row in score_rows(report):
        table.add_row(*row)
    say(table)
    per = Table(title="per class")
    for col in ("class", "precision", "recall", "F1", "support"):
        per.add_column(col, justify="right" if col != "class" else "left")
    for name, m in report["per_class"].items():
        per.add_row(name, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    say(per)
    for w in report["warnings"]:
        warn(w)


def score_rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """A classification report's scores as ``(metric, model, majority baseline)`` rows: the console's, report.md's
    and report.html's table (a report saved before a score was added leaves its row out)."""
    base = report["baseline"]
    rows = [(name, f"{report[key]:.4f}", f"{base[key]:.4f}" if key in base else "")
            for name, key in (("accuracy", "accuracy"), ("macro-F1", "macro_f1"),
                              ("balanced accuracy", "balanced_accuracy"), ("AUROC", "auroc"))
            if report.get(key) is not None]
    if "calibration" in report:
        rows.append(("calibration error (ECE)", calibration_text(report["calibration"]), ""))
    point = report.get("operating_point")
    if point:
        positive = point["positive"]
        rows.append(("decision", f"p({positive}) >= {point['threshold']:.4g} ({point['rule']} on validation)", ""))
        rows += [(name, rate_text(point[key]), "") for key, name in (
            ("recall", f"recall of {positive} (sensitivity)"), ("specificity", "specificity"),
            ("precision", f"precision of {positive}"))]
    return [*rows, ("samples", str(report["num_samples"]), "")]


def rate_text(rate: dict[str, Any]) -> str:
    """'0.951 [0.880-0.981] of 81': a rate, its Wilson 95 % interval and the items it is of."""
    if rate["value"] is None:
        return f"- (of {rate['of']})"
    low, high = rate["ci95"]
    return f"{rate['value']:.3f} [{low:.3f}-{high:.3f}] of {rate['of']}"


SELECTIVE_HEADERS = ("accuracy aimed at", "probability at least", "items kept", "their accuracy [95% interval]")


def selective_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """The 'acting on confident predictions only' table of a validation report (``calibration.selective``)."""
    return [(f"{r['target']:.0%}", "-" if r["threshold"] is None else f"{r['threshold']:.4g}",
             f"{r['kept']} ({r['coverage']:.0%})" if r["kept"] else "none",
             f"{r['accuracy']:.3f} [{r['ci95'][0]:.3f}-{r['ci95'][1]:.3f}]" if r["kept"] else "-")
            for r in report.get("selective") or []]


SELECTIVE_NOTE = ("If only the predictions made with at least this probability are acted on and the rest go to a "
                  "person, this share of the validation items is decided by the model, right this often. The "
                  "probability is each prediction row's 'probability'; on new data the accuracy varies by about the "
                  "interval, and a model that is not calibrated (see the calibration error) keeps fewer or worse.")


OPERATING_HEADERS = ("rule", "threshold", "recall", "specificity", "precision")


def operating_point_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """What each rule of ``operating_point.SHOWN`` gives on validation, as report.md and report.html list it."""
    found = report.get("operating_points") or {}
    return [(r["rule"] + ("" if r["met"] else " (not reached)"), "-" if r["threshold"] is None else f"{r['threshold']:.4g}",
             *(f"{r[k]:.3f}" if r[k] is not None else "-" for k in OPERATING_HEADERS[2:]))
            for r in found.get("rules", [])]


def operating_point_note(report: dict[str, Any], name: Any = str) -> str:
    """What the operating-points table says, in a sentence (``name``: how the class name is written)."""
    positive = name(report["operating_points"]["positive"])
    chosen = report.get("operating_point")
    return (f"The threshold on p({positive}) that decides {positive} (below it: the most probable other class), as "
            f"each rule chooses it on these validation items, and the rates of {positive} there. The model decides "
            f"at {chosen['rule'] if chosen else 'argmax'}; another "
            "rule is `train.operating_point=RULE` (`headstart train --operating-point 'recall>=0.95'`; "
            "`train.positive_class` names the class). Rates on a small validation split are rough: see the "
            "intervals of the decision's rates.")


def calibration_text(cal: dict[str, Any], activation: str = "softmax") -> str:
    """A report's calibration in a few words: '0.018 (T 0.62; softmax alone 0.071)' (multi-label: 'sigmoid alone')."""
    if "ece_uncalibrated" not in cal:
        return f"{cal['ece']:.3f}"
    return f"{cal['ece']:.3f} (T {cal['temperature']:.3g}; {activation} alone {cal['ece_uncalibrated']:.3f})"


def test_model(metrics: dict[str, Any]) -> str:
    """Which model the ``test`` metrics are of: the saved one, or (with --refit, when not scored again) the model
    chosen on validation before refit."""
    refit = metrics.get("refit")
    return "the model chosen before refit" if refit and "test_before_refit" not in refit else "the saved model"


def md_text(text: Any) -> str:
    """Text from the data (class names, file names) as inert Markdown: HTML escaped, table pipes escaped."""
    import html

    return html.escape(str(text), quote=False).replace("|", "\\|")


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], escape: bool = True) -> list[str]:
    """A Markdown table's lines; the cells written as inert text (``md_text``) unless ``escape`` is off (cells that
    hold no text from the data: rules, numbers)."""
    cell = md_text if escape else str
    return ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers),
            *["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]]


def write_report_md(run: Path, metrics: dict[str, Any], summary: dict[str, Any]) -> None:
    val = metrics["val"]
    lines = [
        f"# headstart run: {summary['model']} / {summary['strategy']}",
        "",
        f"Data: `{summary['data']}` ({md_text(summary['layout'])}); classes: "
        f"{', '.join(md_text(c) for c in summary['classes'])}.",
        f"Train {summary.get('items', 'images')}: {summary['num_train']}, validation {summary.get('items', 'images')}: "
        f"{summary['num_val']}, skipped {summary.get('skipped_what', 'files')}: {summary['num_skipped']}.",
        f"Training time: {metrics['train_seconds']:.1f} s on {summary['device']}.",
        "",
        "| metric | model | majority baseline |",
        "| --- | --- | --- |",
        *[f"| {name} | {model} | {baseline} |" for name, model, baseline in score_rows(val)],
        "",
    ]
    test = metrics.get("test")
    if test:
        lines += [f"Test ({test['num_samples']} {summary.get('items', 'images')}, {test_model(metrics)}): "
                  f"accuracy {test['accuracy']:.4f}, macro-F1 {test['macro_f1']:.4f} (majority baseline "
                  f"{test['baseline']['accuracy']:.4f}, {test['baseline']['macro_f1']:.4f})"
                  + (f", AUROC {test['auroc']:.4f}" if test.get("auroc") is not None else "")
                  + (f"; calibration error {calibration_text(test['calibration'])}" if "calibration" in test else "")
                  + ".", ""]
    cal = val.get("calibration")
    if cal:
        lines += ["## Calibration", "",
                  f"Predicted probabilities are `softmax(logits / {cal['temperature']:g})`: temperature "
                  f"{md_text(cal.get('temperature_fit', ''))}. The expected calibration error (ECE) is the mean gap "
                  "between confidence and accuracy (0: a prediction made with probability 0.9 is right 90% of the "
                  "time)" + (f"; on validation, where T was fitted, it is {cal['ece']:.3f} (softmax alone "
                             f"{cal['ece_uncalibrated']:.3f})" if "ece_uncalibrated" in cal else "")
                  + (f"; on the test split, which T never saw, {test['calibration']['ece']:.3f}"
                     + (f" (softmax alone {test['calibration']['ece_uncalibrated']:.3f})"
                        if "ece_uncalibrated" in test["calibration"] else "")
                     if test and "calibration" in test else "") + ".", "",
                  "![calibration](calibration.png)", ""]
    if val.get("selective"):
        lines += ["## Acting on confident predictions only", "", SELECTIVE_NOTE, "",
                  *md_table(SELECTIVE_HEADERS, selective_rows(val), escape=False), ""]
        if test and test.get("selective"):
            lines += [f"On the test split ({test_model(metrics)}), at validation's thresholds:", "",
                      *md_table(SELECTIVE_HEADERS, selective_rows(test), escape=False), ""]
    if val.get("operating_points"):
        lines += ["## Operating points", "", operating_point_note(val, md_text), "",
                  *md_table(OPERATING_HEADERS, operating_point_rows(val), escape=False), ""]
    if val["warnings"]:
        lines += ["## Warnings", "", *[f"- **{md_text(w)}**" for w in val["warnings"]], ""]
    doubts = metrics.get("label_doubts")
    if doubts and doubts["count"]:
        lines += ["## Training labels to check", "",
                  f"{doubts['count']} of the {doubts['of']} training {summary.get('items', 'images')} are predicted as "
                  "another class, with confidence, by the cross-validation heads that did not train on them:", "",
                  *[f"- `{md_text(d['item'])}`: given {md_text(d['label'])}, predicted {md_text(d['predicted'])} "
                    f"({d['p_predicted']:.0%})" for d in doubts["items"][:12]], ""]
    found = metrics.get("familiarity")
    if found:
        lines += ["## Unfamiliar inputs", "",
                  f"Predictions say `unfamiliar` for inputs whose features lie farther from the k-th nearest (k = "
                  f"{found['k']}) of {found['kept_training_items']} kept training {summary.get('items', 'images')} "
                  f"than {found['validation_within']:.0%} of the validation items do (cosine distance over "
                  f"{found['cut']:.3f}): their labels are guesses.", ""]
    lines += [
        "| class | precision | recall | F1 | support |",
        "| --- | --- | --- | --- | --- |",
        *[f"| {md_text(c)} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
          for c, m in val["per_class"].items()],
        "",
        "![learning curve](learning_curve.png)",
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
        "Files: `metrics.json`, `history.csv`, `config.yaml`, `spec.json`, `model.safetensors`"
        + (", `skipped.txt`" if summary["num_skipped"] else "") + ".",
        "",
    ]
    (run / "report.md").write_text("\n".join(lines))
