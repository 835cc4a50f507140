"""Text datasets: read tables (CSV, TSV, JSONL, Parquet, ``datasets`` folders), tokenise once, batch by length.

DATA for text classification is one of:
  * a ``.csv`` / ``.tsv`` / ``.jsonl`` / ``.json`` / ``.parquet`` file with a text column and a label column
    (optional ``split`` column: train/val/test; otherwise a seeded, stratified validation split is made);
  * a folder written by ``datasets``' ``save_to_disk`` (a DatasetDict's train/validation/test splits are kept).
Texts are tokenised once with dynamic padding per batch; each split is kept sorted by token count so that
evaluation batches hold texts of similar length, and training batches are length-sorted buckets in a
seeded random order.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from headstart.core.splits import Splits, duplicate_groups, split_notes, stratified_split
from headstart.errors import DataError
from headstart.tasks.columns import (
    POSITIVE,
    SAMPLE_ROWS,
    SPLIT_COLUMN,
    UNCERTAIN,
    by_content,
    flag_columns,
    folded_class,
    name_words,
    one_spelling,
    pick_column,
)
from headstart.tasks.exports import as_table, export_splits, is_export
from headstart.tasks.formats import ARCHIVE, not_data_hint, what_it_is
from headstart.tasks.tables import (
    IMAGE_SUFFIXES,
    TABLE_FILES,
    UNLABELLED_FOLDERS,
    WORKBOOKS,
    Table,
    json_rows,
    read_delimited,
    read_text,
    read_text_file,
    table_files,
)
from headstart.tasks.text import (
    PART_SEP,
    TABLE_SUFFIXES,
    TableFolder,
    is_blank,
    is_datasets_folder,
    is_table_text,
    is_text_file,
    is_text_folder,
    same_key,
    table_folder,
)
from headstart.tasks.text.lines import labelled_lines
from headstart.tasks.text.shortcuts import word_notes

PLAIN_SUFFIXES = {"", ".txt", ".label"}  # tables without a table suffix: UCI's 'SMSSpamCollection', TREC's .label
SAME = "copies compared without case, spacing, punctuation and the digits of long numbers"  # ``same_key``
TEXT_COLUMNS = ("text", "sentence", "sms", "message", "review", "content", "body", "document", "comment",
                "tweet", "description", "abstract", "article", "question", "title")
TITLE_COLUMNS = ("title", "headline", "subject", "summary")  # a text's own title, read before it (AG News)
PAIR_COLUMNS = (("premise", "hypothesis"), ("question", "sentence"), ("question", "passage"), ("query", "passage"),
                ("claim", "evidence"))  # texts classified as pairs (NLI, QNLI, BoolQ...), besides numbered ones
TITLE_DISTINCT = 0.3  # a title column holds a title per text (movie names, repeated over their reviews, are not)
LABEL_COLUMNS = ("label", "labels", "class", "target", "category", "y", "sentiment", "rating", "stars", "score", "choice")
HEADER_NAMES = (*TEXT_COLUMNS, *LABEL_COLUMNS, SPLIT_COLUMN)  # a first line naming one of these is a header line
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}


@dataclass
class TextSample:
    """One text and its class index (None when unlabelled); ``where`` is file:line for messages."""

    text: str
    label: int | tuple[int, ...] | None = None  # a class index; multi-label: the indices of the labels that apply
    where: str = ""


@dataclass
class TextSplits(Splits):
    """``Splits`` of texts, with the column(s) their texts were read from (predict and evaluate read the same)."""

    text_columns: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------- reading
@dataclass
class Records:
    """The rows of a text table by split (``""``: no split given), its columns, and how to number its lines."""

    parts: dict[str, list[dict[str, Any]]]
    columns: list[str]
    table: Table | None = None  # a delimited file's (its header line, or none: columns col1, col2...)
    layout: str = ""  # how a folder of text files was read (for the Data line), '' for tables
    notes: list[str] = field(default_factory=list)  # what was left out of a folder of text files
    sources: list[tuple[str, int, int]] = field(default_factory=list)  # tables read as one: (name, first line, rows)
    read: list[str] = field(default_factory=list)  # how a folder's tables were read (the Data line says it)

    @property
    def header(self) -> bool:
        return self.table is None or self.table.header

    @property
    def first_line(self) -> int:
        """The file line (or row number) of the first row."""
        return self.table.first_line if self.table is not None else 1

    def rows(self) -> list[dict[str, Any]]:
        return [r for rows in self.parts.values() for r in rows]

    def row_name(self, path: Path, part: str, index: int) -> str:
        """How messages name the ``index``-th row of ``part``: ``FILE:LINE``, ``FOLDER:SPLIT:ROW`` for a folder's
        split tables; the row's own table and line for tables read as one (``sources``)."""
        for name, first, n in self.sources if not part else ():
            if index < n:
                return f"{name}:{first + index}"
            index -= n
        return f"{path.name}:{part + ':' if part else ''}{index + self.first_line}"


def read_records(path: str | Path, names: Sequence[str | None] = ()) -> Records:
    """Rows of a table file or ``datasets`` folder. ``names``: the user's column names (a first line holding one is a
    header line); a delimited file whose first line is data gets columns ``col1``, ``col2``... (``tables``)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"Data not found: {path}")
    if path.is_dir():
        if is_datasets_folder(path):
            return _read_datasets(path)
        if is_text_folder(path):
            return _read_text_folders(path)
        if export_splits(path):  # a labelling tool's export in the folder, or one in each split folder
            return _export_records(path)
        found = table_folder(path)
        if found is not None:
            return _read_table_folder(path, found, names)
        tables = sorted(p.name for p in path.iterdir() if p.suffix.lower() in TABLE_SUFFIXES)
        raise DataError(
            f"{path} is a folder but not a Hugging Face datasets folder (no dataset_dict.json / dataset_info.json)"
            + (f", and none of its tables ({', '.join(tables[:8])}) is named train: give the table to train on"
               if len(tables) > 1 else "") + ". Text data is a table (.csv, .tsv, .jsonl, .parquet), a folder of "
            "them (train.csv, test.csv...) or a folder written by datasets' save_to_disk; a folder of class "
            "subfolders is image data (--task image)."
        )
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        raise DataError(f"{path} is an image file; text classification reads tables of texts (.csv, .tsv, .jsonl, "
                        ".parquet): use an image model for images")
    if suffix not in TABLE_SUFFIXES | PLAIN_SUFFIXES:
        raise DataError(f"{path}: expected a text table ({', '.join(sorted(TABLE_SUFFIXES))}) or a datasets folder, "
                        f"found a '{suffix}' suffix." + (not_data_hint(path) if what_it_is(path) == ARCHIVE else ""))
    if suffix == ".parquet":
        return _records(path, _read_parquet(path))
    if suffix in WORKBOOKS:
        table = read_delimited(path, [*HEADER_NAMES, *(n for n in names if n)])
        return Records({"": table.rows}, table.columns, table)
    if suffix == ".json" and is_export(path):  # Label Studio's export of choices: a table of its tasks
        return _export_records(path)
    content = read_text(path)
    if suffix in {".jsonl", ".ndjson", ".json"}:
        return _records(path, json_rows(path, content.text))
    lines = labelled_lines(path.name, content.text) if suffix in PLAIN_SUFFIXES else None
    if lines is not None:  # fastText's '__label__X text', TREC's 'NUM:dist text', 'text@label'
        return Records({"": lines.rows}, lines.columns, layout=lines.read, notes=lines.notes)
    if suffix in PLAIN_SUFFIXES and not _delimited(content.text):
        raise DataError(f"{path}: expected a table of texts and labels separated by a tab or a comma (as in the UCI "
                        "SMS Spam Collection: 'ham<TAB>text'), found no tab, comma, semicolon or bar in its first "
                        "line. Give a .csv, .tsv, .jsonl or .parquet table")
    table = read_delimited(path, [*HEADER_NAMES, *(n for n in names if n)], content)
    return Records({"": table.rows}, table.columns, table)


def _export_records(path: Path, every: bool = False) -> Records:
    """A labelling tool's export of text choices as records (``exports.as_table``; ``every``: unlabelled tasks too)."""
    table = as_table(path, every=every)
    return Records({"": table.rows}, table.columns, table)


def _read_table_folder(root: Path, found: TableFolder, names: Sequence[str | None]) -> Records:
    """The tables of ``table_folder`` as one table's splits: the train table's rows and columns, and the rows of a
    validation and a test table that hold every column of the train table (Kaggle's ``test.csv`` without the
    ``target`` column is unlabelled: named and not read)."""
    if found.unnamed:
        return _unnamed_tables(root, found.unnamed, names)
    first = found.first
    base = read_records(first, names)

    def rows_of(table: Path, records: Records) -> list[dict[str, Any]]:  # and of its other shards (the Hub's)
        return records.rows() + [r for shard in found.shards.get(table, []) for r in read_records(shard, names).rows()]

    def named(table: Path) -> str:
        others = len(found.shards.get(table, []))
        return table.name + (f" (+{others} shard{'s' if others > 1 else ''})" if others else "")

    parts = {("train" if found.tables.get("train") else ""): rows_of(first, base)}
    notes, read = list(base.notes), [named(first)]
    for split in ("val", "test"):
        table = found.tables.get(split)
        if table is None:
            continue
        other = read_records(table, names)
        missing = [c for c in base.columns if c not in other.columns]
        if missing:
            notes.append(f"{table.name} has no {', '.join(repr(c) for c in missing[:3])} column"
                         f"{'s' if len(missing) > 1 else ''} that {first.name} has: unlabelled, not read (`headstart "
                         f"predict RUN {table.name}` classifies its texts)")
            continue
        parts[split] = rows_of(table, other)
        read.append(named(table))
    if found.beside:
        notes.append(f"not read: {', '.join(t.name for t in found.beside)} (beside {first.name})")
    return Records(parts, base.columns, base.table, notes=notes,
                   read=[f"tables read: {' and '.join(read)}"] if len(read) > 1 else [])


CLASS_TABLE_COLUMN = "label"  # the column that gives each row of a table per class its table's name
VERSIONS = 0.5  # tables sharing this share of their rows are versions of one dataset, not parts of one


def _unnamed_tables(root: Path, tables: list[Path], names: Sequence[str | None]) -> Records:
    """Tables that name no split, when they are alike (the same columns): one table per class where none of their
    columns is a label column (the ISOT fake news set's ``Fake.csv`` and ``True.csv`` of ``title, text, subject,
    date``: each row's label is its table's name), else parts of one table (UCI's 'sentiment labelled sentences':
    ``amazon_cells_labelled.txt``, ``imdb_labelled.txt``, ``yelp_labelled.txt`` of 'text<TAB>0', no header line).
    Tables that are not alike: an error names them."""
    read = [read_records(t, names) for t in tables]
    columns, named = read[0].columns, ", ".join(t.name for t in tables)
    if any(r.columns != columns or r.header != read[0].header for r in read):
        raise DataError(f"{root}: its tables ({named}) name no split (train.csv, test.csv...) and are not alike (the "
                        "same columns: one table per class, or parts of one table): give the table to train on")
    keys = [{same_key(" ".join(str(v) for v in row.values())) for row in r.rows()} for r in read]
    for (i, a), (j, b) in itertools.combinations(enumerate(keys), 2):
        if len(a & b) >= VERSIONS * min(len(a), len(b)):  # 'data.csv' beside 'data_clean.csv'
            raise DataError(f"{root}: its tables {tables[i].name} and {tables[j].name} hold the same rows ("
                            f"{len(a & b)} of {min(len(a), len(b))}, {SAME}): versions of one dataset, not parts of "
                            "one. Give the table to train on")
    notes = [n for r in read for n in r.notes]
    sources = [(t.name, r.first_line, len(r.rows())) for t, r in zip(tables, read)]
    if read[0].header and not any(c.strip().lower() in LABEL_COLUMNS for c in columns):
        rows = [{**row, CLASS_TABLE_COLUMN: table.stem} for table, r in zip(tables, read) for row in r.rows()]
        note = f"one table per class ({named}): each row's label is its table's name"
        return Records({"": rows}, [*columns, CLASS_TABLE_COLUMN], notes=notes, sources=sources, read=[note])
    note = f"{len(tables)} tables of the same columns read as one ({named})"
    return Records({"": [row for r in read for row in r.rows()]}, columns, read[0].table, notes=notes,
                   sources=sources, read=[note])


def _read_text_folders(root: Path) -> Records:
    """Class folders of .txt files (one text per file, any encoding ``tables.decode_text`` reads), in split folders
    (``train/``, ``test/``...: ``image.data.split_folders``) or not; ``unsup/`` folders are named and left out."""
    from headstart.tasks.image.data import split_folders

    dirs = split_folders(root) or {"": root}
    parts: dict[str, list[dict[str, Any]]] = {}
    notes = []
    for split, folder in dirs.items():
        rows = parts.setdefault(split, [])
        for cls in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = sorted(f for f in cls.rglob("*") if is_text_file(f))
            if cls.name.lower() in UNLABELLED_FOLDERS:
                notes.append(f"{cls.relative_to(root).as_posix()}/ holds {len(files)} text(s) without a label: not used")
                continue
            rows += [{"text": read_text(f).text, "label": cls.name, "file": f.relative_to(root).as_posix()}
                     for f in files]
    if not any(parts.values()):
        raise DataError(f"{root}: no text files (.txt, or without a suffix) in its class folders")
    where = " and ".join(f"{d.relative_to(root).as_posix()}/" for d in dirs.values()) if dirs.get("") != root else ""
    layout = f"{root.name}: class folders of text files" + (f" in {where}" if where else "") + ", one text per file"
    return Records(parts, ["text", "label", "file"], layout=layout, notes=notes)


def _records(path: Path, rows: list[dict[str, Any]]) -> Records:
    if not rows:
        raise DataError(f"{path} has no data rows")
    return Records({"": rows}, list(rows[0]))


def _delimited(text: str) -> bool:
    first = text.lstrip("\n").split("\n", 1)[0]
    return any(c in first for c in "\t,;|")  # the delimiters ``tables.read_delimited`` finds


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    """The rows of a Parquet table; written by ``datasets`` (a Hub repository's ``data/train-00000-of-00001.parquet``,
    ``to_parquet``), its ClassLabel columns as their names (``_class_label_names``), as the schema's ``huggingface``
    metadata records them."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"Reading {path} needs pyarrow: pip install pyarrow (or convert the file to CSV/JSONL)") from None
    from headstart.tasks.image.hf_datasets import parquet_features

    names = {col: f.get("names") or (f.get("feature") or {}).get("names")
             for col, f in parquet_features(path).items() if isinstance(f, dict)}
    rows = pq.read_table(path).to_pylist()
    _class_label_names(rows, {col: n for col, n in names.items() if isinstance(n, list) and n})
    return rows


def _read_datasets(path: Path) -> Records:
    """The splits of a ``save_to_disk`` folder, ClassLabel columns as their names (``_class_label_names``)."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"{path} is a Hugging Face datasets folder; reading it needs: pip install datasets") from None
    loaded = datasets.load_from_disk(str(path))
    parts = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"": loaded}
    out: dict[str, list[dict[str, Any]]] = {}
    names: dict[str, list[str]] = {}
    for split, ds in parts.items():
        out[split] = ds.to_list()
        for col, f in ds.features.items():
            inner = getattr(f, "feature", None)
            if hasattr(f, "names") or hasattr(inner, "names"):  # ClassLabel, Sequence(ClassLabel)
                names[col] = f.names if hasattr(f, "names") else inner.names

    for rows in out.values():
        _class_label_names(rows, names)
    first = next(iter(out.values()))
    if not first:
        raise DataError(f"{path} has no rows")
    return Records(out, list(first[0]))


def _class_label_names(rows: list[dict[str, Any]], names: dict[str, list[str]]) -> None:
    """``datasets``' ClassLabel columns (``{column: names}``) as their names, in place: an index as its name, a list
    of them (``Sequence(ClassLabel)``, GoEmotions' ``labels``) as a list of names; -1, the datasets' "no label" (GLUE's
    and SNLI's test splits, SNLI's texts without a gold label), as a blank label."""

    def name(value: Any, label_names: list[str]) -> Any:
        if isinstance(value, list):
            return [n for v in value if (n := name(v, label_names)) is not None]
        if isinstance(value, int) and not isinstance(value, bool):
            return label_names[value] if 0 <= value < len(label_names) else None
        return value

    for row in rows:
        for col, label_names in names.items():
            if col in row:
                row[col] = name(row[col], label_names)


# ------------------------------------------------------------------------------------------- columns
def text_and_label_columns(records: Records, text_column: str | Sequence[str] | None, label_column: str | None,
                           where: Path) -> tuple[list[str], str]:
    """The text column(s) and the label column: as named, by a common name, the one column left once the other is
    known (``message, species``: the texts by name, then the labels as the column left), or by their values
    (``pick_column``): the longest texts; the fewest distinct labels in a table without a header line only (names
    such as ``size`` or ``year`` would say what a count of distinct values cannot). Several text columns make one
    text (``text_columns``): a pair, a title and its body."""
    columns, rows = records.columns, records.rows()

    def pick(what: str, wanted: str | None, candidates: Sequence[str], exclude: list[str],
             optional: bool = False) -> str | None:
        guess = not optional and (what == "text" or not records.header)
        return pick_column(columns, wanted, candidates, what, where, f"Name it with --{what}-column (config key "
                           f"text.{what}_column)", exclude=exclude, optional=optional, rows=rows, by_values=guess)

    lcol = pick("label", label_column, LABEL_COLUMNS, [], optional=True)
    tcols = text_columns(records, text_column, [lcol] if lcol else [], where)
    lcol = lcol or pick("label", None, LABEL_COLUMNS, tcols)
    if lcol in tcols:
        raise DataError(f"{where}: the text and label columns are both '{lcol}'; columns found: {columns}")
    return tcols, lcol


def text_columns(records: Records, wanted: str | Sequence[str] | None, exclude: Sequence[str], where: Path,
                 hint: str = "Name it with --text-column (config key text.text_column)") -> list[str]:
    """The column(s) whose values make the texts, in the order they are read.

    As named (``title,description`` or a list: several); else a pair of texts (``PAIR_COLUMNS``, or two columns
    numbered 1 and 2 or a and b: ``sentence1, sentence2``, ``text_a, text_b``); else the text column
    (``pick_column``) after its title (``TITLE_COLUMNS``: AG News' ``Title, Description``, the Amazon reviews'
    ``Summary, Text``); in a table without a header line, after the other columns of distinct sentences (AG News as
    first published: ``"3","Wall St. Bears...","Reuters - Short-sellers..."``).
    """
    columns, rows = records.columns, records.rows()
    named = [wanted] if isinstance(wanted, str) and wanted in columns else column_names(wanted, split=True)
    if named:
        for c in named:
            pick_column(columns, c, (), "text", where, hint)  # the error naming the columns found
        return named
    values = _column_values(rows)
    pair = _pair_columns(columns, values, exclude)
    if pair:
        return pair
    tcol = pick_column(columns, None, TEXT_COLUMNS, "text", where, hint, exclude=exclude, rows=rows)
    if _are_ids(values(tcol)) and not _looks_like_image_paths(values(tcol)):  # image paths: said later, and how
        # named like a text, it holds links (the sarcasm headlines' 'article_link'): the one column of prose, if any
        prose = [c for c in columns if c not in (tcol, *exclude) and c.lower() != SPLIT_COLUMN and _prose(values(c))]
        tcol = prose[0] if len(prose) == 1 else tcol
    if _are_ids(values(tcol)) and not _looks_like_image_paths(values(tcol)):
        # the one column left is Jigsaw's test_labels.csv's 'id': no texts here
        raise DataError(f"{where}: no column of texts: '{tcol}', the one left, holds ids ({values(tcol)[0]!r}...); "
                        f"columns found: {columns}. {hint}")
    if _is_title(tcol, values):  # a title chosen by its name: its body, when one is longer, follows it
        body = by_content("text", [c for c in columns if c not in exclude and c.lower() != SPLIT_COLUMN], rows)
        return [tcol, body] if body not in (None, tcol) and _prose(values(body)) else [tcol]
    if records.header:
        titles = [c for c in columns if c not in (tcol, *exclude) and _is_title(c, values)]
        return [titles[0], tcol] if len(titles) == 1 else [tcol]
    others = [c for c in columns if c not in (tcol, *exclude) and c.lower() != SPLIT_COLUMN
              and _prose(vs := values(c)) and len(set(vs)) > 0.5 * len(vs)]
    return [c for c in columns if c in others or c == tcol]


def _column_values(rows: Sequence[dict[str, Any]]):
    """A column's non-blank values in the first ``SAMPLE_ROWS`` rows, read once per column."""
    cache: dict[str, list[str]] = {}

    def values(column: str) -> list[str]:
        if column not in cache:
            cache[column] = [v for r in rows[:SAMPLE_ROWS] if (v := str(r.get(column) or "").strip())]
        return cache[column]
    return values


def _prose(values: Sequence[str]) -> bool:
    """Whether values read as sentences or titles: two words or more on average, nearly all letters and blanks (not
    dates, numbers, ids or links)."""
    if not values:
        return False
    chars = sum(map(len, values))
    words = sum(len(v.split()) for v in values)
    letters = sum(ch.isalpha() or ch.isspace() for v in values for ch in v)
    return words >= 2 * len(values) and letters >= 0.7 * chars


def _are_ids(values: Sequence[str]) -> bool:
    """Whether values are ids, not texts: single tokens holding a digit (``0001ea8717f6de06``, ``12345``), distinct."""
    return bool(values) and len(set(values)) > 0.9 * len(values) and \
        sum(" " not in v and any(ch.isdigit() for ch in v) for v in values) >= 0.95 * len(values)


def _is_title(column: str, values) -> bool:
    """A column named as a title (``Title``, ``review_title``) holding one per text, read as prose."""
    words = name_words(column)
    vs = values(column)
    return bool(words) and words[-1] in TITLE_COLUMNS and _prose(vs) and len(set(vs)) > TITLE_DISTINCT * len(vs)


def _pair_columns(columns: Sequence[str], values: Callable[[str], list[str]], exclude: Sequence[str]) -> list[str]:
    """Two columns of texts classified together: named as a pair (``PAIR_COLUMNS``), or named alike but for 1 and 2,
    a and b (``sentence1``, ``#1 String``, ``text_a``), both holding sentences; else []."""
    lower = {c.lower(): c for c in columns if c not in exclude}
    for first, second in PAIR_COLUMNS:
        if first in lower and second in lower:
            return [lower[first], lower[second]]
    for column in lower.values():
        for m in re.finditer(r"(?<![0-9])1(?![0-9])|(?<=[_ ])[aA]$", column):
            other = column[:m.start()] + {"1": "2", "a": "b", "A": "B"}[m.group()] + column[m.end():]
            if other in lower.values() and _prose(values(column)) and _prose(values(other)):
                return [column, other]
    return []


def column_names(text_column: str | Sequence[str] | None, split: bool = False) -> list[str]:
    """The names in a ``text_column`` setting: one, a list, or ``a,b`` (``split``: its parts only; else the name
    itself too, as a column may hold a comma)."""
    if text_column is None:
        return []
    if not isinstance(text_column, str):
        return list(text_column)
    parts = [c.strip() for c in text_column.split(",")] if "," in text_column else []
    return parts if split and parts else [text_column, *parts]


def text_of(row: dict[str, Any], columns: Sequence[str]) -> str:
    """A row's text: its one text column's value, or its text columns' values joined by ``PART_SEP`` ("" when all
    are blank)."""
    parts = ["" if row.get(c) is None else str(row.get(c)) for c in columns]
    if len(parts) == 1:
        return parts[0]
    return PART_SEP.join(p.strip() for p in parts) if any(p.strip() for p in parts) else ""


def columns_note(columns: Sequence[str]) -> str:
    """How the Data line names the text column(s)."""
    if len(columns) == 1:
        return f"text column '{columns[0]}'"
    return "text columns " + " + ".join(f"'{c}'" for c in columns) + " (joined by the tokenizer's separator)"


def _as_label(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _sort_classes(labels: set[str]) -> list[str]:
    """Numeric labels in numeric order ("2" before "10"), others alphabetically."""
    try:
        return sorted(labels, key=lambda s: (float(s), s))
    except ValueError:
        return sorted(labels)


def _looks_like_image_paths(values: list[str]) -> bool:
    sample = [v for v in values[:200] if v]
    return bool(sample) and sum(v.lower().endswith(IMAGE_SUFFIXES) for v in sample) > 0.8 * len(sample)


def discover(data: str | Path, text_column: str | Sequence[str] | None = None, label_column: str | None = None,
             val_fraction: float = 0.2, seed: int = 0, tags: bool = False, uncertain: str = "negative") -> TextSplits:
    """Classes and train/val(/test) texts of DATA; empty texts and labels are left out and reported.

    ``tags``: multi-label texts, each with a tuple of class indices (none, one or several: ``tag_reader``;
    ``uncertain`` reads CheXpert-style -1 flags as "negative" or "positive"); the validation split is then stratified
    by each text's rarest label.
    """
    path = Path(data)
    records = read_records(path, [*column_names(text_column), label_column])
    parts, columns = records.parts, records.columns
    if tags:
        tcols, classes, what, label_of = tag_reader(records, text_column, label_column, uncertain, path)
    else:
        tcols, classes, what, label_of = _label_reader(records, text_column, label_column, path)
    if _looks_like_image_paths([str(r.get(tcols[0]) or "") for r in records.rows()]):
        raise DataError(f"{path}: column '{tcols[0]}' holds image file paths, not texts: this is image data; "
                        "train it with --task image (and an image model)")
    note = "; ".join([*([records.table.describe()] if records.table is not None and records.table.describe() else []),
                      *records.read])
    splits = TextSplits(classes, [], [], layout=records.layout
                        or f"{path.name} ({columns_note(tcols)}, {what}{'; ' + note if note else ''})",
                        notes=list(records.notes), text_columns=tcols)
    samples: dict[str, list[TextSample]] = {"train": [], "val": [], "test": [], "": []}
    has_split_column = "split" in columns and not any(parts.keys() - {""})
    for part, rows in parts.items():
        if part and SPLIT_NAMES.get(part.lower()) != "train" and rows and all(label_of(r) is None for r in rows):
            splits.notes.append(f"the {part} split ({len(rows)} texts) has no labels (a benchmark's hidden test "
                                "split): not read; `headstart predict RUN` classifies its texts")
            continue
        for index, row in enumerate(rows):
            where = records.row_name(path, part, index)
            text, label = text_of(row, tcols), label_of(row)
            if is_blank(text) or label is None:
                splits.skipped.append((where, "empty text" if is_blank(text) else "empty label"))
                continue
            if has_split_column:
                split = SPLIT_NAMES.get(str(row.get("split") or "").strip().lower(), "train")
            else:
                split = SPLIT_NAMES.get(part.lower(), "train") if part else ""
            samples[split].append(TextSample(text, label, where))
    strata = _rarest_label if tags else (lambda items: [s.label for s in items])
    if any(parts.keys() - {""}) or has_split_column:
        splits.train, splits.val, splits.test = samples["train"], samples["val"], samples["test"]
        splits.layout += ", its own train/val splits"
        if not splits.val and splits.train:  # no validation split given: hold some training texts out
            train_idx, val_idx = stratified_split(strata(splits.train), val_fraction, seed,
                                                  groups=[same_key(s.text) for s in splits.train])
            splits.train, splits.val = [splits.train[i] for i in train_idx], [splits.train[i] for i in val_idx]
            splits.layout += f" (no validation split: {val_fraction:.0%} of train held out, seed {seed})"
            splits.val_held_out = True
    else:
        items = samples[""]
        train_idx, val_idx = stratified_split(strata(items), val_fraction, seed,
                                              groups=[same_key(s.text) for s in items])
        splits.train, splits.val = [items[i] for i in train_idx], [items[i] for i in val_idx]
        splits.layout += f", {val_fraction:.0%} " + ("validation split stratified by rarest label" if tags else
                                                     "stratified validation split") + f" (seed {seed})"
        splits.val_held_out = True
    if not splits.train or not splits.val:
        raise DataError(f"{path}: no texts left for the {'training' if not splits.train else 'validation'} split "
                        f"({len(splits.skipped)} row(s) skipped: empty text or label)")
    train_classes = {t for s in splits.train for t in s.label} if tags else {s.label for s in splits.train}
    if len(train_classes) < (1 if tags else 2):
        raise DataError(f"{path}: the training split has " + ("no label at all" if tags else
                        f"one class only ({classes[next(iter(train_classes))]})") + "; a classifier needs at least 2")
    train_keys, val_keys = [same_key(s.text) for s in splits.train], [same_key(s.text) for s in splits.val]
    if splits.val_held_out:
        pool = splits.train + splits.val
        groups = duplicate_groups(train_keys + val_keys)
        if groups:
            splits.notes.append(f"{sum(len(g) - 1 for g in groups)} duplicate text(s) ({len(groups)} text(s) occur "
                                f"more than once, e.g. {pool[groups[0][0]].where} = {pool[groups[0][1]].where}; "
                                f"{SAME}): each is kept on one side of the validation split")
        if not tags:
            splits.notes += split_notes([s.label for s in pool], [s.label for s in splits.val], classes, "texts")
    seen = set(train_keys)
    dup = sum(k in seen for k in val_keys)
    if dup:
        splits.notes.append(f"{dup} validation text(s) also occur in the training split (duplicate rows; {SAME}): "
                            "validation scores may be optimistic")
    splits.notes += word_notes(splits.train + splits.val, classes)  # ISOT's 'WASHINGTON (Reuters) -' in one class
    if tags:
        return splits
    from headstart.tasks.image.class_names import name_classes  # classes numbered 1...K named by classes.txt beside

    return name_classes(splits, (path.parent, path.parent.parent) if path.is_file() else (path, path.parent))


LabelOf = Callable[[dict[str, Any]], Any]  # a row's label: a class index (a tuple of them for tags), None if blank


def _label_reader(records: Records, text_column: str | Sequence[str] | None, label_column: str | None,
                  where: Path) -> tuple[list[str], list[str], str, LabelOf]:
    """Single-label texts: the text columns, the classes (the label column's values), what the Data line says of the
    labels and each row's class index."""
    try:
        tcols, lcol = text_and_label_columns(records, text_column, label_column, where)
    except DataError as exc:  # Jigsaw's 0/1 columns given as --task text: say what they are
        flags = flag_columns(records.columns, records.rows()[:SAMPLE_ROWS], (SPLIT_COLUMN,))
        if len(flags) < 2:
            raise
        raise DataError(f"{exc}. Its 0/1 columns {flags} look like several labels per text: train them together "
                        f"with --task multilabel, or one of them with --label-column {flags[0]}") from None
    labels = [_as_label(r.get(lcol)) for r in records.rows()]
    spelled, merged = one_spelling(labels)  # 'ham', 'Ham' and 'HAM' are one class
    spelling = dict(zip(labels, spelled))
    classes = _sort_classes(set(spelled) - {""})
    if len(classes) < 2:
        raise DataError(f"{where}: the label column '{lcol}' has {len(classes)} distinct value(s) {classes[:5]}; "
                        "a classifier needs at least 2 classes")
    index = {c: i for i, c in enumerate(classes)}
    return (tcols, classes, f"label column '{lcol}'" + (f"; {merged}" if merged else ""),
            lambda row: index.get(spelling.get(label := _as_label(row.get(lcol)), label)))


def tag_reader(records: Records, text_column: str | Sequence[str] | None, label_column: str | None,
               uncertain: str, where: Path) -> tuple[list[str], list[str], str, LabelOf]:
    """Multi-label texts: the text columns, the classes, what the Data line says of the labels, and each row's tuple
    of class indices (empty: no label applies, as for most of Jigsaw's comments).

    The labels are ``label_column``'s, else those of a column named ``labels``, ``tags``, ``label``... (lists in
    JSON, or ``a;b``, ``a|b``, blank-separated words that are labels alone elsewhere); else one 0/1 column per class
    (Jigsaw's ``toxic, severe_toxic, obscene...``; -1 as ``uncertain``); else the one column of label lists.
    """
    from headstart.tasks.multilabel import data as tags

    columns, rows = records.columns, records.rows()
    lower = {c.lower(): c for c in columns}
    lcol = label_column or next((lower[c] for c in tags.LABELS_COLUMNS if c in lower), None)
    flags = [] if lcol else flag_columns(columns, rows, (SPLIT_COLUMN,))
    if lcol is None and len(flags) < 2:
        flags, lcol = [], tags.list_column(columns, rows, [SPLIT_COLUMN])
    if lcol is None and not flags:
        raise DataError(f"{where}: cannot tell which column holds the labels; columns found: {columns}. Name it with "
                        "--label-column (labels separated by ';' or '|', or a JSON list), or give one 0/1 column per "
                        "class")
    if lcol is not None and lcol not in columns:
        raise DataError(f"{where}: no column '{lcol}' for the labels; columns found: {columns}")
    tcols = text_columns(records, text_column, [lcol] if lcol else flags, where)
    if lcol is None:
        positive = POSITIVE | (UNCERTAIN if uncertain == "positive" else set())
        classes = sorted(flags)
        unsure = sum(str(r.get(c) or "").strip() in UNCERTAIN for r in rows for c in flags)
        what = f"{len(flags)} 0/1 label columns" + (f", {unsure} uncertain (-1) label(s) read as {uncertain} "
                                                    "(data.uncertain)" if unsure else "")
        def flags_of(row: dict[str, Any]) -> tuple[int, ...] | None:  # -1 in every column: not labelled (Jigsaw's
            cells = [str(row.get(c) or "").strip() for c in classes]  # unscored test rows), not all uncertain
            if all(cell in UNCERTAIN for cell in cells):
                return None
            return tuple(i for i, cell in enumerate(cells) if cell in positive)
        return tcols, classes, what, flags_of
    cells = [r.get(lcol) for r in rows]
    words = [c for c in cells if not isinstance(c, list)]
    spaces = tags.blank_separated(words) and (lcol.lower() == "tags" or tags.words_are_labels(words))

    def labels_of(cell: Any) -> list[str]:
        return [_as_label(v) for v in cell if _as_label(v)] if isinstance(cell, list) else \
            tags.split_labels(_as_label(cell), spaces)

    classes = _sort_classes({label for cell in cells for label in labels_of(cell)})
    if len(classes) < 2:
        raise DataError(f"{where}: the labels column '{lcol}' holds {len(classes)} distinct label(s) {classes}; "
                        "multi-label data needs at least 2")
    index = {c: i for i, c in enumerate(classes)}
    what = f"labels column '{lcol}'" + (", labels separated by blanks" if spaces else "")
    return tcols, classes, what, lambda row: tuple(sorted({index[t] for t in labels_of(row.get(lcol))}))


def _rarest_label(items: Sequence[TextSample]) -> list[int]:
    """Each tagged text's rarest label (-1 without one): the stratum of a multi-label validation split."""
    counts = Counter(t for s in items for t in s.label)
    return [min(s.label, key=lambda t: (counts[t], t)) if s.label else -1 for s in items]


def labelled_texts(data: str | Path, classes: list[str], text_column: str | Sequence[str] | None = None,
                   label_column: str | None = None, tags: bool = False, uncertain: str = "negative",
                   known_by: str = "the model", aliases: dict[str, str] | None = None
                   ) -> tuple[list[TextSample], list[tuple[str, str]]]:
    """Texts of labelled evaluation data with the model's ``classes`` (its test, else val split, else all rows);
    ``tags``: multi-label texts (``tag_reader``), each labelled with a tuple of the model's class indices.
    ``known_by``: whose classes they are, as messages say it; ``aliases``: the codes that named them at training
    (``3`` for ``Business``: ``image.class_names``)."""
    path = Path(data)
    names = column_names(text_column)
    records = read_records(path, [*names, label_column])
    parts, columns = records.parts, records.columns
    # the columns named (or found) at training where this table has them (a run trained on the UCI file's col2
    # evaluates a table whose header says 'text'); else found here as training finds them
    text_column = text_column if names and all(c in columns for c in column_names(text_column, split=True)) else None
    label_column = label_column if label_column in columns else None

    def readers(records: Records) -> tuple[list[str], Callable[[dict[str, Any]], Any]]:
        if tags:
            tcols, found, _, tags_of = tag_reader(records, text_column, label_column, uncertain, path)
            return tcols, lambda row: None if (t := tags_of(row)) is None else tuple(found[i] for i in t)
        tcols, lcol = text_and_label_columns(records, text_column, label_column, path)
        return tcols, lambda row: _as_label(row.get(lcol))

    try:
        tcols, label_of = readers(records)
    except DataError:  # labels without their texts (Jigsaw's test_labels.csv): the texts of the table beside
        joined = _texts_beside(path, records)
        if joined is None:
            raise
        records, parts, columns = joined, joined.parts, joined.columns
        tcols, label_of = readers(records)
    rows = next((parts[p] for p in ("test", "validation", "val", "valid") if p in parts), None)
    name_of: Callable[[int], str] = lambda i: f"{path.name}:{i + 1}"  # noqa: E731
    if rows is None:
        rows, name_of = records.rows(), lambda i: records.row_name(path, "", i)  # every row: by its file line
        if "split" in columns:
            for wanted in ("test", "val"):
                chosen = [r for r in rows if SPLIT_NAMES.get(str(r.get("split") or "").lower()) == wanted]
                if chosen:
                    rows, name_of = chosen, lambda i: f"{path.name}:{i + 1}"
                    break
    if _looks_like_image_paths([str(r.get(tcols[0]) or "") for r in rows]):
        raise DataError(f"{path}: column '{tcols[0]}' holds image file paths: this model classifies texts")
    index = {c: i for i, c in enumerate(classes)}
    match = folded_class(classes)  # 'Spam' is the model's 'spam'
    samples, skipped = [], []
    unknown: Counter = Counter()
    for i, row in enumerate(rows):
        text, label = text_of(row, tcols), label_of(row)
        names = label if isinstance(label, tuple) else (label,) if label not in ("", None) else ()
        names = tuple(n if n in index else (aliases or {}).get(n) or match(n) or n for n in names)
        if is_blank(text) or label in ("", None):
            skipped.append((name_of(i), "empty text" if is_blank(text) else "empty label"))
        elif any(n not in index for n in names):
            unknown.update(n for n in names if n not in index)
        else:
            samples.append(TextSample(text, tuple(sorted(index[n] for n in names)) if tags else index[names[0]],
                                      name_of(i)))
    if unknown:
        raise DataError(f"{path}: labels {known_by} does not know: {dict(unknown.most_common(5))}; "
                        f"its classes are {classes}")
    if not samples:
        raise DataError(f"{path}: no labelled texts ({len(skipped)} row(s) with an empty text or label)")
    return samples, skipped


BESIDE_MB = 512  # tables beside a labels table read for its texts at most this large


def _texts_beside(path: Path, records: Records) -> Records | None:
    """A labels table's rows with the texts of the table beside it that shares its first column (the id) and has
    texts, for 90 % of its ids or more (Jigsaw's ``test_labels.csv`` of ``id`` and 0/1 columns beside
    ``test.csv`` of ``id, comment_text``); None when there is none."""
    if path.is_dir() or not records.header or not records.columns:
        return None
    key = records.columns[0]
    ids = [str(r.get(key)) for r in records.rows()]
    for other in sorted(path.parent.iterdir()):
        if other == path or other.suffix.lower() not in TABLE_SUFFIXES or not other.is_file() \
                or other.stat().st_size > BESIDE_MB * 2**20:
            continue
        try:
            found = read_records(other)
            if key not in found.columns:
                continue
            tcols = text_columns(found, None, [key], other)
        except DataError:
            continue
        texts = {str(r.get(key)): r for r in found.rows()}
        if sum(i in texts for i in ids) < 0.9 * len(ids):
            continue
        rows = [{**{c: texts.get(str(r.get(key)), {}).get(c) for c in tcols}, **r} for r in records.rows()]
        return Records({"": rows}, [*records.columns, *(c for c in tcols if c not in records.columns)], records.table,
                       notes=[f"texts from {other.name} by '{key}'"])
    return None


def looks_like_text_data(data: str | Path) -> bool:
    """Whether DATA is plainly text data: a datasets folder, or a table whose columns hold no image paths."""
    return text_task_of(data) is not None


def text_task_of(data: str | Path) -> str | None:
    """``text``, ``text-multilabel`` (``holds_tags``) or None (not plainly text data), reading DATA once."""
    path = Path(data)
    datasets = is_datasets_folder(path)
    if path.is_dir() and not datasets:
        tables = table_folder(path)
        if tables is None:
            return None
        table: Path | None = tables.first  # the table whose columns may name image files
    elif path.is_dir():
        table = None
    elif path.suffix.lower() in TABLE_SUFFIXES | PLAIN_SUFFIXES:
        table = path
    else:
        return None
    try:
        records = read_records(path)
    except DataError:  # let the text reader report what is wrong, unless the file may be an image table (a folder's
        # .txt tables are rows of text: versions of one dataset, the Financial PhraseBank's Sentences_*Agree.txt)
        return "text" if datasets or table.suffix.lower() not in {".csv", *WORKBOOKS, *PLAIN_SUFFIXES} or (
            path.is_dir() and table.suffix.lower() in PLAIN_SUFFIXES - {""}) else None
    rows = next(iter(records.parts.values()))[:200]
    if table and any(_looks_like_image_paths([str(r.get(c) or "") for r in rows])
                     or _names_image_files(table, rows, c) for c in records.columns):
        return None
    return "text-multilabel" if holds_tags(records) else "text"


def holds_tags(records: Records) -> bool:
    """Whether a table of texts plainly holds several labels per text: a labels column (``labels``, ``tags``,
    ``label``...; else the one column of label lists) with JSON lists or ``a;b``, ``a|b`` cells of two labels, or,
    without one, 0/1 columns with two 1s in a row (Jigsaw's toxic comments; one-hot columns, a single 1 per row,
    are one label)."""
    from headstart.tasks.multilabel import data as tags

    columns, rows = records.columns, records.rows()[:SAMPLE_ROWS]
    lower = {c.lower(): c for c in columns}
    named = next((lower[c] for c in tags.LABELS_COLUMNS if c in lower), None)
    if named is not None:  # a label column: lists in it, or one label a text (0/1 columns beside it are features)
        return any(isinstance(r.get(named), list) and len(r[named]) > 1 for r in rows) or \
            tags.list_column([named], rows, []) is not None
    if tags.list_column(columns, rows, [SPLIT_COLUMN]) is not None:
        return True
    flags = flag_columns(columns, rows, (SPLIT_COLUMN,))
    return len(flags) >= 2 and any(sum(str(r.get(c) or "").strip() in POSITIVE for c in flags) > 1 for r in rows)


def _names_image_files(path: Path, rows: list[dict[str, Any]], column: str) -> bool:
    """Whether a column of ids names image files beside the table (Kaggle's ``id,breed`` and ``train/<id>.jpg``)."""
    values = [str(r.get(column) or "").strip() for r in rows[:50]]
    if not any(values) or any(" " in v for v in values) or path.suffix.lower() not in {*TABLE_FILES, *PLAIN_SUFFIXES}:
        return False
    return bool(table_files(path, values)[1])


# ------------------------------------------------------------------------------------------- tokens
def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def tokenize(tokenizer, texts: list[str], max_length: int) -> tuple[list[list[int]], int]:
    """Token ids of each text cut to ``max_length`` (special tokens included) and how many texts were cut. The parts
    of a text read from several columns are separated by the tokenizer's separator token (``part_separator``)."""
    if not texts:
        return [], 0
    if any(PART_SEP in t for t in texts):
        sep = part_separator(tokenizer)
        texts = [t.replace(PART_SEP, sep) for t in texts]
    ids = tokenizer(texts, truncation=True, max_length=max_length + 1)["input_ids"]
    cut = sum(len(i) > max_length for i in ids)
    if cut:
        ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    return ids, cut


def tokenizer_id(spec) -> str:
    """What names how a text backbone's spec turns texts into tokens (its source and weights, whether the parts of a
    text are read as segments) in feature cache keys."""
    return f"{spec.name}:{spec.weights}" + (":segments" if spec.extra.get("segment_token") is not None else "")


def text_transform(tokenizer: str, max_length: int) -> str:
    """The feature cache's transform of texts (``TextData.transform_id``; advise's probe shares training's cache)."""
    return f"text:{tokenizer}:max_length={max_length}"


def part_separator(tokenizer) -> str:
    """What stands between the parts of a text (a title and its body, a pair): the separator token BERT-family models
    were pre-trained to read between two segments, ``" [SEP] "`` (RoBERTa ``" </s> "``); a blank without one."""
    sep = getattr(tokenizer, "sep_token", None)
    return f" {sep} " if sep else " "


def label_tensor(labels: Sequence[Any], num_classes: int) -> torch.Tensor:
    """Class indices as a long tensor, or tuples of them (multi-label) as multi-hot float rows (``multi_hot``)."""
    if labels and isinstance(labels[0], tuple):
        from headstart.tasks.multilabel.data import multi_hot

        return torch.stack([multi_hot(tags, num_classes) for tags in labels])
    return torch.tensor(labels, dtype=torch.long)


class TokenDataset(Dataset):
    """``(token ids, label)`` pairs (label -1 when unlabelled; a multi-hot row for multi-label texts)."""

    def __init__(self, ids: list[list[int]], labels: list[int]) -> None:
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[list[int], int]:
        return self.ids[i], self.labels[i]


class PadCollate:
    """Dynamic padding: each batch is padded to its longest text only."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[tuple[list[int], int]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        longest = max(len(ids) for ids, _ in items)
        input_ids = torch.full((len(items), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), longest), dtype=torch.long)
        for row, (ids, _) in enumerate(items):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, : len(ids)] = 1
        labels = [y for _, y in items]
        targets = torch.stack(labels) if isinstance(labels[0], torch.Tensor) else torch.tensor(labels, dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": mask}, targets


def length_buckets(lengths: list[int], batch_size: int, seed: int, order: list[int] | None = None,
                   bucket: int = 50) -> list[list[int]]:
    """Batches of similar length in a seeded random order: shuffle, sort within buckets of ``bucket`` batches.

    Always ``ceil(n / batch_size)`` batches, like a shuffled DataLoader (the LR schedule counts on it).
    """
    rng = random.Random(seed)
    order = list(range(len(lengths))) if order is None else list(order)
    rng.shuffle(order)
    span = batch_size * bucket
    chunks = [sorted(order[i: i + span], key=lambda j: lengths[j]) for i in range(0, len(order), span)]
    flat = [j for chunk in chunks for j in chunk]
    batches = [flat[i: i + batch_size] for i in range(0, len(flat), batch_size)]
    rng.shuffle(batches)
    return batches


class TextData:
    """Tokenised splits as the training loop needs them (``engine.TaskData``)."""

    timed_batches = 4  # batches of similar length in a random order cost more or less: an epoch's estimate times 4

    def __init__(self, splits: TextSplits, tokenizer, max_length: int, tokenizer_id: str = "") -> None:
        self.classes = splits.classes
        self.max_length = max_length
        self.tokenizer_id = tokenizer_id or type(tokenizer).__name__
        self.collate = PadCollate(tokenizer.pad_token_id or 0)
        self.splits: dict[str, list[TextSample]] = {}
        self.ids: dict[str, list[list[int]]] = {}
        self.truncated: dict[str, int] = {}
        for name in ("train", "val", "test"):
            samples = getattr(splits, name)
            ids, cut = tokenize(tokenizer, [s.text for s in samples], max_length)
            order = sorted(range(len(samples)), key=lambda i: len(ids[i]))  # length-sorted evaluation batches
            self.splits[name] = [samples[i] for i in order]
            self.ids[name] = [ids[i] for i in order]
            self.truncated[name] = cut
        self.tags = any(isinstance(s.label, tuple) for s in splits.train)  # multi-label: a tuple of labels a text

    def keys(self, split: str) -> list[str]:
        return [text_key(s.text) for s in self.splits[split]]

    def labels(self, split: str) -> torch.Tensor:
        """Class indices, or (multi-label texts) a multi-hot row per text."""
        return label_tensor([s.label for s in self.splits[split]], len(self.classes))

    def dataset(self, split: str, train: bool, epoch: int) -> TokenDataset:
        labels = self.labels(split)
        return TokenDataset(self.ids[split], list(labels) if self.tags else labels.tolist())

    def transform_id(self, train: bool) -> str:
        return text_transform(self.tokenizer_id, self.max_length)

    def train_batches(self, batch_size: int, seed: int, order: list[int] | None = None) -> list[list[int]]:
        """One epoch of training batches in length-sorted buckets, over ``order`` (default: every item once)."""
        return length_buckets([len(i) for i in self.ids["train"]], batch_size, seed, order)

    def lengths(self, split: str) -> list[int]:
        return [len(i) for i in self.ids[split]]


def _names_a_file(item: str) -> bool:
    """Whether ``item`` can be a path at all (a 300-character sentence makes ``stat`` fail with 'name too long')."""
    try:
        Path(item).exists()
    except (OSError, ValueError):
        return False
    return True


def texts_from_arguments(items: Sequence[str], file: str | Path | None = None,
                         columns: Sequence[str] = ()) -> list[str]:
    """Texts to classify from the command line: arguments are texts, except existing files: ``.txt`` files hold one
    text per line (unless their lines are rows: 'text<TAB>0', TREC's, 'text@label': ``is_table_text``, their texts),
    tables (``.csv``, ``.tsv``, ``.jsonl``, ``.json``, ``.parquet``) one per row, in their text column
    (``table_texts``), a folder of text tables (``table_folder``) its test table's, folders of ``.txt`` files one per
    file (as training reads class folders: IMDB's test/pos/);
    ``file`` is read the same way. Image files are refused with the fix. ``columns``: the text column(s) the model
    was trained on, read from a table that has them all."""
    texts: list[str] = []
    sources = [Path(file)] if file is not None else []
    for item in items:
        path = Path(item)
        if not _names_a_file(item):  # a text too long (or too odd) to be a file name: it is a text
            texts.append(item)
            continue
        tables = table_folder(path) if path.is_dir() else None
        if tables is not None:  # a folder of text tables (Kaggle's): its test table, else its one table
            chosen = tables.tables.get("test") or tables.tables.get("")
            if chosen is None:
                raise DataError(f"{path} holds text tables but none named test: give the table to classify "
                                f"({', '.join(t.name for t in tables.tables.values())})")
            texts += table_texts(chosen, columns)
            continue
        files = sorted(f for f in path.rglob("*") if is_text_file(f)) \
            if path.is_dir() else []
        if files:
            texts += [read_text(f).text for f in files]
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() or path.is_dir():
            raise DataError(f"'{item}' is an image file or a folder, and this run holds a text model: pass texts, "
                            "or --file texts.txt (one text per line); predict images with an image run folder")
        if path.suffix.lower() in TABLE_SUFFIXES | PLAIN_SUFFIXES and path.is_file():
            sources.append(path)
        else:
            texts.append(item)
    for source in sources:
        if not source.is_file():
            raise DataError(f"Text file not found: {source}")
        if source.suffix.lower() in TABLE_SUFFIXES or is_table_text(source):  # rows: their texts, not their labels
            texts += table_texts(source, columns)
        else:
            texts += [line for line in read_text_file(source).splitlines() if line.strip()]
    return texts


def table_texts(path: Path, columns: Sequence[str] = ()) -> list[str]:
    """The texts of a table to classify (a Kaggle-style ``test.csv`` of ``id,text``), one per row in the table's
    order: in ``columns`` (those the model was trained on) where it has them all, else in its text column(s) found as
    for training (by name, else by their values)."""
    records = _export_records(path, every=True) if is_export(path) else read_records(path, columns)  # every task
    if not (columns and all(c in records.columns for c in columns)):
        columns = text_columns(records, None, [], path, "Name the column of texts 'text' (or pass the texts with "
                               "--file texts.txt, one per line)")
    return [text_of(r, columns) for r in records.rows()]
