"""Readable class names for class folders named by number or by WordNet id.

Datasets as downloaded often name their classes by a code and ship the names beside them:

- Udacity's / Kaggle's Oxford flowers: ``train/1/`` ... ``train/102/`` with ``cat_to_name.json`` (``{"21": "fire lily"}``);
- Tiny ImageNet: ``train/n01443537/`` with ``words.txt`` (``n01443537<TAB>goldfish, Carassius auratus``);
- GTSRB as in Udacity's project: ``Train/0/`` ... with ``signnames.csv`` (``ClassId,SignName``);
- ImageNet's ``imagenet_class_index.json`` (``{"0": ["n01440764", "tench"]}``);
- Imagenette and other ImageNet subsets: ``n01440764/`` with no names file (WordNet's lemmas, as timm ships them);
- Stanford Dogs: ``n02085620-Chihuahua/`` (the name after the id);
- AG News, DBpedia and Yahoo! Answers as Zhang et al. published them: labels ``1``...``4`` in ``train.csv`` with
  ``classes.txt`` beside, a name a line (``World``, ``Sports``...); a list of names counted from 0 names labels
  ``0``...``K-1``.

``name_classes`` gives such classes their names (a file beside the data first, then WordNet) and records the folder
names as aliases, so that data labelled by the codes (a ``valid/1/`` folder, Tiny ImageNet's
``val_annotations.txt``) still evaluates. Classes already named by words are kept as they are.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from headstart.core.splits import Splits

WORDNET_ID = re.compile(r"n\d{8}")
WORDNET_PREFIXED = re.compile(r"(n\d{8})[-_ ]+(?P<name>.*\S.*)")  # Stanford Dogs' n02085620-Chihuahua
NAMES_SUFFIXES = (".json", ".txt", ".csv", ".tsv")
NAMES_BYTES = 16 * 2**20  # larger files are not names files (Tiny ImageNet's words.txt: 2.6 MB)
LIST_STEM = re.compile(r"class|label|name|categor", re.IGNORECASE)  # a list of names, one a line: classes.txt


def _coded(classes: Sequence[str]) -> bool:
    """Every class is a number (``1``...``102``) or a WordNet id (``n01440764``)."""
    return all(c.isdigit() for c in classes) or all(WORDNET_ID.fullmatch(c) for c in classes)


def _first_synonym(name: str, code: str) -> str:
    """``goldfish`` of WordNet's ``goldfish, Carassius auratus``; a number's name as written."""
    return name.split(",")[0].strip() if WORDNET_ID.fullmatch(code) else name.strip()


def _read_names(path: Path) -> dict[str, str]:
    """``{code: name}`` of a JSON object (values: a name, or ``[code, name]`` as in ``imagenet_class_index.json``) or of
    lines of a code and its name (a tab, comma or semicolon between them; a header line is one more line)."""
    try:
        if path.stat().st_size > NAMES_BYTES:
            return {}
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return {}
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError:
            return {}
        if not isinstance(data, dict):
            return {}
        names: dict[str, str] = {}
        for key, value in data.items():
            if isinstance(value, str):
                names[str(key).strip()] = value
            elif isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
                names[value[0].strip()] = value[1]  # imagenet_class_index.json: index -> [wnid, name]
        return names
    names = {}
    for line in text.splitlines():
        parts = re.split(r"\t|,|;", line, maxsplit=1)
        if len(parts) == 2:
            code = parts[0].strip().strip('"')
            if code in names:  # a table of items (a text set's train.csv of "1","title"...), not of names
                return {}
            names[code] = parts[1].strip().strip('"')
    return names


def _listed_names(path: Path, classes: Sequence[str]) -> dict[str, str] | None:
    """``{number: name}`` of a ``.txt`` list of names, one a line, named as such a list (``classes.txt``), that names
    every class of numbers ``1``...``K`` (line ``k``: class ``k``) or ``0``...``K-1`` (counted from 0); else None."""
    if path.suffix.lower() != ".txt" or not LIST_STEM.search(path.stem) or not all(c.isdigit() for c in classes):
        return None
    try:
        if path.stat().st_size > NAMES_BYTES:
            return None
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError):
        return None
    numbers = sorted(int(c) for c in classes)
    if len(lines) != len(classes) or len({n.lower() for n in lines}) != len(lines):
        return None
    first = 1 if numbers == list(range(1, len(lines) + 1)) else 0 if numbers == list(range(len(lines))) else None
    return None if first is None else {c: lines[int(c) - first] for c in classes}


def _candidates(folders: Iterable[Path]) -> list[Path]:
    seen: list[Path] = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in NAMES_SUFFIXES and path not in seen:
                seen.append(path)
    return seen


def _distinct(names: dict[str, str]) -> dict[str, str]:
    """Names that two classes share get their code: ImageNet has two ``crane`` (a bird, a machine)."""
    counts: dict[str, int] = {}
    for name in names.values():
        counts[name.lower()] = counts.get(name.lower(), 0) + 1
    return {code: name if counts[name.lower()] == 1 else f"{name} ({code})" for code, name in names.items()}


def readable_names(classes: Sequence[str], folders: Iterable[Path]) -> tuple[dict[str, str], str] | None:
    """``({code: name}, where the names came from)`` for classes named by codes, or None (they keep their names).

    ``folders``: where a names file may be (the data folder, the folders it was found in, the folder beside it); the
    first file that names every class is read.
    """
    if not classes:
        return None
    prefixed = [WORDNET_PREFIXED.fullmatch(c) for c in classes]
    if all(prefixed):
        names = {c: m.group("name").strip() for c, m in zip(classes, prefixed)}  # type: ignore[union-attr]
        if len({n.lower() for n in names.values()}) == len(names):
            return names, "the folder names without their WordNet ids"
        return None
    if not _coded(classes):
        return None
    wordnet = all(WORDNET_ID.fullmatch(c) for c in classes)
    for path in _candidates(folders):
        listed = _listed_names(path, classes)
        if listed is not None and all(re.search(r"[^\W\d_]", n) for n in listed.values()):
            return listed, path.name
        table = _read_names(path)
        if not table or not all(re.search(r"[^\W\d_]", table.get(c, "")) for c in classes):
            continue  # a name holds a letter: a table of numbers to numbers (ids to labels) names nothing
        if wordnet or path.suffix.lower() == ".json" or 2 * len(classes) >= len(table):
            # (numbers: the table is mostly about these classes, not a table of items that happen to be numbered)
            return _distinct({c: _first_synonym(table[c], c) for c in classes}), path.name
    if wordnet:
        from timm.data import ImageNetInfo  # WordNet's lemmas of the ImageNet-21k synsets

        info = ImageNetInfo()
        try:
            names = {c: _first_synonym(info.label_name_to_description(c), c) for c in classes}
        except KeyError:
            return None
        return _distinct(names), "WordNet (the lemmas of the ImageNet synsets timm ships)"
    return None


def name_classes(splits: Splits, folders: Iterable[Path]) -> Splits:
    """``splits`` with readable class names (``readable_names``), sorted, the samples' labels following them; the
    codes are kept in ``splits.aliases`` and the layout says where the names came from."""
    found = readable_names(splits.classes, folders)
    if found is None:
        return splits
    names, source = found
    order = sorted(range(len(splits.classes)), key=lambda i: names[splits.classes[i]].lower())
    new_index = {old: new for new, old in enumerate(order)}
    for sample in [*splits.train, *splits.val, *splits.test]:
        if sample.label is not None:
            sample.label = new_index[sample.label]
    example = next(iter(names.items()))
    splits.aliases = {code: names[code] for code in splits.classes}
    splits.classes = [names[splits.classes[i]] for i in order]
    splits.layout += f"; classes named by {source} ('{example[0]}': '{example[1]}'...)"
    return splits


def alias(label: str, classes: Sequence[str], aliases: dict[str, str]) -> str:
    """A label as the model names it: a class, or the class a code named at training (``splits.aliases``)."""
    return label if label in classes else aliases.get(label, label)
