"""Near-copies: one photo saved twice (resized, recompressed, as PNG) is found across the splits by its pixels.

hymenoptera's photos, with some saved again as a second source would have saved them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import HYMENOPTERA, SHARED, needs_shared, train_cli
from PIL import Image

from headstart.tasks.image import near_copies
from headstart.tasks.image.data import discover
from headstart.tasks.image.dataset import ImageStore

pytestmark = needs_shared(HYMENOPTERA)


def _resaved(jpg: Path, out: Path, scale: float = 0.6, quality: int = 70) -> Path:
    """``jpg`` saved again: smaller and recompressed (``.jpg``), or as it is in another format (``.png``)."""
    image = Image.open(jpg).convert("RGB")
    if out.suffix == ".jpg":
        image = image.resize((round(image.width * scale), round(image.height * scale)))
    image.save(out, quality=quality)
    return out


def _photos(cls: str, split: str = "train") -> list[Path]:
    return sorted((HYMENOPTERA / split / cls).glob("*.jpg"))


def _notes(root: Path) -> tuple[dict[str, list], list[str]]:
    found = discover(root, 0.2, 0)
    store = ImageStore(found.train + found.val + found.test, 224, "bilinear")
    splits = {"train": list(found.train), "val": list(found.val), "test": list(found.test)}
    return splits, store.near_copies(splits, found.val_held_out, found.classes)


def test_near_copies_in_a_given_validation_split_are_said_and_left_there(tmp_path):
    root = tmp_path / "d"
    for split, n in (("train", 20), ("val", 8)):
        for cls in ("ants", "bees"):
            (root / split / cls).mkdir(parents=True)
            for jpg in _photos(cls, split)[:n]:
                shutil.copy(jpg, root / split / cls)
    copies = [_resaved(_photos("ants")[3], root / "val" / "ants" / "smaller.jpg"),
              _resaved(_photos("bees")[5], root / "val" / "bees" / "as_png.png")]
    splits, notes = _notes(root)
    assert len(notes) == 1 and notes[0].startswith("2 of the 18 validation images are near-copies"), notes
    assert all(str(c) in notes[0] for c in copies), notes
    assert len(splits["val"]) == 18  # DATA's own split: said, not changed


def test_a_split_headstart_draws_gives_validations_near_copies_to_training(tmp_path):
    root = tmp_path / "d"
    for cls in ("ants", "bees"):
        (root / cls).mkdir(parents=True)
        for i, jpg in enumerate(_photos(cls)[:30]):
            shutil.copy(jpg, root / cls)
            if i < 10:  # ten photos a class also saved smaller: 20 pairs, split by the seeded draw
                _resaved(jpg, root / cls / f"{jpg.stem}_small.jpg")
    before = discover(root, 0.2, 0)
    train_stems = {s.path.stem.removesuffix("_small") for s in before.train}
    crossing = [s for s in before.val if s.path.stem.removesuffix("_small") in train_stems]
    assert crossing, "the seeded draw put no pair on both sides: the test needs another seed"
    splits, notes = _notes(root)
    assert len(notes) == 1 and notes[0].startswith(f"{len(crossing)} validation image(s) were near-copies"), notes
    assert "moved to training" in notes[0]
    train = {s.path.stem.removesuffix("_small") for s in splits["train"]}
    assert not [s for s in splits["val"] if s.path.stem.removesuffix("_small") in train]  # no pair straddles now
    assert len(splits["train"]) + len(splits["val"]) == 80


def test_a_near_copy_under_another_label_is_said(tmp_path):
    root = tmp_path / "d"
    for cls in ("ants", "bees"):
        (root / "train" / cls).mkdir(parents=True)
        for jpg in _photos(cls)[:15]:
            shutil.copy(jpg, root / "train" / cls)
    _resaved(_photos("ants")[2], root / "train" / "bees" / "looks_like_a_bee.jpg", scale=0.8)
    _, notes = _notes(root)
    conflict = [n for n in notes if "under another label" in n]
    assert len(conflict) == 1 and "looks_like_a_bee.jpg (bees)" in conflict[0] and "(ants)" in conflict[0], notes


@pytest.mark.parametrize("name", ["hymenoptera_data", "blood_cells"])
def test_distinct_pictures_are_not_near_copies(name):
    if not (SHARED / name).exists():
        pytest.skip(f"{SHARED / name} is absent")
    _, notes = _notes(SHARED / name)
    assert notes == []  # 398 photos; 1,477 blood-cell crops on one background, many alike


def test_the_band_index_finds_what_comparing_every_pair_finds(tmp_path):
    """The hash bands only choose which pairs to compare: on photos and their re-saved copies they find every pair
    that comparing each item with every training item finds."""
    root = tmp_path / "d"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir(parents=True)
    photos = _photos("ants")[:25] + _photos("bees")[:25]
    for i, jpg in enumerate(photos):
        _resaved(jpg, root / "a" / f"{i}.jpg", scale=0.5, quality=60)
        _resaved(jpg, root / "b" / f"{i}.png")
    found = discover(root, 0.0, 0)
    every = found.train + found.val  # (a validation split of one image a class is drawn still)
    store = ImageStore(every, 224, "bilinear")
    a = [s for s in every if s.path.parent.name == "a"]
    b = [s for s in every if s.path.parent.name == "b"]
    pairs = near_copies.find(a, b, store.thumbs, store.get)
    assert {(p.item.path.stem, p.of.path.stem) for p in pairs} == {(str(i), str(i)) for i in range(50)}
    assert max(p.distance for p in pairs) < near_copies.CLOSE


def test_training_leaves_validation_without_near_copies_of_training(tmp_path, session_cache):

    root = tmp_path / "d"
    for cls in ("ants", "bees"):
        (root / cls).mkdir(parents=True)
        for i, jpg in enumerate(_photos(cls)[:30]):
            shutil.copy(jpg, root / cls)
            if i < 10:
                _resaved(jpg, root / cls / f"{jpg.stem}_small.jpg")
    run = tmp_path / "run"
    metrics = train_cli(root, run, "--strategy", "linear", "cache.views=1")
    moved = next(w for w in metrics["data_warnings"] if "moved to training" in w)
    n = int(moved.split()[0])
    assert metrics["num_train"] + metrics["num_val"] == 80 and metrics["val"]["num_samples"] == metrics["num_val"]
    assert metrics["num_val"] == 16 - n, (metrics["num_val"], n)  # 20% of 80 drawn, the moved ones gone
    assert metrics["refit"]["num_train"] == 80  # the refit on train + validation: every image once, none moved twice


COCO128 = SHARED / "coco128"


@needs_shared(COCO128)
def test_a_detection_split_headstart_draws_gives_validations_near_copies_to_training(tmp_path):
    """coco128 photos in a YOLO folder (boxes relative to the image size), 12 of them also saved smaller with the same
    label file, as an export that holds one photo at two sizes."""
    from headstart.tasks.detection import data as dd

    root = tmp_path / "yolo"
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    photos = [p for p in sorted((COCO128 / "images" / "train2017").glob("*.jpg"))
              if (COCO128 / "labels" / "train2017" / f"{p.stem}.txt").exists()][:40]
    for i, jpg in enumerate(photos):
        label = (COCO128 / "labels" / "train2017" / f"{jpg.stem}.txt").read_text()
        shutil.copy(jpg, root / "images" / "train")
        (root / "labels" / "train" / f"{jpg.stem}.txt").write_text(label)
        if i < 12:
            _resaved(jpg, root / "images" / "train" / f"{jpg.stem}_small.jpg")
            (root / "labels" / "train" / f"{jpg.stem}_small.txt").write_text(label)
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nnames:\n" +
                                    "".join(f"  {i}: c{i}\n" for i in range(80)))
    splits = dd.read_yolo(root, val_fraction=0.25, seed=0)
    assert splits.val_held_out
    train_stems = {s.path.stem.removesuffix("_small") for s in splits.train}
    crossing = [s for s in splits.val if s.path.stem.removesuffix("_small") in train_stems]
    assert crossing, "the seeded draw put no pair on both sides: the test needs another seed"
    data = dd.DetectionData(splits, 256, training=True)
    assert len(data.notes) == 1 and data.notes[0].startswith(f"{len(crossing)} validation image(s) were near-copies")
    train = {s.path.stem.removesuffix("_small") for s in data.splits["train"]}
    assert not [s for s in data.splits["val"] if s.path.stem.removesuffix("_small") in train]
    assert len(data.splits["train"]) + len(data.splits["val"]) == 52 and len(splits.val) == len(data.splits["val"])
    moved = next(s for s in data.splits["train"] if s in crossing)  # a moved image keeps its boxes
    assert len(moved.boxes) == len(moved.labels) > 0


@needs_shared(COCO128)
def test_a_detection_sets_own_validation_split_with_a_copied_training_image_is_said(tmp_path):
    from headstart.tasks.detection import data as dd

    root = tmp_path / "yolo"
    photos = [p for p in sorted((COCO128 / "images" / "train2017").glob("*.jpg"))
              if (COCO128 / "labels" / "train2017" / f"{p.stem}.txt").exists()][:24]
    for split, chosen in (("train", photos[:16]), ("val", photos[16:] + photos[:1])):  # val: a training photo too
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for jpg in chosen:
            shutil.copy(jpg, root / "images" / split)
            shutil.copy(COCO128 / "labels" / "train2017" / f"{jpg.stem}.txt", root / "labels" / split)
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames:\n" +
                                    "".join(f"  {i}: c{i}\n" for i in range(80)))
    splits = dd.read_yolo(root)
    assert not splits.val_held_out
    data = dd.DetectionData(splits, 256, training=True)
    assert len(data.notes) == 1 and data.notes[0].startswith("1 of the 9 validation images are near-copies"), data.notes
    assert photos[0].name in data.notes[0] and len(data.splits["val"]) == 9  # said, not moved
