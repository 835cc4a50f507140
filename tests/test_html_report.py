"""report.html through the one jinja2 writer: detection, run and compare reports from hand-made inputs (no training)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from markupsafe import Markup

from headstart.core.report import html_report
from headstart.evidence import compare as comparison
from headstart.tasks.detection.report import html_sections, write_detection_report

EVIL = "<script>x</script>"


def _png(path: Path, colour: str = "tab:blue") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 0], color=colour)
    fig.savefig(path, dpi=50)
    plt.close(fig)
    return path


def _image(path: Path, colour: tuple[int, int, int]) -> Path:
    from PIL import Image

    Image.new("RGB", (32, 24), colour).save(path)
    return path


def _sources(html: str) -> list[str]:
    return re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)


def _table(html: str, table_id: str) -> str:
    part = html[html.index(f'id="{table_id}"'):]
    return part[:part.index("</table>")]


def _assert_self_contained(html: str) -> None:
    assert "http://" not in html and "https://" not in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert all(s.startswith("data:image/png;base64,") for s in _sources(html))
    assert 'id="render-check"' in html and "'figures rendered: ' + ok + ' of ' + figs.length" in html


# --------------------------------------------------------------------------------------------- detection
def _detection_metrics() -> dict:
    per_class = {
        "cat": {"ap": 0.41234, "ap_50": 0.71, "boxes": 12, "detections": 15},
        EVIL: {"ap": 0.2, "ap_50": 0.35, "boxes": 3, "detections": 4},
        "dog": {"ap": None, "ap_50": None, "boxes": 0, "detections": 2},
    }
    val = {"num_images": 6, "map": 0.30617, "map_50": 0.53, "map_75": 0.27, "mar_100": 0.44, "per_class": per_class,
           "pr_curve_iou50": {"cat": [1.0 - i / 100 for i in range(101)], EVIL: [0.5] * 101},
           "warnings": ["mAP@0.5 is low: <train longer>"]}
    return {"task": "detection", "model": "fasterrcnn_mobilenet_v3_large_320_fpn", "family": "tv", "strategy": "head",
            "val": val, "val_map": val["map"], "val_map_50": val["map_50"], "train_seconds": 12.5, "num_train": 20,
            "num_val": 6, "train_boxes": {"cat": 40, EVIL: 9, "dog": 5}, "device": "cpu"}


@pytest.fixture
def detection_run(tmp_path) -> Path:
    run = tmp_path / "det-run"
    run.mkdir()
    _png(run / "pr_curve.png")
    _png(run / "val_predictions.png", "tab:red")
    (run / "headstart.json").write_text(json.dumps({"task": "detection", "data_fingerprint": "fp-1234abcd"}))
    return run


def test_detection_report_is_self_contained_with_both_figures(detection_run):
    metrics = _detection_metrics()
    cfg = {"model": {"name": metrics["model"]}, "train": {"seed": 7}, "data": {"augment_seed": None}}
    path = write_detection_report(detection_run, metrics, cfg)
    assert path == detection_run / "report.html"
    html = path.read_text(encoding="utf-8")
    _assert_self_contained(html)
    sources = _sources(html)
    assert len(sources) == 2 and sources[0] != sources[1]
    assert html.count("data-figure=") == 2 and 'data-figure="pr-curve"' in html and 'data-figure="val-predictions"' in html
    assert sources[0] == html_report.png_data_uri(detection_run / "pr_curve.png")
    # the environment: seeds of the config, the data fingerprint of the run folder, versions
    assert "fp-1234abcd" in html and "train.seed" in html and 'id="versions"' in html and "torch" in html
    assert 'id="config"' in html and "augment_seed" in html


def test_detection_report_escapes_class_names_and_has_one_ap_row_per_class(detection_run):
    metrics = _detection_metrics()
    html = write_detection_report(detection_run, metrics, env=html_report.environment("cpu")).read_text()
    assert EVIL not in html and "&lt;script&gt;x&lt;/script&gt;" in html
    assert html.count("<script") == 1  # only the report's own render check
    ap = _table(html, "per-class-ap")
    assert ap.count("<tr") == 1 + len(metrics["val"]["per_class"])  # header and every class, even without boxes
    assert "0.4123" in ap and "0.7100" in ap and "&lt;script&gt;" in ap
    dog = ap[ap.index(">dog<"):]
    assert dog[:dog.index("</tr>")].count(">-<") == 2  # no AP for a class with no true box
    scores = _table(html, "map")
    assert scores.count("<tr") == 1 + 4
    for text in ("mAP@0.5:0.95", "0.3062", "mAP@0.5", "0.5300", "mAP@0.75", "0.2700", "mAR@100", "0.4400"):
        assert text in scores
    assert scores.count(">0.0000<") == 4  # the detector that finds nothing, beside every line
    assert 'class="warn"' in html and "&lt;train longer&gt;" in html
    assert "fasterrcnn_mobilenet_v3_large_320_fpn" in _table(html, "summary")


def test_detection_sections_without_figures_or_warnings(tmp_path):
    metrics = _detection_metrics()
    metrics["val"]["warnings"] = []
    sections = html_sections(tmp_path, metrics)
    assert all(isinstance(s, html_report.Section) for s in sections)
    assert [s.anchor for s in sections] == ["sec-summary", "sec-map", "sec-per-class-ap", "sec-figures", "sec-warnings"]
    html = html_report.render_report("detection", sections, html_report.environment())
    assert "data-figure=" not in html and _sources(html) == []  # missing PNGs are left out, not broken links
    assert "No warnings." in html and 'class="warn"' not in html


# -------------------------------------------------------------------------------------- the one writer
def test_sections_escape_text_and_keep_markup(tmp_path):
    sections = [html_report.Section("Plain <b>", "1 < 2 & <i>x</i>", anchor="sec-plain"),
                html_report.Section("Markup", Markup("<i>kept</i>"), anchor="sec-markup"),
                html_report.Section("Template", template="warnings.html.j2",
                                    context={"warnings": [EVIL], "empty": ""}, anchor="sec-template")]
    path = html_report.write_report(tmp_path / "r.html", "title <x>", sections, {"versions": {"torch": "9"}},
                                    {"a": EVIL})
    html = path.read_text()
    assert "<i>x</i>" not in html and "1 &lt; 2 &amp; &lt;i&gt;x&lt;/i&gt;" in html and "<i>kept</i>" in html
    assert EVIL not in html and "<title>title &lt;x&gt;</title>" in html
    for anchor in ("sec-plain", "sec-markup", "sec-template", "sec-environment", "sec-config"):
        assert f'<section id="{anchor}">' in html and f'href="#{anchor}"' in html
    assert html_report.esc(EVIL) in html  # esc escapes the way the templates do


def _classification_metrics(classes: list[str]) -> dict:
    per_class = {c: {"precision": 0.5, "recall": 0.25, "f1": 0.3333, "support": 4} for c in classes}
    val = {"accuracy": 0.6875, "macro_f1": 0.61234, "balanced_accuracy": 0.65, "num_samples": 16,
           "per_class": per_class, "baseline": {"class": classes[0], "accuracy": 0.25, "macro_f1": 0.1},
           "warnings": []}
    return {"val": val, "train_seconds": 3.2, "cache": {"items_served": 10, "items_computed": 6}, "device": "cpu"}


def test_classifier_report_keeps_its_ids_mistakes_and_environment(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _png(run / "learning_curve.png")
    _png(run / "confusion_matrix.png", "tab:green")
    (run / "headstart.json").write_text(json.dumps({"data_fingerprint": "abc123fingerprint"}))
    classes = ["ant", "bee", EVIL, "wasp"]
    items = [str(_image(tmp_path / f"{i}.png", (40 * i, 80, 200))) for i in range(5)]
    logits = torch.tensor([[0.0, 3.0, 0, 0], [2.0, 0, 0, 0], [0, 0, 0, 5.0], [0, 1.0, 0, 0], [0, 0, 4.0, 0]])
    labels = torch.tensor([0, 0, 1, 2, 3])  # item 1 is right, the others wrong
    cfg = SimpleNamespace(train=SimpleNamespace(seed=3), data=SimpleNamespace(augment_seed=11),
                          to_dict=lambda: {"train": {"seed": 3}})
    summary = {"model": "mobilenet_v2", "strategy": "linear", "classes": classes, "num_train": 40}
    mistakes = html_report.confident_mistakes(items, logits, labels, classes)
    path = html_report.write_classifier_report(run, _classification_metrics(classes), summary, cfg, mistakes)
    html = path.read_text()
    _assert_self_contained(html)
    assert EVIL not in html
    assert html.count("data-figure=") == 2 and 'id="learning-curve"' in html and 'id="confusion-matrix"' in html
    assert _table(html, "per-class").count("<tr") == 1 + len(classes)
    assert "0.6875" in _table(html, "metrics") and "0.6123" in _table(html, "metrics")
    assert html.count('class="card mistake"') == 4 and html.count('data-thumb="1"') == 4
    shown = [int(p) for p in re.findall(r"</b> \((\d+)%\)", html)]
    assert len(shown) == 4 and shown == sorted(shown, reverse=True)
    assert "abc123fingerprint" in html and "train.seed" in html and "data.augment_seed" in html
    assert "mobilenet v2" not in html and "num train" in _table(html, "summary")  # keys get spaces, values not
    assert "10 served, 6 computed" in html


def test_text_mistakes_and_no_mistakes(tmp_path):
    mistakes = html_report.confident_mistakes(['say "hi" <now>', "ok"], torch.tensor([[0.0, 2.0], [3.0, 0.0]]),
                                              torch.tensor([0, 0]), ["neg", "pos"], is_image=False)
    html = html_report.render_report("t", [html_report.mistakes_section(mistakes)], {"versions": {}})
    assert html.count('class="card mistake"') == 1 and html_report.esc('say "hi" <now>') in html
    assert "data-thumb" not in html and "</b> (88%)" in html
    none = html_report.render_report("t", [html_report.mistakes_section([])], {"versions": {}})
    assert "No validation item was misclassified." in none and 'class="card mistake"' not in none


# --------------------------------------------------------------------------------------------- compare
def test_compare_report_keeps_its_ids(tmp_path):
    out = tmp_path / "cmp"
    run = out / "runs" / "best"
    run.mkdir(parents=True)
    for name in ("scores", "shots", "time"):
        _png(out / f"{name}.png")
    _png(run / "learning_curve.png")
    _png(run / "confusion_matrix.png")
    (run / "metrics.json").write_text(json.dumps(_classification_metrics(["a", "b"])))

    def stat(mean, half=0.02):
        return {"mean": mean, "half_width": half}

    summary = [{"model": "mobilenet_v2", "strategy": s, "shots": 4, "n": 2, "accuracy": stat(acc),
                "macro_f1": stat(acc - 0.05), "wall_seconds": stat(3.0), "images_per_second": stat(50.0)}
               for s, acc in (("linear", 0.9), ("scratch", 0.5))]
    cells = [{"model": "mobilenet_v2", "strategy": s, "shots": 4, "seed": seed, "accuracy": 0.9, "macro_f1": 0.85,
              "wall_seconds": 3.0, "run": f"runs/{s}-{seed}"} for s in ("linear", "scratch") for seed in (0, 1)]
    result = {"models": ["mobilenet_v2"], "seeds": 2, "data": str(tmp_path / "data <1>"), "num_items": 36,
              "classes": ["a", "b"], "val_fraction": 0.25, "confidence": 0.95, "summary": summary, "cells": cells,
              "scratch_budget": {"epochs": 3, "rule": "the largest pretrained budget (lp-ft)"},
              "best": {"model": "mobilenet_v2", "strategy": "linear", "shots": 4, "accuracy": stat(0.9),
                       "run": "runs/best", "seed": 0},
              "verdict": "Pretrained features beat training from scratch.", "config": {"epochs": 2},
              "environment": html_report.environment("cpu", {"seeds": [0, 1]})}
    html = html_report.write_compare_report(out, result).read_text()
    _assert_self_contained(html)
    for table_id in ("compare", "scratch-budget", "verdict", "best-per-class", "cells", "versions", "environment",
                     "config"):
        assert f'id="{table_id}"' in html, table_id
    assert html.count("data-figure=") == 5  # scores, shots, time and the best cell's two figures
    compare_table = _table(html, "compare")
    assert compare_table.count("<tr") == 1 + 2 and compare_table.count('class="best"') == 1
    assert "0.900 ± 0.020" in compare_table and "data &lt;1&gt;" in html and "95% t-interval" in html
    assert _table(html, "cells").count("<tr") == 1 + 4


# ------------------------------------------------------------------------------------------ statistics
def test_t_quantile_is_scipys():
    assert comparison.t_quantile(0.95, 2) == pytest.approx(4.302653, abs=1e-6)
    assert comparison.t_quantile(0.99, 10) == pytest.approx(3.169273, abs=1e-6)
    assert comparison.t_quantile(0.95, 1000) == pytest.approx(1.962339, abs=1e-6)
    with pytest.raises(ValueError):
        comparison.t_quantile(0.95, 0)
    with pytest.raises(Exception, match="between 0 and 1"):
        comparison.t_quantile(1.5, 3)
