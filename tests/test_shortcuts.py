"""Shortcuts: a format, a colour mode or an image size that tells the classes apart is named before training.

hymenoptera's ants and bees, with one class's photos saved the way a second source would have saved them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import HYMENOPTERA, needs_shared
from PIL import Image
from typer.testing import CliRunner

from headstart.tasks.image.data import Sample, discover
from headstart.tasks.image.dataset import ImageStore
from headstart.tasks.image.shortcuts import shortcut_notes

pytestmark = needs_shared(HYMENOPTERA)
PER_CLASS = 25


def _write(root: Path, change: dict[str, str], mixed: bool = False) -> Path:
    """``PER_CLASS`` training photos a class; ``change[class]``: how that class's photos are saved (``png``,
    ``grey``, ``square``: resized to 224 x 224); ``mixed``: every other photo of every class saved as PNG."""
    for cls in ("ants", "bees"):
        (root / "train" / cls).mkdir(parents=True)
        for i, jpg in enumerate(sorted((HYMENOPTERA / "train" / cls).glob("*.jpg"))[:PER_CLASS]):
            image, how = Image.open(jpg).convert("RGB"), change.get(cls, "")
            if how == "grey":
                image = image.convert("L")
            if how == "square":
                image = image.resize((224, 224))
            png = how == "png" or (mixed and i % 2 == 0)
            image.save(root / "train" / cls / (jpg.stem + (".png" if png else ".jpg")), quality=90)
    return root


def _notes(root: Path) -> list[str]:
    splits = discover(root, 0.0, 0)
    store = ImageStore(splits.train + splits.val, 64, "bilinear")
    return shortcut_notes(store.traits, splits.train + splits.val, splits.classes)


@pytest.mark.parametrize(("change", "trait", "said"), [
    ({"bees": "png"}, "format", "'bees' 100% PNG (other classes 0%)"),
    ({"ants": "grey"}, "colour", "'ants' 100% grey (other classes 0%)"),
    ({"bees": "square"}, "size", "'bees' 100% 224 x 224 (other classes 0%)"),
])
def test_a_trait_that_only_one_class_has_is_named(tmp_path, change, trait, said):
    notes = _notes(_write(tmp_path / "d", change))
    assert len(notes) == 1, notes
    assert notes[0].startswith(f"the image {trait} tells classes apart") and said in notes[0], notes


def test_traits_shared_by_the_classes_are_not_a_shortcut(tmp_path):
    assert _notes(_write(tmp_path / "d", {}, mixed=True)) == []  # half PNG in each class: formats differ, alike
    assert _notes(HYMENOPTERA) == []  # photos of many sizes, one GIF placeholder


def test_a_label_of_multi_label_images_is_judged_against_the_images_without_it():
    png, jpg = ("PNG", "colour", "500 x 375"), ("JPEG", "colour", "500 x 375")
    rng = random.Random(0)
    samples, found = [], {}
    for i in range(60):  # label 0 ('scan') on PNGs only; label 1 on any image
        path, scan = Path(f"{i}.x"), i < 20
        samples.append(Sample(path, (0, 1) if scan and rng.random() < 0.5 else (0,) if scan else (1,)))
        found[path] = png if scan else jpg
    notes = shortcut_notes(found, samples, ["scan", "photo"])
    assert len(notes) == 1 and "'scan' 100% PNG (other classes 0%)" in notes[0], notes


def test_the_warning_is_said_and_kept_in_metrics(tmp_path, session_cache):
    from headstart.cli import app

    data = _write(tmp_path / "d", {"bees": "png"})
    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", str(data), "--out", str(run), "--strategy", "linear", "cache.views=1"])
    assert res.exit_code == 0, res.output
    assert "image format tells classes apart" in " ".join(res.output.split()), res.output
    warnings = json.loads((run / "metrics.json").read_text())["data_warnings"]
    assert any("'bees' 100% PNG" in w for w in warnings), warnings
