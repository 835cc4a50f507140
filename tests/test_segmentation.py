"""Semantic segmentation end to end on real CamVid frames and the packaged EfficientNet-Lite0.

One module-scoped run trains the task's default recipe (frozen encoder on cached multi-scale maps, the FPN
decoder only) on 24 training / 12 validation frames at 192 px; the tests then check its scores against
the majority-class baseline and against the same network trained from random weights, reloading,
``predict --save-masks``, the report and the CLI's errors.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED, needs_shared
from PIL import Image
from typer.testing import CliRunner

from headstart.cli import app

CAMVID = SHARED / "camvid"
pytestmark = needs_shared(CAMVID)
SIZE, EPOCHS = 192, 10


def camvid_subset(root: Path, train: int = 24, val: int = 12) -> Path:
    """``train`` / ``val`` frames of CamVid spread over each split (symlinks), with its classes.txt."""
    for split, n in (("train", train), ("val", val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        files = sorted((CAMVID / "images" / split).glob("*.jpg"))
        for f in files[:: len(files) // n][:n]:
            os.symlink(f, root / "images" / split / f.name)
            os.symlink(CAMVID / "masks" / split / f"{f.stem}.png", root / "masks" / split / f"{f.stem}.png")
    (root / "classes.txt").write_text((CAMVID / "classes.txt").read_text())
    return root


@pytest.fixture(scope="module")
def subset(tmp_path_factory) -> Path:
    return camvid_subset(tmp_path_factory.mktemp("camvid24"))


@pytest.fixture(scope="module")
def trained(subset, tmp_path_factory, session_cache):
    """The default recipe (strategy linear) through the CLI: the run folder and its metrics."""
    run = tmp_path_factory.mktemp("seg") / "run"
    res = CliRunner().invoke(app, ["train", str(subset), "--out", str(run), "--epochs", str(EPOCHS),
                                   f"segmentation.image_size={SIZE}"])
    assert res.exit_code == 0, res.output
    return run, json.loads((run / "metrics.json").read_text())


def test_task_is_inferred_and_beats_the_majority_baseline(trained):
    run, metrics = trained
    assert json.loads((run / "headstart.json").read_text())["task"] == "segmentation"
    val = metrics["val"]
    assert metrics["strategy"] == "linear" and metrics["cache"]["items_computed"] + metrics["cache"]["items_served"] > 0
    # predicting 'road' everywhere: mIoU 0.026, pixel accuracy 0.29 on these 12 frames; measured 0.32 / 0.79
    assert val["baseline"]["class"] == "road"
    assert val["miou"] > val["baseline"]["miou"] + 0.15
    assert val["pixel_accuracy"] > val["baseline"]["pixel_accuracy"] + 0.3
    assert val["per_class"]["road"]["iou"] > 0.6 and val["per_class"]["sky"]["iou"] > 0.5
    # no collapse and no baseline warning; these few epochs on 12 frames leave the thin classes (poles, signs...)
    # unpainted, and a warning names each class never predicted
    enough = max(1000, 0.001 * val["num_pixels"])
    never = [c for c, m in val["per_class"].items() if m["pixels"] >= enough and m["predicted_share"] == 0]
    assert [w for w in val["warnings"] if "never predicted" not in w] == [], val["warnings"]
    assert all(f"'{c}'" in val["warnings"][0] for c in never[:5]) if never else not val["warnings"]
    for name in ("history.csv", "learning_curve.png", "confusion_matrix.png", "val_overlays.png", "report.md"):
        assert (run / name).is_file(), name


def test_report_has_per_class_iou_and_overlays(trained):
    run, metrics = trained
    html = (run / "report.html").read_text()
    assert 'id="per-class-iou"' in html and 'id="val-overlays"' in html and 'id="confusion-matrix"' in html
    table = html[html.index('id="per-class-iou"'):]
    for name in metrics["classes"]:
        assert name in table
    assert f"{metrics['val']['per_class']['road']['iou']:.4f}" in table


def test_reload_reproduces_predictions_and_saves_masks(trained, subset, tmp_path):
    from headstart.tasks.segmentation.task import Segmenter

    run, metrics = trained
    files = sorted((subset / "images" / "val").glob("*.jpg"))[:3]
    seg = Segmenter.load(run)
    rows = seg.predict(files)
    again = Segmenter.load(run).predict(files)
    for r, a in zip(rows, again):
        assert r["mask"].shape == (360, 480) and (r["mask"] == a["mask"]).all()
        assert abs(sum(r["fractions"].values()) - 1.0) < 1e-3
    report = seg.evaluate(subset)  # the val split at each image's own size, as training's final evaluation
    assert report["miou"] == pytest.approx(metrics["val"]["miou"], abs=0.01)

    out = tmp_path / "masks"
    res = CliRunner().invoke(app, ["predict", str(run), *map(str, files), "--format", "json", "--save-masks", str(out)])
    assert res.exit_code == 0, res.output
    printed = json.loads(res.stdout[res.stdout.index("["):])
    assert [p["fractions"] for p in printed] == [r["fractions"] for r in rows]
    for f, r in zip(files, rows):
        index = np.array(Image.open(out / f"{f.stem}.png"))
        assert index.shape == (360, 480) and index.max() < len(metrics["classes"])
        assert (index == r["mask"]).all()
        assert Image.open(out / f"{f.stem}_overlay.png").size == (480, 360)

    same = []  # two images of one name in two folders: each keeps its own mask
    for folder, f in zip("ab", files):
        (tmp_path / folder).mkdir()
        same.append(shutil.copy(f, tmp_path / folder / "frame.jpg"))
    seg.predict(same, save_masks=tmp_path / "same")
    assert sorted(p.name for p in (tmp_path / "same").iterdir()) == [
        "a_frame.png", "a_frame_overlay.png", "b_frame.png", "b_frame_overlay.png"]
    for folder, r in zip("ab", rows):
        assert (np.array(Image.open(tmp_path / "same" / f"{folder}_frame.png")) == r["mask"]).all()


def test_a_hub_dataset_s_rows_evaluate_predict_and_export_as_their_files_do(trained, subset, tmp_path):
    """The validation frames as a Hub repository's Parquet file of images and masks (classes.txt beside it):
    evaluate gives the files' mIoU; predict of the file gives each row the mask of its frame's file; the ONNX export's
    parity check reads the rows' images."""
    datasets = pytest.importorskip("datasets")
    from headstart.deploy.export import export_run
    from headstart.tasks.segmentation.task import Segmenter

    run, _ = trained
    files = sorted((subset / "images" / "val").glob("*.jpg"))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
    rows = [{"image": {"bytes": f.read_bytes(), "path": f.name},
             "label": {"bytes": (subset / "masks" / "val" / f"{f.stem}.png").read_bytes(), "path": f"{f.stem}.png"}}
            for f in files]
    repo = tmp_path / "camvid-hub"
    (repo / "data").mkdir(parents=True)
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(repo / "data" / "validation-00000-of-00001.parquet"),
                                                                   batch_size=4)
    datasets.Dataset.from_list(rows[:4], features=features).to_parquet(str(repo / "data" / "train-00000-of-00001.parquet"))
    (repo / "classes.txt").write_text((subset / "classes.txt").read_text())
    seg = Segmenter.load(run)
    assert seg.evaluate(repo)["miou"] == pytest.approx(seg.evaluate(subset)["miou"], abs=1e-6)
    from_rows = seg.predict(repo / "data" / "validation-00000-of-00001.parquet")
    from_files = seg.predict(files)
    assert [r["path"] for r in from_rows][:2] == [str(repo / "data" / "validation-00000-of-00001.parquet" / f"validation:{i}")
                                                  for i in range(2)]
    assert len(from_rows) == len(files) and all((r["mask"] == f["mask"]).all() for r, f in zip(from_rows, from_files))
    result = export_run(run, data=repo, out=tmp_path / "model.onnx", max_items=4)
    assert result["parity"]["engine"]["pixel_agreement"] > 0.999, result["parity"]


def test_server_answers_masks_as_predict_does(trained, subset):
    """``headstart serve`` on a segmentation run: each mask comes back as an index PNG equal to predict's."""
    import base64
    import io

    httpx = pytest.importorskip("httpx", reason="the serve extra is not installed")
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from headstart.deploy.server import BackgroundServer, Limits, create_app
    from headstart.tasks.segmentation.task import Segmenter

    run, metrics = trained
    files = sorted((subset / "images" / "val").glob("*.jpg"))[:2]
    expected = Segmenter.load(run).predict(files)
    upload = [("files", (f.name, f.read_bytes(), "image/jpeg")) for f in files]
    app_ = create_app(run, Limits(max_batch=4, max_wait_ms=5, max_items=4, timeout=60))
    with BackgroundServer(app_) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.get("/metadata").json()["preprocessing"]["image_size"] == SIZE
        answer = client.post("/predict", files=upload)
    assert answer.status_code == 200, answer.text
    rows = answer.json()
    assert len(rows) == len(expected)
    for row, e in zip(rows, expected):
        mask = np.array(Image.open(io.BytesIO(base64.b64decode(row["mask_png"]))))
        assert mask.shape == (360, 480) and (mask == e["mask"]).all()
        assert row["fractions"] == pytest.approx(e["fractions"], abs=1e-6)


def test_pretrained_beats_random_init_at_the_same_budget(trained, subset, tmp_path):
    """Random weights, every layer training, the same epochs and data: measured mIoU 0.08 against 0.32."""
    from headstart.tasks.segmentation.task import Segmenter

    _, metrics = trained
    scratch = Segmenter(strategy="full", epochs=EPOCHS, pretrained=False, image_size=SIZE).fit(subset, out=tmp_path / "s")
    assert scratch.model_.backbone.spec.weights is None
    assert metrics["val"]["miou"] > scratch.metrics_["val_miou"] + 0.1


def test_cli_errors(trained, subset, tmp_path):
    run, _ = trained
    runner = CliRunner()
    res = runner.invoke(app, ["predict", str(run), str(tmp_path / "missing.jpg")])
    assert res.exit_code == 2 and "missing.jpg" in res.output
    # torchvision's pretrained segmenters: no download here; the registry's error says where it looked and how
    out = tmp_path / "tv"
    res = runner.invoke(app, ["train", str(subset), "--task", "segmentation", "--out", str(out),
                              "--model", "tv:deeplabv3_mobilenet_v3_large"])
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "not in torchvision's cache: looked for" in text and "--weights" in text
    assert not out.exists()
    res = runner.invoke(app, ["train", str(subset), "--task", "segmentation", "--out", str(out), "--model", "minilm"])
    assert res.exit_code == 2 and "image backbone" in " ".join(res.output.split())


def test_torchvision_segmenter_trains_from_a_weights_file(subset, tmp_path):
    """``tv:`` models get a classifier for the user's classes; their weights can come from a local file."""
    import torchvision
    from safetensors.torch import save_file

    from headstart.tasks.segmentation.model import create_model
    from headstart.tasks.segmentation.task import Segmenter

    model = create_model("tv:lraspp_mobilenet_v3_large", 11, pretrained=False)
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 96, 128))
    assert out.shape == (1, 11, 96, 128)
    assert model.backbone.num_groups > 5 and set(model.head) == {"classifier"}
    net = torchvision.models.get_model("lraspp_mobilenet_v3_large", weights=None, weights_backbone=None)
    weights = tmp_path / "lraspp.safetensors"  # what a user downloads elsewhere (here: random weights, 21 VOC classes)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    seg = Segmenter(model="tv:lraspp_mobilenet_v3_large", weights=str(weights), strategy="partial:2", epochs=1,
                    image_size=96).fit(subset, out=tmp_path / "run")
    assert seg.model_.backbone.spec.weights.startswith("file:") and seg.metrics_["cache"]["items_computed"] == 0
    row = Segmenter.load(tmp_path / "run").predict([sorted((subset / "images" / "val").glob("*.jpg"))[0]])[0]
    assert row["mask"].shape == (360, 480) and row["mask"].max() < 11


def test_iou_matches_torchmetrics_and_the_baseline_is_exact():
    from torchmetrics.functional.classification import multiclass_jaccard_index

    from headstart.tasks.segmentation.metrics import confusion, segmentation_report

    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (2, 30, 40), generator=g)
    target[:, :5] = 255
    preds = torch.where(torch.rand(target.shape, generator=g) < 0.7, target.clamp(max=3), torch.randint(0, 4, target.shape,
                                                                                                     generator=g))
    report = segmentation_report(confusion(preds, target, 4), ["a", "b", "c", "d"], train_pixels=[1, 9, 3, 2])
    per_class = multiclass_jaccard_index(preds, target, 4, average=None, ignore_index=255)
    assert [report["per_class"][c]["iou"] for c in "abcd"] == pytest.approx(per_class.tolist(), abs=1e-6)
    assert report["miou"] == pytest.approx(float(per_class.mean()), abs=1e-6)
    labelled = target[target != 255]
    assert report["pixel_accuracy"] == pytest.approx(float((preds[target != 255] == labelled).float().mean()))
    share_b = float((labelled == 1).float().mean())  # 'b' everywhere: its IoU is its share, the others 0
    assert report["baseline"] == {"class": "b", "pixel_accuracy": pytest.approx(share_b), "miou": pytest.approx(share_b / 4)}
    collapsed = segmentation_report(confusion(torch.ones_like(target), target, 4), list("abcd"), [1, 9, 3, 2])
    assert len(collapsed["warnings"]) == 2 and "predicts one class ('b')" in collapsed["warnings"][0]
    big = torch.randint(0, 4, (4, 60, 80), generator=g)  # 19,200 pixels: 'c' painted as 'a', never found
    partial = segmentation_report(confusion(torch.where(big == 2, 0, big), big, 4), list("abcd"), [1, 9, 3, 2])
    named = [w for w in partial["warnings"] if "never predicted" in w]
    assert len(named) == 1 and f"'c' ({int((big == 2).sum()):,} pixels)" in named[0], partial["warnings"]


def test_compare_and_advise_go_through_the_registry(subset, tmp_path, session_cache):
    """compare: pretrained linear against scratch over 2 seeded splits; advise: a short decoder fit per backbone."""
    from headstart.evidence.advise import advise

    out = tmp_path / "cmp"
    res = CliRunner().invoke(app, ["compare", str(subset), "segmentation.image_size=128", "--out", str(out),
                                   "--strategies", "linear,scratch", "--seeds", "2", "--epochs", "3"])
    assert res.exit_code == 0, res.output
    result = json.loads((out / "compare.json").read_text())
    assert result["task"] == "segmentation" and result["metric"] == "miou"
    by = {s["strategy"]: s for s in result["summary"]}
    assert by["linear"]["miou"]["n"] == 2 and by["linear"]["miou"]["mean"] > by["scratch"]["miou"]["mean"]
    assert "training from scratch" in result["verdict"] and 'id="best-per-class"' in (out / "report.html").read_text()

    advice = advise(subset, budget_s=10, models=["efficientnet_lite0"], task="segmentation",
                    overrides={"segmentation.image_size": 128})
    probe = advice["probes"][0]
    assert advice["recommendation"]["model"] == "efficientnet_lite0" and advice["recommendation"]["strategy"] == "linear"
    assert probe["miou"] > probe["baseline_miou"] + 0.05


def test_onnx_export_passes_parity_and_the_engine_predicts_torchs_masks(trained, subset, tmp_path):
    """ONNX fp32 with any height and width; ``predict --engine onnx`` (numpy + PIL) gives torch's masks (fp32)."""
    from headstart.deploy.export import export_run
    from headstart.deploy.onnx_engine import OnnxEngine
    from headstart.tasks.segmentation.task import Segmenter

    run, metrics = trained
    meta = export_run(run, "onnx", max_items=4)
    parity = meta["parity"]
    assert parity["passed"] and parity["items"] == 4
    assert parity["max_abs_logit_diff"] < 1e-3 * parity["max_abs_reference_logit"]
    assert parity["pixel_agreement"] >= 0.999 and parity["engine"]["pixel_agreement"] >= 0.995
    assert json.loads((run / "export.json").read_text())["exports"]["model.onnx"]["parity"]["passed"]
    sidecar = json.loads((run / "model.onnx.json").read_text())
    assert sidecar["inputs"][0]["shape"] == ["batch", 3, "height", "width"]
    assert sidecar["preprocessing"]["resize_shorter_side"] == SIZE and len(sidecar["palette"]) == len(metrics["classes"])

    frames = sorted((subset / "images" / "val").glob("*.jpg"))[3:5]
    odd = tmp_path / "odd.png"  # another size and aspect ratio: the graph's height and width are dynamic
    Image.open(frames[0]).resize((301, 200)).save(odd)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    files = [*frames, odd, bad]
    torch_seg = Segmenter.load(run)
    torch_seg.config.device.precision = "32-true"  # the engine is fp32; the default here would be bf16 autocast
    expected = torch_seg.predict(files, errors=True)
    got = OnnxEngine(run / "model.onnx").predict(files, top_k=None, errors=True)
    assert [r.get("error") is None for r in got] == [True, True, True, False]
    assert [r.get("error") for r in got] == [r.get("error") for r in expected]
    for e, g in zip(expected[:3], got[:3]):
        assert g["mask"].shape == e["mask"].shape == (g["height"], g["width"])
        assert (g["mask"] == e["mask"]).mean() >= 0.995
        assert g["fractions"] == pytest.approx(e["fractions"], abs=5e-3)
    assert got[2]["mask"].shape == (200, 301)

    out = tmp_path / "masks"
    res = CliRunner().invoke(app, ["predict", str(run), *map(str, frames), "--engine", "onnx", "--format", "json",
                                   "--save-masks", str(out)])
    assert res.exit_code == 0, res.output
    printed = json.loads(res.stdout[res.stdout.index("["):])
    assert [p["fractions"] for p in printed] == [g["fractions"] for g in got[:2]]
    for f, g in zip(frames, got):
        assert (np.array(Image.open(out / f"{f.stem}.png")) == g["mask"]).all()
        assert Image.open(out / f"{f.stem}_overlay.png").size == (480, 360)


def test_torchscript_export_passes_parity_and_int8_and_fp16_are_refused(trained, tmp_path):
    from headstart.deploy.export import export_run

    run, _ = trained
    meta = export_run(run, "torchscript", max_items=4, out=tmp_path / "model.torchscript.pt")
    parity = meta["parity"]
    assert parity["passed"] and parity["pixel_agreement"] >= 0.999
    assert parity["max_abs_logit_diff"] < 1e-3 * parity["max_abs_reference_logit"]
    module = torch.jit.load(str(tmp_path / "model.torchscript.pt"))
    with torch.no_grad():
        assert module(torch.zeros(1, 3, 96, 160)).shape == (1, len(meta["classes"]), 96, 160)
    res = CliRunner().invoke(app, ["export", str(run), "--int8"])
    assert res.exit_code == 2 and "mIoU change is not measured" in " ".join(res.output.split())
    res = CliRunner().invoke(app, ["export", str(run), "--format", "torchscript", "--fp16"])
    assert res.exit_code == 2 and "Use --format onnx --fp16" in " ".join(res.output.split())
