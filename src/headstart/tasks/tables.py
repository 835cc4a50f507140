"""Delimited tables (CSV, TSV) as the tasks read them: delimiter and quoting sniffed, a header line told from data.

A table's first line is its header unless it plainly is a data line: none of its fields is a column name headstart
knows (``text``, ``label``, ``path``...) and one of them is an image file name or comes back as a value of its column
further down (``ham`` in the first line of the UCI SMS Spam Collection, a class index in AG News' CSV). Such a table
gets the column names ``col1``, ``col2``... (``--text-column col2`` names one).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headstart.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".dcm", ".dicom")  # files headstart reads
HEADERLESS_PREFIX = "col"  # columns of a table without a header line: col1, col2, ...
LOOK_AHEAD = 2000  # data lines searched for a first-line field that comes back


@dataclass
class Table:
    """The rows of a delimited file, its column names, and whether its first line named them."""

    rows: list[dict[str, Any]]
    columns: list[str]
    header: bool = True

    @property
    def first_line(self) -> int:
        """The file line of ``rows[0]``."""
        return 2 if self.header else 1

    def describe(self) -> str:
        """'' with a header line, else a note for the layout line."""
        return "" if self.header else f"no header line: columns {', '.join(self.columns)}"


def read_text_file(path: Path) -> str:
    """The file as UTF-8 text; a clear DataError naming the byte when it is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} is not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at offset {exc.start} cannot be decoded. "
            "Re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 in.csv > out.csv)"
        ) from None


def allow_long_fields() -> None:
    """Let the csv module read fields of any length (its default limit is 131,072 characters)."""
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))


def read_delimited(path: Path, known: Collection[str], text: str | None = None) -> Table:
    """The table in ``path`` (``text``: its content when already read).

    The delimiter is a tab or a comma (``_delimiter``); tab-separated files keep quotes as text unless their fields
    are quoted. ``known``: column names that mark a header line.
    """
    text = read_text_file(path) if text is None else text
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
    if not lines:
        raise DataError(f"{path} is empty")
    header = _is_header(lines[0], lines[1:LOOK_AHEAD + 1], known)
    columns = lines[0] if header else [f"{HEADERLESS_PREFIX}{i + 1}" for i in range(len(lines[0]))]
    body = lines[1:] if header else lines
    bad = [i + 1 + header for i, line in enumerate(body) if len(line) != len(columns)]
    if bad:
        raise DataError(f"{path}: line(s) {bad[:5]} have {len(body[bad[0] - 1 - header])} field(s) where the "
                        f"{'header' if header else 'first'} line has {len(columns)} ({columns[:6]}); check the "
                        "delimiter and quoting (a field holding a comma needs quotes)")
    if not body:
        raise DataError(f"{path} has no data rows")
    return Table([dict(zip(columns, line)) for line in body], list(columns), header)


def _delimiter(path: Path, text: str) -> str:
    """A tab for ``.tsv`` files, first lines with more tabs than commas, and lines with the same number of tabs but not
    of commas (``ham<TAB>Go until jurong point, crazy..``); else a comma."""
    lines = [line for line in text.split("\n", 40)[:40] if line.strip()][:20]
    if not lines or path.suffix.lower() == ".tsv" or lines[0].count("\t") > lines[0].count(","):
        return "\t"
    tabs, commas = {line.count("\t") for line in lines}, {line.count(",") for line in lines}
    return "\t" if len(tabs) == 1 and min(tabs) > 0 and len(commas) > 1 else ","


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
    if any(line == first for line in below):  # a header line repeated (tables concatenated)
        return True
    for col, field in enumerate(first):
        value = field.strip()
        if value and any(len(line) > col and line[col].strip() == value for line in below):
            return False
    return True


def table_files(table: Path, values: Sequence[Any]) -> tuple[list[Path], str]:
    """The image files the path column of ``table`` names, and how they were found ('' when as written).

    A value is a path, absolute or relative to the table; where most are not files, a file name or id of a folder
    beside the table, with or without an image suffix: Kaggle's ``labels.csv`` of ``id,breed`` and ``train/<id>.jpg``
    (``train/<id>.jpg`` is said in the layout line). The folder and suffix that name the most files win.
    """
    values = [str(v or "").strip() for v in values]
    written = [Path(v) if Path(v).is_absolute() else _tidy(table.parent / v) for v in values]
    sample = [(v, p) for v, p in zip(values, written) if v][:50]
    if not sample or 2 * sum(p.is_file() for _, p in sample) >= len(sample):
        return written, ""
    folders = [table.parent, *sorted(d for d in table.parent.iterdir() if d.is_dir() and not d.name.startswith("."))]
    suffixes = ["", *IMAGE_SUFFIXES]
    found = {(folder, suffix): sum((folder / f"{v}{suffix}").is_file() for v, _ in sample)
             for folder in folders for suffix in suffixes}
    (folder, suffix), hits = max(found.items(), key=lambda item: item[1])
    if 2 * hits < len(sample):
        return written, ""
    where = f"{folder.relative_to(table.parent)}/" if folder != table.parent else ""
    return ([folder / f"{v}{suffix}" for v in values],
            f"files found as {where}<value>{suffix}, beside {table.name}")


def _tidy(path: Path) -> Path:
    """``sub/../data/x.jpg`` as ``data/x.jpg`` (how messages name it), unless a link in it makes them differ; paths
    without ``..`` as they are (no file system call for them)."""
    if ".." not in path.parts:
        return path
    tidy = Path(os.path.normpath(path))
    return tidy if tidy.exists() or not path.exists() else path
