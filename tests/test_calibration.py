"""Calibrated probabilities: a temperature fitted on validation, used by predict, evaluate, the reports and ONNX.

The fitting is checked where the right answer is known (logits of a known Gaussian model, whose Bayes-optimal
temperature is exact), and end to end on scikit-learn's real digits through EfficientNet-Lite0: a head trained with
strong label smoothing is under-confident, and the fitted temperature must sharpen it and lower its calibration error.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from headstart.tasks.classification import calibration


def _gaussian(scale: float, n: int = 4000, classes: int = 5, margin: float = 2.0, seed: int = 0):
    """Logits ``scale * z`` where ``z`` ~ N(0, 1) per class plus ``margin`` on the true class: the true posterior is
    ``softmax(margin * z)``, so the best temperature is exactly ``scale / margin``."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    z = torch.randn(n, classes, generator=g)
    z[torch.arange(n), y] += margin
    return z * scale, y


@pytest.mark.parametrize("scale", [0.4, 1.0, 4.0])
def test_the_fitted_temperature_is_the_bayes_optimal_one(scale):
    logits, y = _gaussian(scale)
    t, how = calibration.fit_temperature(logits, y)
    assert t == pytest.approx(scale / 2.0, rel=0.06), how
    report = calibration.summary(logits, y, t)
    assert report["ece"] < 0.03 < report["ece_uncalibrated"]  # every scale here is miscalibrated by over 0.03
    held_logits, held_y = _gaussian(scale, seed=1)  # items the temperature never saw
    held = calibration.summary(held_logits, held_y, t)
    assert held["ece"] < 0.03 < held["ece_uncalibrated"]


def test_no_temperature_without_enough_evidence():
    logits, y = _gaussian(1.0, n=calibration.MIN_ITEMS - 1)
    assert calibration.fit_temperature(logits, y) == (1.0, f"not fitted: {calibration.MIN_ITEMS - 1} validation "
                                                           f"items, fewer than {calibration.MIN_ITEMS}")
    logits, y = _gaussian(1.0, margin=8.0)  # every item right: any sharper T lowers the NLL without end
    assert bool((logits.argmax(1) == y).all())
    assert calibration.fit_temperature(logits, y)[0] == 1.0
    logits, y = _gaussian(2.0)  # already calibrated: T 1 is kept, not a noise-sized change
    t, how = calibration.fit_temperature(logits, y)
    assert t == 1.0 and "1 kept" in how


def _tags(scale: float, n: int = 2000, labels: int = 4, margin: float = 2.0, seed: int = 0):
    """Multi-label logits ``scale * x`` where ``x`` ~ N(+-margin / 2, 1) as each label applies or not (each on about a
    third of the items): each label's true log-odds are ``margin * x + log(prior odds)``; with the priors' bias left in
    the logits, the best single temperature is ``scale / margin``."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, labels, generator=g) < 1 / 3).float()
    x = torch.randn(n, labels, generator=g) + margin * (y - 0.5)
    return scale * x + math.log(0.5) * scale / margin, y


@pytest.mark.parametrize("scale", [0.5, 6.0])
def test_one_temperature_calibrates_every_label_of_a_multilabel_model(scale):
    logits, y = _tags(scale)
    t, how = calibration.fit_temperature(logits, y, sigmoid=True)
    assert t == pytest.approx(scale / 2.0, rel=0.06), how
    assert "fitted on 2000 validation items" in how
    report = calibration.summary(logits, y, t, sigmoid=True)
    assert report["ece"] < 0.03 < report["ece_uncalibrated"], report
    held = calibration.summary(*_tags(scale, seed=1), t, sigmoid=True)  # items the temperature never saw
    assert held["ece"] < 0.03 < held["ece_uncalibrated"], held
    assert calibration.ece(torch.full((4, 2), 0.25), torch.tensor([[1, 0], [0, 0], [0, 1], [0, 0]]), sigmoid=True) \
        == pytest.approx(0.0)  # a quarter of the (item, label) pairs apply, each said with 0.25
    right, y = _tags(1.0, margin=14.0)  # every label on the right side of 0: sharper forever, so no temperature
    assert bool(((right > 0) == y.bool()).all())
    assert calibration.fit_temperature(right, y, sigmoid=True) == (1.0, "not fitted: no validation mistake to "
                                                                         "calibrate against")
    assert calibration.fit_temperature(logits[:29], y[:29], sigmoid=True)[0] == 1.0  # 29 items: too few


def test_reliability_bins_count_every_item():
    logits, y = _gaussian(1.0)
    bins = calibration.reliability(logits.softmax(1), y)
    assert sum(k for _, _, k in bins) == len(y)
    assert all(0 <= c <= 1 and 0 <= a <= 1 for c, a, _ in bins)
    weighted = sum(k * abs(a - c) for c, a, k in bins) / len(y)  # the ECE from the bins is torchmetrics' ECE
    assert weighted == pytest.approx(calibration.ece(logits.softmax(1), y), abs=1e-4)


def test_a_label_smoothed_head_is_sharpened_everywhere_it_predicts(digits_dir, tmp_path, session_cache):
    from headstart import ImageClassifier
    from headstart.tasks.image.data import image_samples

    run = tmp_path / "run"
    clf = ImageClassifier(strategy="linear", epochs=8, seed=0, overrides={
        "train.head_solver": "adamw", "train.label_smoothing": 0.4, "train.refit": False, "cache.views": 1,
        "device.precision": "32-true"}).fit(digits_dir, out=run)
    cal = clf.metrics_["val"]["calibration"]
    assert clf.metrics_["num_val"] >= calibration.MIN_ITEMS
    assert cal["temperature"] < 0.8, cal  # label smoothing 0.4 caps the confidence far below the accuracy
    assert cal["ece"] < cal["ece_uncalibrated"], cal
    assert json.loads((run / "spec.json").read_text())["temperature"] == cal["temperature"]
    assert (run / "calibration.png").stat().st_size > 10_000
    assert "## Calibration" in (run / "report.md").read_text()
    assert "calibration error (ECE)" in (run / "report.html").read_text()

    loaded = ImageClassifier.load(run)
    assert loaded.temperature_ == cal["temperature"]
    files = sorted((digits_dir / "3").glob("*.png"))[:6]
    _, probs = loaded.predict_proba(files)
    _, logits = loaded._logits(loaded.model_, image_samples(files))
    assert torch.allclose(probs, (logits.float() / cal["temperature"]).softmax(1), atol=1e-6)
    assert probs.max(1).values.mean() > logits.float().softmax(1).max(1).values.mean()  # sharper than the softmax
    rows = loaded.predict(files)
    assert rows[0]["probability"] == pytest.approx(float(probs[0].max()), abs=1e-6)
    report = loaded.evaluate(digits_dir)  # every digit: mostly training items, so only its shape is checked
    assert report["calibration"]["temperature"] == cal["temperature"] and "ece_uncalibrated" in report["calibration"]
    assert math.isfinite(report["calibration"]["ece"])

    pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install 'headstart[export]'")
    from headstart.deploy import export, onnx_engine

    record = export.export_run(run, "onnx")
    assert record["temperature"] == cal["temperature"] and record["parity"]["passed"]
    _, engine_probs = onnx_engine.OnnxEngine(run / "model.onnx").predict_proba(files)
    assert abs(engine_probs - probs.numpy()).max() < 1e-3  # the engine divides by the temperature too


def test_selective_keeps_the_most_confident_items_that_reach_each_accuracy():
    from headstart.tasks.classification.calibration import selective, selective_thresholds

    confidence = torch.tensor([0.6, 0.99, 0.8, 0.95, 0.7, 0.9])  # by confidence: right, right, right, wrong, right, wrong
    correct = torch.tensor([False, True, False, True, True, True])
    chosen = selective_thresholds(confidence, correct, (0.75, 0.9, 0.99))
    assert chosen == [(0.75, pytest.approx(0.65)), (0.9, pytest.approx(0.85)), (0.99, pytest.approx(0.85))]
    rows = {r["target"]: r for r in selective(confidence, correct, chosen)}
    assert rows[0.9]["kept"] == rows[0.99]["kept"] == 3 and rows[0.75]["kept"] == 5 and rows[0.75]["accuracy"] == 0.8
    assert rows[0.9]["coverage"] == 0.5 and rows[0.9]["ci95"][0] < 1.0 == rows[0.9]["accuracy"]
    # two items at the same confidence are kept or dropped together: no cut between them reaches 0.9
    assert selective_thresholds(torch.tensor([0.9, 0.9, 0.5]), torch.tensor([True, False, True]), (0.9,)) == [
        (0.9, None)]
    # new items at validation's thresholds: those at or above each are counted, however they fare
    later = selective(torch.tensor([0.97, 0.7, 0.86, 0.5]), torch.tensor([True, True, False, True]), chosen)
    assert [(r["kept"], r["accuracy"]) for r in later] == [(3, pytest.approx(2 / 3, abs=1e-4)), (2, 0.5), (2, 0.5)]
    assert selective(torch.tensor([0.5]), torch.tensor([True]), [(0.9, None)])[0]["kept"] == 0
