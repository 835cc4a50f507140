"""Images held as rows of pixel values in a table (``tasks/image/pixel_tables.py``), in the layouts they are downloaded
in: Kaggle's Digit Recognizer, Fashion- and Sign Language MNIST, MNIST in CSV, HAM10000's hmnist, CIFAR as CSV,
FER-2013. Built from real images: scikit-learn's handwritten digits and hymenoptera's photos."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import HYMENOPTERA
from PIL import Image

from headstart.errors import DataError
from headstart.tasks import infer_task
from headstart.tasks.image.data import discover, image_samples, labelled_samples
from headstart.tasks.image.pixel_tables import pixel_table, read_rows


def _digits(size: int = 28) -> tuple[list[np.ndarray], list[int]]:
    """scikit-learn's digits as MNIST has them: white ink on black, ``size`` x ``size``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = [np.asarray(Image.fromarray((im * 255 / 16).astype(np.uint8)).resize((size, size),
                                                                                 Image.Resampling.BILINEAR))
              for im in d.images]
    return images, [int(y) for y in d.target]


def _write(path: Path, header: list[str] | None, rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


def _photos(n: int, size: int = 16) -> list[np.ndarray]:
    files = sorted((HYMENOPTERA / "train" / "ants").glob("*.jpg"))[:n]
    if not files:
        pytest.skip(f"{HYMENOPTERA} is absent (the ../shared data folder)")
    return [np.asarray(Image.open(f).convert("RGB").resize((size, size))) for f in files]


def _decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_kaggle_digit_recognizer_trains_predicts_its_test_table_evaluates_and_exports(tmp_path, session_cache):
    """train.csv (label, pixel0...pixel783), test.csv of pixels only, sample_submission.csv: the folder trains on
    train.csv (test.csv named and left out); predict reads test.csv's rows (--out resumable, the ONNX engine too);
    evaluate scores a labelled table of held-out digits."""
    from typer.testing import CliRunner

    from headstart import ImageClassifier
    from headstart.cli import app

    images, labels = _digits()
    names = [f"pixel{i}" for i in range(784)]
    folder = tmp_path / "digit-recognizer"
    _write(folder / "train.csv", ["label", *names], [[y, *im.reshape(-1)] for im, y in zip(images[:300], labels)])
    _write(folder / "test.csv", names, [im.reshape(-1).tolist() for im in images[1500:1540]])
    _write(folder / "sample_submission.csv", ["ImageId", "Label"], [[i + 1, 0] for i in range(40)])
    held_out = _write(tmp_path / "held_out.csv", ["label", *names],
                      [[y, *im.reshape(-1)] for im, y in zip(images[1500:1700], labels[1500:1700])])
    assert infer_task(folder) == "image" and infer_task(folder / "train.csv") == "image"
    splits = discover(folder)
    assert splits.classes == [str(d) for d in range(10)] and len(splits.train) + len(splits.val) == 300
    assert "table of pixels train.csv (28x28 grey from 'pixel0'...'pixel783', label column 'label')" in splits.layout
    assert any("test.csv: images without labels, not read" in n for n in splits.notes)
    first = next(s for s in splits.train + splits.val if s.path.name == "train.csv:2")
    assert np.array_equal(_decoded(first.data), images[0]) and splits.classes[first.label] == str(labels[0])

    run = tmp_path / "run"
    clf = ImageClassifier(model="mobilenet_v2", strategy="linear", cache_views=1, refit=False).fit(folder, out=run)
    report = clf.evaluate(held_out)
    assert report["num_samples"] == 200 and report["accuracy"] > report["baseline"]["accuracy"] + 0.5, report
    html = (run / "report.html").read_text()  # mistakes shown from the rows' pixels
    assert "(unreadable:" not in html and ('data-thumb="1" alt="train.csv:' in html
                                          or "No validation item was misclassified" in html)
    with pytest.raises(DataError, match="holds train.csv but no labelled test or val table"):
        clf.evaluate(folder)

    out = tmp_path / "predictions.csv"
    res = CliRunner().invoke(app, ["predict", str(run), str(folder / "test.csv"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert [r["path"] for r in rows] == [f"{folder / 'test.csv'}:{line}" for line in range(2, 42)]
    truth = [str(y) for y in labels[1500:1540]]
    assert sum(r["label"] == t for r, t in zip(rows, truth)) >= 30  # 40 digits the model never saw
    res = CliRunner().invoke(app, ["predict", str(run), str(folder / "test.csv"), "--out", str(out)])
    assert res.exit_code == 0 and len(list(csv.DictReader(out.open()))) == 40  # run again: nothing written twice
    python = clf.predict(str(folder / "test.csv"))
    assert [r["label"] for r in python] == [r["label"] for r in rows]

    from headstart.deploy import export, onnx_engine

    meta = export.export_run(run, "onnx", max_items=24)  # the parity check reads the run's rows, in memory
    assert meta["parity"]["passed"], meta["parity"]
    engine = onnx_engine.OnnxEngine(run / "model.onnx")
    onnx = engine.predict(str(folder / "test.csv"))  # fp32, against torch's bf16 autocast rows: close calls may flip
    assert [r["path"] for r in onnx] == [r["path"] for r in rows]
    assert sum(a["label"] == b["label"] for a, b in zip(onnx, rows)) >= 36


def test_the_pixel_layouts_datasets_ship_are_read_as_images(tmp_path):
    """Fashion-MNIST's and Sign Language MNIST's train and test tables (labels 0...24 in numeric order), MNIST in CSV
    without a header, HAM10000's hmnist RGB (a pixel's R, G, B together) and CIFAR as CSV (channels first), FER-2013's
    one cell of pixels with its Usage splits: every row decodes to the image written."""
    images, labels = _digits()
    grey = [[y % 25, *im.reshape(-1)] for im, y in zip(images[:120], range(120))]
    names = ["label", *(f"pixel{i + 1}" for i in range(784))]
    sign = tmp_path / "sign"
    _write(sign / "sign_mnist_train" / "sign_mnist_train.csv", names, grey[:100])
    _write(sign / "sign_mnist_test" / "sign_mnist_test.csv", names, grey[100:])
    Image.fromarray(images[0]).save(sign / "amer_sign2.png")  # images beside the tables, as Kaggle's has them
    Image.fromarray(images[1]).save(sign / "amer_sign3.png")
    (sign / "notes.txt").write_bytes((sign / "amer_sign3.png").read_bytes())  # binary in a .txt: not a table
    found = discover(sign)
    assert found.classes[:12] == ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11"]
    assert len(found.train) + len(found.val) == 100 and len(found.test) == 20
    assert "sign_mnist_test.csv" in found.layout and found.val_held_out
    samples, _ = labelled_samples(sign, found.classes)  # evaluate DATA: its test table
    assert len(samples) == 20

    headerless = _write(tmp_path / "mnist_train.csv", None, [[y, *im.reshape(-1)] for im, y in zip(images, labels)])
    table = pixel_table(headerless)
    assert table is not None and table.label == 0 and table.size == 28 and table.channels == 1

    photos = _photos(12)
    hwc = _write(tmp_path / "hmnist_16_16_RGB.csv", [*(f"pixel{i:04d}" for i in range(768)), "label"],
                 [[*p.reshape(-1), i % 2] for i, p in enumerate(photos)])
    chw = _write(tmp_path / "cifar.csv", ["label", *(f"pixel{i + 1}" for i in range(768))],
                 [[i % 2, *p.transpose(2, 0, 1).reshape(-1)] for i, p in enumerate(photos)])
    for path, first in ((hwc, False), (chw, True)):
        table = pixel_table(path)
        assert table is not None and (table.channels, table.channels_first) == (3, first), path
        rows = read_rows(table, [])
        assert all(np.array_equal(_decoded(r.data), p) for r, p in zip(rows, photos)), path

    usage = ["Training"] * 80 + ["PublicTest"] * 20 + ["PrivateTest"] * 20
    fer = _write(tmp_path / "fer2013.csv", ["emotion", "pixels", "Usage"],
                 [[y % 7, " ".join(map(str, im.reshape(-1))), u] for im, y, u in zip(images, labels, usage)])
    splits = discover(fer)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (80, 20, 20) and not splits.val_held_out
    assert "values in one cell" in splits.layout and "split column 'Usage'" in splits.layout
    assert np.array_equal(_decoded(splits.train[0].data), images[0])

    floats = _write(tmp_path / "scaled.csv", ["label", *(f"p{i}" for i in range(784))],
                    [[y, *(im.reshape(-1) / 255).round(4)] for im, y in zip(images[:20], labels)])
    assert pixel_table(floats).top == 1.0  # values up to 1: scaled to 0..255
    assert np.abs(_decoded(read_rows(pixel_table(floats), [])[0].data).astype(int) - images[0]).max() <= 1


def test_tables_that_are_not_images_and_bad_rows(tmp_path):
    """Features (negative values, a number of columns that is no square) are no pixels; a row of other length is
    skipped with its reason; an unlabelled table cannot be trained on; predict takes it."""
    images, labels = _digits()
    rng = np.random.default_rng(0)
    assert pixel_table(_write(tmp_path / "features.csv", ["y", *(f"f{i}" for i in range(100))],
                              [[i % 2, *rng.normal(size=100).round(3)] for i in range(30)])) is None
    assert pixel_table(_write(tmp_path / "wide.csv", ["y", *(f"f{i}" for i in range(90))],
                              [[i % 2, *rng.integers(0, 255, 90)] for i in range(30)])) is None
    rows = [[y, *im.reshape(-1)] for im, y in zip(images[:60], labels)]
    rows.insert(70, [3, 0, 0, 0])
    rows[5] = [labels[5], *images[5].reshape(-1)[:-1], ""]  # a missing value
    skipped: list[tuple[str, str]] = []
    table = pixel_table(_write(tmp_path / "train.csv", ["label", *(f"pixel{i}" for i in range(784))], rows))
    assert table is not None
    read = read_rows(table, skipped)
    assert len(read) == 59 and [s[0] for s in skipped] == ["train.csv:7", "train.csv:62"]
    assert "not an image of 28x28 pixel values" in skipped[0][1]
    unlabelled = _write(tmp_path / "test.csv", [f"pixel{i}" for i in range(784)],
                        [im.reshape(-1).tolist() for im in images[:5]])
    with pytest.raises(DataError, match="without a label column.*nothing to train on"):
        discover(unlabelled)
    assert [s.path.name for s in image_samples(str(unlabelled))] == [f"test.csv:{i}" for i in range(2, 7)]
    assert json.dumps(pixel_table(unlabelled).describe())  # described for the Data line


def test_advise_and_compare_read_a_table_of_pixels(tmp_path):
    """advise's image statistics decode the rows in memory; compare writes them once as PNG files that its seeded
    split tables name, each the row's image."""
    from headstart.evidence.advise import image_statistics
    from headstart.evidence.compare import ClassificationPool
    from headstart.tasks import get_task

    images, labels = _digits()
    table = _write(tmp_path / "train.csv", ["label", *(f"pixel{i}" for i in range(784))],
                   [[y, *im.reshape(-1)] for im, y in zip(images[:60], labels)])
    stats = image_statistics(discover(table).train)
    assert stats["unreadable"] == 0 and stats["median_width"] == 28 and stats["greyscale_fraction"] == 1.0
    pool = ClassificationPool(get_task("image"), table, 0.2, {})
    written = pool.write(tmp_path / "splits", "seed0", list(range(45)), list(range(45, 60)))
    rows = list(csv.DictReader(written.open()))
    assert len(rows) == 60 and all(Path(r["path"]).parent == tmp_path / "splits" / "images" for r in rows)
    by_line = {int(Path(r["path"]).stem.rsplit("_", 1)[1]): r for r in rows}
    for line, row in list(by_line.items())[:10]:  # train.csv:LINE is the table's row LINE - 1
        assert np.array_equal(np.asarray(Image.open(row["path"])), images[line - 2])
        assert row["label"] == str(labels[line - 2])


def test_arrays_in_npz_files_as_medmnist_and_keras_ship_them(tmp_path):
    """MedMNIST's pathmnist.npz (train_images N x 28 x 28 x 3, train_labels N x 1, val_*, test_*) and Keras' mnist.npz
    (x_train, y_train, x_test, y_test): every image decodes to the array written; evaluate scores the test arrays;
    multi-label arrays (ChestMNIST) and arrays of objects are refused."""
    images, labels = _digits()
    grey, y = np.stack(images[:150]), np.array(labels[:150])
    photos = np.stack(_photos(24))
    med = tmp_path / "pathmnist.npz"
    np.savez_compressed(med, train_images=photos[:16], train_labels=np.arange(16)[:, None] % 2,
                        val_images=photos[16:20], val_labels=np.arange(4)[:, None] % 2,
                        test_images=photos[20:], test_labels=np.arange(4)[:, None] % 2)
    assert infer_task(med) == "image"
    splits = discover(med)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (16, 4, 4) and splits.classes == ["0", "1"]
    assert "arrays pathmnist.npz (train_images 16 of 16x16x3 + train_labels" in splits.layout
    assert np.array_equal(_decoded(splits.train[3].data), photos[3])
    samples, _ = labelled_samples(med, splits.classes)
    assert len(samples) == 4 and [s.label for s in samples] == [0, 1, 0, 1]
    assert [s.path.name for s in image_samples(str(med))] == [f"pathmnist.npz:test:{i}" for i in range(4)]  # predict

    keras = tmp_path / "mnist.npz"
    np.savez(keras, x_train=grey[:120], y_train=y[:120], x_test=grey[120:], y_test=y[120:])
    found = discover(keras)
    assert found.val_held_out and len(found.train) + len(found.val) == 120 and len(found.test) == 30
    sample = next(s for s in found.train if s.path.name == "mnist.npz:train:7")
    assert np.array_equal(_decoded(sample.data), grey[7]) and found.classes[sample.label] == str(y[7])

    chest = tmp_path / "chestmnist.npz"
    np.savez(chest, train_images=grey[:10], train_labels=np.zeros((10, 14), np.uint8))
    with pytest.raises(DataError, match="14 labels an image"):
        discover(chest)
    pickled = tmp_path / "objects.npz"
    np.savez(pickled, x_train=np.array([grey[0], "not pixels"], dtype=object), y_train=y[:2])
    with pytest.raises(DataError, match="never unpickles"):
        discover(pickled)
    cut = tmp_path / "cut.npz"  # an interrupted download
    cut.write_bytes(med.read_bytes()[: med.stat().st_size // 2])
    with pytest.raises(DataError, match="damaged or cut short"):
        infer_task(cut)
