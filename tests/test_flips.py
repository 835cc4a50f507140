"""data.flip: no horizontal flips when the classes are mirror images of each other (auto), vertical flips on request.

Real handwritten digits (scikit-learn's) mirrored into two direction classes, real weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageOps
from torchvision.transforms import v2

from headstart.config import load_config
from headstart.core.backbones import registry
from headstart.errors import ConfigError
from headstart.tasks import flips
from headstart.tasks.detection.data import train_transform as box_transform
from headstart.tasks.image.augment import split_transform
from headstart.tasks.image.data import discover
from headstart.tasks.image.dataset import ImageData
from headstart.tasks.image.task import ImageClassifier
from headstart.tasks.image.transforms import train_transform
from headstart.tasks.multilabel.data import train_transform as tag_transform
from headstart.tasks.segmentation.transforms import train_transform as mask_transform

GTSRB = ["Speed limit (20km/h)", "Dangerous curve to the left", "Dangerous curve to the right", "Keep right",
         "Keep left", "Turn right ahead", "Turn left ahead", "Stop"]  # names from GTSRB's signnames.csv


def kinds(transform: v2.Compose) -> list[type]:
    return [type(t) for t in transform.transforms]


def test_mirror_pairs_are_names_that_differ_by_left_and_right_or_mirrored_letters():
    assert flips.mirror_pairs(GTSRB) == [("Dangerous curve to the left", "Dangerous curve to the right"),
                                         ("Keep right", "Keep left"), ("Turn right ahead", "Turn left ahead")]
    assert flips.mirror_pairs(["TurnLeft", "TurnRight", "left_lung", "Right lung", "heart"]) == [
        ("TurnLeft", "TurnRight"), ("left_lung", "Right lung")]  # camelCase, separators and case do not matter
    assert flips.mirror_pairs(list("abdpq")) == [("b", "d"), ("p", "q")]  # EMNIST letters
    assert flips.mirror_pairs(list("ABDPQ")) == []  # capitals do not mirror into each other
    assert flips.mirror_pairs(["ants", "bees", "leftover", "rightover", "right"]) == []  # whole words only
    assert flips.mirror_pairs(["up", "down", "top_view", "Bottom view"], "vertical") == [
        ("up", "down"), ("top_view", "Bottom view")]
    assert flips.mirror_pairs(["up", "down"], "horizontal") == []


def test_auto_flips_photos_but_not_mirror_classes_and_named_flips_are_drawn_with_a_warning():
    photos = flips.choose("auto", ["ants", "bees"])
    assert (photos.horizontal, photos.vertical, photos.note, photos.name) == (True, False, None, "horizontal")
    signs = flips.choose("auto", GTSRB)
    assert (signs.horizontal, signs.vertical, signs.swaps, signs.name) == (False, False, False, "none")
    assert "'Turn right ahead' / 'Turn left ahead'" in signs.note and "data.flip=horizontal" in signs.note
    asked = flips.choose("horizontal", GTSRB)
    assert asked.horizontal and asked.swaps and "keeps its label" in asked.note
    both = flips.choose("both", ["blood", "tissue"])
    assert (both.name, both.note, kinds(v2.Compose(both.steps()))) == (
        "both", None, [v2.RandomHorizontalFlip, v2.RandomVerticalFlip])
    assert flips.choose("vertical", ["up", "down"]).swaps  # a vertical flip turns up into down
    assert flips.choose("none", ["ants", "bees"]).steps() == []
    with pytest.raises(ValueError, match="data.flip must be one of auto, horizontal, vertical, both, none, not 'x'"):
        flips.choose("x", [])
    with pytest.raises(ConfigError, match="flip"):
        load_config(overrides=["data.flip=sideways"])


def test_every_tasks_training_transform_draws_the_chosen_flips():
    spec = registry.create_backbone("mobilenet_v2", pretrained=False).spec
    default = train_transform(spec, "light")
    assert kinds(default) == kinds(train_transform(spec, "light", flips.choose("auto", ["ants", "bees"])))
    assert v2.RandomHorizontalFlip in kinds(default)  # unchanged default: feature caches of earlier runs stay valid
    off, both = flips.choose("none", []), flips.choose("both", [])
    for make in (lambda f: train_transform(spec, "standard", f), lambda f: tag_transform(spec, "standard", f),
                 lambda f: box_transform(320, "standard", f), lambda f: mask_transform(spec, 256, "standard", f)):
        assert not {v2.RandomHorizontalFlip, v2.RandomVerticalFlip} & set(kinds(make(off)))
        assert {v2.RandomHorizontalFlip, v2.RandomVerticalFlip} <= set(kinds(make(both)))
    worker = split_transform(train_transform(spec, "standard", both)).worker  # data.augment_on=device takes them
    assert v2.RandomVerticalFlip in kinds(worker.geometry)


@pytest.fixture(scope="module")
def mirrored(digits_dir, tmp_path_factory) -> Path:
    """Digits that are not mirror-symmetric, each either as written ('Turn left') or mirrored ('Turn right')."""
    root = tmp_path_factory.mktemp("mirrored")
    for digit in "23457":
        for i, f in enumerate(sorted((digits_dir / digit).glob("*.png"))):
            image = Image.open(f)
            name, image = ("Turn left", image) if i % 2 == 0 else ("Turn right", ImageOps.mirror(image))
            (root / name).mkdir(exist_ok=True)
            image.save(root / name / f"{digit}_{f.name}")
    return root


def test_a_vertical_flip_turns_the_images_upside_down(mirrored):
    spec = registry.create_backbone("mobilenet_v2", pretrained=False).spec
    data = ImageData(discover(mirrored), spec, augment="light", seed=3, flips=flips.choose("vertical", []))
    data.train_tf = v2.Compose([t for t in data.train_tf.transforms if not isinstance(t, v2.RandomResizedCrop)])
    data.train_tf.transforms.insert(0, v2.CenterCrop(spec.input_size))  # the flips alone: no random crop
    plain = ImageData(discover(mirrored), spec, augment="none").dataset("train", train=True, epoch=0)
    flipped = data.dataset("train", train=True, epoch=0)
    same = [torch.equal(flipped[i][0], plain[i][0]) for i in range(20)]
    upside_down = [torch.equal(flipped[i][0], plain[i][0].flip(-2)) for i in range(20)]
    assert all(a != b for a, b in zip(same, upside_down))  # each image as it is or upside down...
    assert 3 <= sum(upside_down) <= 17  # ... by a coin per item


def test_a_run_on_mirror_classes_trains_without_flips_and_says_why(mirrored, tmp_path, capsys):
    cache = f"cache.dir={tmp_path / 'cache'}"
    clf = ImageClassifier(model="mobilenet_v2", strategy="linear", epochs=1, cache_views=2, refit=False,
                          overrides=[cache])
    clf.fit(mirrored, out=tmp_path / "auto")
    metrics = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    assert metrics["flips"] == "none"
    assert "WARNING" not in capsys.readouterr().err

    asked = ImageClassifier(model="mobilenet_v2", strategy="linear", epochs=1, cache_views=2, refit=False,
                            overrides=[cache, "data.flip=horizontal"])
    asked.fit(mirrored, out=tmp_path / "asked")
    metrics = json.loads((tmp_path / "asked" / "metrics.json").read_text())
    assert metrics["flips"] == "horizontal"
    # the plain view and validation come from the first run's cache; the flipped view is new
    assert metrics["cache"]["items_computed"] == metrics["num_train"]
    assert "'Turn left' / 'Turn right' are mirror images of each other" in " ".join(capsys.readouterr().err.split())


def test_when_the_views_hurt_the_head_the_partial_candidate_trains_on_the_plain_images(mirrored, tmp_path):
    """Flipped views of mirror classes carry the wrong label: the solved head's cross-validation fits on the plain
    images only, and auto's partial candidate, on cached maps, then trains on the plain images too (0 views)."""
    clf = ImageClassifier(model="mobilenet_v2", strategy="auto", epochs=2, cache_views=2, refit=False,
                          overrides=[f"cache.dir={tmp_path / 'cache'}", "data.flip=horizontal"])
    clf.fit(mirrored, out=tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    head, partial = metrics["phases"][:2]
    assert head["phase"] == "linear" and head["views"] == 2 and partial["phase"].startswith("partial:")
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert history[1].split(",")[history[0].split(",").index("head_augmented")] == "0.0"  # views hurt the head
    assert partial["views"] == 0 and partial["epochs"] >= 1
