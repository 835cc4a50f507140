"""compare and advise on real weights and real images: t-intervals, cache reuse, the scratch budget, the budget."""

import csv
import hashlib
import json
import math
import shutil
import time
from pathlib import Path

import pytest
import torch

from headstart.errors import ConfigError
from headstart.evidence import compare as comparison
from headstart.evidence.advise import advise, wilson


def test_mean_ci_matches_the_t_distribution_on_known_examples():
    ci = comparison.mean_ci([0.8, 0.9, 1.0])
    # mean 0.9, s = 0.1, t(0.975, 2) = 4.302653: half-width 4.302653 * 0.1 / sqrt(3)
    assert ci["mean"] == pytest.approx(0.9)
    assert ci["std"] == pytest.approx(0.1)
    assert ci["half_width"] == pytest.approx(0.248414, abs=1e-6)
    assert (ci["low"], ci["high"]) == pytest.approx((0.651586, 1.148414), abs=1e-6)
    two = comparison.mean_ci([0.5, 0.7])  # t(0.975, 1) = 12.7062: half-width 12.7062 * 0.141421 / 1.414214
    assert two["half_width"] == pytest.approx(1.270620, abs=1e-5)
    assert comparison.mean_ci([0.7])["half_width"] is None
    five = comparison.mean_ci([0.91, 0.93, 0.90, 0.95, 0.92])  # s = 0.019235, t(0.975, 4) = 2.776445
    assert five["half_width"] == pytest.approx(2.776445 * 0.0192354 / math.sqrt(5), abs=1e-6)
    for df in (1, 2, 5, 10, 30):  # the table used without scipy agrees with scipy
        assert comparison.T95[df - 1] == pytest.approx(comparison.t_quantile(0.95, df), abs=1e-4)


def test_shots_and_strategies_are_checked(tmp_path, digits_dir):
    assert comparison.parse_shots("25,5,all,10") == [5, 10, 25, "all"]
    with pytest.raises(ConfigError, match="expected positive integers or 'all'"):
        comparison.parse_shots("5,ten")
    with pytest.raises(ConfigError, match="Unknown strategy 'fancy'"):
        comparison.compare(digits_dir, tmp_path / "c", strategy_names=["linear", "fancy"])
    with pytest.raises(ConfigError, match="Unknown task 'audio'"):
        comparison.compare(digits_dir, tmp_path / "c", task="audio")
    with pytest.raises(ConfigError, match="--seeds must be at least 1"):
        comparison.compare(digits_dir, tmp_path / "c", seeds=0)


def test_wilson_interval():
    lo, hi = wilson(19, 20)
    assert (lo, hi) == pytest.approx((0.7639, 0.9911), abs=1e-4)


@pytest.fixture(scope="module")
def digits3(digits_dir, tmp_path_factory) -> Path:
    """Three digit classes, 12 images each: small enough for scratch runs at 224 px in the test budget."""
    root = tmp_path_factory.mktemp("digits3")
    for c in "012":
        (root / c).mkdir()
        for f in sorted((digits_dir / c).iterdir())[:12]:
            shutil.copy(f, root / c / f.name)
    return root


@pytest.fixture(scope="module")
def result(digits3, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "cmp"
    cache = tmp_path_factory.mktemp("compare-cache")
    started = time.perf_counter()
    res = comparison.compare(digits3, out, models=["mobilenet_v2"], strategy_names=["linear", "lp-ft", "scratch"],
                             seeds=2, shots=[2, 4], epochs=2, val_fraction=0.25,
                             overrides={"train.head_epochs": 1, "cache.views": 1, "cache.dir": str(cache)})
    res["_out"], res["_seconds"] = out, time.perf_counter() - started
    return res


def _keys(csv_path: Path) -> dict[str, set[str]]:
    keys: dict[str, set[str]] = {"train": set(), "val": set()}
    with csv_path.open() as f:
        for row in csv.DictReader(f):
            keys[row["split"]].add(hashlib.sha1(Path(row["path"]).read_bytes()).hexdigest())
    return keys


def test_compare_writes_every_cell_and_output(result):
    out = result["_out"]
    assert len(result["cells"]) == 3 * 2 * 2
    for name in ("compare.json", "scores.png", "shots.png", "time.png", "report.html"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "compare.json").read_text())
    assert saved["summary"] == result["summary"] and saved["strategies"] == ["linear", "lp-ft", "scratch"]
    assert saved["task"] == "image" and saved["metric"] == "accuracy" and saved["items"] == "images"
    assert [m["key"] for m in saved["metrics"]] == ["accuracy", "macro_f1"]
    for cell in result["cells"]:
        run = out / cell["run"]
        assert (run / "report.html").is_file() and (run / "metrics.json").is_file()
        assert 'data-heat="1"' not in (run / "report.html").read_text()  # a cell spends no pass on explanations
        assert cell["wall_seconds"] > 0 and cell["images_per_second"] > 0
    # the same validation images for every shot count of a seed, 5 training images per class at 5 shots
    for seed in (0, 1):
        few, more = _keys(out / "splits" / f"seed{seed}-shots2.csv"), _keys(out / "splits" / f"seed{seed}-shots4.csv")
        assert few["val"] == more["val"] and len(more["val"]) == 9  # 3 of 12 images per class
        assert few["train"] < more["train"] and (len(few["train"]), len(more["train"])) == (6, 12)  # nested shots
    assert _keys(out / "splits" / "seed0-shots4.csv")["val"] != _keys(out / "splits" / "seed1-shots4.csv")["val"]


def test_scratch_gets_the_largest_budget_and_no_pretraining(result):
    budget = result["scratch_budget"]
    assert budget["epochs"] == 3 and "lp-ft" in budget["rule"]  # lp-ft: 1 head epoch + 2 fine-tuning epochs
    assert budget["pretrained_epochs"] == {"linear": 2, "lp-ft": 3}
    for cell in result["cells"]:
        # epochs run: linear's head is solved by L-BFGS in one row; lp-ft: that row + 2 fine-tuning epochs, unless
        # the head already got every validation digit right (then fine-tuning could not be chosen: skipped)
        phases = json.loads((result["_out"] / cell["run"] / "metrics.json").read_text())["phases"]
        perfect = cell["strategy"] == "lp-ft" and phases[1]["note"].startswith("skipped: validation accuracy is "
                                                                                "already 1.0")
        assert cell["epochs"] == {"linear": 1, "lp-ft": 1 if perfect else 3, "scratch": 3}[cell["strategy"]]
        if cell["strategy"] == "scratch":
            assert cell["cache"] == {"items_served": 0, "items_computed": 0}
            config = (result["_out"] / cell["run"] / "config.yaml").read_text()
            assert "pretrained: false" in config and "strategy: full" in config


def test_the_cache_is_reused_across_strategies_and_seeds(result):
    """Count the backbone forward passes: only content never seen before in a namespace is computed."""
    out = result["_out"]
    seen = {"train": set(), "eval": set()}
    for cell in result["cells"]:
        keys = _keys(out / "splits" / f"seed{cell['seed']}-shots{cell['shots']}.csv")
        served, computed = cell["cache"]["items_served"], cell["cache"]["items_computed"]
        requested = 2 * cell["num_train"] + cell["num_val"]  # one augmented view and the plain images, val
        if cell["strategy"] == "linear":
            evals = keys["train"] | keys["val"]  # the plain training images share the validation namespace
            expected = len(keys["train"] - seen["train"]) + len(evals - seen["eval"])
            assert computed == expected, cell
            assert served == requested - computed
            seen["train"] |= keys["train"]
            seen["eval"] |= evals
        elif cell["strategy"] == "lp-ft":  # its head phase reads linear's features: no forward pass at all
            assert computed == 0 and served == requested, cell
    assert result["cache"]["items_computed"] == len(seen["train"]) + len(seen["eval"])
    assert result["cache"]["items_served"] > result["cache"]["items_computed"]


def test_summary_intervals_are_the_t_intervals_of_the_cells(result):
    from scipy.stats import t

    for row in result["summary"]:
        values = [c["accuracy"] for c in result["cells"]
                  if (c["strategy"], c["shots"]) == (row["strategy"], row["shots"])]
        assert len(values) == 2 and row["accuracy"]["mean"] == pytest.approx(sum(values) / 2)
        s = abs(values[0] - values[1]) / math.sqrt(2)
        assert row["accuracy"]["half_width"] == pytest.approx(t.ppf(0.975, 1) * s / math.sqrt(2), abs=1e-9)
    by = {(r["strategy"], r["shots"]): r["accuracy"]["mean"] for r in result["summary"]}
    assert by["linear", 4] > by["scratch", 4]  # pretrained features beat random ones on the same budget
    assert "training from scratch" in result["verdict"]


def test_compare_report_renders_in_chromium(result, chromium):
    dom = chromium(result["_out"] / "report.html", "compare-report.png")
    assert "figures rendered: 5 of 5" in dom  # scores, shots, time, the best cell's learning curve and confusion
    assert 'id="compare"' in dom and "scratch" in dom and "±" in dom
    best = result["best"]
    assert f"{best['accuracy']['mean']:.3f}" in dom


def test_advise_respects_its_budget_and_reuses_the_cache(tmp_path):
    from headstart.datasets import write_digits

    digits = write_digits(tmp_path / "digits")  # all 1,797: more than this 2-core CPU extracts in the budget
    overrides = {"cache.dir": str(tmp_path / "cache")}
    budget = 7.0
    started = time.perf_counter()
    first = advise(digits, budget_s=budget, models=["mobilenet_v2"], overrides=overrides)
    wall = time.perf_counter() - started
    timing = [(p["seconds"], p["load_seconds"], p["items"], p["stopped"]) for p in first["probes"]]
    assert wall <= budget + 2.0 and first["seconds"] <= budget + 2.0, (wall, first["data_seconds"], timing)
    p1 = first["probes"][0]
    assert 0 < p1["cache"]["items_computed"] == p1["items"] <= 1797
    assert "budget spent" in p1["stopped"] or p1["items"] == 1797  # it stops when the budget is spent, not before
    assert sum(first["dataset"]["per_class"].values()) == 1797 and len(first["dataset"]["classes"]) == 10
    rec = first["recommendation"]
    probed = p1.get("accuracy") is not None  # 2+ images of every class fitted in the budget
    assert rec["model"] == ("mobilenet_v2" if probed else "efficientnet_lite0") and rec["strategy"] and rec["reasons"]
    # two backbones share the same budget; the first call's features come back from the cache
    budget = 14.0
    started = time.perf_counter()
    second = advise(digits, budget_s=budget, models=["mobilenet_v2", "efficientnet_lite0"], overrides=overrides)
    wall = time.perf_counter() - started
    assert wall <= budget + 2.0 and second["seconds"] <= budget + 2.0, (wall, second["seconds"])
    p2 = next(p for p in second["probes"] if p["model"] == "mobilenet_v2")
    assert p2["cache"]["items_served"] == min(p2["items"], p1["items"]) > 0
    assert len(second["probes"]) + len(second["skipped"]) == 2
    scored = [p for p in second["probes"] if p.get("accuracy") is not None]
    if len(scored) == 2:  # ranked on the images both saw, not on whatever each got through
        common = min(p["items"] for p in scored)
        assert all(p["paired_items"] == common for p in scored)
        top = max(p["paired_accuracy"] for p in scored)
        pick = next(p for p in scored if p["model"] == second["recommendation"]["model"])
        assert pick["paired_accuracy"] >= top - 0.01
    json.dumps(second)  # no tensors left in the advice


def test_advisor_ranks_backbones_on_the_images_all_of_them_saw():
    from headstart.evidence.advise import paired_scores, recommend

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 2
    informative = labels[:, None].float() * 3 + torch.randn(200, 8, generator=g)  # separates the classes
    noise = torch.randn(60, 8, generator=g)  # the slower backbone saw only 60 images, and its features are noise
    probes = [
        {"model": "fast", "items": 200, "accuracy": 0.70, "knn_accuracy": 0.7, "probe_val": 60,
         "images_per_second": 100.0, "accuracy_interval": [0.6, 0.8], "_features": informative, "_labels": labels},
        {"model": "slow", "items": 60, "accuracy": 0.95, "knn_accuracy": 0.9, "probe_val": 18,
         "images_per_second": 10.0, "accuracy_interval": [0.7, 1.0], "_features": noise, "_labels": labels[:60]},
    ]
    paired_scores(probes, ["a", "b"], seed=0)
    assert all(p["paired_items"] == 60 and "_features" not in p for p in probes)
    fast, slow = probes
    assert fast["paired_accuracy"] > 0.9 > slow["paired_accuracy"]
    dataset = {"images": {"greyscale_fraction": 0.0, "min_side": 224}, "imbalance_ratio": 1.0, "train": 160}
    rec = recommend(probes, dataset, per_class_train=80, n_val=40)
    assert rec["model"] == "fast"  # its own 0.70 (on more images) would have lost to the slow one's 0.95
    assert "every backbone saw" in rec["reasons"][0]


def test_cli_compare_and_advise_run(digits3, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from headstart.cli import app

    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()
    res = runner.invoke(app, ["compare", str(digits3), "cache.views=1", "--out", str(tmp_path / "cmp"),
                              "--models", "mobilenet_v2", "--strategies", "linear", "--seeds", "2", "--epochs", "2"])
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    cells = [c for c in saved["cells"] if c["strategy"] == "linear"]
    assert len(cells) == 2 and {c["seed"] for c in cells} == {0, 1}
    assert (tmp_path / "cmp" / "report.html").is_file() and (tmp_path / "cmp" / "scores.png").stat().st_size > 1000
    run = tmp_path / "advised"
    res = runner.invoke(app, ["advise", str(digits3), "--budget", "20", "--models", "mobilenet_v2", "--run",
                              "--out", str(run)])
    assert res.exit_code == 0, res.output
    advice = json.loads((run / "advice.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["model"], metrics["strategy"]) == (advice["recommendation"]["model"],
                                                       advice["recommendation"]["strategy"])
    assert "Recommendation:" in res.output and (run / "report.html").is_file()
    res = runner.invoke(app, ["advise", str(digits3), "--run"])
    assert res.exit_code != 0 and "--out" in res.output


def test_a_warning_repeated_by_every_cell_prints_once():
    from headstart.progress import console, warn, warnings_once

    seen: set[str] = set()
    with console.capture() as captured:
        for cell in range(3):
            with warnings_once(seen):
                warn("4 nearly uniform image(s)")
                warn(f"cell {cell} only")
        warn("after the comparison")
        warn("after the comparison")
    text = captured.get()
    assert text.count("nearly uniform") == 1 and text.count("only") == 3 and text.count("after the") == 2


def test_advisor_fine_tunes_images_unlike_imagenet_even_when_few():
    from headstart.evidence.advise import recommend

    probe = {"model": "mobilenet_v2", "items": 300, "accuracy": 0.72, "knn_accuracy": 0.7, "probe_val": 90,
             "images_per_second": 300.0, "accuracy_interval": [0.62, 0.8]}
    photos = {"images": {"greyscale_fraction": 0.0, "min_side": 224}, "imbalance_ratio": 1.0, "train": 240}
    greyscale = {**photos, "images": {"greyscale_fraction": 1.0, "min_side": 8}}
    assert recommend([probe], photos, per_class_train=24, n_val=60)["strategy"] == "linear"
    far = recommend([probe], greyscale, per_class_train=24, n_val=60)
    assert far["strategy"] == "lp-ft" and any("unlike ImageNet" in r for r in far["reasons"])
    assert recommend([{**probe, "accuracy": 0.95}], greyscale, 24, 60)["strategy"] == "linear"  # already separable


def test_compare_splits_keep_each_patient_on_one_side(tmp_path):
    """compare's seeded splits keep a table's groups (HAM10000's lesion_id) together, as training's split does."""
    from conftest import SHARED

    from headstart.tasks import get_task

    blood = SHARED / "blood_cells" / "train"
    if not blood.is_dir():
        pytest.skip(f"{blood} is absent (the ../shared data folder)")
    lines = []
    for cls in ("Platelets", "RBC", "WBC"):
        for i, f in enumerate(sorted((blood / cls).glob("*.jpg"))[:24]):
            lines.append(f"{f},{cls},{cls}_lesion{i // 4}")  # 6 lesions of 4 images per class
    table = tmp_path / "metadata.csv"
    table.write_text("image,dx,lesion_id\n" + "\n".join(lines) + "\n")
    pool = comparison.ClassificationPool(get_task("image"), table, 0.25, {})
    for seed in range(4):
        train, val = pool.split(seed, 0.25)
        assert len(train) + len(val) == 72 and val
        assert not {pool.groups[i] for i in train} & {pool.groups[i] for i in val}


def test_advise_probes_keep_each_patient_on_one_side():
    """Features that only tell patients apart (no class in them): a probe split with a patient on both sides scores
    near 1.0 by recognising the patient; advise's probes keep each patient on one side, as training does, and
    score near chance."""
    from headstart.evidence.advise import _fit_probes

    g = torch.Generator().manual_seed(0)
    groups = [f"patient{i // 4}" for i in range(120)]  # 30 patients of 4 images, a patient's images of one class
    labels = [(i // 4) % 3 for i in range(120)]
    centre = {p: torch.randn(64, generator=g) for p in sorted(set(groups))}
    feats = [torch.stack([centre[p] + 0.05 * torch.randn(64, generator=g) for p in groups])]
    leaky = _fit_probes({}, feats, labels, ["a", "b", "c"], 0, "images")
    kept = _fit_probes({}, feats, labels, ["a", "b", "c"], 0, "images", groups)
    print("probe accuracy, patients on both sides / kept apart:", leaky["knn_accuracy"], kept["knn_accuracy"])
    assert leaky["knn_accuracy"] > 0.95
    assert kept["knn_accuracy"] < 0.7 and kept["accuracy"] < 0.7
