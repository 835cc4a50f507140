"""Image sets stored as arrays, as torchvision's ``datasets`` download them (``tasks/image/idx.py``, ``cifar.py``,
dispatched by ``arrays.py``): the MNIST family's IDX files and CIFAR's pickled batches. Written here from real images
(scikit-learn's digits, hymenoptera's photos) in the files' own formats."""

from __future__ import annotations

import gzip
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import HYMENOPTERA, needs_shared
from PIL import Image

from headstart.errors import DataError
from headstart.tasks import flips, infer_task
from headstart.tasks.image.data import discover, image_samples, labelled_samples


def _digits(n: int, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` of scikit-learn's digits as MNIST has them: white ink on black, ``size`` x ``size`` uint8."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.stack([np.asarray(Image.fromarray((im * 255 / 16).astype(np.uint8)).resize((size, size)))
                       for im in d.images[:n]])
    return images, d.target[:n].astype(np.uint8)


def _idx(path: Path, array: np.ndarray, packed: bool = False) -> None:
    """``array`` (uint8) as an IDX file: 0, 0, the type (0x08: unsigned bytes), the dimensions, the values."""
    data = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if packed else data)


def _mnist(raw: Path, images: np.ndarray, labels: np.ndarray, n_train: int, prefix: str = "",
           sep: str = "-") -> None:
    """torchvision's MNIST/raw/: train-* and t10k-* images and labels, unpacked beside their .gz."""
    for split, part in (("train", slice(0, n_train)), ("t10k", slice(n_train, None))):
        for kind, array in (("images", images[part]), ("labels", labels[part])):
            name = f"{prefix}{split}-{kind}{sep}idx{3 if kind == 'images' else 1}-ubyte"
            _idx(raw / name, array)
            _idx(raw / f"{name}.gz", array, packed=True)


def _pixels(sample) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(sample.source)))


def test_mnist_as_torchvision_downloads_it_trains_evaluates_on_t10k_and_predicts(tmp_path, session_cache):
    """data/MNIST/raw/ as MNIST("data", download=True) leaves it: the folder given trains on train-* (validation held
    out of it), evaluate scores the t10k-* test split, predict classifies it; the pixels are the files' own."""
    from headstart import ImageClassifier

    images, labels = _digits(360)
    _mnist(tmp_path / "data" / "MNIST" / "raw", images, labels, 300)
    data = tmp_path / "data"
    assert infer_task(data) == "image"
    splits = discover(data)
    assert splits.classes == [str(d) for d in range(10)]
    assert (len(splits.train) + len(splits.val), len(splits.test)) == (300, 60)
    assert splits.layout.startswith("IDX files MNIST/raw/ (train-images-idx3-ubyte 300 of 28x28; "
                                    "t10k-images-idx3-ubyte 60 of 28x28)")
    first = splits.test[0]
    assert np.array_equal(_pixels(first), images[300]) and splits.classes[first.label] == str(labels[300])

    assert "handwritten digits, and a mirrored digit is none of them" in splits.unmirrored

    clf = ImageClassifier(model="mobilenet_v2", strategy="linear", cache_views=1, refit=False).fit(
        data, out=tmp_path / "run")
    assert clf.metrics_["flips"] == "none"  # data.flip=auto: handwriting is not flipped
    report = ImageClassifier.load(tmp_path / "run").evaluate(data)
    assert report["num_samples"] == 60 and report["accuracy"] > report["baseline"]["accuracy"] + 0.3
    predicted = clf.predict(str(data))
    assert [r["path"] for r in predicted] == [str(data / "MNIST" / "raw" / f"test:{i}") for i in range(60)]
    assert np.mean([r["label"] == str(y) for r, y in zip(predicted, labels[300:])]) == pytest.approx(report["accuracy"])


def test_fashion_mnist_names_kaggle_layout_and_emnist_letters_upright(tmp_path):
    """FashionMNIST/raw/ gets torchvision's class names; Kaggle's MNIST (train-images.idx3-ubyte inside a folder of
    its name) reads the same; EMNIST's transposed images are turned upright and named by its mapping file."""
    images, labels = _digits(120)
    _mnist(tmp_path / "FashionMNIST" / "raw", images, labels, 100)
    splits = discover(tmp_path / "FashionMNIST")
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert splits.classes == names  # torchvision's, in label order
    assert [splits.classes[s.label] for s in splits.test] == [names[y] for y in labels[100:]]
    assert splits.unmirrored == ""  # clothes are flipped

    kaggle = tmp_path / "kaggle"
    for split, part in (("train", slice(0, 100)), ("t10k", slice(100, None))):
        for kind, array, dims in (("images", images[part], 3), ("labels", labels[part], 1)):
            name = f"{split}-{kind}.idx{dims}-ubyte"
            _idx(kaggle / name / name, array)
    splits = discover(kaggle)
    assert splits.classes == [str(d) for d in range(10)] and len(splits.test) == 20

    gzip_dir = tmp_path / "EMNIST" / "raw" / "gzip"
    letters = np.array([1 + y % 2 for y in labels], np.uint8)  # 1: a, 2: b
    _mnist(gzip_dir, images.transpose(0, 2, 1).copy(), letters, 100, prefix="emnist-letters-")
    (gzip_dir / "emnist-letters-mapping.txt").write_text("1 65 97\n2 66 98\n")  # label, upper, lower case codes
    splits = discover(tmp_path / "EMNIST")
    assert splits.classes == ["a", "b"]
    assert np.array_equal(_pixels(splits.test[0]), images[100])  # upright, as written

    _mnist(gzip_dir, images, labels, 100, prefix="emnist-digits-")  # a second set in the folder
    with pytest.raises(DataError, match=r"several sets of IDX files .*emnist-digits.*emnist-letters.*give the folder"):
        discover(tmp_path / "EMNIST")


def test_a_damaged_idx_file_is_named_with_what_to_do(tmp_path):
    images, labels = _digits(40)
    raw = tmp_path / "MNIST" / "raw"
    _mnist(raw, images, labels, 30)
    for f in raw.glob("train-images*"):
        f.write_bytes(f.read_bytes()[:1000] if f.suffix != ".gz" else b"")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: holds 984 bytes of values, 23520 expected for "
                                        r"\(30, 28, 28\); it is cut short .*download it again"):
        discover(tmp_path / "MNIST")


def _batch(images: list[np.ndarray], labels: list[int], key: str = "labels") -> dict:
    """A CIFAR batch as the python version holds it: N x 3072 rows of the red, green then blue planes."""
    data = np.stack([im.transpose(2, 0, 1).reshape(-1) for im in images]).astype(np.uint8)
    return {b"batch_label": b"training batch", key.encode(): labels, b"data": data,
            b"filenames": [f"{i}.png".encode() for i in range(len(images))]}


def _photos(split: str, n: int) -> tuple[list[np.ndarray], list[int]]:
    """``n`` ants then ``n`` bees of hymenoptera's ``split``, 32 x 32."""
    images, labels = [], []
    for label, cls in enumerate(("ants", "bees")):
        for f in sorted((HYMENOPTERA / split / cls).glob("*.jpg"))[:n]:
            images.append(np.asarray(Image.open(f).convert("RGB").resize((32, 32))))
            labels.append(label)
    return images, labels


@needs_shared(HYMENOPTERA)
def test_cifar_batches_as_torchvision_downloads_them(tmp_path):
    """cifar-10-batches-py/ (data_batch_*, test_batch, batches.meta) under the folder given: the classes are
    label_names, in their order; test_batch is the test split that evaluate scores; CIFAR-100's train/test/meta with
    fine labels read the same."""
    cifar = tmp_path / "data" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    train, train_labels = _photos("train", 12)
    for i, part in enumerate((slice(0, 24, 2), slice(1, 24, 2)), 1):  # two batches, each of both classes
        (cifar / f"data_batch_{i}").write_bytes(pickle.dumps(_batch(train[part], train_labels[part]), protocol=2))
    test, test_labels = _photos("val", 5)
    (cifar / "test_batch").write_bytes(pickle.dumps(_batch(test, test_labels), protocol=2))
    names = ["bee", "ant"] + [f"class{i}" for i in range(8)]  # label order, not sorted: label 0 is 'bee'
    (cifar / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.encode() for n in names]}, protocol=2))
    assert infer_task(tmp_path / "data") == "image"
    splits = discover(tmp_path / "data")
    assert splits.classes == ["bee", "ant"]  # the names of the labels used, in label order
    assert (len(splits.train) + len(splits.val), len(splits.test)) == (24, 10)
    assert splits.layout.startswith("CIFAR-10 batches cifar-10-batches-py/ (train 24 (data_batch_1, data_batch_2); "
                                    "test 10 (test_batch)")
    assert np.array_equal(_pixels(splits.test[0]), test[0]) and splits.classes[splits.test[0].label] == "bee"
    samples, _ = labelled_samples(cifar, splits.classes)
    assert len(samples) == 10 and [splits.classes[s.label] for s in samples] == ["bee"] * 5 + ["ant"] * 5
    assert len(image_samples(str(cifar))) == 10  # predict: the test batch

    hundred = tmp_path / "cifar-100-python"
    hundred.mkdir()
    (hundred / "train").write_bytes(pickle.dumps(_batch(train, train_labels, "fine_labels"), protocol=4))
    (hundred / "test").write_bytes(pickle.dumps(_batch(test, test_labels, "fine_labels"), protocol=5))
    (hundred / "meta").write_bytes(pickle.dumps({"fine_label_names": ["apple", "aquarium_fish"],
                                                 "coarse_label_names": ["fruit", "fish"]}))
    splits = discover(hundred)
    assert splits.classes == ["apple", "aquarium_fish"] and len(splits.test) == 10
    assert splits.layout.startswith("CIFAR-100 (fine labels) batches cifar-100-python/")


class _Payload:
    """What a hostile pickle holds: a call made while it loads."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_a_cifar_batch_that_would_run_code_is_refused_unrun(tmp_path):
    cifar = tmp_path / "cifar-10-batches-py"
    cifar.mkdir()
    marker = tmp_path / "ran"
    images, labels = _digits(4, 32)
    batch = _batch([np.repeat(im[..., None], 3, axis=2) for im in images], labels.tolist())
    batch[b"labels"] = [_Payload(marker)] * 4
    (cifar / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_1: not a CIFAR batch, not read \(UnpicklingError: it asks for "
                                        r"posix.mkdir"):
        discover(cifar)
    assert not marker.exists()


@needs_shared(HYMENOPTERA)
def test_pcam_hdf5_files_are_read_when_needed_and_train(tmp_path, session_cache):
    """data/pcam/ as PCAM("data") leaves it: camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5, 'x' N x 96 x 96
    x 3 and 'y' N x 1 x 1 x 1; the patches stay in their files (read, as BMPs, when needed: by data-loading workers
    too), valid is the validation split, test what evaluate scores; classes 'normal' (0) and 'tumor' (1)."""
    h5py = pytest.importorskip("h5py")
    from headstart import ImageClassifier
    from headstart.tasks.image import hdf5

    pcam = tmp_path / "data" / "pcam"
    pcam.mkdir(parents=True)
    written = {}
    for split, source, part in (("train", "train", slice(12)), ("valid", "val", slice(-5, None)),
                                ("test", "val", slice(4))):
        images, labels = [], []
        for label, cls in enumerate(("ants", "bees")):
            for f in sorted((HYMENOPTERA / source / cls).glob("*.jpg"))[part]:
                images.append(np.asarray(Image.open(f).convert("RGB").resize((96, 96))))
                labels.append(label)
        stem = f"camelyonpatch_level_2_split_{split}"
        with h5py.File(pcam / f"{stem}_x.h5", "w") as f:
            f.create_dataset("x", data=np.stack(images), chunks=(1, 96, 96, 3), compression="gzip")
        with h5py.File(pcam / f"{stem}_y.h5", "w") as f:
            f.create_dataset("y", data=np.array(labels, np.uint8).reshape(-1, 1, 1, 1))
        written[split] = images
    data = tmp_path / "data"
    splits = discover(data)
    assert splits.classes == ["normal", "tumor"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (24, 10, 8)
    assert splits.layout.startswith("HDF5 files pcam/ (camelyonpatch_level_2_split_train_x.h5 24 of 96x96x3 + "
                                    "camelyonpatch_level_2_split_train_y.h5; ")
    first = splits.test[-1]
    assert isinstance(first.data, hdf5.H5Row) and np.array_equal(_pixels(first), written["test"][-1])
    assert pickle.loads(pickle.dumps(first)).source == first.source and splits.classes[first.label] == "tumor"
    assert len({s.key for s in [*splits.train, *splits.val, *splits.test]}) == 42  # a content key each

    ImageClassifier(model="mobilenet_v2", strategy="linear", cache_views=1).fit(data, out=tmp_path / "run")
    report = ImageClassifier.load(tmp_path / "run").evaluate(data)
    assert report["num_samples"] == 8 and report["accuracy"] >= report["baseline"]["accuracy"]


def test_svhn_mat_files_as_torchvision_downloads_them(tmp_path):
    """train_32x32.mat and test_32x32.mat: 'X' 32 x 32 x 3 x N, 'y' N x 1 with 10 for the digit 0 (as torchvision
    reads it); extra_32x32.mat beside them is named, not read."""
    from scipy.io import savemat

    images, labels = _digits(150, 32)
    colour = np.repeat(images[..., None], 3, axis=3)  # N x 32 x 32 x 3
    stored = np.where(labels == 0, 10, labels).reshape(-1, 1)
    savemat(tmp_path / "train_32x32.mat", {"X": colour[:120].transpose(1, 2, 3, 0), "y": stored[:120]})
    savemat(tmp_path / "test_32x32.mat", {"X": colour[120:].transpose(1, 2, 3, 0), "y": stored[120:]})
    (tmp_path / "extra_32x32.mat").write_bytes(b"")
    assert infer_task(tmp_path) == "image"
    splits = discover(tmp_path)
    assert splits.classes == [str(d) for d in range(10)] and len(splits.test) == 30
    assert [splits.classes[s.label] for s in splits.test] == [str(y) for y in labels[120:]]
    assert np.array_equal(_pixels(splits.test[0]).reshape(32, 32, 3), colour[120])
    assert "SVHN train_32x32.mat 120; test_32x32.mat 30 (extra_32x32.mat not read" in splits.layout
    assert flips.choose("auto", splits.classes, splits.unmirrored).name == "none"
    assert flips.choose("horizontal", splits.classes, splits.unmirrored).name == "horizontal"
    alone = discover(tmp_path / "train_32x32.mat")
    assert alone.val_held_out and len(alone.train) + len(alone.val) == 120


@needs_shared(HYMENOPTERA)
def test_stl10_binary_files_are_read_from_their_offsets(tmp_path):
    """stl10_binary/ as STL10("data") leaves it: train_X.bin of 96 x 96 images stored channel by channel, column by
    column, train_y.bin of labels 1...10, test_*, class_names.txt; the images stay in the file (read at their offset
    when needed), unlabeled_X.bin is named, not read; a file cut short is named with what to do."""
    folder = tmp_path / "data" / "stl10_binary"
    folder.mkdir(parents=True)
    written = {}
    for split, source, part in (("train", "train", slice(10)), ("test", "val", slice(4))):
        images, labels = [], []
        for label, cls in enumerate(("ants", "bees"), 1):
            for f in sorted((HYMENOPTERA / source / cls).glob("*.jpg"))[part]:
                images.append(np.asarray(Image.open(f).convert("RGB").resize((96, 96))))
                labels.append(label)
        (folder / f"{split}_X.bin").write_bytes(b"".join(im.transpose(2, 1, 0).tobytes() for im in images))
        (folder / f"{split}_y.bin").write_bytes(bytes(labels))
        written[split] = images
    (folder / "class_names.txt").write_text("airplane\nbird\ncar\ncat\ndeer\ndog\nhorse\nmonkey\nship\ntruck\n")
    (folder / "unlabeled_X.bin").write_bytes(b"")
    splits = discover(tmp_path / "data")
    assert splits.classes == ["airplane", "bird"] and (len(splits.train) + len(splits.val), len(splits.test)) == (20, 8)
    assert splits.layout.startswith("STL-10 stl10_binary/ (train_X.bin 20; test_X.bin 8, unlabeled_X.bin not read")
    last = splits.test[-1]
    assert np.array_equal(_pixels(last), written["test"][-1]) and splits.classes[last.label] == "bird"
    assert pickle.loads(pickle.dumps(last)).source == last.source
    with open(folder / "train_X.bin", "ab") as f:
        f.write(b"\x00" * 100)
    with pytest.raises(DataError, match=r"train_X.bin: 553060 bytes, not a whole number of 96 x 96 x 3 images .*cut "
                                        r"short"):
        discover(tmp_path / "data")
