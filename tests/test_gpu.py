"""Every task trained on a CUDA device (marked ``gpu``, skipped without one), and ``train.compile``.

Each GPU test is a small real-data run of a task, the data and the bar of its CPU test (tests/test_*.py): it checks
that the run computed on the device (metrics.json's ``device``) and learned (above the majority / label-frequency
baseline by the CPU test's margin). ``HEADSTART_TEST_ACCELERATOR=cpu`` runs the same bodies on the CPU (minutes):
how they were checked on a machine without a GPU. ``test_compile_trains_like_eager_and_reports_its_seconds`` runs
on the CPU in every session (inductor compiles C++ there) with the helper its GPU twin uses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import SHARED, hymenoptera_subset
from safetensors.torch import load_file
from test_segmentation import CAMVID, camvid_subset
from test_text import FAST, needs_minilm, needs_sms, sms_split  # noqa: F401 - sms_split: the fixture

from headstart.tasks.image.task import ImageClassifier

ACCELERATOR = os.environ.get("HEADSTART_TEST_ACCELERATOR", "cuda")
needs_cuda = pytest.mark.skipif(ACCELERATOR == "cuda" and not torch.cuda.is_available(),
                                reason="needs a CUDA device (torch.cuda.is_available() is False)")
COCO128, BCCD = SHARED / "coco128", SHARED / "bccd"


def gpu_test(fn):
    """Marked ``gpu``, skipped without CUDA (run on ``HEADSTART_TEST_ACCELERATOR``)."""
    return pytest.mark.gpu(needs_cuda(fn))


def needs(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"{path} is absent (the ../shared data folder)")


def ran_on(metrics: dict, accelerator: str) -> None:
    assert metrics["device"].split(":")[0] == accelerator, metrics["device"]


# ------------------------------------------------------------------------------------------- train.compile
@pytest.fixture(scope="module")
def tiny_hymenoptera(hymenoptera, tmp_path_factory) -> Path:
    """32 training images per class (4 full batches of 16: no smaller last batch to compile again), 20 val."""
    return hymenoptera_subset(tmp_path_factory.mktemp("hymenoptera-tiny"), {"train": 32, "val": 20}, link=True)


def compile_runs(data: Path, root: Path, accelerator: str, strategy: str,
                 precision: str | None = None) -> tuple[ImageClassifier, ImageClassifier]:
    """The same run without and with ``train.compile`` (the second reads the features the first cached)."""
    def run(compiled: bool) -> ImageClassifier:
        return ImageClassifier(model="mobilenet_v2", strategy=strategy, epochs=2, overrides={
            "device.accelerator": accelerator, "train.batch_size": 16, "train.refit": False,
            "train.compile": compiled, "cache.views": 1, **({"device.precision": precision} if precision else {})}
        ).fit(data, out=root / f"compile-{compiled}")

    eager = run(False)
    # dropout (the head's, and torchvision MobileNetV2's own before it) draws its masks from eager's generator in
    # the compiled graph too, instead of inductor's: the two runs differ by their kernels' rounding only
    with torch._inductor.config.patch(fallback_random=True):
        return eager, run(True)


def check_compiled(eager: ImageClassifier, compiled: ImageClassifier, data: Path, accelerator: str,
                   tolerance: float = 0.02) -> float:
    """The compiled run trained as the eager one did (the same batches and dropout masks through other kernels: in
    bf16 the rounding differs, so each epoch's train loss within ``tolerance``), reported its compile time, and saved
    plain weights that reload to its predictions; its seconds."""
    ran_on(compiled.metrics_, accelerator)
    phase = compiled.metrics_["phases"][0]
    assert "compile_seconds" not in eager.metrics_["phases"][0]
    assert phase["compile_seconds"] > 0, phase
    losses = [(a["train_loss"], b["train_loss"]) for a, b in zip(eager.history_, compiled.history_)]
    assert len(eager.history_) == len(compiled.history_) == 2
    print(f"train loss per epoch, eager against compiled: {losses}")
    assert all(abs(a - b) <= tolerance for a, b in losses), losses
    assert abs(eager.metrics_["val_accuracy"] - compiled.metrics_["val_accuracy"]) <= 0.1
    assert compiled.metrics_["val_accuracy"] >= 0.75  # 40 validation images, half of each class
    weights = load_file(str(compiled.run_dir_ / "model.safetensors"))
    assert set(weights) == set(load_file(str(eager.run_dir_ / "model.safetensors")))  # no ``_orig_mod.`` keys
    files = sorted((data / "val" / "bees").iterdir())[:4]
    _, p1 = compiled.predict_proba(files)
    _, p2 = ImageClassifier.load(compiled.run_dir_).predict_proba(files)
    assert torch.allclose(p1, p2, atol=1e-6)
    return phase["compile_seconds"]


@pytest.mark.slow
def test_compile_trains_like_eager_and_reports_its_seconds(tiny_hymenoptera, tmp_path, session_cache):
    """partial:1: the top stage of MobileNetV2 and the head compiled (the stages below come from the cache). In fp32
    the compiled kernels train to the eager losses (measured: equal to 5 decimals); in bf16 the two roundings drift
    apart by up to 0.011 in an epoch's loss on these 40 photos (measured here; the GPU test, in bf16, allows 0.02)."""
    eager, compiled = compile_runs(tiny_hymenoptera, tmp_path, "cpu", "partial:1", precision="32-true")
    print(f"torch.compile on the CPU: {check_compiled(eager, compiled, tiny_hymenoptera, 'cpu', 1e-4)} s")


@gpu_test
@pytest.mark.parametrize("strategy", ["partial:2", "full"])
def test_compile_on_the_gpu(tiny_hymenoptera, tmp_path, session_cache, strategy):
    eager, compiled = compile_runs(tiny_hymenoptera, tmp_path, ACCELERATOR, strategy)
    seconds = check_compiled(eager, compiled, tiny_hymenoptera, ACCELERATOR, 0.02)  # bf16: CPU measured 0.011 at most
    print(f"torch.compile ({strategy}) on {ACCELERATOR}: {seconds} s")


# ------------------------------------------------------------------------------------------- every task
@gpu_test
def test_image_default_run(hymenoptera, tmp_path, session_cache):
    """The default recipe (auto: the linear head, then fine-tuning while it helps) on hymenoptera."""
    clf = ImageClassifier(overrides={"device.accelerator": ACCELERATOR}).fit(hymenoptera, out=tmp_path / "run")
    m = clf.metrics_
    ran_on(m, ACCELERATOR)
    assert m["val"]["baseline"]["accuracy"] == pytest.approx(70 / 153, abs=1e-4)  # always 'ants'
    assert m["val_accuracy"] >= 0.90, m["phases"]
    print(f"hymenoptera default run on {m['device']}: {m['train_seconds']} s, val accuracy {m['val_accuracy']:.4f}, "
          f"phases {[(p['phase'], p['epochs'], p['epoch_seconds']) for p in m['phases']]}")


@gpu_test
@needs_sms
@needs_minilm
def test_text_default_run(sms_split, tmp_path, monkeypatch):  # noqa: F811 - sms_split: the fixture
    """The text default (lp-ft on MiniLM: the L-BFGS head, then every layer fine-tuned) on 800 SMS."""
    from headstart.tasks.text.task import TextClassifier

    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    clf = TextClassifier(epochs=1, overrides={**FAST, "device.accelerator": ACCELERATOR}).fit(
        sms_split["heldout"], out=tmp_path / "run")
    m = clf.metrics_
    ran_on(m, ACCELERATOR)
    assert m["strategy"] == "lp-ft" and [p["phase"] for p in m["phases"]] == ["linear", "fine-tune"]
    assert m["val"]["macro_f1"] >= 0.93 and m["val"]["macro_f1"] > m["val"]["baseline"]["macro_f1"] + 0.4, m["val"]


@gpu_test
@needs_sms
@needs_minilm
def test_text_lora_run(sms_split, tmp_path, monkeypatch):  # noqa: F811 - sms_split: the fixture
    """Strategy lora on the device: peft's adapters on MiniLM's attention (bf16 autocast), after the solved head;
    only the adapters and the head move, and the run learns."""
    from headstart.tasks.text.task import TextClassifier

    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    clf = TextClassifier(strategy="lora", epochs=2, overrides={**FAST, "device.accelerator": ACCELERATOR}).fit(
        sms_split["heldout"], out=tmp_path / "run")
    m = clf.metrics_
    ran_on(m, ACCELERATOR)
    assert [p["phase"] for p in m["phases"]] == ["linear", "lora"]
    saved = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in saved.items()) or m["chosen"]["phase"] == "linear"
    assert m["val"]["macro_f1"] >= 0.9 and m["val"]["macro_f1"] > m["val"]["baseline"]["macro_f1"] + 0.4, m["val"]


@gpu_test
@needs(COCO128)
def test_detection_run(tmp_path, session_cache):
    """FCOS on a frozen MobileNetV2 (cached features), person in coco128: the CPU test's run and bar."""
    from headstart.tasks.detection.task import Detector

    det = Detector(model="mobilenet_v2", family="fcos", strategy="linear", epochs=5, classes="person",
                   image_size=256, cache_views=1, overrides={"train.eval_every": 5, "device.accelerator": ACCELERATOR})
    m = det.fit(COCO128, out=tmp_path / "run").metrics_
    ran_on(m, ACCELERATOR)
    assert m["val_map_50"] >= 0.02, m  # a detector that learned nothing scores ~0 (random init: test_detection.py)


@gpu_test
@needs(BCCD / "Annotations")
def test_multilabel_run(tmp_path, session_cache):
    """Cell types tagged from BCCD's boxes, linear head: above the label-frequency baseline as on the CPU."""
    from headstart.tasks.multilabel.task import MultiLabelClassifier

    est = MultiLabelClassifier(strategy="linear", from_detection=True, cache_views=2,
                               overrides={"device.accelerator": ACCELERATOR}).fit(BCCD, out=tmp_path / "run")
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    ran_on(m, ACCELERATOR)
    assert est.metrics_["val"]["map"] == m["val"]["map"]
    assert m["val"]["map"] > m["val"]["baseline"]["map"] + 0.04, m["val"]
    assert m["test"]["map"] > m["test"]["baseline"]["map"], m["test"]  # the CPU test's bars (test_multilabel.py)
    platelets = m["test"]["per_class"]["Platelets"]
    assert platelets["ap"] > platelets["baseline_ap"] + 0.05, platelets


@gpu_test
@needs(CAMVID)
def test_segmentation_run(tmp_path, session_cache):
    """The default recipe (linear: the decoder on cached multi-scale maps) on 24 CamVid frames, 10 epochs."""
    from headstart.tasks.segmentation.task import Segmenter

    data = camvid_subset(tmp_path / "camvid")
    seg = Segmenter(epochs=10, overrides={"segmentation.image_size": 192, "device.accelerator": ACCELERATOR})
    m = seg.fit(data, out=tmp_path / "run").metrics_
    ran_on(m, ACCELERATOR)
    val = m["val"]
    assert val["baseline"]["class"] == "road"
    assert val["miou"] > val["baseline"]["miou"] + 0.15 and val["pixel_accuracy"] > val["baseline"]["pixel_accuracy"] + 0.3
