"""Text classification (BERT-family encoders). This module imports no torch: ``infer_task`` asks it about folders."""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from headstart.errors import DataError
from headstart.tasks.tables import IMAGE_SUFFIXES, split_of_name

TABLE_SUFFIXES = {".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet", ".xlsx", ".xlsm"}

DATASETS_FILES = ("dataset_dict.json", "dataset_info.json", "state.json")
TEXT_FILE_SUFFIXES = (".txt",)  # class folders of these are text data (IMDB's aclImdb/, BBC News' bbc/)
PART_SEP = "\x1f"  # joins the parts of a text read from several columns; the tokenizer's separator token replaces it
SHOWN_SEP = " | "  # how such a text's parts are shown (reports, predictions)


def joined(parts: str | Sequence[str]) -> str:
    """One text of several parts (a pair given as a tuple), as a text read from several columns is held."""
    return parts if isinstance(parts, str) else PART_SEP.join(str(p).strip() for p in parts)


def as_texts(texts: str | Sequence[str | Sequence[str]]) -> list[str]:
    """The texts to predict: one or several strings, each a text or a tuple of its parts (a model trained on a title
    and its body, or on pairs, takes them in its columns' order); DataError on anything else."""
    texts = [texts] if isinstance(texts, str) or not hasattr(texts, "__iter__") else list(texts)
    bad = [t for t in texts if not (isinstance(t, str) or isinstance(t, (tuple, list))
                                    and all(isinstance(p, str) for p in t))]
    if bad:
        raise DataError(f"predict takes strings (or tuples of strings: a text's parts); found {type(bad[0]).__name__} "
                        f"({bad[0]!r}). Read files first (headstart predict RUN --file texts.txt reads one text per "
                        "line)")
    return [joined(t) for t in texts]


def is_blank(text: str) -> bool:
    return not text.replace(PART_SEP, "").strip()


def same_key(text: str) -> str:
    """What two copies of one text share: its words, compared without case, spacing and punctuation, and its long
    numbers (5 digits or more: phone numbers, codes, ids) without their digits (``"Call 09061209465 now! "`` and
    ``"call 09061209466 now"`` are one message; ``"room 101"`` and ``"room 102"`` are not). A text of no letters
    keeps its own characters."""
    folded = re.sub(r"\d{5,}", "#", unicodedata.normalize("NFKC", text).casefold())
    folded = re.sub(r"[\W_]+", " ", folded.replace("#", " 00000 ")).strip()
    return folded if re.search(r"[^\W\d_]", folded) else text


def shown(text: str) -> str:
    """A text as people read it: its parts separated by ``SHOWN_SEP``."""
    return text.replace(PART_SEP, SHOWN_SEP)


def unshown(text: str, parts: int) -> str:
    """A text of ``parts`` parts as ``shown`` wrote it (a table of 'headstart suggest' or 'predict': "title | body"),
    held again as its parts; any other text as it is."""
    if parts > 1 and PART_SEP not in text and text.count(SHOWN_SEP) == parts - 1:
        return text.replace(SHOWN_SEP, PART_SEP)
    return text


def _folders(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "__MACOSX")


def is_text_file(path: Path) -> bool:
    """A ``.txt`` file, or a file without a suffix whose first KiB holds no NUL byte and is not markup: the 20
    Newsgroups' posts are named by number (``alt.atheism/49960``); a DICOM scan named ``IM000001`` starts with NUL
    bytes, and Stanford Dogs' ``Annotation/n02085620-Chihuahua/n02085620_10074`` is XML (boxes, not a text)."""
    if path.name.startswith(".") or not path.is_file():
        return False
    if path.suffix.lower() in TEXT_FILE_SUFFIXES:
        return True
    if path.suffix:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError:
        return False
    return bool(head) and b"\0" not in head and not head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<")


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _holds(folder: Path, wanted: Callable[[Path], bool], limit: int = 200) -> bool:
    """Whether ``folder`` holds (directly, among its first ``limit`` entries) a ``wanted`` file."""
    return any(wanted(p) for p in itertools.islice(folder.iterdir(), limit))


def is_text_folder(path: Path) -> bool:
    """A folder of class folders of text files (``is_text_file``), one text per file (BBC News' ``bbc/business/001.txt``),
    or of split folders of them (IMDB's ``aclImdb/train/pos/0_9.txt``, the 20 Newsgroups' ``20news-bydate-train/
    alt.atheism/49960``): 2 or more such class folders and no image files in them, nor in the class folders of the
    folders beside a split (Stanford Dogs' ``Annotation/`` of boxes beside ``Images/``)."""
    if not path.is_dir() or ((path / "images").is_dir() and (path / "labels").is_dir()):  # YOLO's .txt boxes
        return False
    levels = [path, *_folders(path)]
    for level in levels:
        classes = _folders(level)
        texts = [c for c in classes if _holds(c, is_text_file)]
        if len(texts) >= 2 and not any(_holds(c, _is_image_name) for c in classes):
            beside = [] if level == path else [c for other in levels[1:] if other != level for c in _folders(other)]
            return not any(_holds(c, _is_image_name) for c in beside)
    return False


def is_datasets_folder(path: Path) -> bool:
    """A folder written by ``datasets`` ``save_to_disk`` (a Dataset or a DatasetDict)."""
    return path.is_dir() and any((path / f).is_file() for f in DATASETS_FILES)


@dataclass
class TableFolder:
    """The tables of a folder of text tables (``table_folder``): one per split (``""``: the one table, no split
    named), and the tables beside them that are not read."""

    tables: dict[str, Path]
    beside: list[Path]
    unnamed: list[Path] = field(default_factory=list)  # several tables naming no split: one per class, or parts
    shards: dict[Path, list[Path]] = field(default_factory=dict)  # a split's table: its other shards, read with it

    @property
    def first(self) -> Path:
        """The table to train on."""
        return self.tables.get("train") or self.tables.get("") or self.unnamed[0]


TABLE_TEXT_LINES = 5  # a .txt file naming no split is a table when its first lines (5 or more) are alike rows


def is_table_text(path: Path) -> bool:
    """A ``.txt`` file of rows: its first 20 lines (5 or more) each hold the same number of tabs, semicolons or bars
    (UCI's 'sentiment labelled sentences': ``amazon_cells_labelled.txt`` of 'text<TAB>0'), or are labelled lines
    (``lines.labelled_lines``: TREC's, fastText's, 'text@label'); a readme's prose is not."""
    from headstart.tasks.text.lines import labelled_lines

    try:
        with open(path, "rb") as f:
            head = f.read(16384)
    except OSError:
        return False
    lines = [ln for ln in head.decode("latin-1").splitlines()[:-1] if ln.strip()][:20]
    return len(lines) >= TABLE_TEXT_LINES and (any(
        lines[0].count(d) and len({ln.count(d) for ln in lines}) == 1 for d in "\t;|")
        or labelled_lines(path.name, "\n".join(lines)) is not None)


def table_folder(path: Path) -> TableFolder | None:
    """A folder of text tables as Kaggle and others download them: ``train.csv`` (and ``test.csv``, ``valid.csv``,
    ``twitter_training.csv`` + ``twitter_validation.csv``, the emotion dataset's ``train.txt`` / ``val.txt`` /
    ``test.txt``; a split's table is found by a word of its name), or one table alone (Kaggle's ``spam.csv``, ``IMDB
    Dataset.csv``), or several that name no split (``unnamed``: one table per class if they are alike and hold no
    label column, as the ISOT fake news set's ``Fake.csv`` and ``True.csv``; parts of one table if they are alike and
    may hold one, as UCI's ``amazon_cells_labelled.txt``, ``imdb_labelled.txt`` and ``yelp_labelled.txt``; else the
    reader's error names them), in the folder or in the one
    folder an archive unpacks to. ``sample_submission.csv`` is not data. None where the folder, or a folder in it,
    holds images (a table labelling images: image data) or where no table is found."""
    from headstart.tasks.segmentation import inner_folder

    if not path.is_dir():
        return None
    root = inner_folder(path)
    files = [p for p in itertools.islice(root.iterdir(), 1000) if p.is_file() and not p.name.startswith(".")]
    if any(_is_image_name(p) for p in files) or any(_holds(f, _is_image_name) or any(
            _holds(g, _is_image_name) for g in _folders(f)[:20]) for f in _folders(root)[:50]):
        return None
    tables: dict[str, list[Path]] = {}
    for f in sorted(files):
        split = split_of_name(f)
        if "submission" in f.stem.lower() or not (f.suffix.lower() in TABLE_SUFFIXES or f.suffix.lower() in
                                                   (".txt", ".label") and (split or is_table_text(f))):
            continue
        tables.setdefault(split or "", []).append(f)
    every = [t for named in tables.values() for t in named]
    if "train" not in tables:  # one table alone; several naming no split may be one per class (Fake.csv, True.csv)
        return (TableFolder({"": every[0]}, []) if len(every) == 1 else
                TableFolder({}, [], tables[""]) if len(tables.get("", [])) > 1 else None)
    chosen = {split: next((t for t in named if t.stem.lower() == split), named[0])  # train.csv before train_2.csv
              for split, named in tables.items() if split}  # beside train.csv, a table naming no split is not read
    shards = {t: [o for o in every if o != t and _shard_of(o) == _shard_of(t)] for t in chosen.values() if _shard_of(t)}
    read = {*chosen.values(), *(o for others in shards.values() for o in others)}
    return TableFolder(chosen, [t for t in every if t not in read], shards=shards)


SHARD = re.compile(r"(?P<name>.+)-\d{5}-of-(?P<count>\d{5})")  # the Hub's train-00000-of-00002.parquet


def _shard_of(path: Path) -> tuple[str, str, str] | None:
    """``(name, count, suffix)`` of a shard of one split's table (``train-00001-of-00002.parquet``), else None."""
    found = SHARD.fullmatch(path.stem)
    return (found.group("name"), found.group("count"), path.suffix.lower()) if found else None
