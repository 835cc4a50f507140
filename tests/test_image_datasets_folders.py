"""Image classification from a Hugging Face ``datasets`` folder, as ``load_dataset(...).save_to_disk(...)`` writes it
(``tasks/image/hf_datasets.py``): the images' bytes inside Arrow files, a ClassLabel column, train / validation /
test splits. Built from hymenoptera's real photos with the real ``datasets`` library."""

from __future__ import annotations

import hashlib
import pickle

import pytest
from conftest import HYMENOPTERA, needs_shared

from headstart.errors import DataError
from headstart.tasks import infer_task
from headstart.tasks.image import hf_datasets
from headstart.tasks.image.data import discover, labelled_samples

datasets = pytest.importorskip("datasets")
pq = pytest.importorskip("pyarrow.parquet")
pytestmark = needs_shared(HYMENOPTERA)
CLASSES = ["ants", "bees"]


def _split(split: str, n: int, labelled: bool = True, tags: bool = False):
    files, labels = [], []
    for i, cls in enumerate(CLASSES):
        found = sorted(str(p) for p in (HYMENOPTERA / split / cls).glob("*.jpg"))[:n]
        files += found
        labels += [([i] if tags else i) if labelled else ([] if tags else -1)] * len(found)
    label = datasets.Sequence(datasets.ClassLabel(names=CLASSES)) if tags else datasets.ClassLabel(names=CLASSES)
    features = datasets.Features({"image": datasets.Image(), "labels": label})
    return datasets.Dataset.from_dict({"image": files, "labels": labels}, features=features)


def test_a_datasets_folder_of_images_trains_on_its_splits_and_evaluates_its_labelled_split(tmp_path):
    """train/ and validation/ as given, a test/ of -1 labels (a competition's) named and left out; the classes are the
    ClassLabel names in their order; the images decode from the Arrow file's bytes."""
    from headstart import ImageClassifier

    folder = tmp_path / "beans"
    datasets.DatasetDict({"train": _split("train", 20), "validation": _split("val", 8),
                          "test": _split("val", 3, labelled=False)}).save_to_disk(str(folder))
    assert infer_task(folder) == "image"
    splits = discover(folder)
    assert splits.classes == CLASSES and (len(splits.train), len(splits.val), len(splits.test)) == (40, 16, 0)
    assert "datasets folder beans (train/ 40, validation/ 16, test/ 6" in splits.layout
    assert any("the test split (6 images) has no labels" in n for n in splits.notes)
    first, file = splits.train[0], sorted((HYMENOPTERA / "train" / "ants").glob("*.jpg"))[0]
    assert first.source == file.read_bytes() and first.key == hashlib.sha1(file.read_bytes()).hexdigest()
    # not held in memory: where the Arrow file stores them, read when asked, in data-loading workers too
    assert isinstance(first.data, hf_datasets.DatasetRow) and pickle.loads(pickle.dumps(first)).source == first.source

    clf = ImageClassifier(model="mobilenet_v2", strategy="linear", cache_views=1, refit=False).fit(
        folder, out=tmp_path / "run")
    report = ImageClassifier.load(tmp_path / "run").evaluate(folder)  # no labelled test split: its validation split
    assert report["num_samples"] == 16 and report["accuracy"] == pytest.approx(clf.metrics_["val"]["accuracy"])
    # the scores too: predict folds the BatchNorms as the cache's extraction did (under bf16 they round otherwise)
    assert report["loss"] == pytest.approx(clf.metrics_["val"]["loss"], rel=1e-5)
    assert report["accuracy"] > report["baseline"]["accuracy"]
    predicted = clf.predict(str(folder))  # the competition's unlabelled test split
    assert [r["path"] for r in predicted] == [str(folder / f"test:{i}") for i in range(6)]
    # suggest knows the rows by their bytes: the test split's photos are validation photos, labelled already
    assert clf.suggest(str(folder), n=2) == [] and clf.weighed_ == {"read": 6, "labelled": 6, "repeated": 0}
    first = clf.suggest_first(str(folder), n=2)
    assert len(first) == 2 and clf.weighed_ == {"read": 6, "labelled": 0, "repeated": 0}


def test_one_dataset_gets_a_held_out_split_and_multi_label_rows_are_refused(tmp_path):
    """A Dataset saved alone is the training split (validation held out of it; nothing held out to evaluate); rows
    of several ClassLabels are refused with what to do."""
    one = tmp_path / "one"
    _split("train", 12).save_to_disk(str(one))
    splits = discover(one)
    assert splits.val_held_out and len(splits.train) + len(splits.val) == 24
    with pytest.raises(DataError, match="no labelled test or validation split to evaluate on"):
        labelled_samples(one, splits.classes)
    tagged = tmp_path / "tagged"
    datasets.DatasetDict({"train": _split("train", 4, tags=True)}).save_to_disk(str(tagged))
    with pytest.raises(DataError, match="several labels an image .* --task multilabel"):
        discover(tagged)


def test_a_hub_dataset_of_label_lists_trains_as_multi_label_images(tmp_path):
    """Parquet files whose label column is a Sequence of ClassLabel (an image of ants, of bees, of both: the two
    photos side by side, or of none: a blank image) are multi-label: inferred so, the splits and ClassLabel names as
    given, a short run beats the baseline on the validation rows, evaluates them again, and predicts the file."""
    import io

    from PIL import Image

    from headstart import MultiLabelClassifier
    from headstart.tasks.multilabel.data import discover as tag_discover
    from headstart.tasks.multilabel.data import labelled_tags

    def rows(split: str, n: int) -> list[dict]:
        ants, bees = ([p.read_bytes() for p in sorted((HYMENOPTERA / split / c).glob("*.jpg"))[:n]] for c in CLASSES)
        out = [{"image": {"bytes": a, "path": None}, "tags": [0]} for a in ants[: n // 2]]
        out += [{"image": {"bytes": b, "path": None}, "tags": [1]} for b in bees[: n // 2]]
        for a, b in zip(ants[n // 2:], bees[n // 2:]):  # both: the two photos side by side
            left, right = (Image.open(io.BytesIO(x)).convert("RGB").resize((224, 224)) for x in (a, b))
            both = Image.new("RGB", (448, 224))
            both.paste(left, (0, 0))
            both.paste(right, (224, 0))
            buf = io.BytesIO()
            both.save(buf, format="JPEG", quality=90)
            out.append({"image": {"bytes": buf.getvalue(), "path": None}, "tags": [1, 0]})
        return out

    features = datasets.Features({"image": datasets.Image(), "tags": datasets.Sequence(datasets.ClassLabel(names=CLASSES))})
    repo = tmp_path / "hub"
    for name, n in (("train", 24), ("validation", 12), ("test", 4)):
        found = rows("train" if name == "train" else "val", n)
        if name == "test":  # a competition's hidden labels: every list empty
            found = [{**r, "tags": []} for r in found]
        datasets.Dataset.from_list(found, features=features).to_parquet(
            str(repo / "data" / f"{name}-00000-of-00001.parquet"))
    assert infer_task(repo) == "multilabel" and infer_task(repo / "data" / "train-00000-of-00001.parquet") == "multilabel"
    splits = tag_discover(repo)
    assert splits.classes == CLASSES and (len(splits.train), len(splits.val), len(splits.test)) == (36, 18, 0)
    assert "the test split (6 images) has no labels: not read" in splits.notes
    assert [s.label for s in splits.val] == [(0,)] * 6 + [(1,)] * 6 + [(0, 1)] * 6
    assert isinstance(splits.val[0].data, hf_datasets.ParquetRow)
    assert [s.label for s in labelled_tags(repo, ["bees", "ants"])][-1] == (0, 1)

    clf = MultiLabelClassifier(model="mobilenet_v2", strategy="linear", cache_views=1, refit=False).fit(
        repo, out=tmp_path / "run")
    val = clf.metrics_["val"]
    assert val["map"] > val["baseline"]["map"] + 0.2, val
    report = MultiLabelClassifier.load(tmp_path / "run").evaluate(repo)
    assert report["num_samples"] == 18 and report["map"] == pytest.approx(val["map"], abs=1e-6)
    predicted = clf.predict(repo / "data" / "validation-00000-of-00001.parquet")
    assert len(predicted) == 18 and predicted[0]["path"].endswith("validation:0")


def test_a_hub_dataset_repository_of_parquet_files_reads_as_its_splits(tmp_path):
    """A dataset repository as snapshot_download or git clone gives it: data/{split}-00000-of-00001.parquet written by
    datasets (the features in the schema's metadata); one such file alone is the training split."""
    repo = tmp_path / "beans"
    parts = {"train": _split("train", 15), "validation": _split("val", 5), "test": _split("val", 5)}
    for name, ds in parts.items():
        ds.to_parquet(str(repo / "data" / f"{name}-00000-of-00001.parquet"), batch_size=4)  # row groups of 4 images
    assert infer_task(repo) == "image" and infer_task(repo / "data" / "train-00000-of-00001.parquet") == "image"
    splits = discover(repo)
    assert splits.classes == CLASSES and (len(splits.train), len(splits.val), len(splits.test)) == (30, 10, 10)
    assert splits.layout.startswith("Parquet files beans (train/ 30, validation/ 10, test/ 10")
    first = splits.val[0]
    assert first.source == sorted((HYMENOPTERA / "val" / "ants").glob("*.jpg"))[0].read_bytes()
    assert isinstance(first.data, hf_datasets.ParquetRow) and pickle.loads(pickle.dumps(first)).source == first.source
    files = [f for cls in CLASSES for f in sorted((HYMENOPTERA / "train" / cls).glob("*.jpg"))[:15]]
    assert pq.ParquetFile(repo / "data" / "train-00000-of-00001.parquet").num_row_groups > 1
    assert [s.source for s in splits.train[::-1]] == [f.read_bytes() for f in files[::-1]]  # any order, any group
    samples, _ = labelled_samples(repo, CLASSES)
    assert len(samples) == 10 and [s.label for s in samples] == [0] * 5 + [1] * 5
    alone = discover(repo / "data" / "train-00000-of-00001.parquet")
    assert alone.val_held_out and len(alone.train) + len(alone.val) == 30

    from headstart.evidence.compare import make_pool  # compare's split tables name the rows' images written as files
    from headstart.tasks import get_task

    pool = make_pool(get_task("image"), repo, 0.2, {})
    train, val = pool.split(0, 0.2)
    written = discover(pool.write(tmp_path / "cmp", "seed0", train, val))
    assert (len(written.train), len(written.val), len(written.test)) == (len(train), len(val), 10)
    by_file = {s.path.read_bytes(): s.label for s in written.train + written.val + written.test}
    assert len(by_file) == 40 and all(by_file[s.source] == s.label  # val and test: the same 10 photos
               for s in splits.train + splits.val + splits.test)


def test_a_parquet_table_of_image_bytes_without_datasets_metadata_reads_as_images(tmp_path):
    """A table written by pandas / pyarrow: no Hugging Face metadata, the images as their files' bytes (or as datasets'
    {bytes, path} struct) beside a label column; the labels' values are the classes. Another binary column that is
    not images is not taken for them."""
    pa = pytest.importorskip("pyarrow")
    files = {cls: sorted((HYMENOPTERA / "train" / cls).glob("*.jpg"))[:10] for cls in CLASSES}
    images = [f.read_bytes() for cls in CLASSES for f in files[cls]]
    labels = [cls for cls in CLASSES for _ in files[cls]]
    plain = tmp_path / "plain" / "train.parquet"
    plain.parent.mkdir()
    pq.write_table(pa.table({"checksum": pa.array([b"\x00\x01"] * 20, pa.binary()),
                             "img": pa.array(images, pa.binary()), "label": labels}), plain, row_group_size=6)
    assert infer_task(plain) == "image"
    splits = discover(plain)
    assert splits.classes == CLASSES and len(splits.train) + len(splits.val) == 20
    assert sorted(s.source for s in [*splits.train, *splits.val]) == sorted(images)
    assert "labels from 'label'" in splits.layout

    structs = tmp_path / "structs"
    (structs / "data").mkdir(parents=True)
    for split, n in (("train", 8), ("test", 2)):
        chosen = [(f, i) for i, cls in enumerate(CLASSES) for f in files[cls][:n]]
        pq.write_table(pa.table({"image": [{"bytes": f.read_bytes(), "path": f.name} for f, _ in chosen],
                                 "label": [i for _, i in chosen]}), structs / "data" / f"{split}-00000.parquet")
    splits = discover(structs)
    assert splits.classes == ["0", "1"] and (len(splits.train) + len(splits.val), len(splits.test)) == (16, 4)
    assert splits.test[0].source == files["ants"][0].read_bytes()

    not_images = tmp_path / "other.parquet"
    pq.write_table(pa.table({"blob": pa.array([b"\x00\x01"] * 4, pa.binary()), "label": [0, 1, 0, 1]}), not_images)
    assert not hf_datasets.is_image_dataset(not_images)
