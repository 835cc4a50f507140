"""Delimited tables (CSV, TSV) and Excel workbooks as the tasks read them: delimiter and quoting sniffed, a header
line told from data.

A table's first line is its header unless it plainly is a data line: none of its fields is a column name headstart
knows (``text``, ``label``, ``path``...) and one of them is an image file name or comes back as a value of its column
in another line further down (``ham`` in the first line of the UCI SMS Spam Collection, a class index in AG News'
CSV; a line repeated whole, the header line of tables put together or a message sent twice, says nothing). Such a table
gets the column names ``col1``, ``col2``... (``--text-column col2`` names one).

Files are read as UTF-8 (a byte-order mark says UTF-16 / UTF-32); a file that is not UTF-8 is read in the
multi-byte encoding charset-normalizer finds (Shift-JIS, GB18030, Big5, EUC-KR...) or else as Windows-1252,
the encoding of Excel's "CSV" on Western Windows (Kaggle's ``spam.csv``), and the Data line says so with an
example of what was read.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import json
import os
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headstart.errors import DataError
from headstart.tasks.image.dicom import DICOM_SUFFIXES, OTHER_IMAGE_SUFFIXES  # numpy and PIL only, no torch

# split values as datasets write them (FER-2013's Usage: Training, PublicTest, PrivateTest)
SPLIT_VALUES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                "publictest": "val", "dev": "val", "test": "test", "privatetest": "test", "testing": "test"}


def split_of_name(path: Path) -> str | None:
    """train / val / test, from a table's name (``fashion-mnist_train.csv``, ``sign_mnist_test.csv``,
    ``twitter_validation.csv``)."""
    return next((SPLIT_VALUES[w] for w in re.split(r"[^a-z]+", path.stem.lower()) if w in SPLIT_VALUES), None)

# split folders as datasets and labelling tools name them (Roboflow's train/, valid/, test/)
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
IMAGE_SUFFIXES = (*OTHER_IMAGE_SUFFIXES, *DICOM_SUFFIXES)  # the image files headstart reads
UNLABELLED_FOLDERS = ("unsup", "unlabeled", "unlabelled")  # beside class folders, items without a class (IMDB, STL-10)
DELIMITED = (".csv", ".tsv")  # tables of delimited text
WORKBOOKS = (".xlsx", ".xlsm")  # Excel workbooks: the first sheet that holds data (openpyxl)
JSON_LINES = (".jsonl", ".ndjson")  # a JSON object a line (Hugging Face's imagefolder metadata.jsonl, doccano's)
TABLE_FILES = (*DELIMITED, *WORKBOOKS, *JSON_LINES)  # the table files of image paths, labels or texts
HEADERLESS_PREFIX = "col"  # columns of a table without a header line: col1, col2, ...
LOOK_AHEAD = 2000  # data lines searched for a first-line field that comes back
BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
MULTI_BYTE = ("cp932", "shift_jis", "euc_jp", "iso2022_jp", "gb2312", "gbk", "gb18030", "hz", "big5", "big5hkscs",
              "cp950", "euc_kr", "cp949", "johab", "utf_16", "utf_16_le", "utf_16_be", "utf_32")
ENCODING_NAMES = {"cp1252": "Windows-1252", "latin_1": "Latin-1", "utf-16": "UTF-16", "utf-32": "UTF-32"}


@dataclass
class Table:
    """The rows of a delimited file, its column names, and whether its first line named them."""

    rows: list[dict[str, Any]]
    columns: list[str]
    header: bool = True
    encoding_note: str = ""  # how a file that is not UTF-8 was read (``Text.note``)
    split_note: str = ""  # a column read as the split column (fastai's ``is_valid``)
    source_note: str = ""  # what a table read from another format says of it (a Label Studio export's tasks)
    numbered_from: int | None = None  # the number of ``rows[0]`` where rows are not lines (a Label Studio task's)

    @property
    def first_line(self) -> int:
        """The file line (or number) of ``rows[0]``."""
        return self.numbered_from if self.numbered_from is not None else 2 if self.header else 1

    def describe(self) -> str:
        """Notes for the layout line: no header line, an encoding other than UTF-8, a split column read from another,
        what another format's reader says ('' when none)."""
        header = "" if self.header else f"no header line: columns {', '.join(self.columns)}"
        return "; ".join(n for n in (header, self.encoding_note, self.split_note, self.source_note) if n)


@dataclass
class Text:
    """A text file's content and the encoding it was read with."""

    text: str
    encoding: str = "utf-8"

    @property
    def note(self) -> str:
        """'' for UTF-8 (and ASCII), else which encoding was used, with the first non-ASCII text as read."""
        if self.encoding in ("utf-8", "utf-8-sig"):
            return ""
        at = next((i for i, ch in enumerate(self.text) if ord(ch) > 127), 0)
        example = " ".join(self.text[max(0, at - 12): at + 12].split())
        name = ENCODING_NAMES.get(self.encoding, self.encoding)
        return (f"read as {name}, not UTF-8 (e.g. '{example}'; if that reads wrong, re-save the file as UTF-8)"
                if self.encoding not in ("utf-16", "utf-32") else f"read as {name} (byte-order mark)")


def decode_text(data: bytes) -> Text:
    """Bytes as text: a byte-order mark's encoding, else UTF-8, else a multi-byte encoding that charset-normalizer
    finds, else Windows-1252 (Latin-1 for the 5 bytes it leaves undefined). Never fails."""
    for bom, encoding in BOMS:
        if data.startswith(bom):
            return Text(data.decode(encoding), encoding)
    try:
        return Text(data.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    guess = from_bytes(data[:1_000_000]).best()  # Western text is guessed as any of a dozen code pages: not used
    if guess is not None and codecs.lookup(guess.encoding).name.replace("-", "_") in MULTI_BYTE:
        try:
            return Text(data.decode(guess.encoding), guess.encoding)
        except UnicodeDecodeError:
            pass
    try:
        return Text(data.decode("cp1252"), "cp1252")
    except UnicodeDecodeError:
        return Text(data.decode("latin-1"), "latin_1")


def read_text(path: Path) -> Text:
    """A text file's content (``decode_text``); a DataError when it cannot be read."""
    try:
        return decode_text(path.read_bytes())
    except OSError as exc:
        raise DataError(f"{path} cannot be read ({exc.strerror or exc})") from None


def read_text_file(path: Path) -> str:
    """A text file's content (``read_text``) without its encoding."""
    return read_text(path).text


def allow_long_fields() -> None:
    """Let the csv module read fields of any length (its default limit is 131,072 characters)."""
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))


def read_delimited(path: Path, known: Collection[str], text: Text | None = None) -> Table:
    """The table in ``path`` (``text``: its content when already read), or in an Excel workbook's first sheet that
    holds data (``read_workbook``).

    The delimiter is a tab, a comma, a semicolon or a bar (``_delimiter``); tab-separated files keep quotes as text
    unless their fields are quoted. ``known``: column names that mark a header line.
    """
    if path.is_dir() and (parts := split_tables(path)):  # a table in each split folder (Roboflow's _classes.csv)
        return read_split_tables(path, parts, known)
    if path.is_dir() or path.suffix.lower() in (".json", ".xml"):  # a labelling tool's export of choices or tags
        from headstart.tasks.exports import as_table

        return as_table(path)
    if path.suffix.lower() in JSON_LINES:
        content = read_text(path) if text is None else text
        return _object_table(path, json_rows(path, content.text), content.note)
    if path.suffix.lower() in WORKBOOKS:
        lines, note = read_workbook(path)
    else:
        content = read_text(path) if text is None else text
        lines, note = _delimited_lines(path, content.text), content.note
    if not lines:
        raise DataError(f"{path} is empty")
    header = _is_header(lines[0], lines[1:LOOK_AHEAD + 1], known)
    names = [n.strip() for n in lines[0]]  # 'filename, ants, bees' (Roboflow's): the names without their blanks
    names = names if len(set(names)) == len(names) else lines[0]
    columns = [name if header and name.strip() else f"{HEADERLESS_PREFIX}{i + 1}"
               for i, name in enumerate(names)]  # a header field left empty is named by its position too
    body = lines[1:] if header else lines
    bad = [i + 1 + header for i, line in enumerate(body) if len(line) != len(columns)]
    if bad:
        raise DataError(f"{path}: line(s) {bad[:5]} have {len(body[bad[0] - 1 - header])} field(s) where the "
                        f"{'header' if header else 'first'} line has {len(columns)} ({columns[:6]}); check the "
                        "delimiter and quoting (a field holding a comma needs quotes)")
    if not body:
        raise DataError(f"{path} has no data rows")
    table = Table([dict(zip(columns, line)) for line in body], list(columns), header, note)
    _valid_flags_as_split(table)
    return table


def json_rows(path: Path, text: str) -> list[dict[str, Any]]:
    """The objects of a JSON Lines file (one a line; blank lines skipped), or of a ``.json`` file's list of objects."""
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} is not valid JSON: {exc}") from None
    else:
        rows = []
        for line_no, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{line_no} is not a JSON object: {exc}") from None
    if not all(isinstance(r, dict) for r in rows):
        raise DataError(f"{path}: expected one JSON object per line (or a list of objects), found "
                        f"{type(next(r for r in rows if not isinstance(r, dict))).__name__} values")
    return rows


def _object_table(path: Path, rows: list[dict[str, Any]], note: str) -> Table:
    """JSON objects as a table: a column per key (in the order they first come), each value as a cell's text (lists
    as Python writes them, which tags read as lists; a missing key: a blank cell)."""
    if not rows:
        raise DataError(f"{path} has no data rows")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    table = Table([{c: _cell_text(row.get(c)) for c in columns} for row in rows], columns, True, note)
    _valid_flags_as_split(table)
    return table


def _delimited_lines(path: Path, text: str) -> list[list[str]]:
    """The fields of each line of a delimited text (``read_delimited``)."""
    delimiter = _delimiter(path, text)
    try:
        lines = _parse(text, delimiter, csv.QUOTE_MINIMAL)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    if delimiter == "\t":  # plain TSV, where a quote is part of the text, unless the fields are quoted
        plain = _parse(text, delimiter, csv.QUOTE_NONE)
        width = len(plain[0]) if plain else 0
        quoted = sum(v.startswith('"') and v.endswith('"') for line in plain[:500] for v in line)
        if all(len(line) == width for line in plain) and quoted < 0.5 * min(len(plain), 500):
            lines = plain
    return lines


def read_workbook(path: Path, limit: int | None = None) -> tuple[list[list[str]], str]:
    """The rows of an Excel workbook's first sheet that holds data, as text (``3`` for the number 3.0, dates in ISO
    form, blanks for empty cells; empty rows and the empty columns right of the data left out), and what the Data
    line says of it (the sheet, when the workbook has several). ``limit``: rows read at most."""
    try:
        from openpyxl import load_workbook
    except ImportError:
        raise DataError(f"{path}: reading Excel workbooks needs openpyxl (pip install openpyxl), or save the sheet as "
                        "CSV") from None
    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - openpyxl raises zipfile's, its own and KeyError for broken files
        raise DataError(f"{path} is not a readable Excel workbook ({type(exc).__name__}: {exc}); save it again from "
                        "Excel, or as CSV") from None
    try:
        for sheet in book.worksheets:
            rows = []
            for values in sheet.iter_rows(values_only=True):
                cells = [_cell_text(v) for v in values]
                if any(cells):
                    rows.append(cells)
                if limit is not None and len(rows) >= limit:
                    break
            if rows:
                width = max(max((i + 1 for i, c in enumerate(r) if c), default=0) for r in rows)
                rows = [(r + [""] * width)[:width] for r in rows]
                several = len(book.worksheets) > 1
                return rows, (f"sheet '{sheet.title}' of {len(book.worksheets)}, the first with data" if several
                              else "")
    finally:
        book.close()
    return [], ""


def is_table_file(path: Path) -> bool:
    """A file the tasks read as a table: CSV, TSV, an Excel workbook, or a labelling tool's export (``exports``)."""
    from headstart.tasks.exports import is_export

    return path.suffix.lower() in TABLE_FILES or is_export(path)


def table_kind(path: Path) -> str:
    """How the Data line names a table file: ``CSV``, ``workbook``, or a labelling tool's export."""
    if path.is_dir() and split_tables(path):
        return "tables per split of"
    if path.is_dir() or path.suffix.lower() in (".json", ".xml"):
        from headstart.tasks.exports import tool_of

        return f"{tool_of(path)} export"
    if path.suffix.lower() in JSON_LINES:
        return "JSON Lines"
    return "workbook" if path.suffix.lower() in WORKBOOKS else "CSV"


def _cell_text(value: Any) -> str:
    """A workbook cell as a delimited file would hold it."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


SPLIT_COLUMN = "split"  # a table's column of train / val / test
VALID_FLAG_COLUMN = "is_valid"  # fastai's split column: True for validation rows, False for training rows
TRUE, FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


def _valid_flags_as_split(table: Table) -> None:
    """Read fastai's ``is_valid`` column of True/False as the split column (``split``: val or train), in place, where
    the table has no ``split`` column."""
    lower = {c.lower(): c for c in table.columns}
    flag = lower.get(VALID_FLAG_COLUMN)
    if flag is None or SPLIT_COLUMN in lower or not all(str(r[flag]).strip().lower() in TRUE | FALSE for r in table.rows):
        return
    for row in table.rows:
        row[SPLIT_COLUMN] = "val" if str(row.pop(flag)).strip().lower() in TRUE else "train"
    table.columns = [SPLIT_COLUMN if c == flag else c for c in table.columns]
    table.split_note = f"fastai's '{flag}' column as the split (True: validation)"


def _delimiter(path: Path, text: str) -> str:
    """A tab for ``.tsv`` files, first lines with more tabs than commas, and lines with the same number of tabs but not
    of commas (``ham<TAB>Go until jurong point, crazy..``); a semicolon or a bar in lines with the same number of it but
    not of commas (Excel's CSV where the decimal mark is a comma, ``i feel good;joy`` as the emotion dataset writes
    it); else a comma."""
    lines = [line for line in text.split("\n", 40)[:40] if line.strip()][:20]
    if not lines or path.suffix.lower() == ".tsv" or lines[0].count("\t") > lines[0].count(","):
        return "\t"
    counts = {d: {line.count(d) for line in lines} for d in ("\t", ";", "|", ",")}
    if len(counts[","]) == 1 and min(counts[","]) > 0:
        return ","
    return next((d for d in ("\t", ";", "|") if len(counts[d]) == 1 and min(counts[d]) > 0), ",")


def _parse(text: str, delimiter: str, quoting: int) -> list[list[str]]:
    """The non-blank lines of ``text`` as lists of fields."""
    allow_long_fields()
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    try:
        return [line for line in reader if any(v.strip() for v in line)]
    except csv.Error as exc:
        raise DataError(f"line {reader.line_num} cannot be parsed ({exc}); check the quoting") from None


def _is_header(first: list[str], below: list[list[str]], known: Collection[str]) -> bool:
    """Whether ``first`` names the columns (see the module's docstring); ``below``: the lines after it."""
    names = {f.strip().lower() for f in first}
    if names & {k.lower() for k in known} or not below:
        return True
    if any(f.strip().lower().endswith(IMAGE_SUFFIXES) for f in first):
        return False
    others = [line for line in below if line != first]  # a header line repeated (tables concatenated), or a data
    for col, field in enumerate(first):               # line repeated (SMS's duplicate messages): its values tell
        value = field.strip()
        if value and any(len(line) > col and line[col].strip() == value for line in others):
            return False
    return True


def table_files(table: Path, values: Sequence[Any]) -> tuple[list[Path], str]:
    """The image files the path column of ``table`` names, and how they were found ('' when as written).

    A value is a path, absolute or relative to the table; where most are not files, a file name or id of a folder
    beside the table (an image file name also beside the table's folder), with or without an image suffix:
    Kaggle's ``labels.csv`` of ``id,breed`` and ``train/<id>.jpg``
    (``train/<id>.jpg`` is said in the layout line). The folder and suffix that name the most files win; images
    spread over several folders beside the table (HAM10000's ``HAM10000_images_part_1/`` and ``_part_2/``) are each
    found in the first of them that holds it. Paths written on another machine (``C:\\data\\img\\x.jpg``,
    ``/home/someone/x.jpg``) are found by their file name, beside the table or anywhere under its folder.
    """
    values = [str(v or "").strip().replace("\\", "/") for v in values]  # Windows separators
    written = [Path(v) if Path(v).is_absolute() else _tidy(table.parent / v) for v in values]
    sample = [(v, p) for v, p in zip(values, written) if v][:50]
    if not sample or 2 * sum(p.is_file() for _, p in sample) >= len(sample):
        return written, ""
    top = f"{table.parent.name}/"  # CheXpert's train.csv names CheXpert-v1.0-small/train/... from the folder above
    if 2 * sum(v.startswith(top) for v, _ in sample) > len(sample):
        above = [p if Path(v).is_absolute() else table.parent.parent / v for v, p in zip(values, written)]
        if 2 * sum(p.is_file() for p, v in zip(above, values) if v) >= len(sample):
            return above, f"paths relative to the folder holding {top} (they begin with its name)"

    def inside(folder: Path) -> list[Path]:
        return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))

    # beside the table, then, for image file names (never bare ids or labels), beside its folder: the raccoon set's
    # data/train_labels.csv names x.jpg of ../images/
    folders = [table.parent, *inside(table.parent)]
    if 2 * sum(v.lower().endswith(IMAGE_SUFFIXES) for v, _ in sample) > len(sample):
        folders += [d for d in inside(table.parent.parent) if d != table.parent]
    suffixes = ["", *IMAGE_SUFFIXES]
    listings = {folder: _Listing(folder) for folder in folders}  # one listing per folder, not a stat per guess
    heads = {v.partition("/")[0] for v, _ in sample}

    def hits_in(folders: list[Path]) -> dict[tuple[Path, str], int]:
        listings.update({folder: _Listing(folder) for folder in folders if folder not in listings})
        return {(folder, suffix): sum(listings[folder].holds(f"{v}{suffix}") for v, _ in sample)
                if listings[folder].may_hold(heads) else 0 for folder in folders for suffix in suffixes}

    found = hits_in(folders)
    if 2 * max(found.values()) < len(sample):  # a folder deeper: ISIC 2020's train.csv beside jpeg/train/<id>.jpg
        found = hits_in([d for folder in folders[1:] for d in inside(folder)]) or found
    (folder, suffix), hits = max(found.items(), key=lambda item: item[1])
    several = [f for (f, s), n in sorted(found.items(), key=lambda item: -item[1]) if s == suffix and n]
    if hits < len(sample) and len(several) > 1:  # one dataset's images spread over several folders
        union = sum(any(listings[f].holds(f"{v}{suffix}") for f in several) for v, _ in sample)
        if union > hits and 2 * union >= len(sample):
            def first(v: str) -> Path:
                return next((f / f"{v}{suffix}" for f in several if (f / f"{v}{suffix}").is_file()), folder / f"{v}{suffix}")

            names = " or ".join(f"{os.path.relpath(f, table.parent)}/" if f != table.parent else "./" for f in several)
            return [first(v) for v in values], f"files found as {names}<value>{suffix}, beside {table.name}"
    if 2 * hits < len(sample):  # paths written elsewhere: their file names, else as written
        return _by_file_name(table, values, written) if any("/" in v for v, _ in sample) else (written, "")
    where = f"{os.path.relpath(folder, table.parent)}/" if folder != table.parent else ""
    return ([folder / f"{v}{suffix}" for v in values],
            f"files found as {where}<value>{suffix}, beside {table.name}")


class _Listing:
    """A folder's entries, listed once: whether it holds a file at a relative path, without a file system call for
    the names its listing rules out (a table beside a folder of many folders tries each of them)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        try:
            with os.scandir(folder) as entries:
                listed = [(e.name, e.is_file(), e.is_dir()) for e in entries]
        except OSError:
            listed = []
        self.files = {name for name, is_file, _ in listed if is_file}
        self.dirs = {name for name, _, is_dir in listed if is_dir}

    def _enters(self, head: str) -> bool:
        return head in self.dirs or head in (".", "..")

    def may_hold(self, heads: set[str]) -> bool:
        """Whether a path beginning with one of ``heads`` (a file name is its own head) may be found here."""
        return bool(self.files) or any(self._enters(h) for h in heads)

    def holds(self, relative: str) -> bool:
        head, sep, _ = relative.partition("/")
        if not sep:
            return relative in self.files
        return self._enters(head) and (self.folder / relative).is_file()


INDEX_LIMIT = 500_000  # files looked at under a table's folder to find paths written on another machine
UPLOADED = re.compile(r"[0-9a-f]{8}-(?P<name>.+)")  # Label Studio's name for an uploaded file: 8 hex digits, '-'


def _by_file_name(table: Path, values: Sequence[str], written: list[Path]) -> tuple[list[Path], str]:
    """Paths that do not exist here found by their file name under the table's folder (a name held by two files there
    is not used; an upload Label Studio renamed ``8d5e3f2a-photo.jpg``, in its CSV export, by ``photo.jpg``), when that
    finds most; else the paths as written."""
    index: dict[str, Path | None] = {}
    for i, p in enumerate(table.parent.rglob("*")):
        if i >= INDEX_LIMIT:
            break
        if p.suffix.lower() in IMAGE_SUFFIXES:
            index[p.name] = None if p.name in index else p

    def own(name: str) -> str:
        return name if name in index or not (upload := UPLOADED.fullmatch(name)) else upload["name"]

    names = [own(v.rsplit("/", 1)[-1]) for v in values]
    sample = [n for n in names if n][:50]
    if 2 * sum(bool(index.get(n)) for n in sample) < len(sample):
        return written, ""
    return ([index.get(n) or w for n, w in zip(names, written)],
            f"files found by their names under {table.parent.name}/ (the paths as written do not exist here)")


def _tidy(path: Path) -> Path:
    """``sub/../data/x.jpg`` as ``data/x.jpg`` (how messages name it), unless a link in it makes them differ; paths
    without ``..`` as they are (no file system call for them)."""
    if ".." not in path.parts:
        return path
    tidy = Path(os.path.normpath(path))
    return tidy if tidy.exists() or not path.exists() else path


def split_tables(folder: Path) -> dict[str, Path]:
    """``{split: table}``: the one table (``TABLE_FILES``, not a submission) in each split folder of ``folder``
    (``SPLIT_FOLDERS``: Roboflow's ``train/``, ``valid/``, ``test/``), a column of it naming the images beside it
    (Roboflow's classification exports: ``_classes.csv`` of ``filename`` and a 0/1 column per class); {} unless
    ``train/`` holds one."""
    if not folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    for d in sorted(folder.iterdir()):
        if not d.is_dir() or d.name.lower() not in SPLIT_FOLDERS:
            continue
        tables = [p for p in d.iterdir() if p.is_file() and p.suffix.lower() in TABLE_FILES
                  and "submission" not in p.stem.lower()]
        if len(tables) == 1 and _files_column(tables[0]) is not None:
            found[SPLIT_FOLDERS[d.name.lower()]] = tables[0]
    return found if "train" in found else {}


def _files_column(table: Path) -> str | None:
    """The column of ``table`` whose values (most of the first 50) are image files beside it (not in class folders);
    None without one (the table parsed once while it is unchanged: ``split_tables`` is asked by the task's inference
    and its reader)."""
    try:
        stat = table.stat()
    except OSError:
        return None
    return _parsed_files_column(str(table), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _parsed_files_column(table: str, mtime_ns: int, size: int) -> str | None:
    try:
        parsed = read_delimited(Path(table), ())
    except (DataError, OSError, UnicodeDecodeError):
        return None
    head = parsed.rows[:50]
    for column in parsed.columns:
        values = [str(r.get(column) or "").strip() for r in head]
        named = [v for v in values if v.lower().endswith(IMAGE_SUFFIXES)]
        if named and 2 * sum((Path(table).parent / v).is_file() for v in named) > len(values):
            # in class folders (ants/1.jpg, bees/2.jpg: Hugging Face's imagefolder with metadata of captions), the
            # folders label the images, not this table
            folders = {Path(str(r.get(column) or "").strip()).parent for r in parsed.rows}
            return column if len(folders) < 2 else None
    return None


def read_split_tables(folder: Path, parts: dict[str, Path], known: Collection[str]) -> Table:
    """The tables of ``split_tables`` as one (``join_splits``)."""
    where = ", ".join(parts[s].relative_to(folder).as_posix() for s in ("train", "val", "test") if s in parts)
    return join_splits({split: (read_delimited(table, known), _files_column(table), table.parent)
                        for split, table in parts.items()}, f"a table per split: {where}")


def join_splits(parts: dict[str, tuple[Table, str | None, Path]], note: str) -> Table:
    """Tables of one dataset's splits (``{split: (table, its column of files, the folder they are relative to)}``) as
    one, in train, val, test order: a ``split`` column naming each row's, each file's path made whole (the same file
    name may be in two splits; an absolute path is kept)."""
    rows: list[dict[str, Any]] = []
    columns: list[str] = []
    for split in ("train", "val", "test"):
        if split not in parts:
            continue
        table, files, base = parts[split]
        columns += [c for c in table.columns if c not in columns]
        for row in table.rows:
            if files and str(row.get(files) or "").strip():
                row = {**row, files: str((base / str(row[files]).strip()).absolute())}
            rows.append({**row, SPLIT_COLUMN: split})
    return Table(rows, [*columns, SPLIT_COLUMN], header=True, source_note=note, numbered_from=1)
