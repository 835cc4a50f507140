"""Self-contained HTML reports (``report.html``) for runs and comparisons.

One file that opens from disk with no network: inline CSS, every figure and thumbnail embedded as a
base64 PNG, and a Content-Security-Policy that forbids loading anything from elsewhere. A small
inline script marks each figure once the browser has decoded it (``data-rendered``), which lets a
headless browser check that the report really shows its figures.
"""

from __future__ import annotations

import base64
import html
import io
import json
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import yaml

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;
color:#1d2330;line-height:1.45;padding:0 16px}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;border-bottom:1px solid #dde;padding-bottom:4px;margin-top:1.6em}
table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #d5d9e2;padding:4px 10px;text-align:right}
th{background:#f1f3f8}td.l,th.l{text-align:left}
.warn{background:#fff4d6;border-left:4px solid #e0a800;padding:6px 10px;margin:6px 0}
figure{display:inline-block;margin:8px 12px 8px 0;vertical-align:top}figure img{max-width:100%;border:1px solid #e3e6ee}
figcaption{font-size:.85em;color:#556}
.grid{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid #e3e6ee;padding:6px;width:150px;font-size:.8em}
.card img{width:140px;height:140px;object-fit:contain;background:#fafafa}
pre{background:#f6f8fa;padding:10px;overflow:auto;font-size:.82em}.muted{color:#667}
.best{background:#e8f6ea}
"""

SCRIPT = """
window.addEventListener('load', function () {
  var figs = document.querySelectorAll('img[data-figure]'); var ok = 0;
  figs.forEach(function (img) { if (img.complete && img.naturalWidth > 0) { img.dataset.rendered = 'yes'; ok++; } });
  var el = document.getElementById('render-check');
  if (el) { el.textContent = 'figures rendered: ' + ok + ' of ' + figs.length; }
});
"""


@dataclass
class Mistake:
    """A validation item the model got wrong, with its confidence in the wrong class."""

    item: str  # image path or text
    true: str
    predicted: str
    confidence: float
    is_image: bool = True


def confident_mistakes(items: Sequence[str | Path], logits: torch.Tensor, labels: torch.Tensor,
                       classes: list[str], k: int = 12, is_image: bool = True) -> list[Mistake]:
    """The ``k`` wrong predictions with the highest probability on the predicted class."""
    if len(items) == 0 or logits.numel() == 0:
        return []
    probs = logits.float().softmax(dim=1)
    conf, pred = probs.max(dim=1)
    wrong = (pred != labels).nonzero().flatten().tolist()
    wrong.sort(key=lambda i: -float(conf[i]))
    return [Mistake(str(items[i]), classes[int(labels[i])], classes[int(pred[i])], float(conf[i]), is_image)
            for i in wrong[:k]]


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def thumbnail_uri(path: str | Path, size: int = 140) -> str | None:
    """A PNG thumbnail of an image file as a data URI; None when the file cannot be read."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image).convert("RGB")
            image.thumbnail((size, size))
            buf = io.BytesIO()
            image.save(buf, format="PNG")
    except Exception:  # noqa: BLE001 - a report never fails on one unreadable thumbnail
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def environment(device: str | None = None, seeds: dict[str, Any] | None = None,
                data_hash: str | None = None) -> dict[str, Any]:
    """Versions, platform, device, seeds and the data hash: what is needed to reproduce a number."""
    versions = {"python": platform.python_version()}
    for pkg in ("headstart", "torch", "torchvision", "timm", "lightning-fabric", "torchmetrics", "transformers"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    env: dict[str, Any] = {"versions": versions, "platform": platform.platform(), "executable": sys.executable,
                           "cpu_threads": torch.get_num_threads()}
    if device is not None:
        env["device"] = device
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    if seeds:
        env["seeds"] = seeds
    if data_hash:
        env["data_hash"] = data_hash
    return env


# ------------------------------------------------------------------------------------- building blocks
def esc(value: Any) -> str:
    return html.escape(str(value))


def figure(path: Path, caption: str, fig_id: str) -> str:
    """An embedded PNG figure; an empty string when the file is missing."""
    if not Path(path).is_file():
        return ""
    return (f'<figure id="{esc(fig_id)}"><img data-figure="{esc(fig_id)}" alt="{esc(caption)}" '
            f'src="{png_data_uri(path)}"><figcaption>{esc(caption)}</figcaption></figure>')


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], table_id: str = "", left: int = 1,
          highlight: int | None = None) -> str:
    """An HTML table; the first ``left`` columns are left-aligned."""
    head = "".join(f'<th class="{"l" if i < left else ""}">{esc(h)}</th>' for i, h in enumerate(headers))
    body = []
    for r, row in enumerate(rows):
        cells = "".join(f'<td class="{"l" if i < left else ""}">{esc(v)}</td>' for i, v in enumerate(row))
        body.append(f'<tr class="{"best" if r == highlight else ""}">{cells}</tr>')
    attr = f' id="{esc(table_id)}"' if table_id else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def mistakes_section(mistakes: Sequence[Mistake]) -> str:
    if not mistakes:
        return "<h2>Most confident mistakes</h2><p>No validation item was misclassified.</p>"
    cards = []
    for m in mistakes:
        if m.is_image:
            uri = thumbnail_uri(m.item)
            body = (f'<img data-thumb="1" alt="{esc(Path(m.item).name)}" src="{uri}">' if uri
                    else f"<p class=muted>(unreadable: {esc(m.item)})</p>")
            name = Path(m.item).name
        else:
            body = f"<p>{esc(m.item[:300])}</p>"
            name = ""
        cards.append(f'<div class="card mistake">{body}<div><b>{esc(m.predicted)}</b> '
                     f'({m.confidence:.0%})<br>true: {esc(m.true)}<br><span class=muted>{esc(name)}</span></div></div>')
    return (f"<h2>Most confident mistakes</h2><p>{len(mistakes)} validation item(s) the model got wrong with "
            f"the highest confidence: predicted class (confidence), true class.</p>"
            f'<div class="grid" id="mistakes">{"".join(cards)}</div>')


def environment_section(env: dict[str, Any], config: dict[str, Any] | None) -> str:
    rows = [(k, json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in env.items() if k != "versions"]
    parts = ["<h2>Environment</h2>",
             table(["package", "version"], sorted(env.get("versions", {}).items()), "versions"),
             table(["what", "value"], rows, "environment")]
    if config is not None:
        parts += ["<h2>Config</h2>", f'<pre id="config">{esc(yaml.safe_dump(config, sort_keys=False))}</pre>']
    return "".join(parts)


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f'<h1>{esc(title)}</h1><p id="render-check" class="muted">figures not checked (scripts off)</p>'
            f"{body}<script>{SCRIPT}</script></body></html>")


# ------------------------------------------------------------------------------------------- reports
def write_run_report(run: Path, metrics: dict[str, Any], summary: dict[str, Any],
                     config: dict[str, Any] | None = None, mistakes: Sequence[Mistake] = (),
                     env: dict[str, Any] | None = None) -> Path:
    """``run/report.html``: summary, learning curve, confusion matrix, per-class metrics, mistakes, env."""
    val = metrics["val"]
    base = val["baseline"]
    summary_rows = [(k.replace("_", " "), ", ".join(map(str, v)) if isinstance(v, list) else v)
                    for k, v in summary.items()]
    summary_rows.append(("training seconds", metrics.get("train_seconds", "")))
    if "cache" in metrics:
        summary_rows.append(("feature cache", f"{metrics['cache']['items_served']} served, "
                                              f"{metrics['cache']['items_computed']} computed"))
    score_rows = [("accuracy", f"{val['accuracy']:.4f}", f"{base['accuracy']:.4f}"),
                  ("macro-F1", f"{val['macro_f1']:.4f}", f"{base['macro_f1']:.4f}"),
                  ("balanced accuracy", f"{val.get('balanced_accuracy', float('nan')):.4f}", ""),
                  ("samples", val["num_samples"], "")]
    per_class = [(c, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", m["support"])
                 for c, m in val["per_class"].items()]
    warnings = "".join(f'<div class="warn">{esc(w)}</div>' for w in val.get("warnings", []))
    body = [
        "<h2>Summary</h2>", table(["what", "value"], summary_rows, "summary"),
        "<h2>Validation metrics</h2>",
        table(["metric", "model", f"majority baseline ('{base['class']}')"], score_rows, "metrics"), warnings,
        "<h2>Learning curve and confusion matrix</h2>",
        figure(run / "learning_curve.png", "Loss and validation scores per epoch", "learning-curve"),
        figure(run / "confusion_matrix.png", "Validation confusion matrix", "confusion-matrix"),
        "<h2>Per-class metrics</h2>",
        table(["class", "precision", "recall", "F1", "support"], per_class, "per-class"),
        mistakes_section(mistakes),
        environment_section(env or environment(metrics.get("device")), config),
    ]
    title = f"headstart run: {summary.get('model', '')} / {summary.get('strategy', '')}"
    path = run / "report.html"
    path.write_text(page(title, "".join(body)), encoding="utf-8")
    return path


def write_compare_report(out: Path, result: dict[str, Any]) -> Path:
    """``out/report.html`` of a comparison: the table with CIs, the plots, the best cell's details."""
    rows, best_row = [], None
    best = result.get("best")
    for i, s in enumerate(result["summary"]):
        acc, f1 = s["accuracy"], s["macro_f1"]
        rows.append((s["model"], s["strategy"], s["shots"], s["n"], fmt_ci(acc), fmt_ci(f1),
                     f"{s['wall_seconds']['mean']:.1f}", f"{s['images_per_second']['mean']:.1f}"))
        if best and (s["model"], s["strategy"], s["shots"]) == (best["model"], best["strategy"], best["shots"]):
            best_row = i
    budget = result.get("scratch_budget")
    notes = [f"<p>{result['seeds']} seeded stratified split(s) of <code>{esc(result['data'])}</code> "
             f"({result['num_items']} items, {len(result['classes'])} classes, validation fraction "
             f"{result['val_fraction']}); mean and {result['confidence']:.0%} t-interval over seeds.</p>"]
    if budget:
        notes.append(f"<p id=scratch-budget>Baseline <b>scratch</b>: the same network from random initial weights, "
                     f"strategy <code>full</code> for {budget['epochs']} epoch(s): {esc(budget['rule'])}.</p>")
    if best:
        notes.append(f"<p id=verdict><b>Best:</b> {esc(best['model'])} / {esc(best['strategy'])} "
                     f"(shots {esc(best['shots'])}), accuracy {fmt_ci(best['accuracy'])}. {esc(result.get('verdict', ''))}</p>")
    out = Path(out)
    body = ["<h2>Summary</h2>", *notes,
            table(["model", "strategy", "shots", "seeds", "accuracy (95% CI)", "macro-F1 (95% CI)", "wall s",
                   "images/s"], rows, "compare", left=3, highlight=best_row),
            "<h2>Figures</h2>",
            figure(out / "scores.png", "Accuracy and macro-F1 per strategy, mean with 95% CI over seeds", "scores"),
            figure(out / "shots.png", "Score against training examples per class (learning curve)", "shots"),
            figure(out / "time.png", "Score against wall time per cell", "time")]
    if best and best.get("run"):
        run = out / best["run"]
        metrics_path = run / "metrics.json"
        if metrics_path.is_file():
            val = json.loads(metrics_path.read_text())["val"]
            per_class = [(c, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", m["support"])
                         for c, m in val["per_class"].items()]
            body += [f"<h2>Best cell, seed {best.get('seed', 0)}: {esc(best['run'])}</h2>",
                     figure(run / "learning_curve.png", "Learning curve of the best cell", "best-learning-curve"),
                     figure(run / "confusion_matrix.png", "Confusion matrix of the best cell", "best-confusion"),
                     table(["class", "precision", "recall", "F1", "support"], per_class, "best-per-class")]
    cells = [(c["model"], c["strategy"], c["shots"], c["seed"], f"{c['accuracy']:.4f}", f"{c['macro_f1']:.4f}",
              f"{c['wall_seconds']:.1f}", c["run"]) for c in result["cells"]]
    body += ["<h2>Every cell</h2><p class=muted>Each run folder holds its own report.html.</p>",
             table(["model", "strategy", "shots", "seed", "accuracy", "macro-F1", "wall s", "run folder"], cells,
                   "cells", left=4),
             environment_section(result.get("environment", environment()), result.get("config"))]
    path = out / "report.html"
    path.write_text(page("headstart compare: " + ", ".join(result["models"]), "".join(body)), encoding="utf-8")
    return path


def fmt_ci(stat: dict[str, Any]) -> str:
    """``0.912 ± 0.031`` (mean and CI half-width), or the mean alone for one seed."""
    if stat.get("half_width") is None:
        return f"{stat['mean']:.3f}"
    return f"{stat['mean']:.3f} ± {stat['half_width']:.3f}"


def write_classifier_report(run: Path, metrics: dict[str, Any], summary: dict[str, Any], cfg: Any,
                            classes: list[str], predictions: tuple | None = None, is_image: bool = True) -> Path:
    """``report.html`` of a classification run: mistakes from ``predictions`` = (items, logits, labels)."""
    from headstart.runs import META

    mistakes = confident_mistakes(*predictions, classes, is_image=is_image) if predictions else []
    meta_path = Path(run) / META
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    seeds = {"train.seed": cfg.train.seed, "data.augment_seed": cfg.data.augment_seed}
    env = environment(metrics.get("device"), seeds, meta.get("data_fingerprint"))
    return write_run_report(Path(run), metrics, summary, cfg.to_dict(), mistakes, env)
