"""Images stored as rows of pixel values in a table, as many datasets are downloaded:

- Kaggle's Digit Recognizer (``train.csv``: ``label,pixel0,...,pixel783``; ``test.csv`` without labels), Fashion-MNIST
  and Sign Language MNIST (``label,pixel1,...,pixel784``), MNIST in CSV (``label,1x1,...,28x28``, or no header);
- HAM10000's ``hmnist_28_28_RGB.csv`` (``pixel0000,...,pixel2351,label``: 28 x 28 x 3) and CIFAR-10 as CSV (channels
  first: the order whose neighbouring pixels differ least is taken);
- FER-2013 (``fer2013.csv``: ``emotion,pixels,Usage``, the 48 x 48 values in one cell, ``Usage`` of ``Training``,
  ``PublicTest``, ``PrivateTest`` giving the splits).

A table is one of pixels when it holds a square number of pixel values a row (or three times one: colour), at least
64, every one a number from 0 (values up to 1 are scaled to 255, values over 255 read as 16 bits). Each row becomes an
image in memory (a PNG's bytes, ``Sample.data``) named ``TABLE:LINE``, decoded as an image file is; nothing is written
to disk.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from headstart.errors import DataError
from headstart.tasks.image.stored import Stored, payload
from headstart.tasks.tables import SPLIT_VALUES

MIN_PIXELS = 64  # 8 x 8, scikit-learn's digits; fewer values a row are features, not an image
SAMPLE_ROWS = 50  # rows read to recognise a table of pixels
TABLE_SUFFIXES = (".csv", ".tsv", ".txt")
LABEL_NAMES = ("label", "labels", "class", "target", "category", "y", "emotion", "diagnosis", "dx")
SPLIT_NAMES = ("split", "usage", "subset", "set", "fold")
_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")


@dataclass
class PixelTable:
    """Where a table's pixels are and how a row of them is an image."""

    path: Path
    columns: list[str]  # the header's names (``col1``... without one)
    header: bool
    delimiter: str
    pixels: list[int]  # the columns of pixel values, in order (one column: its cell holds them all, FER-2013)
    label: int | None  # the label column (None: an unlabelled table, Kaggle's test.csv)
    split: int | None  # a column of train / val / test (FER-2013's Usage)
    size: int  # images are size x size
    channels: int  # 1 (grey) or 3
    channels_first: bool  # colour values as R..., G..., B... (CIFAR's CSV) rather than R, G, B a pixel
    top: float  # the value that is white (1, 255 or 65535)

    def describe(self) -> str:
        cols = (f"'{self.columns[self.pixels[0]]}' (values in one cell)" if len(self.pixels) == 1 else
                f"'{self.columns[self.pixels[0]]}'...'{self.columns[self.pixels[-1]]}'")
        colour = ("grey" if self.channels == 1 else
                  "colour, channels first" if self.channels_first else "colour, RGB a pixel")
        label = f", label column '{self.columns[self.label]}'" if self.label is not None else ", no labels"
        split = f", split column '{self.columns[self.split]}'" if self.split is not None else ""
        return (f"table of pixels {self.path.name} ({self.size}x{self.size} {colour} from {cols}"
                f"{'' if self.top == 255 else f', 0..{self.top:g} scaled to 0..255'}{label}{split})")

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """``(line number, fields)`` of each data row (blank lines skipped)."""
        with open(self.path, newline="", encoding="utf-8-sig", errors="replace") as f:
            for line, row in enumerate(csv.reader(f, delimiter=self.delimiter), start=1):
                if (line == 1 and self.header) or not any(field.strip() for field in row):
                    continue
                yield line, row

    def image(self, row: list[str]) -> bytes:
        """A row as the bytes of a PNG file (ValueError when it holds other than ``size`` x ``size`` pixels)."""
        values = _values(row, self.pixels)
        if values.size != self.size * self.size * self.channels or (values < 0).any():
            raise ValueError(f"{values.size} values, expected {self.size * self.size * self.channels} from 0 up")
        pixels = np.clip(np.rint(values * (255.0 / self.top)), 0, 255).astype(np.uint8)
        if self.channels == 1:
            return png_bytes(pixels.reshape(self.size, self.size))
        if self.channels_first:
            return png_bytes(np.ascontiguousarray(pixels.reshape(3, self.size, self.size).transpose(1, 2, 0)))
        return png_bytes(pixels.reshape(self.size, self.size, 3))


def _square(n: int) -> tuple[int, int] | None:
    """``(size, channels)`` of ``n`` values: ``size``² grey or 3 x ``size``² colour."""
    for channels in (1, 3):
        if n % channels == 0 and n // channels >= MIN_PIXELS and math.isqrt(n // channels) ** 2 == n // channels:
            return math.isqrt(n // channels), channels
    return None


def _is_number(value: str) -> bool:
    return bool(_NUMBER.fullmatch(value))


def _head(path: Path) -> tuple[list[list[str]], str]:
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        first = f.readline(4 * 2**20)
        lines = [first] + [f.readline(4 * 2**20) for _ in range(SAMPLE_ROWS)]
    delimiter = "\t" if "\t" in first else ";" if first.count(";") > first.count(",") else ","
    rows = [r for r in csv.reader([ln for ln in lines if ln.strip()], delimiter=delimiter)]
    return rows, delimiter


def pixel_table(path: str | Path, label_column: str | None = None) -> PixelTable | None:
    """The pixels of a table of images (see the module), or None when ``path`` is no such table."""
    path = Path(path)
    if not path.is_file() or path.suffix.lower() not in TABLE_SUFFIXES:
        return None
    try:
        rows, delimiter = _head(path)
    except (OSError, csv.Error):
        return None
    if not rows:
        return None
    width = len(rows[0])
    header = not all(_is_number(v) for v in rows[0])
    data = rows[1:] if header else rows
    if not data or any(len(r) != width for r in data):
        return None
    columns = [c.strip() for c in rows[0]] if header else [f"col{i + 1}" for i in range(width)]
    numeric = [all(_is_number(r[i]) or not r[i].strip() for r in data) and any(r[i].strip() for r in data)
               for i in range(width)]  # (a value missing here and there: that row is skipped when read)
    found = _wide(columns, numeric, data, header) if width >= MIN_PIXELS else _one_cell(columns, data)
    if found is None:
        return None
    pixels, size, channels = found
    others = [i for i in range(width) if i not in pixels]
    lower = [c.lower() for c in columns]
    split = next((i for i in others if lower[i] in SPLIT_NAMES
                  and all(r[i].strip().lower() in SPLIT_VALUES for r in data)), None)
    others = [i for i in others if i != split]
    label = _label(others, columns, label_column, path)
    complete = []
    for row in data:  # (the rows of every value: a row missing one is skipped when read)
        try:
            complete.append(_values(row, pixels))
        except ValueError:
            continue
    complete = [v for v in complete if v.size == size * size * channels]
    if not complete:
        return None
    values = np.stack(complete)
    top = white(float(values.max()))
    first = channels == 3 and _channels_first(values, size)
    return PixelTable(path, columns, header, delimiter, pixels, label, split, size, channels, first, top)


def _values(row: list[str], pixels: list[int]) -> np.ndarray:
    """A row's pixel values as floats (ValueError when one is not a number or is missing)."""
    if len(pixels) == 1:
        return np.array(row[pixels[0]].replace(",", " ").split(), dtype=np.float32)
    return np.array([row[i] for i in pixels], dtype=np.float32)


def _wide(columns: list[str], numeric: list[bool], data: list[list[str]],
          header: bool) -> tuple[list[int], int, int] | None:
    """One column a value: the numeric columns other than a label named as one (``label``...), or without a header
    the numeric columns but the first (or last) one, the label, when that leaves a square number."""
    named = {i for i, c in enumerate(columns) if c.lower() in (*LABEL_NAMES, *SPLIT_NAMES)}
    pixels = [i for i, ok in enumerate(numeric) if ok and i not in named and not _negative(data, i)]
    shape = _square(len(pixels))
    if shape is None and not header and len(pixels) == len(columns):
        for label in (0, len(columns) - 1):  # MNIST in CSV without a header: the digit first
            if all(float(r[label]).is_integer() for r in data):
                pixels = [i for i in pixels if i != label]
                shape = _square(len(pixels))
                break
    if shape is None or pixels != list(range(pixels[0], pixels[0] + len(pixels))):
        return None
    return pixels, *shape


def _negative(data: list[list[str]], i: int) -> bool:
    return any(r[i].strip() and float(r[i]) < 0 for r in data)


def _one_cell(columns: list[str], data: list[list[str]]) -> tuple[list[int], int, int] | None:
    """FER-2013's ``pixels`` column: one cell of blank-separated numbers a row, a square number of them."""
    for i in range(len(columns)):
        cells = [r[i].replace(",", " ").split() for r in data]
        if all(len(c) >= MIN_PIXELS and all(_is_number(v) and float(v) >= 0 for v in c) for c in cells):
            shapes = {_square(len(c)) for c in cells}
            if len(shapes) == 1 and None not in shapes:
                size, channels = shapes.pop()  # type: ignore[misc]
                return [i], size, channels
    return None


def _label(others: list[int], columns: list[str], wanted: str | None, path: Path) -> int | None:
    if wanted:
        if wanted not in columns:
            raise DataError(f"{path}: no column '{wanted}' (--label-column); its columns besides the pixels: "
                            f"{', '.join(repr(columns[i]) for i in others) or 'none'}")
        return columns.index(wanted)
    if len(others) <= 1:
        return others[0] if others else None
    named = [i for i in others if columns[i].lower() in LABEL_NAMES]
    if len(named) == 1:
        return named[0]
    raise DataError(f"{path}: a table of pixels with several columns besides them "
                    f"({', '.join(repr(columns[i]) for i in others)}): say which holds the labels with --label-column")


def _channels_first(values: np.ndarray, size: int) -> bool:
    """Whether colour rows hold each channel in turn (CIFAR's R..., G..., B...) rather than R, G, B a pixel: the
    reading whose horizontally neighbouring pixels differ least."""
    rows = values.reshape(len(values), -1)
    last = rows.reshape(len(rows), size, size, 3)
    first = rows.reshape(len(rows), 3, size, size).transpose(0, 2, 3, 1)
    return float(np.abs(np.diff(first, axis=2)).mean()) < float(np.abs(np.diff(last, axis=2)).mean())


def is_pixel_table(path: str | Path) -> bool:
    return pixel_table(path) is not None


@dataclass
class PixelRow:
    """An image in memory (a table's row, an array's image, a datasets folder's row): its name (``TABLE:LINE``), the
    bytes of its file (or where a dataset's file stores them: ``stored.Stored``), label (None: unlabelled), split
    ('' or the split column's train / val / test) and the sha1 of its bytes when they were hashed as read."""

    name: Path
    data: bytes | Stored
    label: str | tuple[str, ...] | None  # a tuple of names: a multi-label row (``hf_datasets.read(tags=True)``)
    split: str
    digest: str = ""

    @property
    def key(self) -> str:
        """The content key training's duplicate check and feature cache use (the sha1 of the bytes, as of a file)."""
        return self.digest or hashlib.sha1(payload(self.data)).hexdigest()


def white(peak: float) -> float:
    """The value that is white, from the largest one: 1 (floats), 255, else 65535 (16 bits)."""
    return 1.0 if peak <= 1.0 else 255.0 if peak <= 255 else 65535.0


def png_bytes(pixels: np.ndarray) -> bytes:
    """A uint8 H x W (grey) or H x W x 3 image as the bytes of a PNG file (fast compression)."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def read_rows(table: PixelTable, skipped: list[tuple[str, str]]) -> list[PixelRow]:
    """Every row of ``table`` as an image in memory; rows that are not one (a missing or negative value, another
    number of them) are added to ``skipped`` with the reason."""
    from headstart.progress import progress_bar

    with open(table.path, "rb") as f:
        total = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(2**20), b"")) - table.header
    out: list[PixelRow] = []
    with progress_bar(f"Reading {table.path.name}", total) as advance:
        for line, row in table.rows():
            advance()
            where = f"{table.path.name}:{line}"
            try:
                data = table.image(row)
            except (ValueError, IndexError) as exc:
                skipped.append((where, f"not an image of {table.size}x{table.size} pixel values ({exc})"))
                continue
            label = row[table.label].strip() if table.label is not None and table.label < len(row) else None
            split = SPLIT_VALUES.get(row[table.split].strip().lower(), "") if table.split is not None else ""
            out.append(PixelRow(table.path.with_name(where), data, label, split))
    return out


def tables_in(folder: Path) -> list[PixelTable]:
    """The tables of pixels in a folder or in its folders (Sign Language MNIST's ``sign_mnist_train/``), by name."""
    found = []
    for path in sorted([*folder.glob("*"), *folder.glob("*/*")]):
        if path.suffix.lower() in TABLE_SUFFIXES and path.is_file() and not path.name.startswith("."):
            table = pixel_table(path)
            if table is not None:
                found.append(table)
    return found


def prediction_items(items: Sequence[str | Path | tuple[str, bytes]]) -> list[Path | tuple[str, bytes | Stored]]:
    """What predict classifies of each input: an image file, a folder's image files, a table of pixels' rows as
    ``(TABLE:LINE, PNG bytes)`` (rows that are no image are warned about and left out), the test images (else every
    image) of a ``.npz`` of arrays or of a datasets folder; ``(name, bytes)`` as given; an image in memory (bytes,
    a PIL image, an array: ``decode.in_memory``) as ``(<memory i>, bytes)``."""
    from headstart.progress import warn
    from headstart.tasks.image import arrays, hf_datasets
    from headstart.tasks.image.decode import MEMORY_NAME, image_files, in_memory, not_an_input

    out: list[Path | tuple[str, bytes | Stored]] = []
    for i, item in enumerate(items):
        if isinstance(item, tuple):
            out.append(item)
            continue
        data = item if isinstance(item, bytes) else in_memory(item)
        if data is not None:  # an image in memory (bytes of a file, a PIL image, an array): as image_samples names it
            out.append((MEMORY_NAME.format(i), data))
            continue
        if not isinstance(item, (str, Path)):
            raise not_an_input(item)
        if arrays.is_array_data(item) or hf_datasets.is_image_dataset(item):
            path = Path(item)

            def read(only: tuple[str, ...], path: Path = path) -> dict[str, list[PixelRow]]:
                return arrays.read(path, only).rows if arrays.is_array_data(path) else \
                    hf_datasets.read(path, None, only, labels=False).rows

            rows = read(("test",)) or read(())
            out += [(str(r.name), r.data) for split_rows in rows.values() for r in split_rows]
            continue
        table = pixel_table(item)
        if table is None:
            out += image_files([item])
            continue
        skipped: list[tuple[str, str]] = []
        out += [(str(r.name), r.data) for r in read_rows(table, skipped)]
        for where, why in skipped:
            warn(f"skipped {where}: {why}")
    return out


def item_name(item: Path | tuple[str, bytes] | str) -> str:
    """How a prediction row names an item of ``prediction_items``."""
    return item[0] if isinstance(item, tuple) else str(item)
