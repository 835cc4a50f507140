"""Image classification data as Hugging Face ``datasets`` writes it: ``load_dataset("beans").save_to_disk("beans")``
gives a folder of splits (``train/``, ``validation/``, ``test/``), each with an ``Image`` column (the files' bytes
inside the Arrow file) and a ``ClassLabel`` column (its names are the classes, in their order). A dataset repository
of the Hub as downloaded (``snapshot_download`` or ``git clone``) holds the same as Parquet files
(``data/train-00000-of-00001.parquet``...; the features in their schema's ``huggingface`` metadata); one such file
is read too, and so is a Parquet table written by other tools (pandas, polars, pyarrow: no such metadata) whose column
holds image files, as ``datasets`` stores them (a struct of ``bytes`` and ``path``) or as their bytes alone; its
labels are then the label column's values.

Each image is the bytes of its file, decoded as that file would be; nothing is written to disk. They are not held in
memory: reading the folder hashes each image's bytes once (the content key) and keeps where they are stored
(``DatasetRow``: a row of the Arrow files, which ``datasets`` memory-maps; ``ParquetRow``: a row of a Parquet file's
row group, read with its group when asked), so memory stays flat in the number of images. Recognising such a folder
reads only its ``dataset_info.json`` files (no ``datasets`` import); reading its images needs
``pip install datasets``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headstart.errors import DataError
from headstart.progress import progress_bar
from headstart.tasks.image.pixel_tables import LABEL_NAMES, PixelRow
from headstart.tasks.image.stored import Stored
from headstart.tasks.tables import SPLIT_VALUES
from headstart.tasks.text import is_datasets_folder


def _features(path: Path) -> list[dict[str, Any]]:
    """The ``features`` of each split's ``dataset_info.json`` (a DatasetDict's split folders, or the folder)."""
    folders = [path]
    splits_file = path / "dataset_dict.json"
    if splits_file.is_file():
        try:
            folders = [path / s for s in json.loads(splits_file.read_text()).get("splits", [])]
        except (OSError, ValueError):
            return []
    out = []
    for folder in folders:
        try:
            out.append(json.loads((folder / "dataset_info.json").read_text()).get("features") or {})
        except (OSError, ValueError):
            continue
    return out


MASK_COLUMN_WORDS = ("mask", "label", "annot", "segment", "groundtruth", "ground_truth", "target", "gt")


def image_and_mask(images: list[str]) -> tuple[str | None, str | None]:
    """Of a row's ``Image`` columns, the image and its segmentation mask: with two or more, the mask is the one
    named as masks are (``label``: segments/sidewalk-semantic's beside ``pixel_values``; ``annotation``:
    scene_parse_150's beside ``image``), else the second; (None, None) without images."""
    if len(images) < 2:
        return (images[0] if images else None), None
    named = [c for c in images if any(w in c.lower() for w in MASK_COLUMN_WORDS)]
    mask = named[0] if len(named) == 1 else images[1]
    return next(c for c in images if c != mask), mask


def image_columns(features: dict[str, Any]) -> list[str]:
    return [name for name, f in features.items() if isinstance(f, dict) and f.get("_type") == "Image"]


def image_column(features: dict[str, Any]) -> str | None:
    """The column of the images (not of their masks: ``image_and_mask``)."""
    return image_and_mask(image_columns(features))[0]


def mask_column(features: dict[str, Any]) -> str | None:
    """The column of segmentation masks beside the images (a second ``Image`` column: ``image_and_mask``)."""
    return image_and_mask(image_columns(features))[1]


def dataset_features(path: Path) -> dict[str, Any]:
    """The features of a ``save_to_disk`` folder's first split, or of a Parquet file (or folder of them): {} when
    neither."""
    if path.is_dir():
        found = _features(path)
        if found:
            return found[0]
    files = parquet_splits(path)
    return parquet_features(next(iter(files.values()))[0]) if files else {}


def is_image_dataset(path: str | Path) -> bool:
    """A ``save_to_disk`` folder whose rows hold an image (an ``Image`` feature), or Parquet files of such rows (a
    Hub dataset repository's ``data/``, or one file)."""
    path = Path(path)
    if path.is_dir() and any(image_column(f) for f in _features(path)):
        return True
    files = parquet_splits(path)
    return bool(files) and image_column(parquet_features(next(iter(files.values()))[0])) is not None


_SHARD = re.compile(r"(?P<split>[A-Za-z]+)(?:[-_.].*)?")  # train-00000-of-00003, validation, test.parquet


def parquet_splits(path: Path) -> dict[str, list[Path]]:
    """``{split name: Parquet files}`` of a file or of a folder (or its ``data/``, as the Hub lays them out), by file
    name. Only those two folders are listed: every image folder that training reads is asked."""
    if path.is_file():
        files = [path] if path.suffix.lower() == ".parquet" else []
    elif path.is_dir():
        files = sorted([*path.glob("*.parquet"), *(path / "data").glob("*.parquet")])
    else:
        files = []
    out: dict[str, list[Path]] = {}
    for f in files:
        m = _SHARD.fullmatch(f.stem)
        name = m.group("split") if m and m.group("split").lower() in SPLIT_VALUES else "train"
        out.setdefault(name, []).append(f)
    rank = {"train": 0, "val": 1, "test": 2}
    return dict(sorted(out.items(), key=lambda item: rank.get(SPLIT_VALUES.get(item[0].lower(), ""), 3)))


def parquet_features(path: Path) -> dict[str, Any]:
    """The features a Parquet file's ``huggingface`` metadata records; without it (a table written by pandas, polars
    or pyarrow), its columns with an ``Image`` column inferred (``_image_in_schema``). {} without pyarrow."""
    try:
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
        meta = schema.metadata or {}
        features = json.loads(meta.get(b"huggingface", b"{}")).get("info", {}).get("features") or {}
    except (ImportError, OSError, ValueError):
        return {}
    if features:
        return features
    inferred = _image_in_schema(path, schema)
    return {name: {"_type": "Image" if name == inferred else "Value"} for name in schema.names}


def _image_in_schema(path: Path, schema: Any) -> str | None:
    """The column of a Parquet file without ``datasets``' metadata that holds image files: a struct of ``bytes`` (and
    ``path``), as ``datasets`` stores an image, or a binary column whose first value is an image file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def is_binary(t: Any) -> bool:
        return pa.types.is_binary(t) or pa.types.is_large_binary(t)

    for f in schema:
        if pa.types.is_struct(f.type) and any(c.name == "bytes" and is_binary(c.type) for c in f.type):
            return f.name
    for f in schema:
        if is_binary(f.type):
            batch = next(pq.ParquetFile(path).iter_batches(batch_size=8, columns=[f.name]), None)
            first = next((v for v in (batch.column(0).to_pylist() if batch is not None else []) if v), None)
            if first and _is_image_bytes(first):
                return f.name
    return None


def _is_image_bytes(data: bytes) -> bool:
    from headstart.tasks.image.decode import image_header

    try:
        image_header(data)
    except Exception:  # noqa: BLE001 - PIL raises many types for what is not an image
        return False
    return True


@dataclass
class DatasetImages:
    """What a datasets folder holds: its images in memory by split, the classes in ``ClassLabel`` order (None: the
    labels' own values), and how it was read."""

    layout: str
    classes: list[str] | None
    rows: dict[str, list[PixelRow]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _list_feature(feature: dict[str, Any]) -> dict[str, Any] | None:
    """The item feature of a list feature (``Sequence``; ``List`` in datasets >= 4), else None."""
    inner = feature.get("feature") if isinstance(feature, dict) else None
    return inner if isinstance(inner, dict) and feature.get("_type") in ("Sequence", "List", "LargeList") else None


def is_tags_dataset(path: str | Path) -> bool:
    """A datasets folder or Hub Parquet files of images whose labels are lists (a ``Sequence`` of ``ClassLabel``, or
    of strings) and no column of one class: multi-label images. Reads the features only."""
    features = dataset_features(Path(path))
    if image_column(features) is None or any(f.get("_type") == "ClassLabel" for f in features.values()
                                             if isinstance(f, dict)):
        return False
    lists = [_list_feature(f) for f in features.values()]
    return any(i is not None and (i.get("_type") == "ClassLabel" or i.get("dtype") == "string") for i in lists)


def read(path: Path, label_column: str | None = None, only: tuple[str, ...] = (), labels: bool = True,
         tags: bool = False) -> DatasetImages:
    """The images and labels of a datasets folder (``only`` these splits, when given; ``labels=False``: the images
    alone, as predict reads them). ``tags``: each row's labels are a list (a ``Sequence`` of ``ClassLabel``, or of
    strings), given as a tuple of names ([] is an image of no label); else a list of labels is a DataError."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"{path} is a Hugging Face datasets folder; reading it needs: pip install datasets") from None
    parts = split_rows(path, datasets)
    out = DatasetImages("", None)
    described, lcol = [], None
    for name, (features, records) in parts.items():
        split = SPLIT_VALUES.get(name.lower())
        if split is None:  # the unlabelled 'unsupervised' split of some sets
            out.notes.append(f"{path.name}/{name}: a split that is not train, validation or test, not read")
            continue
        if only and split not in only:
            continue
        icol = image_and_mask([c for c, f in features.items() if isinstance(f, datasets.Image)])[0]
        if icol is None:
            raise DataError(f"{path}/{name} holds no Image column (columns: {', '.join(features)})")
        lcol = _label_column(features, icol, label_column, path / name) if labels else None
        feature = features[lcol] if lcol else None
        listed = feature is not None and (isinstance(feature, (list, datasets.Sequence))
                                          or type(feature).__name__ in ("List", "LargeList"))
        if listed and not tags:
            raise DataError(f"{path}: the column '{lcol}' holds several labels an image (a list); train it as "
                            "multi-label images: --task multilabel")
        if tags and feature is not None and not listed:
            raise DataError(f"{path}: the column '{lcol}' holds one label an image; train it as single-label "
                            "images: --task image")
        if listed:
            feature = feature[0] if isinstance(feature, list) else feature.feature
        names = list(feature.names) if hasattr(feature, "names") else None
        out.classes = out.classes or names
        rows = []
        with progress_bar(f"Reading {path.name}/{name}", records.count) as advance:
            for i, (record, stored) in enumerate(records(icol)):
                advance()
                where = f"{name}:{i}"
                data = _file_bytes(record[icol])
                if not data:
                    out.skipped.append((f"{path.name}/{where}", "no image bytes in the row"))
                    continue
                value = record[lcol] if lcol else None
                if tags:  # a tuple of names: () is an image of no label; None (no list) is unlabelled
                    label = None if value is None else tuple(names[v] if names else str(v).strip() for v in value
                                                             if v is not None and v != -1)
                else:
                    label = None if value is None or value == -1 else names[value] if names else str(value).strip()
                rows.append(PixelRow(path / where, stored, label if tags else label or None, split,
                                     hashlib.sha1(data).hexdigest()))
        out.rows.setdefault(split, []).extend(rows)
        described.append(f"{name}/ {len(rows)}")
    _release_arrow_memory()
    if "train" not in out.rows and labels and not only:  # predict reads any split
        raise DataError(f"{path}: no train split among {', '.join(parts)}")
    what = "datasets folder" if is_datasets_folder(path) else "Parquet files"
    out.layout = (f"{what} {path.name} ({', '.join(described)}; images from the Image column, labels from "
                  f"'{lcol}'" + (", ClassLabel names" if out.classes else "") + ")")
    return out


@dataclass
class Rows:
    """A split's rows: ``rows(column)`` yields each row (its image as ``{"bytes", "path"}``, not decoded) and where
    that column's image is stored; ``count`` rows."""

    read: Callable[[str], Iterator[tuple[dict[str, Any], Stored]]]
    count: int

    def __call__(self, column: str) -> Iterator[tuple[dict[str, Any], Stored]]:
        return self.read(column)


def split_rows(path: Path, datasets: Any) -> dict[str, tuple[Any, Rows]]:
    """``{split name: (features, rows)}``: a ``save_to_disk`` folder's splits, or Parquet files' by name."""
    if is_datasets_folder(path):
        loaded = datasets.load_from_disk(str(path))
        parts = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
        out = {}
        for name, ds in parts.items():
            for column, feature in ds.features.items():
                if isinstance(feature, datasets.Image):
                    ds = ds.cast_column(column, datasets.Image(decode=False))

            def rows(column: str, ds: Any = ds) -> Iterator[tuple[dict[str, Any], Stored]]:
                return ((record, DatasetRow(ds, i, column)) for i, record in enumerate(ds))

            out[name] = (ds.features, Rows(rows, len(ds)))
        return out
    import pyarrow.parquet as pq

    def parquet_rows(files: list[Path]) -> Rows:
        def rows(column: str) -> Iterator[tuple[dict[str, Any], Stored]]:
            for f in files:  # a row group at a time: a shard's images are not all read from Parquet at once
                pf = pq.ParquetFile(f)
                for group in range(pf.num_row_groups):
                    for i, record in enumerate(pf.read_row_group(group, use_threads=False).to_pylist()):
                        yield record, ParquetRow(str(f), group, i, column)
        return Rows(rows, sum(pq.ParquetFile(f).metadata.num_rows for f in files))

    def features(file: Path) -> Any:
        found = datasets.Features.from_arrow_schema(pq.read_schema(file))
        icol = image_column(parquet_features(file))
        if icol is not None and not isinstance(found.get(icol), datasets.Image):  # a table without datasets' metadata
            found[icol] = datasets.Image(decode=False)
        return found

    return {name: (features(files[0]), parquet_rows(files)) for name, files in parquet_splits(path).items()}


def _file_bytes(image: dict[str, Any] | bytes | None) -> bytes:
    """An Image column's value, ``{"bytes", "path"}`` (or a binary column's bytes), as the bytes of the file (b"" when
    it holds none)."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    image = image or {}
    data = image.get("bytes")
    if data is None and image.get("path") and Path(image["path"]).is_file():
        data = Path(image["path"]).read_bytes()
    return data or b""


@dataclass(frozen=True, slots=True, eq=False)
class DatasetRow:
    """Where a ``save_to_disk`` folder stores an image: row ``index`` of a split (its Arrow files, memory-mapped by
    ``datasets``; its Image column not decoded), read when asked."""

    dataset: Any
    index: int
    column: str

    def read(self) -> bytes:
        return _file_bytes(self.dataset[self.index][self.column])


@dataclass(frozen=True, slots=True, eq=False)
class ParquetRow:
    """Where a Parquet file stores an image: row ``index`` of its row group ``group``, read with that group's image
    column (the last few groups read are kept: reading in order reads each group once)."""

    file: str
    group: int
    index: int
    column: str

    def read(self) -> bytes:
        return _file_bytes(_row_group(self.file, self.group, self.column)[self.index].as_py())


def _release_arrow_memory() -> None:
    """Hand back to the system the memory Arrow's allocator kept from the row groups read (mimalloc or jemalloc keep
    freed pages for reuse: over a whole dataset read once, that is tens of MB)."""
    try:
        import pyarrow as pa
    except ImportError:
        return
    release = getattr(pa.default_memory_pool(), "release_unused", None)  # pyarrow >= 9
    if release is not None:
        release()


@functools.lru_cache(maxsize=2)
def _row_group(file: str, group: int, column: str) -> Any:
    import pyarrow.parquet as pq

    images = pq.ParquetFile(file).read_row_group(group, columns=[column], use_threads=False).column(column)
    _release_arrow_memory()  # what the groups read before kept in this thread's heap
    return images


def _label_column(features: Any, icol: str, wanted: str | None, where: Path) -> str | None:
    columns = [c for c in features if c != icol]
    if wanted:
        if wanted not in columns:
            raise DataError(f"{where}: no column '{wanted}' (--label-column); its columns: {', '.join(columns)}")
        return wanted
    labelled = [c for c in columns if hasattr(features[c], "names")
                or hasattr(getattr(features[c], "feature", None), "names")]
    if len(labelled) == 1:
        return labelled[0]
    named = [c for c in columns if c.lower() in LABEL_NAMES]
    if len(named) == 1:
        return named[0]
    if len(columns) == 1:
        return columns[0]
    raise DataError(f"{where}: cannot tell which column holds the labels ({', '.join(columns)}): name it with "
                    "--label-column")
