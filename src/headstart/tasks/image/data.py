"""Image datasets: discover the layout, read and check every file once, keep it decoded in memory.

Layouts of DATA:
  * a folder with ``train/`` and ``val/`` (or ``valid/``, ``validation/``; optional ``test/``) class folders;
  * a folder of class subfolders (a seeded, stratified validation split is made);
  * a CSV file with a path column and a label column (optional ``split`` column: train/val/test).
"""

from __future__ import annotations

import csv
import hashlib
import io
import statistics
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from headstart.core.backbones.spec import BackboneSpec
from headstart.core.splits import Splits, stratified_split
from headstart.errors import DataError
from headstart.progress import progress_bar
from headstart.tasks.image.transforms import (
    WINDOW_PERCENTILES,
    decode,
    describe,
    eval_transform,
    intensity_issue,
    open_image,
    resize,
    to_rgb,
    train_transform,
)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
VAL_NAMES = ("val", "valid", "validation")
PATH_COLUMNS = ("path", "image", "file", "filename", "filepath", "image_path")
LABEL_COLUMNS = ("label", "class", "target", "category", "y")


@dataclass
class Sample:
    """One image file and its class index (None when unlabelled)."""

    path: Path
    label: int | None = None
    key: str = ""  # sha1 of the file's bytes, filled when the file is read


ImageSplits = Splits  # classes, train, val, test, layout, skipped, notes


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _class_folders(root: Path) -> dict[str, list[Path]]:
    """``{class name: image paths}`` of a folder of class subfolders."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return {f.name: sorted(p for p in f.rglob("*") if _is_image(p)) for f in folders}


def _check_classes(found: dict[str, list[Path]], root: Path) -> None:
    if not found:
        loose = [p.name for p in root.iterdir() if _is_image(p)][:3]
        extra = f" It holds images directly ({', '.join(loose)}...): put them in one folder per class." if loose else ""
        raise DataError(f"No class folders in {root}: expected one subfolder of images per class.{extra}")
    empty = [name for name, files in found.items() if not files]
    if empty:
        raise DataError(
            f"Class folder(s) with no images in {root}: {', '.join(empty)}. Add images "
            f"({', '.join(sorted(IMAGE_EXTENSIONS))}) or remove the folder(s)."
        )
    if len(found) < 2:
        raise DataError(f"Only one class ('{next(iter(found))}') in {root}: a classifier needs at least 2 classes.")


def discover(data: str | Path, val_fraction: float = 0.2, seed: int = 0,
             path_column: str | None = None, label_column: str | None = None) -> ImageSplits:
    """Find the classes and train/val(/test) samples of DATA (files are not read yet)."""
    root = Path(data)
    if not root.exists():
        raise DataError(f"Data not found: {root}")
    if root.is_file():
        if root.suffix.lower() not in {".csv", ".tsv"}:
            raise DataError(f"{root}: expected a folder of images or a .csv file with path and label columns")
        return _from_csv(root, val_fraction, seed, path_column, label_column)
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    val_dir = next((subdirs[n] for n in VAL_NAMES if n in subdirs), None)
    if "train" in subdirs and val_dir is not None:
        train = _class_folders(subdirs["train"])
        _check_classes(train, subdirs["train"])
        classes = sorted(train)
        splits = ImageSplits(classes, _samples(train, classes), [], layout=f"train/ and {val_dir.name}/ folders")
        splits.val = _held_out(val_dir, classes, splits)
        if "test" in subdirs:
            splits.test = _held_out(subdirs["test"], classes, splits)
        return splits
    if "train" in subdirs:
        root = subdirs["train"]
    found = _class_folders(root)
    _check_classes(found, root)
    classes = sorted(found)
    samples = _samples(found, classes)
    train_idx, val_idx = stratified_split([s.label for s in samples], val_fraction, seed)
    layout = f"class folders, {val_fraction:.0%} stratified validation split (seed {seed})"
    return ImageSplits(classes, [samples[i] for i in train_idx], [samples[i] for i in val_idx], layout=layout,
                       val_held_out=True)


def _samples(found: dict[str, list[Path]], classes: list[str]) -> list[Sample]:
    return [Sample(p, classes.index(name)) for name in classes for p in found.get(name, [])]


def _held_out(folder: Path, classes: list[str], splits: ImageSplits) -> list[Sample]:
    found = _class_folders(folder)
    unknown = {k: len(v) for k, v in found.items() if k not in classes and v}
    if unknown:
        raise DataError(
            f"{folder} has classes that train/ does not: {unknown}. Known classes: {', '.join(classes)}"
        )
    missing = [c for c in classes if not found.get(c)]
    if missing:
        splits.notes.append(f"{folder.name}/ has no images of: {', '.join(missing)}")
    return _samples(found, classes)


def _from_csv(path: Path, val_fraction: float, seed: int, path_column: str | None,
              label_column: str | None) -> ImageSplits:
    rows, columns = read_table(path)
    pcol = _pick_column(columns, path_column, PATH_COLUMNS, "path", path)
    lcol = _pick_column(columns, label_column, LABEL_COLUMNS, "label", path)
    labels = [str(r[lcol]).strip() for r in rows]
    classes = sorted(set(labels) - {""})
    if len(classes) < 2:
        raise DataError(f"{path}: column '{lcol}' has {len(classes)} distinct label(s) {classes}; need at least 2")
    samples, split_of = [], []
    splits = ImageSplits(classes, [], [], layout=f"CSV {path.name} (path column '{pcol}', label column '{lcol}')")
    for line, (row, label) in enumerate(zip(rows, labels), start=2):
        if not label:
            splits.skipped.append((f"{path.name}:{line}", "empty label"))
            continue
        file = Path(str(row[pcol]).strip())
        samples.append(Sample(file if file.is_absolute() else path.parent / file, classes.index(label)))
        split_of.append(str(row.get("split", "")).strip().lower())
    if any(split_of):
        for sample, split in zip(samples, split_of):
            target = {"val": splits.val, "valid": splits.val, "validation": splits.val, "test": splits.test}
            target.get(split, splits.train).append(sample)
        splits.layout += ", 'split' column"
        if not splits.val:
            raise DataError(f"{path}: the 'split' column has no 'val' rows")
        return splits
    train_idx, val_idx = stratified_split([s.label for s in samples], val_fraction, seed)
    splits.train, splits.val = [samples[i] for i in train_idx], [samples[i] for i in val_idx]
    splits.layout += f", {val_fraction:.0%} stratified validation split (seed {seed})"
    splits.val_held_out = True
    return splits


def read_table(path: Path) -> tuple[list[dict], list[str]]:
    """Rows of a CSV/TSV file (delimiter sniffed) and its column names."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}): re-save it as UTF-8") from exc
    delimiter = "\t" if path.suffix.lower() == ".tsv" or text.split("\n", 1)[0].count("\t") else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    rows = list(reader)
    if not rows:
        raise DataError(f"{path} has no data rows")
    return rows, list(reader.fieldnames or [])


def _pick_column(columns: list[str], wanted: str | None, candidates: Sequence[str], what: str, path: Path) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise DataError(f"{path}: no column '{wanted}' for the {what}; columns found: {columns}")
        return wanted
    lower = {c.lower(): c for c in columns}
    for c in candidates:
        if c in lower:
            return lower[c]
    raise DataError(
        f"{path}: cannot tell which column holds the {what}; columns found: {columns}. "
        f"Name it one of {list(candidates)} or set data.{what}_column"
    )


def labelled_samples(data: str | Path, classes: list[str], path_column: str | None = None,
                     label_column: str | None = None) -> tuple[list[Sample], list[tuple[str, str]]]:
    """Samples of labelled evaluation data, labelled with the model's ``classes``.

    DATA: a folder of class subfolders, a train/val/test folder (test/ then val/ is used) or a CSV.
    """
    root = Path(data)
    if root.is_dir():
        subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
        for name in ("test", *VAL_NAMES):
            if name in subdirs and "train" in subdirs:
                root = subdirs[name]
                break
        found = {k: v for k, v in _class_folders(root).items() if v}
        if not found:
            raise DataError(f"No labelled images in {root}: expected one subfolder of images per class")
        names = {k: [(p, k) for p in v] for k, v in found.items()}
        pairs = [pair for items in names.values() for pair in items]
        skipped: list[tuple[str, str]] = []
    elif root.is_file():
        rows, columns = read_table(root)
        pcol = _pick_column(columns, path_column, PATH_COLUMNS, "path", root)
        lcol = _pick_column(columns, label_column, LABEL_COLUMNS, "label", root)
        pairs = [(Path(r[pcol]) if Path(r[pcol]).is_absolute() else root.parent / r[pcol], str(r[lcol]).strip())
                 for r in rows]
        skipped = []
    else:
        raise DataError(f"Data not found: {root}")
    unseen = Counter(label for _, label in pairs if label not in classes)
    if unseen:
        raise DataError(
            f"{data} has labels the model never saw: {dict(unseen)}. The model knows: {', '.join(classes)}. "
            "Remove those images or train a model that includes these classes."
        )
    return [Sample(p, classes.index(label)) for p, label in pairs], skipped


def image_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files from a mix of files and folders (folders searched recursively)."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(q for q in p.rglob("*") if _is_image(q))
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"Not found: {p}")
    if not files:
        raise DataError(f"No image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {', '.join(map(str, inputs))}")
    return files


class ImageStore:
    """Every image decoded once and resized; kept in memory while it fits ``budget_mb``.

    Reading checks each file: unreadable, truncated or empty files are reported (``skipped``) or,
    with ``strict``, raise a DataError naming the file. ``intensity`` is how pixel values become 8-bit
    RGB (``transforms.to_rgb``): ``off``, ``window`` or ``auto`` (each image windowed when it needs it,
    until ``settle`` picks one mode for all from the training images). ``issues`` names the images
    with little intensity range (or 16-bit / float values).
    """

    def __init__(self, samples: list[Sample], short_side: int, interpolation: str, budget_mb: int = 2048,
                 strict: bool = False, desc: str = "Reading images", threads: int = 4,
                 intensity: str = "off") -> None:
        self.short_side, self.interpolation, self.intensity = short_side, interpolation, intensity
        self.images: dict[Path, Image.Image] = {}
        self.skipped: list[tuple[str, str]] = []
        self.formats: Counter = Counter()
        self.issues: dict[str, str] = {}  # path -> why it needs windowing
        self.rendered: dict[Path, str] = {}  # path -> the mode (off/window) its pixels were made with
        self.flat: set[str] = set()  # nearly uniform as decoded
        self.threads = threads
        budget, used = budget_mb * 1024 * 1024, 0
        ok: list[Sample] = []
        with ThreadPoolExecutor(threads) as pool, progress_bar(desc, len(samples)) as advance:
            for sample, result in zip(samples, pool.map(self._read, samples)):
                advance()
                if isinstance(result, str):
                    if strict:
                        raise DataError(f"Cannot read image {sample.path}: {result} (drop --strict to skip it)")
                    self.skipped.append((str(sample.path), result))
                    continue
                image, fmt, key, issue, mode, std = result
                sample.key = key
                self.formats[fmt] += 1
                if issue:
                    self.issues[str(sample.path)] = issue
                self.rendered[sample.path] = mode
                self._mark_flat(sample.path, std)
                size = image.width * image.height * 3
                if used + size <= budget:
                    self.images[sample.path] = image
                    used += size
                ok.append(sample)
        self.samples = ok
        self.memory_mb = used / 1024 / 1024

    @property
    def blank(self) -> list[str]:
        """Nearly uniform images as decoded (in reading order)."""
        return [str(s.path) for s in self.samples if str(s.path) in self.flat]

    def _mark_flat(self, path: Path, std: float) -> None:
        (self.flat.add if std < 2.0 else self.flat.discard)(str(path))

    def _read(self, sample: Sample) -> tuple[Image.Image, str, str, str | None, str, float] | str:
        try:
            data = sample.path.read_bytes()
        except OSError as exc:
            return f"cannot open file ({exc.strerror or exc})"
        if not data:
            return "empty file (0 bytes)"
        try:
            with Image.open(io.BytesIO(data)) as probe:
                fmt = probe.format or "?"
            native = open_image(data, self.short_side)
            issue = intensity_issue(native)
            mode = self.intensity if self.intensity != "auto" else ("window" if issue else "off")
            image = resize(to_rgb(native, mode), self.short_side, self.interpolation)
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
            return f"not a readable image ({type(exc).__name__}: {exc})"
        return image, fmt, hashlib.sha1(data).hexdigest(), issue, mode, _spread(image)

    def settle(self, train: Sequence[Sample]) -> str:
        """Resolve ``intensity="auto"``: ``window`` for every image when most ``train`` images need it, else ``off``.

        Images decoded with the other mode are decoded again. Returns a line saying what was chosen and why.
        """
        flagged = [str(s.path) for s in train if str(s.path) in self.issues]
        kinds = Counter(self.issues[p].split(" (")[0] for p in flagged)
        why = ", ".join(f"{kind}: {n}" for kind, n in kinds.most_common())
        example = next((self.issues[p].split(" (", 1)[1].rstrip(")") for p in flagged if " (" in self.issues[p]), "")
        why += f", e.g. {example}" if example else ""
        self.intensity = "window" if len(flagged) * 2 > len(train) else "off"
        self._render(self.intensity)
        if self.intensity == "window":
            lo, hi = WINDOW_PERCENTILES
            return (f"[bold]Intensity[/] windowed (data.intensity=auto): {len(flagged)} of {len(train)} training images "
                    f"need it ({why}). Each image is stretched to its own "
                    f"{lo:g}-{hi:g}th percentiles (min..max when it has few levels); data.intensity=off keeps raw values")
        return (f"[bold]Intensity[/] raw values (data.intensity=auto): {len(flagged)} of {len(train)} training images "
                "need windowing" + (f" ({why})" if flagged else ""))

    def _render(self, mode: str) -> None:
        """Decode again, with ``mode``, the images that were decoded with the other one."""
        redo = [s for s in self.samples if self.rendered.get(s.path) != mode]
        if not redo:
            return

        def again(sample: Sample) -> tuple[Image.Image, float]:
            image = decode(sample.path, self.short_side, self.interpolation, mode)
            return image, _spread(image)

        with ThreadPoolExecutor(self.threads) as pool, progress_bar("Decoding again", len(redo)) as advance:
            for sample, (image, std) in zip(redo, pool.map(again, redo)):
                advance()
                self.rendered[sample.path] = mode
                self._mark_flat(sample.path, std)
                if sample.path in self.images:
                    self.images[sample.path] = image

    def get(self, path: Path) -> Image.Image:
        image = self.images.get(path)
        if image is not None:
            return image
        return decode(path, self.short_side, self.interpolation, self.rendered.get(path, self.intensity))

    def warnings(self) -> list[str]:
        """Files that were read but look out of place (kept, reported)."""
        notes = []
        if self.formats:
            main, _ = self.formats.most_common(1)[0]
            odd = {f: n for f, n in self.formats.items() if f != main}
            if odd:
                notes.append(f"image formats differ: mostly {main}, also {odd}")
        issues = [str(s.path) for s in self.samples if str(s.path) in self.issues]
        if self.intensity == "window":
            if issues:
                notes.append(f"{len(issues)} image(s) with little intensity range (or 16-bit / float values) were "
                             f"windowed to their own percentiles (data.intensity=window), e.g. {issues[:3]}")
            if self.blank:
                notes.append(f"{len(self.blank)} nearly uniform image(s) even after windowing, e.g. {self.blank[:3]}")
        else:
            if issues:
                notes.append(f"{len(issues)} image(s) with little intensity range (or 16-bit / float values) kept "
                             f"raw (data.intensity={self.intensity}; 'window' stretches each image to its own "
                             f"percentiles), e.g. {issues[:3]}")
            if self.blank:
                notes.append(f"{len(self.blank)} nearly uniform image(s), e.g. {self.blank[:3]}")
        return notes


def _spread(image: Image.Image) -> float:
    """Standard deviation of a 16 x 16 grey thumbnail (under 2: nearly uniform)."""
    return statistics.pstdev(image.convert("L").resize((16, 16)).getdata())


@contextmanager
def item_rng(seed: int, epoch: int, key: str) -> Iterator[None]:
    """Inside: torch's CPU generator seeded for this item's augmentation; the previous state is restored after.

    Seeds the CPU generator alone: ``torch.manual_seed`` and ``fork_rng`` cost about 1 ms per call in
    torch 2.14, more than the transform itself.
    """
    generator = torch.default_generator
    saved = generator.get_state()
    generator.manual_seed(item_seed(seed, epoch, key))
    try:
        yield
    finally:
        generator.set_state(saved)


def item_seed(seed: int, epoch: int, key: str) -> int:
    """A seed for one item's augmentation, independent of order, batching and workers."""
    key = key if all(c in "0123456789abcdef" for c in key[:15]) else hashlib.sha1(key.encode()).hexdigest()
    return (int(key[:15], 16) ^ (seed * 1_000_003 + epoch * 7_919)) & 0x7FFF_FFFF_FFFF_FFFF


class ImageDataset(Dataset):
    """``(tensor, label)`` pairs; augmentation reseeded per (seed, epoch, file) so runs resume exactly."""

    def __init__(self, samples: list[Sample], store: ImageStore, transform: Callable, seed: int = 0) -> None:
        self.samples, self.store, self.transform = samples, store, transform
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        with item_rng(self.seed, self.epoch, sample.key or str(sample.path)):
            x = self.transform(self.store.get(sample.path))
        return x, -1 if sample.label is None else sample.label


class ImageData:
    """The image splits read through one ImageStore, as the training loop needs them (``TaskData``)."""

    collate = None

    def __init__(self, splits: ImageSplits, spec: BackboneSpec, preload_mb: int = 2048, strict: bool = False,
                 augment: str = "standard", seed: int = 0, intensity: str = "off") -> None:
        self.classes = splits.classes
        everything = splits.train + splits.val + splits.test
        self.store = ImageStore(everything, spec.resize_size, spec.interpolation, preload_mb, strict,
                                intensity=intensity)
        splits.skipped += self.store.skipped
        ok = {id(s) for s in self.store.samples}
        self.splits = {
            "train": [s for s in splits.train if id(s) in ok],
            "val": [s for s in splits.val if id(s) in ok],
            "test": [s for s in splits.test if id(s) in ok],
        }
        for name in ("train", "val"):
            if not self.splits[name]:
                raise DataError(f"No readable images left in the {name} split ({len(splits.skipped)} skipped)")
        # data.intensity=auto: decided from the training images; the mode is part of the preprocessing
        self.intensity_note = self.store.settle(self.splits["train"]) if intensity == "auto" else None
        spec.extra["intensity"] = self.store.intensity
        self.train_tf = train_transform(spec, augment)
        self.eval_tf = eval_transform(spec)
        self.seed = seed

    def keys(self, split: str) -> list[str]:
        return [s.key for s in self.splits[split]]

    def labels(self, split: str) -> torch.Tensor:
        return torch.tensor([s.label for s in self.splits[split]], dtype=torch.long)

    def dataset(self, split: str, train: bool, epoch: int) -> ImageDataset:
        ds = ImageDataset(self.splits[split], self.store, self.train_tf if train else self.eval_tf, self.seed)
        ds.epoch = epoch
        return ds

    def transform_id(self, train: bool) -> str:
        return describe(self.train_tf if train else self.eval_tf)
