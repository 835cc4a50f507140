"""Self-contained HTML reports (``report.html``) for runs and comparisons, rendered with jinja2.

One file that opens from disk with no network: inline CSS, every figure and thumbnail embedded as a
base64 PNG, and a Content-Security-Policy that forbids loading anything from elsewhere. A small
inline script marks each figure once the browser has decoded it (``data-rendered``), which lets a
headless browser check that the report really shows its figures.

Every report goes through :func:`write_report`: a title, a list of :class:`Section` (built by the
helpers below or by a task, e.g. ``headstart.tasks.detection.report.html_sections``), the
environment and the config. The templates live in ``templates/`` (package data) and are rendered
with autoescaping on: plain strings are always escaped, only :class:`markupsafe.Markup` (what the
helpers return) is inserted as HTML.
"""

from __future__ import annotations

import base64
import io
import json
import platform
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import jinja2
import torch
import yaml
from markupsafe import Markup, escape

from headstart.core.report import outputs
from headstart.tasks.classification import operating_point
from headstart.tasks.image.stored import payload

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'")
TEMPLATES = Path(__file__).with_name("templates")


@lru_cache(maxsize=1)
def templates() -> jinja2.Environment:
    """The jinja2 environment of the report templates (autoescape on, undefined names are errors)."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=False)


def render(template: str, **context: Any) -> Markup:
    """One template rendered to (safe) HTML."""
    return Markup(templates().get_template(template).render(**context))


@dataclass
class Mistake:
    """An item a gallery shows: a validation item the model got wrong (or right: ``confident_hits``), a training item
    whose label is doubted; its given and predicted class, the confidence in the prediction."""

    item: str  # image path or text
    true: str
    predicted: str
    confidence: float
    is_image: bool = True
    data: bytes | None = None  # an image in memory (a table of pixels' row), shown from these bytes
    index: int = -1  # its position in the items it was found among
    target: int = -1  # the class its explanation is for (-1: the predicted one; multi-label: the label it got wrong)
    heatmap: bytes | None = None  # a PNG of where the model looked for the predicted class (image runs)
    evidence: list[tuple[str, float]] = field(default_factory=list)  # the words the prediction rests on (texts)


@dataclass
class Section:
    """One part of a report: a ``<section>`` with an ``<h2>`` title and a body.

    The body is either ``html`` (a :class:`Markup` is inserted as is, a plain ``str`` is escaped as text)
    or, when ``template`` is set, that template (a file of ``templates/``) rendered with ``context``.
    ``anchor`` is the section's id (the report's table of contents links to it); keep it distinct from
    the ids of tables and figures inside.
    """

    title: str
    html: str | Markup = ""
    template: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    anchor: str = ""

    def content(self) -> Markup:
        if self.template is not None:
            return render(self.template, **self.context)
        return escape(self.html)


def confident_mistakes(items: Sequence[str | Path | tuple[str, bytes]], logits: torch.Tensor, labels: torch.Tensor,
                       classes: list[str], k: int = 12, is_image: bool = True, point: Any = None) -> list[Mistake]:
    """The ``k`` wrong predictions with the highest probability on the predicted class (an item: a path, a text, or
    an image in memory as ``(name, bytes)``; ``point``: decisions at an operating point)."""
    if len(items) == 0 or logits.numel() == 0:
        return []
    conf, pred = operating_point.decisions(logits, point)
    wrong = (pred != labels).nonzero().flatten().tolist()
    wrong.sort(key=lambda i: -float(conf[i]))
    return _gallery(items, wrong[:k], labels, pred, conf, classes, is_image)


def confident_hits(items: Sequence[str | Path | tuple[str, bytes]], logits: torch.Tensor, labels: torch.Tensor,
                   classes: list[str], per_class: int = 2, k: int = 12, is_image: bool = True,
                   point: Any = None) -> list[Mistake]:
    """The ``per_class`` right predictions of highest confidence of each class (at most ``k``, classes in turn): what
    the model rests on where it is surest, where a shortcut (a ruler, a watermark, a phone number) shows."""
    if len(items) == 0 or logits.numel() == 0:
        return []
    conf, pred = operating_point.decisions(logits, point)
    ranked = [sorted(((pred == labels) & (labels == c)).nonzero().flatten().tolist(), key=lambda i: -float(conf[i]))
              for c in range(len(classes))]
    chosen = [r[j] for j in range(per_class) for r in ranked if j < len(r)][:k]
    return _gallery(items, chosen, labels, pred, conf, classes, is_image)


def _gallery(items: Sequence[str | Path | tuple[str, bytes]], chosen: list[int], labels: torch.Tensor,
             pred: torch.Tensor, conf: torch.Tensor, classes: list[str], is_image: bool) -> list[Mistake]:
    """The chosen items as a gallery shows them: given and predicted class, confidence, position."""
    shown = []
    for i in chosen:
        name, data = card_item(items[i])
        shown.append(Mistake(name, classes[int(labels[i])], classes[int(pred[i])], float(conf[i]), is_image, data,
                             index=i))
    return shown


def explained_class(shown: Mistake, classes: list[str]) -> int:
    """The class a shown item's explanation is for: its ``target``, else the class predicted."""
    return shown.target if shown.target >= 0 else classes.index(shown.predicted)


def card_item(item: str | Path | tuple[str, Any]) -> tuple[str, bytes | None]:
    """(name, image bytes or None) of a report's item: a path, a text, or an image in memory as ``(name, stored)``."""
    return (item[0], payload(item[1])) if isinstance(item, tuple) else (str(item), None)


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


THUMBNAIL = 140  # pixels a side of a gallery's images (report.css: .card img)


def thumbnail_uri(path: str | Path | bytes | Any, size: int = THUMBNAIL) -> str | None:
    """A PNG thumbnail of an image file (or its bytes, or where a dataset stores them: ``image.stored``) as a data
    URI (decoded as training decodes it: DICOM, 16-bit and low-range scans windowed so that they are seen); None when
    the file cannot be read."""
    from headstart.tasks.image.decode import open_image, to_rgb
    from headstart.tasks.image.stored import payload

    try:
        image = to_rgb(open_image(Path(path) if isinstance(path, (str, Path)) else payload(path)), "auto")
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


_environment = environment  # write_report's parameter of the same name shadows it


def run_environment(run: Path, device: str | None, seeds: dict[str, Any] | None) -> dict[str, Any]:
    """:func:`environment` of a run folder: its data fingerprint is read from the run's metadata."""
    from headstart.core.runfolder import META

    meta_path = Path(run) / META
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return environment(device, seeds, meta.get("data_fingerprint"))


def fmt_ci(stat: dict[str, Any]) -> str:
    """``0.912 ± 0.031`` (mean and CI half-width), or the mean alone for one seed."""
    if stat.get("half_width") is None:
        return f"{stat['mean']:.3f}"
    return f"{stat['mean']:.3f} ± {stat['half_width']:.3f}"


# ------------------------------------------------------------------------------------- building blocks
def esc(value: Any) -> str:
    """``value`` escaped exactly as the templates escape it."""
    return str(escape(str(value)))


def figure(path: Path, caption: str, fig_id: str) -> Markup:
    """An embedded PNG figure; empty when the file is missing."""
    if not Path(path).is_file():
        return Markup("")
    return render("figure.html.j2", fig_id=fig_id, caption=caption, uri=png_data_uri(path))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], table_id: str = "", left: int = 1,
          highlight: int | None = None) -> Markup:
    """An HTML table; the first ``left`` columns are left-aligned, row ``highlight`` is marked best."""
    return render("table.html.j2", headers=headers, rows=rows, table_id=table_id, left=left, highlight=highlight)


def noted_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], table_id: str, note: str,
                highlight: int | None = None) -> Markup:
    """``table`` followed by a muted sentence saying how to read it."""
    return table(list(headers), rows, table_id, highlight=highlight) + Markup('<p class="muted">') + note + \
        Markup("</p>")


def warnings_html(warnings: Sequence[str], empty: str = "") -> Markup:
    """One highlighted box per warning; ``empty`` (muted) when there is none."""
    if not warnings and not empty:
        return Markup("")
    return render("warnings.html.j2", warnings=list(warnings), empty=empty)


# ---------------------------------------------------------------------------------- section builders
def summary_section(rows: Sequence[tuple[str, Any]] | dict[str, Any], title: str = "Summary",
                    table_id: str = "summary", anchor: str = "sec-summary") -> Section:
    """A two-column what/value table; list values are joined with commas, underscores become spaces."""
    items = rows.items() if isinstance(rows, dict) else rows
    shown = [(str(k).replace("_", " "), ", ".join(map(str, v)) if isinstance(v, list) else v) for k, v in items]
    return Section(title, table(["what", "value"], shown, table_id), anchor=anchor)


def metrics_section(rows: Sequence[tuple[str, Any, Any]], baseline: str, title: str = "Validation metrics",
                    table_id: str = "metrics", anchor: str = "sec-metrics", warnings: Sequence[str] = (),
                    note: str = "") -> Section:
    """A metric / model / ``baseline`` table (what the model must beat), then a note and any warnings."""
    body = table(["metric", "model", baseline], rows, table_id)
    if note:
        body += Markup('<p class="muted">') + note + Markup("</p>")
    return Section(title, body + warnings_html(warnings), anchor=anchor)


def figures_section(figures: Sequence[tuple[Path, str, str]], title: str = "Figures",
                    anchor: str = "sec-figures") -> Section:
    """Embedded PNGs, each ``(path, caption, figure id)``; missing files are left out."""
    return Section(title, Markup("").join(figure(p, c, i) for p, c, i in figures), anchor=anchor)


def per_class_section(per_class: dict[str, dict[str, Any]], title: str = "Per-class metrics",
                      table_id: str = "per-class", anchor: str = "sec-per-class") -> Section:
    """Precision, recall, F1 and support per class (a classification report's ``per_class``)."""
    return Section(title, table(["class", "precision", "recall", "F1", "support"], _per_class_rows(per_class),
                                table_id), anchor=anchor)


def _per_class_rows(per_class: dict[str, dict[str, Any]]) -> list[tuple]:
    return [(c, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", m["support"])
            for c, m in per_class.items()]


def selective_section(val: dict[str, Any], test: dict[str, Any] | None = None, model: str = "") -> list[Section]:
    """How many validation items the model decides alone at each accuracy aimed at (``calibration.selective``), and
    how the test split fares at those thresholds."""
    rows = outputs.selective_rows(val)
    if not rows:
        return []
    body = noted_table(outputs.SELECTIVE_HEADERS, rows, "selective", outputs.SELECTIVE_NOTE)
    if test and test.get("selective"):
        body += Markup("<p>") + f"On the test split ({model}), at validation's thresholds:" + Markup("</p>") + table(
            list(outputs.SELECTIVE_HEADERS), outputs.selective_rows(test), "selective-test")
    return [Section("Acting on confident predictions only", body, anchor="sec-selective")]


def operating_points_section(val: dict[str, Any]) -> list[Section]:
    """The threshold and rates each rule of ``operating_point.SHOWN`` gives on validation (the one the
    model decides at highlighted); none for other runs."""
    rows = outputs.operating_point_rows(val)
    if not rows:
        return []
    chosen = (val.get("operating_point") or {}).get("rule", "argmax")
    at = next((i for i, r in enumerate(val["operating_points"]["rules"]) if r["rule"] == chosen), None)
    return [Section("Operating points", noted_table(outputs.OPERATING_HEADERS, rows, "operating-points",
                                                    outputs.operating_point_note(val), at),
                    anchor="sec-operating-points")]


def phases_section(metrics: dict[str, Any]) -> list[Section]:
    """What each training phase tried (``auto``'s candidates): epochs, best validation score, seconds, kept or not."""
    rows, metric = metrics.get("phases") or [], metrics.get("selection_metric", "accuracy")
    if len(rows) < 2 and not metrics.get("refit"):
        return []
    key = f"best_val_{metric}"
    shown = [(r["phase"], r["epochs"], r.get("views", ""), "" if r[key] is None else f"{r[key]:.4f}",
              r.get("seconds", r["epoch_seconds"]), "yes" if r["kept"] else "", r["note"]) for r in rows]
    kept = next((i for i, r in enumerate(rows) if r["kept"]), None)
    body = table(["phase", "epochs", "cached views", f"best val {metric}", "seconds", "kept", "note"], shown, "phases",
                 highlight=kept)
    why = (metrics.get("chosen") or {}).get("why", "")
    budget = metrics.get("time_budget")
    note = f"Final weights: {why}." + (f" Time budget: {budget:.0f} s." if budget else "")
    refit = metrics.get("refit")
    if refit:
        recipe = ", ".join(f"{r['phase']} {r['epochs']} epoch(s)" for r in refit["recipe"])
        note += (f" Saved model: refit on train + validation ({refit['num_train']} items: {recipe}); the validation "
                 "numbers of this report are of the model chosen before refit, on items it did not train on.")
    return [Section("Phases tried", body + Markup('<p class="muted">') + note + Markup("</p>"), anchor="sec-phases")]


def mistakes_section(mistakes: Sequence[Mistake], anchor: str = "sec-mistakes") -> Section:
    """A gallery of the most confident mistakes: thumbnail (or text), predicted class (confidence), true class."""
    return Section("Most confident mistakes", template="mistakes.html.j2", context={"cards": _cards(mistakes)},
                   anchor=anchor)


def hits_section(hits: Sequence[Mistake]) -> Section:
    """A gallery of the surest right predictions of each class, with what they rest on (heat maps, marked words)."""
    return Section("What the model rests on when it is right", template="hits.html.j2", context={"cards": _cards(hits)},
                   anchor="sec-hits")


def doubts_section(doubts: Sequence[Mistake], counted: dict[str, Any]) -> Section:
    """A gallery of the training items whose label the cross-validation heads doubt (``counted``: metrics.json's
    ``label_doubts``, with how many there are of how many)."""
    return Section("Training labels to check", template="doubts.html.j2",
                   context={"cards": _cards(doubts), "count": counted["count"], "of": counted["of"]},
                   anchor="sec-doubts")


TEXT_SHOWN = 300  # characters of a text a gallery shows


def _marked(text: str, evidence: list[tuple[str, float]]) -> Markup:
    """``text`` (escaped) with the words of ``evidence`` in ``<mark>``, their weight as the title."""
    weights = dict(reversed(evidence))  # a word listed twice: its largest weight
    parts = []
    for piece in re.split(r"(\s+)", text):
        parts.append(Markup('<mark title="{:.2f}">{}</mark>').format(weights[piece], piece) if piece in weights
                     else escape(piece))
    return Markup("").join(parts)


def _cards(mistakes: Sequence[Mistake]) -> list[dict[str, Any]]:
    """What a gallery shows of each item: its thumbnail (or text), the predicted and the given class."""
    cards = []
    for m in mistakes:
        card = {"is_image": m.is_image, "predicted": m.predicted, "true": m.true, "percent": f"{m.confidence:.0%}",
                "item": m.item, "name": Path(m.item).name if m.is_image else "", "uri": None, "text": "",
                "heat_uri": None if m.heatmap is None else "data:image/png;base64," + base64.b64encode(m.heatmap).decode(),
                "weighed": bool(m.evidence)}
        if m.is_image:
            card["uri"] = thumbnail_uri(m.item if m.data is None else m.data)
        else:
            card["text"] = _marked(m.item[:TEXT_SHOWN], m.evidence)
        cards.append(card)
    return cards


def environment_sections(env: dict[str, Any], config: dict[str, Any] | None) -> list[Section]:
    """Versions, platform, device, seeds and data hash; the config as YAML when given."""
    rows = [(k, json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in env.items() if k != "versions"]
    body = (table(["package", "version"], sorted(env.get("versions", {}).items()), "versions")
            + table(["what", "value"], rows, "environment"))
    sections = [Section("Environment", body, anchor="sec-environment")]
    if config is not None:
        sections.append(Section("Config", template="config.html.j2",
                                context={"text": yaml.safe_dump(config, sort_keys=False)}, anchor="sec-config"))
    return sections


# --------------------------------------------------------------------------------------- the writer
def render_report(title: str, sections: Sequence[Section], environment: dict[str, Any] | None = None,
                  config: dict[str, Any] | None = None) -> str:
    """The whole page: ``sections``, then the environment (collected now when None) and the config."""
    env = environment if environment is not None else _environment()
    parts = [*sections, *environment_sections(env, config)]
    rendered = [{"title": s.title, "anchor": s.anchor, "content": s.content()} for s in parts]
    return templates().get_template("page.html.j2").render(title=title, csp=Markup(CSP), sections=rendered)


def write_report(path: Path, title: str, sections: Sequence[Section], environment: dict[str, Any] | None = None,
                 config: dict[str, Any] | None = None) -> Path:
    """Write one self-contained report to ``path`` (the file); every report of headstart goes through here."""
    path = Path(path)
    path.write_text(render_report(title, sections, environment, config), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------- reports
def classification_sections(run: Path, metrics: dict[str, Any], summary: dict[str, Any],
                            mistakes: Sequence[Mistake] = (), hits: Sequence[Mistake] = ()) -> list[Section]:
    """Summary, validation metrics against the majority baseline, figures, per-class metrics, mistakes, and the
    surest right predictions when they show what the model rests on (``hits``)."""
    val = metrics["val"]
    base = val["baseline"]
    summary_rows = list(summary.items())
    summary_rows.append(("training seconds", metrics.get("train_seconds", "")))
    if "cache" in metrics:
        summary_rows.append(("feature cache", f"{metrics['cache']['items_served']} served, "
                                              f"{metrics['cache']['items_computed']} computed"))
    test = metrics.get("test")
    tested = [metrics_section(outputs.score_rows(test), f"majority baseline ('{test['baseline']['class']}')",
                              f"Test metrics ({outputs.test_model(metrics)})", "test-metrics", "sec-test",
                              test.get("warnings", []))] if test else []
    return [
        summary_section(summary_rows),
        metrics_section(outputs.score_rows(val), f"majority baseline ('{base['class']}')", warnings=val.get("warnings", [])),
        *tested,
        *phases_section(metrics),
        figures_section([(run / "learning_curve.png", "Loss and validation scores per epoch", "learning-curve"),
                         (run / "confusion_matrix.png", "Validation confusion matrix", "confusion-matrix"),
                         (run / "calibration.png", "Validation calibration: accuracy against confidence, before and "
                          "after the temperature", "calibration"),
                         (run / "roc.png", "Validation ROC: recall against false-positive rate, one class against the "
                          "rest", "roc")],
                        "Learning curve, confusion matrix, calibration and ROC"),
        per_class_section(val["per_class"]),
        *operating_points_section(val),
        *selective_section(val, test, outputs.test_model(metrics) if test else ""),
        mistakes_section(mistakes),
        *([hits_section(hits)] if hits else []),
    ]


def write_run_report(run: Path, metrics: dict[str, Any], summary: dict[str, Any],
                     config: dict[str, Any] | None = None, mistakes: Sequence[Mistake] = (),
                     env: dict[str, Any] | None = None, doubts: Sequence[Mistake] = (),
                     hits: Sequence[Mistake] = ()) -> Path:
    """``run/report.html``: summary, learning curve, confusion matrix, per-class metrics, mistakes, the surest right
    predictions with what they rest on, doubted training labels (when the head was cross-validated), env."""
    run = Path(run)
    title = f"headstart run: {summary.get('model', '')} / {summary.get('strategy', '')}"
    sections = classification_sections(run, metrics, summary, mistakes, hits)
    if metrics.get("label_doubts") is not None:  # None: no head was fitted by cross-validation
        sections.append(doubts_section(doubts, metrics["label_doubts"]))
    return write_report(run / "report.html", title, sections, env or environment(metrics.get("device")), config)


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def compare_sections(out: Path, result: dict[str, Any]) -> list[Section]:
    """The comparison table with CIs, the plots, the best cell's details and every cell.

    The scores are the task's own (``result["metrics"]``: ``{"key", "label"}``, headline first; accuracy
    and macro-F1 when absent); a detection comparison shows the best cell's PR curve and per-class AP, a
    multi-label one its per-label PR curves and AP beside the label-frequency baseline's.
    """
    metrics = result.get("metrics") or [{"key": "accuracy", "label": "accuracy"},
                                        {"key": "macro_f1", "label": "macro-F1"}]
    head = metrics[0]
    items = result.get("items", "items")
    ci = f"{result['confidence']:.0%} CI"
    rows, best_row = [], None
    best = result.get("best")
    for i, s in enumerate(result["summary"]):
        rows.append((s["model"], s["strategy"], s["shots"], s["n"], *(fmt_ci(s[m["key"]]) for m in metrics),
                     f"{s['wall_seconds']['mean']:.1f}", f"{s['images_per_second']['mean']:.1f}"))
        if best and (s["model"], s["strategy"], s["shots"]) == (best["model"], best["strategy"], best["shots"]):
            best_row = i
    notes = render("compare_notes.html.j2", seeds=result["seeds"], data=result["data"], num_items=result["num_items"],
                   items=items, num_classes=len(result["classes"]), val_fraction=result["val_fraction"],
                   split_kind=result.get("split_kind", "stratified"), confidence=f"{result['confidence']:.0%}",
                   task=result.get("task", ""), metric_labels=", ".join(m["label"] for m in metrics),
                   budget=result.get("scratch_budget"), best=best, metric_label=head["label"],
                   best_score=fmt_ci(best[head["key"]]) if best else "", verdict=result.get("verdict", ""))
    summary = table(["model", "strategy", "shots", "seeds", *(f"{m['label']} ({ci})" for m in metrics), "wall s",
                     f"{items}/s"], rows, "compare", left=3, highlight=best_row)
    labels = " and ".join(m["label"] for m in metrics)
    per_class = {"detection": "training images per class", "multilabel": "training images per label",
                 "text-multilabel": "training texts per label"}.get(result.get("task", ""), f"training {items} per class")
    sections = [
        Section("Summary", notes + summary, anchor="sec-summary"),
        figures_section([(out / "scores.png", f"{labels} per strategy, mean with {ci} over seeds", "scores"),
                         (out / "shots.png", f"{head['label']} against {per_class} (learning curve)", "shots"),
                         (out / "time.png", f"{head['label']} against wall time per cell", "time")]),
    ]
    if best and best.get("run"):
        run = out / best["run"]
        metrics_path = run / "metrics.json"
        if metrics_path.is_file():
            val = json.loads(metrics_path.read_text())["val"]
            if "map_50" in val:  # a detection run
                ap_rows = [(c, "-" if m.get("ap_50") is None else f"{m['ap_50']:.3f}",
                            "-" if m.get("ap") is None else f"{m['ap']:.3f}", m.get("boxes", ""), m.get("detections", ""))
                           for c, m in val.get("per_class", {}).items()]
                body = (figure(run / "pr_curve.png", "Precision-recall at IoU 0.5 of the best cell", "best-pr-curve")
                        + figure(run / "val_predictions.png", "Validation images of the best cell (true boxes green, "
                                 "predictions red)", "best-predictions")
                        + table(["class", "AP@0.5", "AP@0.5:0.95", "boxes", "detections"], ap_rows, "best-per-class"))
            elif "miou" in val:  # a segmentation run
                iou_rows = [(c, "-" if m.get("iou") is None else f"{m['iou']:.3f}", m.get("pixels", ""))
                            for c, m in val.get("per_class", {}).items()]
                body = (figure(run / "val_overlays.png", "Validation images of the best cell: image | truth | "
                               "prediction", "best-overlays")
                        + table(["class", "IoU", "val pixels"], iou_rows, "best-per-class"))
            elif "thresholds" in val:  # a multi-label run: AP beside the label-frequency baseline's, per label
                ap_rows = [(c, _score(m.get("ap")), _score(m.get("baseline_ap")), f"{m['threshold']:.3f}",
                            _score(m["precision"]), _score(m["recall"]), _score(m["f1"]), m["support"])
                           for c, m in val.get("per_class", {}).items()]
                body = (figure(run / "pr_curves.png", "Per-label precision-recall curves of the best cell",
                               "best-pr-curves")
                        + table(["label", "AP", "frequency-baseline AP", "threshold", "precision", "recall", "F1",
                                 "support"], ap_rows, "best-per-class"))
            else:
                body = (figure(run / "learning_curve.png", "Learning curve of the best cell", "best-learning-curve")
                        + figure(run / "confusion_matrix.png", "Confusion matrix of the best cell", "best-confusion")
                        + table(["class", "precision", "recall", "F1", "support"], _per_class_rows(val["per_class"]),
                                "best-per-class"))
            sections.append(Section(f"Best cell, seed {best.get('seed', 0)}: {best['run']}", body, anchor="sec-best"))
    cells = [(c["model"], c["strategy"], c["shots"], c["seed"], *(f"{c[m['key']]:.4f}" for m in metrics),
              f"{c['wall_seconds']:.1f}", c["run"]) for c in result["cells"]]
    sections.append(Section("Every cell", Markup('<p class="muted">Each run folder holds its own report.html.</p>')
                            + table(["model", "strategy", "shots", "seed", *(m["label"] for m in metrics), "wall s",
                                     "run folder"], cells, "cells", left=4), anchor="sec-cells"))
    return sections


def write_compare_report(out: Path, result: dict[str, Any]) -> Path:
    """``out/report.html`` of a comparison: the table with CIs, the plots, the best cell's details."""
    out = Path(out)
    task = f" ({result['task']})" if result.get("task") else ""
    return write_report(out / "report.html", f"headstart compare{task}: " + ", ".join(result["models"]),
                        compare_sections(out, result), result.get("environment") or environment(), result.get("config"))


def write_classifier_report(run: Path, metrics: dict[str, Any], summary: dict[str, Any], cfg: Any,
                            mistakes: Sequence[Mistake] = (), doubts: Sequence[Mistake] = (),
                            hits: Sequence[Mistake] = ()) -> Path:
    """``report.html`` of a classification run: its validation ``mistakes`` (``confident_mistakes``) and surest right
    predictions (``confident_hits``, shown with what they rest on); ``doubts``: training items whose label the
    cross-validation heads doubt (``probe.label_doubts``)."""
    seeds = {"train.seed": cfg.train.seed, "data.augment_seed": cfg.data.augment_seed}
    env = run_environment(Path(run), metrics.get("device"), seeds)
    return write_run_report(Path(run), metrics, summary, cfg.to_dict(), mistakes, env, doubts, hits)
