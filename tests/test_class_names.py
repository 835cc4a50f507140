"""Class folders named by number or WordNet id get readable names (``tasks/image/class_names.py``), from a file beside
the data as downloaded or from WordNet; data labelled by the codes still evaluates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import HYMENOPTERA, needs_shared

from headstart.tasks.image.class_names import readable_names
from headstart.tasks.image.data import discover, labelled_samples

pytestmark = needs_shared(HYMENOPTERA)
ANT, BEE = "n02219486", "n02206856"  # WordNet ids of ants and bees


def _images(split: str, cls: str, n: int) -> list[Path]:
    return sorted((HYMENOPTERA / split / cls).glob("*.jpg"))[:n]


def _copy(files: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(f, folder / f.name)


def _labels(samples, classes) -> dict[str, str]:
    return {s.path.name: classes[s.label] for s in samples}


def test_udacity_flowers_numbered_folders_are_named_by_cat_to_name_json_and_evaluate_by_number(tmp_path):
    """Udacity's flowers: flower_data/{train,valid}/<number>/ with cat_to_name.json beside flower_data/. Training
    shows the names; evaluating valid/ (folders by number, no names file near it) maps them through the run."""
    from headstart import ImageClassifier

    root = tmp_path / "flowers"
    for split, n in (("train", 10), ("val", 6)):
        _copy(_images(split, "ants", n), root / "flower_data" / ("valid" if split == "val" else "train") / "21")
        _copy(_images(split, "bees", n), root / "flower_data" / ("valid" if split == "val" else "train") / "3")
    (root / "cat_to_name.json").write_text(json.dumps({"21": "fire lily", "3": "canterbury bells", "7": "moon orchid"}))
    splits = discover(root / "flower_data")
    assert splits.classes == ["canterbury bells", "fire lily"]  # sorted by name, not by number
    assert splits.aliases == {"21": "fire lily", "3": "canterbury bells"}
    assert "cat_to_name.json" in splits.layout
    labels = _labels(splits.train + splits.val, splits.classes)
    assert {labels[f.name] for f in _images("train", "ants", 10)} == {"fire lily"}
    assert {labels[f.name] for f in _images("train", "bees", 10)} == {"canterbury bells"}

    run = tmp_path / "run"
    clf = ImageClassifier(model="mobilenet_v2", strategy="linear", epochs=1, cache_views=1, refit=False).fit(
        root / "flower_data", out=run)
    assert clf.classes_ == ["canterbury bells", "fire lily"]
    spec = json.loads((run / "spec.json").read_text())
    assert spec["class_aliases"] == {"21": "fire lily", "3": "canterbury bells"}
    loaded = ImageClassifier.load(run)
    report = loaded.evaluate(root / "flower_data" / "valid")  # class folders 21/ and 3/: the codes of training
    assert report["num_samples"] == 12 and set(report["per_class"]) == {"canterbury bells", "fire lily"}
    assert report["accuracy"] > report["baseline"]["accuracy"]  # ants and bees, told apart by name
    assert loaded.predict([_images("val", "ants", 1)[0]])[0]["label"] in clf.classes_
    (root / "flower_data" / "valid" / "99").mkdir()
    _copy(_images("val", "ants", 1), root / "flower_data" / "valid" / "99")
    with pytest.raises(Exception, match=r"never saw: \{'99': 1\}.*knows: canterbury bells, fire lily"):
        loaded.evaluate(root / "flower_data" / "valid")


def test_tiny_imagenet_wordnet_folders_are_named_by_words_txt_and_its_val_table_follows(tmp_path):
    """Tiny ImageNet: train/<wnid>/images/, words.txt of every WordNet id (first synonym kept), val/images/ labelled
    by val_annotations.txt in WordNet ids."""
    root = tmp_path / "tiny-imagenet-200"
    for cls, wnid in (("ants", ANT), ("bees", BEE)):
        _copy(_images("train", cls, 6), root / "train" / wnid / "images")
    (root / "wnids.txt").write_text(f"{ANT}\n{BEE}\n")
    (root / "words.txt").write_text(f"n00001740\tentity\n{ANT}\tant, emmet, pismire\n{BEE}\tbee\n"
                                    "n01443537\tgoldfish, Carassius auratus\n")
    rows = []
    for cls, wnid in (("ants", ANT), ("bees", BEE)):
        for f in _images("val", cls, 5):
            _copy([f], root / "val" / "images")
            rows.append(f"{f.name}\t{wnid}\t0\t0\t10\t10")
    (root / "val" / "val_annotations.txt").write_text("\n".join(rows) + "\n")
    splits = discover(root)
    assert splits.classes == ["ant", "bee"] and "words.txt" in splits.layout
    assert _labels(splits.val, splits.classes) == {f.name: name for cls, name in (("ants", "ant"), ("bees", "bee"))
                                                   for f in _images("val", cls, 5)}
    samples, _ = labelled_samples(root, splits.classes, aliases=splits.aliases)  # evaluate: the val/ table in wnids
    assert sorted(splits.classes[s.label] for s in samples) == ["ant"] * 5 + ["bee"] * 5


def test_wordnet_folders_without_a_names_file_are_named_by_wordnet_and_prefixed_ones_lose_the_id(tmp_path):
    """Imagenette-style n01440764/ folders: WordNet's first lemma; Stanford Dogs' n02085620-Chihuahua/: the name."""
    for cls, wnid in (("ants", ANT), ("bees", BEE)):
        _copy(_images("train", cls, 4), tmp_path / "nette" / wnid)
        _copy(_images("train", cls, 4), tmp_path / "dogs" / "Images" / f"{wnid}-{cls.title()}")
    (tmp_path / "dogs" / "Annotation").mkdir(parents=True)
    (tmp_path / "dogs" / "Annotation" / "note").write_text("<annotation/>")
    nette = discover(tmp_path / "nette")
    assert nette.classes == ["ant", "bee"] and "WordNet" in nette.layout
    dogs = discover(tmp_path / "dogs")
    assert dogs.classes == ["Ants", "Bees"] and dogs.aliases == {f"{ANT}-Ants": "Ants", f"{BEE}-Bees": "Bees"}
    assert {dogs.classes[s.label] for s in dogs.train + dogs.val if s.path.parent.name.endswith("Ants")} == {"Ants"}
    # ImageNet's two cranes (a bird and a machine) keep their ids apart
    names, _ = readable_names(["n02012849", "n03126707", ANT], [])
    assert names == {"n02012849": "crane (n02012849)", "n03126707": "crane (n03126707)", ANT: "ant"}


def test_numbered_classes_keep_their_numbers_without_a_file_naming_them(digits_dir, tmp_path):
    """Digits 0-9 are their names; a table of numbered items (ids to numbers) names nothing; neither do words."""
    root = tmp_path / "digits"
    for c in ("0", "1"):
        shutil.copytree(digits_dir / c, root / "train" / c)
    (root / "labels.csv").write_text("id,label\n" + "".join(f"{i},{i % 2}\n" for i in range(40)))
    assert discover(root).classes == ["0", "1"] and discover(root).aliases == {}
    (root / "names.json").write_text(json.dumps({"0": "zero", "1": "one"}))
    assert discover(root).classes == ["one", "zero"]
    (root / "names.json").unlink()
    (root / "signnames.csv").write_text("ClassId,SignName\n0,Speed limit (20km/h)\n1,Speed limit (30km/h)\n")
    assert discover(root).classes == ["Speed limit (20km/h)", "Speed limit (30km/h)"]  # GTSRB's, as Udacity ships it
    assert readable_names(["0", "1"], [root])[1] == "signnames.csv"
    (root / "signnames.csv").unlink()
    (root / "imagenet_class_index.json").write_text(json.dumps({"0": ["n01440764", "tench"],
                                                                "1": ["n01443537", "goldfish"]}))
    assert readable_names(["n01443537", "n01440764"], [root]) == (
        {"n01443537": "goldfish", "n01440764": "tench"}, "imagenet_class_index.json")
    assert readable_names(["cat", "dog"], [root]) is None  # classes named by words keep them
    assert readable_names(["0", "1", "2"], [root]) is None  # a file must name every class


def test_a_list_of_names_a_line_names_classes_numbered_from_1_or_from_0(tmp_path):
    """``classes.txt`` of AG News, DBpedia, Yahoo! Answers (a name a line) names labels 1...K; a list beside classes
    0...K-1 counts from 0; a list of another length, or a file not named as a list of names (readme.txt), names
    nothing."""
    (tmp_path / "classes.txt").write_text("World\nSports\nBusiness\nSci/Tech\n")
    (tmp_path / "readme.txt").write_text("AG\nNews\nTopic\nDataset\n")
    assert readable_names(["1", "2", "3", "4"], [tmp_path]) == (
        {"1": "World", "2": "Sports", "3": "Business", "4": "Sci/Tech"}, "classes.txt")
    assert readable_names(["0", "1", "2", "3"], [tmp_path])[0] == {"0": "World", "1": "Sports", "2": "Business",
                                                                 "3": "Sci/Tech"}
    assert readable_names(["1", "2", "3"], [tmp_path]) is None  # 4 names for 3 classes: not this list
    (tmp_path / "classes.txt").unlink()
    assert readable_names(["1", "2", "3", "4"], [tmp_path]) is None  # readme.txt is no list of names


@needs_shared(HYMENOPTERA.parent / "sms_spam")
def test_text_labels_numbered_as_ag_news_are_named_by_its_classes_txt_and_evaluate_by_number(tmp_path):
    """AG News as Zhang et al. ship it (``train.csv`` and ``test.csv`` of ``"3","title","description"``, no header
    line, ``classes.txt`` beside): the classes are its names, and a table labelled by the numbers evaluates."""
    import csv

    from headstart.tasks.text import data as textdata

    sms = (HYMENOPTERA.parent / "sms_spam" / "SMSSpamCollection.tsv").read_text(encoding="utf-8").splitlines()[1:121]
    rows = [line.split("\t", 1) for line in sms]

    def number(label: str, text: str) -> int:
        return 3 if "?" in text else 1 if label == "ham" else 2

    for name, part in (("train.csv", rows[:90]), ("test.csv", rows[90:])):
        with (tmp_path / name).open("w", newline="", encoding="utf-8") as f:
            csv.writer(f, quoting=csv.QUOTE_ALL).writerows([number(y, t), t[:20], t] for y, t in part)
    (tmp_path / "classes.txt").write_text("Ham\nSpam\nQuestion\n")
    splits = textdata.discover(tmp_path)
    assert splits.classes == ["Ham", "Question", "Spam"] and "classes named by classes.txt" in splits.layout
    assert splits.aliases == {"1": "Ham", "2": "Spam", "3": "Question"}
    truth = [["Ham", "Spam", "Question"][number(y, t) - 1] for y, t in rows]
    got = sorted((s.where, splits.classes[s.label]) for s in splits.train + splits.val + splits.test)
    where = [w.split(":")[-2:] for w, _ in got]  # FOLDER:train:7, FOLDER:test:3
    assert [label for _, label in got] == [truth[int(n) - 1 + 90 * (part == "test")] for part, n in where]
    samples, _ = textdata.labelled_texts(tmp_path / "test.csv", splits.classes, splits.text_columns,
                                         aliases=splits.aliases)
    assert [splits.classes[s.label] for s in samples] == truth[90:]
