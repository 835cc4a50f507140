"""Image classification data as Hugging Face ``datasets`` writes it: ``load_dataset("beans").save_to_disk("beans")``
gives a folder of splits (``train/``, ``validation/``, ``test/``), each with an ``Image`` column (the files' bytes
inside the Arrow file) and a ``ClassLabel`` column (its names are the classes, in their order). A dataset repository
of the Hub as downloaded (``snapshot_download`` or ``git clone``) holds the same as Parquet files
(``data/train-00000-of-00001.parquet``...; the features in their schema's ``huggingface`` metadata); one such file
is read too.

Each image is read as the bytes of its file, held in memory (``Sample.data``) and decoded as that file would be;
nothing is written to disk. Recognising such a folder reads only its ``dataset_info.json`` files (no ``datasets``
import); reading its images needs ``pip install datasets``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headstart.errors import DataError
from headstart.tasks.image.pixel_tables import LABEL_NAMES, SPLIT_VALUES, PixelRow
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


def image_column(features: dict[str, Any]) -> str | None:
    return next((name for name, f in features.items() if isinstance(f, dict) and f.get("_type") == "Image"), None)


def is_image_dataset(path: str | Path) -> bool:
    """A ``save_to_disk`` folder whose rows hold an image (an ``Image`` feature), or Parquet files of such rows (a
    Hub dataset repository's ``data/``, or one file)."""
    path = Path(path)
    if path.is_dir() and any(image_column(f) for f in _features(path)):
        return True
    files = parquet_splits(path)
    return bool(files) and image_column(_parquet_features(next(iter(files.values()))[0])) is not None


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


def _parquet_features(path: Path) -> dict[str, Any]:
    """The features a Parquet file's ``huggingface`` metadata records ({} without it, or without pyarrow)."""
    try:
        import pyarrow.parquet as pq

        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta.get(b"huggingface", b"{}")).get("info", {}).get("features") or {}
    except (ImportError, OSError, ValueError):
        return {}


@dataclass
class DatasetImages:
    """What a datasets folder holds: its images in memory by split, the classes in ``ClassLabel`` order (None: the
    labels' own values), and how it was read."""

    layout: str
    classes: list[str] | None
    rows: dict[str, list[PixelRow]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def read(path: Path, label_column: str | None = None, only: tuple[str, ...] = ()) -> DatasetImages:
    """The images and labels of a datasets folder (``only`` these splits, when given; DataError when its labels are
    not one class an image)."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"{path} is a Hugging Face datasets folder; reading it needs: pip install datasets") from None
    parts = _parts(path, datasets)
    out = DatasetImages("", None)
    described, lcol = [], None
    for name, (features, records) in parts.items():
        split = SPLIT_VALUES.get(name.lower())
        if split is None:  # the unlabelled 'unsupervised' split of some sets
            out.notes.append(f"{path.name}/{name}: a split that is not train, validation or test, not read")
            continue
        if only and split not in only:
            continue
        icol = next((c for c, f in features.items() if isinstance(f, datasets.Image)), None)
        if icol is None:
            raise DataError(f"{path}/{name} holds no Image column (columns: {', '.join(features)})")
        lcol = _label_column(features, icol, label_column, path / name)
        feature = features[lcol] if lcol else None
        if feature is not None and hasattr(getattr(feature, "feature", None), "names"):
            raise DataError(f"{path}: the column '{lcol}' holds several labels an image (a Sequence of ClassLabel); "
                            "headstart reads single-label images from datasets folders: export them as a table of "
                            "image paths and label lists for --task multilabel")
        names = list(feature.names) if hasattr(feature, "names") else None
        out.classes = out.classes or names
        rows = []
        for i, record in enumerate(records()):
            where = f"{name}:{i}"
            image = record[icol] or {}
            data = image.get("bytes")
            if data is None and image.get("path") and Path(image["path"]).is_file():
                data = Path(image["path"]).read_bytes()
            if not data:
                out.skipped.append((f"{path.name}/{where}", "no image bytes in the row"))
                continue
            value = record[lcol] if lcol else None
            label = None if value is None or value == -1 else names[value] if names else str(value).strip()
            rows.append(PixelRow(path / where, data, label or None, split))
        out.rows.setdefault(split, []).extend(rows)
        described.append(f"{name}/ {len(rows)}")
    if "train" not in out.rows and not only:
        raise DataError(f"{path}: no train split among {', '.join(parts)}")
    what = "datasets folder" if is_datasets_folder(path) else "Parquet files"
    out.layout = (f"{what} {path.name} ({', '.join(described)}; images from the Image column, labels from "
                  f"'{lcol}'" + (", ClassLabel names" if out.classes else "") + ")")
    return out


def _parts(path: Path, datasets: Any) -> dict[str, tuple[Any, Callable[[], Iterator[dict[str, Any]]]]]:
    """``{split name: (features, rows)}``: a ``save_to_disk`` folder's splits, or Parquet files' by name; an image's
    row holds ``{"bytes", "path"}`` (not decoded)."""
    if is_datasets_folder(path):
        loaded = datasets.load_from_disk(str(path))
        parts = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
        out = {}
        for name, ds in parts.items():
            for column, feature in ds.features.items():
                if isinstance(feature, datasets.Image):
                    ds = ds.cast_column(column, datasets.Image(decode=False))
            out[name] = (ds.features, lambda ds=ds: iter(ds))
        return out
    import pyarrow.parquet as pq

    def rows(files: list[Path]) -> Iterator[dict[str, Any]]:
        for f in files:  # a batch at a time: a shard's images are not all decoded from Parquet at once
            for batch in pq.ParquetFile(f).iter_batches(batch_size=256):
                yield from batch.to_pylist()

    return {name: (datasets.Features.from_arrow_schema(pq.read_schema(files[0])), lambda files=files: rows(files))
            for name, files in parquet_splits(path).items()}


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
