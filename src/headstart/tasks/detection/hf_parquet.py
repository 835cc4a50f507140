"""Detection data as a Hugging Face dataset repository holds it (``huggingface-cli download --repo-type dataset
cppe-5``: ``data/train-00000-of-00001.parquet``, ``data/test-...``, the transformers object detection guide's data):
an ``Image`` column and an ``objects`` column of boxes in COCO's form (``bbox``: ``[x, y, width, height]`` in
pixels) with their ``category`` (a ClassLabel, whose names are the classes, as the schema's ``huggingface`` metadata
records them; or names). The images stay in the Parquet files, read a row group at a time when needed
(``image.hf_datasets.ParquetRow``); the image size is the row's ``width`` and ``height`` where it has them, else the
image's header."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import torch

from headstart.errors import DataError
from headstart.tasks.detection import objects_column
from headstart.tasks.detection.data import ISSUE_BACKGROUND, DetectionSplits, DetSample, fix_boxes, random_split
from headstart.tasks.exports.hf_imagefolder import CATEGORY_KEYS, boxes_of, coco_boxes
from headstart.tasks.image.hf_datasets import ParquetRow, image_column, parquet_features, parquet_splits
from headstart.tasks.tables import SPLIT_VALUES


def _category_names(features: dict[str, Any], column: str) -> list[str] | None:
    inner = features[column].get("feature", features[column])
    for key in CATEGORY_KEYS:
        found = inner.get(key)
        if isinstance(found, dict):
            names = found.get("names") or (found.get("feature") or {}).get("names")
            if isinstance(names, list) and names:
                return [str(n) for n in names]
    return None


def read_parquet_detection(data: str | Path, val_fraction: float = 0.2, seed: int = 0) -> DetectionSplits:
    """The splits the files' names give (train, validation, test), their boxes as fractions of each image; a seeded
    validation split when none is given."""
    import pyarrow.parquet as pq

    from headstart.tasks.image.decode import image_header

    root = Path(data)
    files = parquet_splits(root)
    features = parquet_features(next(iter(files.values()))[0])
    icol, ocol = image_column(features), objects_column(features)
    names = _category_names(features, ocol)
    issues: Counter = Counter()
    read: dict[str, list[tuple[Path, ParquetRow, list[tuple[str, tuple[float, ...]]], tuple[float, float]]]] = {}
    for split, shards in files.items():
        rows = read.setdefault(SPLIT_VALUES.get(split.lower(), "train"), [])
        for f in shards:
            pf = pq.ParquetFile(f)
            others = [c for c in ("width", "height") if c in pf.schema_arrow.names]
            for group in range(pf.num_row_groups):
                table = pf.read_row_group(group, columns=[ocol, *others], use_threads=False).to_pylist()
                for i, record in enumerate(table):
                    where = f"{f.name}: row {len(rows) + 1}"
                    found = boxes_of(record.get(ocol))
                    if found is None:
                        raise DataError(f"{where}: expected '{ocol}' holding 'bbox' and 'category' lists, found "
                                        f"{str(record.get(ocol))[:100]!r}")
                    boxes = coco_boxes(found, where, names)
                    stored = ParquetRow(str(f), group, i, icol)
                    size = (record.get("width"), record.get("height"))
                    if not all(isinstance(v, (int, float)) and v > 0 for v in size):
                        size = image_header(stored.read())[1:] if boxes else (1, 1)
                    rows.append((root / f"{split}:{len(rows)}", stored, boxes, size))
    labels = {label for rows in read.values() for *_, boxes, _ in rows for label, _ in boxes}
    classes = names if names is not None else sorted(labels, key=lambda c: (not c.isdigit(), int(c) if c.isdigit()
                                                                            else 0, c))
    splits = DetectionSplits(list(classes), [], [], issues=issues, layout=(
        f"Parquet files of images and boxes ({', '.join(f'{s}/ {len(r)}' for s, r in read.items())}; '{ocol}' "
        f"COCO boxes" + (", ClassLabel names" if names is not None else "") + ")"))
    for split, rows in read.items():
        for path, stored, boxes, (width, height) in rows:
            xyxy = torch.tensor([[x / width, y / height, (x + w) / width, (y + h) / height] for _, (x, y, w, h) in boxes],
                                dtype=torch.float32).reshape(-1, 4)
            index = torch.tensor([classes.index(label) for label, _ in boxes], dtype=torch.long)
            issues[ISSUE_BACKGROUND] += not boxes
            getattr(splits, split).append(DetSample(path, *fix_boxes(xyxy, index, issues), data=stored))
    if not splits.train:
        raise DataError(f"{root}: no training rows in its Parquet files ({', '.join(read)})")
    if not splits.val:
        random_split(splits, val_fraction, seed)
    for key in [k for k, v in issues.items() if not v]:
        del issues[key]
    return splits
