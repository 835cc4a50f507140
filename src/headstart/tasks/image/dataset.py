"""Image data as training reads it: every file decoded once and checked (``ImageStore``), kept in memory while
it fits ``data.preload_mb``; seeded per-item augmentation (``item_rng``) and the splits as the loop needs them
(``ImageDataset``, ``ImageData``). Which files and labels DATA holds is ``data.py``'s concern.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from headstart.core.backbones.spec import BackboneSpec
from headstart.errors import DataError
from headstart.progress import progress_bar
from headstart.tasks.flips import DEFAULT, Flips
from headstart.tasks.image import near_copies
from headstart.tasks.image.augment import BatchAugment, split_transform
from headstart.tasks.image.data import MAX_PIXELS, ImageSplits, Sample
from headstart.tasks.image.decode import TRANSPARENT, image_header, quiet_pil, too_large_reason, unreadable_reason
from headstart.tasks.image.near_copies import thumbnail
from headstart.tasks.image.shortcuts import traits
from headstart.tasks.image.stored import payload
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

ODD_FORMAT, ODD_SHARE = 2, 0.05  # a format of at most 2 images or 5% of them is out of place among the others


def pixel_bytes(image: Image.Image) -> int:
    """The memory PIL holds for an image's pixels: a band of 8 bits takes a byte, and images of several bands keep
    4 bytes a pixel (RGB too: 1,000 RGB images of 256 x 256 took 254 MB, not the 188 MB of 3 bytes a pixel)."""
    per_pixel = 4 if len(image.getbands()) > 1 or image.mode in ("I", "F") else 2 if image.mode.startswith("I;16") else 1
    return image.width * image.height * per_pixel


@dataclass
class Read:
    """What reading one file gives ``ImageStore``."""

    image: Image.Image  # decoded, 8-bit RGB, resized
    key: str  # sha1 of the file's bytes
    issue: str | None  # why it needs windowing (``intensity_issue``)
    mode: str  # the intensity mode its pixels were made with: off / window
    spread: float  # standard deviation of its grey thumbnail (``_spread``)
    traits: tuple[str, str, str]  # ``shortcuts.traits``
    thumb: bytes  # ``near_copies.thumbnail``
    dicom: str  # how a DICOM file was shown ('' for other files)
    transparent: bool  # it had transparent pixels, put on white


class ImageStore:
    """Every image decoded once and resized; kept in memory while it fits ``budget_mb``.

    Reading checks each file: unreadable, truncated or empty files are reported (``skipped``) or,
    with ``strict``, raise a DataError naming the file. ``intensity`` is how pixel values become 8-bit
    RGB (``transforms.to_rgb``): ``off``, ``window`` or ``auto`` (each image windowed when it needs it,
    until ``settle`` picks one mode for all from the training images). ``issues`` names the images
    with little intensity range (or 16-bit / float values). An image of more than ``max_pixels``
    pixels is skipped from its header, before it is decoded.
    """

    def __init__(self, samples: list[Sample], short_side: int, interpolation: str, budget_mb: int = 2048,
                 strict: bool = False, desc: str = "Reading images", threads: int | None = None,
                 intensity: str = "off", max_pixels: int | None = MAX_PIXELS) -> None:
        self.short_side, self.interpolation, self.intensity = short_side, interpolation, intensity
        self.settled = False  # ``settle`` chose ``intensity`` (from ``auto``)
        self.max_pixels = max_pixels
        self.images: dict[Path, Image.Image] = {}
        # images held in memory, or stored in a dataset's files: their bytes, or where to read them (``stored``)
        self.in_memory = {s.path: s.data for s in samples if s.data is not None}
        self.skipped: list[tuple[str, str]] = []
        self.traits: dict[Path, tuple[str, str, str]] = {}  # path -> (format, grey/colour, size): ``shortcuts``
        self.thumbs: dict[Path, bytes] = {}  # path -> 16 x 16 grey thumbnail: ``near_copies``
        self.dicom: Counter = Counter()  # how DICOM files were shown: 'own window', 'stored values', 'colour'
        self.transparent = 0  # images with transparent pixels, put on white (``decode.on_white``)
        self.issues: dict[str, str] = {}  # path -> why it needs windowing
        self.rendered: dict[Path, str] = {}  # path -> the mode (off/window) its pixels were made with
        self.flat: set[str] = set()  # nearly uniform as decoded
        self.threads = threads or torch.get_num_threads()  # decoding threads: device.threads, set before reading
        budget, used = budget_mb * 1024 * 1024, 0
        ok: list[Sample] = []
        with quiet_pil(), ThreadPoolExecutor(self.threads) as pool, progress_bar(desc, len(samples)) as advance:
            for sample, result in zip(samples, pool.map(self._read, samples)):
                advance()
                if isinstance(result, str):
                    if strict:
                        raise DataError(f"Cannot read image {sample.path}: {result} (drop --strict to skip it)")
                    self.skipped.append((str(sample.path), result))
                    continue
                sample.key = result.key
                self.traits[sample.path], self.thumbs[sample.path] = result.traits, result.thumb
                if result.dicom:
                    self.dicom[result.dicom] += 1
                self.transparent += result.transparent
                if result.issue:
                    self.issues[str(sample.path)] = result.issue
                self.rendered[sample.path] = result.mode
                self._mark_flat(sample.path, result.spread)
                size = pixel_bytes(result.image)
                if used + size <= budget:
                    self.images[sample.path] = result.image
                    used += size
                ok.append(sample)
        self.samples = ok
        self.memory_mb = used / 1024 / 1024

    def read_note(self) -> str:
        """How the DICOM files and the images with transparent pixels were shown ('' when there were none), for
        the Data line."""
        note = ""
        if self.dicom:
            how = {"own window": "shown with their own window (Window Center / Width or VOI LUT)",
                   "stored values": "as stored values (no window in the file; data.intensity decides)",
                   "colour": "in colour"}
            note += "; DICOM: " + ", ".join(f"{n} {how[kind]}" for kind, n in self.dicom.most_common())
        if self.transparent:
            note += f"; {self.transparent} image(s) with transparent pixels shown on white"
        return note

    @property
    def formats(self) -> Counter:
        """How many images read are of each format (``traits``' first field)."""
        return Counter(t[0] for t in self.traits.values())

    @property
    def blank(self) -> list[str]:
        """Nearly uniform images as decoded (in reading order)."""
        return [str(s.path) for s in self.samples if str(s.path) in self.flat]

    def _mark_flat(self, path: Path, std: float) -> None:
        (self.flat.add if std < 2.0 else self.flat.discard)(str(path))

    def _read(self, sample: Sample) -> Read | str:
        """The sample decoded and looked at, or why it cannot be read."""
        try:
            data = sample.path.read_bytes() if sample.data is None else payload(sample.data)
        except OSError as exc:
            return f"cannot open file ({exc.strerror or exc})"
        if not data:
            return "empty file (0 bytes)"
        try:
            fmt, width, height = image_header(data)
            if (too_large := too_large_reason(width, height, self.max_pixels)) is not None:
                return too_large
            native = open_image(data, self.short_side)
            dicom = {"L": "own window", "RGB": "colour"}.get(native.mode, "stored values") if fmt == "DICOM" else ""
            issue = intensity_issue(native)
            mode = self.intensity if self.intensity != "auto" else ("window" if issue else "off")
            image = resize(to_rgb(native, mode), self.short_side, self.interpolation)
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
            return unreadable_reason(exc)
        # the split already hashed the file's bytes (content_keys); in-memory uploads are hashed here
        thumb = thumbnail(image)
        return Read(image, sample.key or hashlib.sha1(data).hexdigest(), issue, mode, _spread(thumb),
                    traits(image, fmt, width, height), thumb, dicom, bool(native.info.get(TRANSPARENT)))

    def settle(self, train: Sequence[Sample]) -> str:
        """Resolve ``intensity="auto"``: ``window`` for every image when most ``train`` images need it, else ``off``.

        Images decoded with the other mode are decoded again. Returns a line saying what was chosen and why.
        """
        flagged = [str(s.path) for s in train if str(s.path) in self.issues]
        kinds = Counter(self.issues[p].split(" (")[0] for p in flagged)
        why = ", ".join(f"{kind}: {n}" for kind, n in kinds.most_common())
        example = next((self.issues[p].split(" (", 1)[1].rstrip(")") for p in flagged if " (" in self.issues[p]), "")
        why += f", e.g. {example}" if example else ""
        self.intensity, self.settled = "window" if len(flagged) * 2 > len(train) else "off", True
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
            image = decode(sample.source, self.short_side, self.interpolation, mode)
            return image, _spread(thumbnail(image))

        with ThreadPoolExecutor(self.threads) as pool, progress_bar("Decoding again", len(redo)) as advance:
            for sample, (image, std) in zip(redo, pool.map(again, redo)):
                advance()
                self.rendered[sample.path] = mode
                self._mark_flat(sample.path, std)
                if sample.path in self.images:
                    self.images[sample.path] = image

    def near_copies(self, splits: dict[str, list[Sample]], held_out: bool, classes: Sequence[str],
                    conflicts: bool = True, exact: bool = False) -> list[str]:
        """Notes on pictures saved twice across ``splits`` (``near_copies.settle``; nearly uniform images are not
        compared); a validation split headstart drew gives its near-copies of training images to training."""
        thumbs = {p: t for p, t in self.thumbs.items() if str(p) not in self.flat}
        return near_copies.settle(splits, thumbs, self.get, held_out, classes, conflicts, exact)

    def release(self) -> None:
        """Let the decoded images go (``get`` decodes from the files again): before a refit reads the data anew."""
        self.images.clear()

    def get(self, path: Path) -> Image.Image:
        image = self.images.get(path)
        if image is not None:
            return image
        data = self.in_memory.get(path)
        return decode(path if data is None else payload(data), self.short_side, self.interpolation,
                      self.rendered.get(path, self.intensity))

    def warnings(self) -> list[str]:
        """Files that were read but look out of place (kept, reported)."""
        notes = []
        formats = self.formats
        if formats:  # a stray file among many (a GIF placeholder among JPEGs); whole classes: ``shortcuts``
            main, _ = formats.most_common(1)[0]
            few = max(ODD_FORMAT, ODD_SHARE * len(self.samples))
            odd = {f: n for f, n in formats.items() if f != main and n <= few}
            if odd:
                examples = [str(p) for p, t in self.traits.items() if t[0] in odd][:3]
                notes.append(f"image formats differ: mostly {main}, also {odd}, e.g. {examples}")
        issues = [str(s.path) for s in self.samples if str(s.path) in self.issues]
        if self.intensity == "window":
            if issues:
                notes.append(f"{len(issues)} image(s) with little intensity range (or 16-bit / float values) were "
                             f"windowed to their own percentiles (data.intensity=window), e.g. {issues[:3]}")
            if self.blank:
                notes.append(f"{len(self.blank)} nearly uniform image(s) even after windowing, e.g. {self.blank[:3]}")
        else:
            if issues:
                why = ("data.intensity=auto kept raw values: most training images do not need windowing" if self.settled
                       else f"data.intensity={self.intensity}")
                notes.append(f"{len(issues)} image(s) with little intensity range (or 16-bit / float values) kept "
                             f"raw ({why}; data.intensity=window stretches each image to its own percentiles), "
                             f"e.g. {issues[:3]}")
            if self.blank:
                notes.append(f"{len(self.blank)} nearly uniform image(s), e.g. {self.blank[:3]}")
        return notes


def _spread(thumb: bytes) -> float:
    """Standard deviation of an image's 16 x 16 grey thumbnail (``near_copies.thumbnail``; under 2: nearly uniform)."""
    return float(np.frombuffer(thumb, dtype=np.uint8).std())  # population std


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


def _check_readable_classes(splits: ImageSplits, everything: list[Sample], store: ImageStore) -> None:
    """A class whose every file was skipped is an error naming it and its folder; one left without a readable
    validation image is a note."""
    readable = Counter(s.label for s in store.samples)
    listed: dict[int, list[Sample]] = {}
    for s in everything:
        listed.setdefault(s.label, []).append(s)
    dead = [label for label in listed if label is not None and not readable[label]]
    if dead:
        why = dict(store.skipped)
        parts = []
        for label in dead[:5]:
            files = listed[label]
            folder = os.path.commonpath([str(f.path.parent) for f in files]) or "."
            first = files[0]
            parts.append(f"class '{splits.classes[label]}' ({folder}): all {len(files)} file(s) were skipped, e.g. "
                         f"{first.path.name}: {why.get(str(first.path), 'unreadable')}")
        raise DataError(f"{len(dead)} class(es) have no readable image: " + "; ".join(parts)
                        + ". Replace the files or remove the class")
    ok = {id(s) for s in store.samples}
    in_val = {s.label for s in splits.val if id(s) in ok}
    lost = [splits.classes[c] for c in sorted({s.label for s in splits.val}) if c not in in_val]
    if lost:
        splits.notes.append(f"validation has no readable image of {len(lost)} class(es) (its files there were "
                            f"skipped): {', '.join(lost[:10])}")


class ImageData:
    """The image splits read through one ImageStore, as the training loop needs them (``TaskData``)."""

    collate = None

    def __init__(self, splits: ImageSplits, spec: BackboneSpec, preload_mb: int = 2048, strict: bool = False,
                 augment: str = "standard", seed: int = 0, intensity: str = "off",
                 max_pixels: int | None = MAX_PIXELS, flips: Flips = DEFAULT) -> None:
        self.classes = splits.classes
        everything = list({id(s): s for s in splits.train + splits.val + splits.test}.values())  # refit: val in train
        self.store = ImageStore(everything, spec.resize_size, spec.interpolation, preload_mb, strict,
                                intensity=intensity, max_pixels=max_pixels)
        splits.skipped += self.store.skipped
        self.check_readable(splits, everything)
        ok = {id(s) for s in self.store.samples}
        self.splits = {
            "train": [s for s in splits.train if id(s) in ok],
            "val": [s for s in splits.val if id(s) in ok],
            "test": [s for s in splits.test if id(s) in ok],
        }
        for name in ("train", "val"):
            if not self.splits[name]:
                raise DataError(f"No readable images left in the {name} split ({len(splits.skipped)} skipped)")
        in_train = {id(s) for s in self.splits["train"]}
        if not any(id(s) in in_train for s in self.splits["val"]):  # (a refit trains on validation: nothing to settle)
            splits.notes += self.store.near_copies(self.splits, splits.val_held_out, splits.classes)
            moved = [s for s in self.splits["train"] if id(s) not in in_train]  # validation's, given to training
            if moved:
                gone = {id(s) for s in moved}
                splits.val = [s for s in splits.val if id(s) not in gone]
                splits.train += moved
        # data.intensity=auto: decided from the training images; the mode is part of the preprocessing
        self.intensity_note = self.store.settle(self.splits["train"]) if intensity == "auto" else None
        spec.extra["intensity"] = self.store.intensity
        self.train_tf = train_transform(spec, augment, flips)
        self.eval_tf = eval_transform(spec)
        self.seed = seed

    DATASET = ImageDataset  # the dataset class of the splits

    def release(self) -> None:
        """Let the decoded images go (read again from their files if still needed)."""
        self.store.release()

    def class_counts(self, split: str) -> dict[str, int]:
        """Items of each class in ``split``."""
        counts = Counter(s.label for s in self.splits[split])
        return {c: counts[i] for i, c in enumerate(self.classes)}

    def check_readable(self, splits: ImageSplits, everything: list[Sample]) -> None:
        """Fail when a class lost every file to unreadable ones (a note when its validation files are gone)."""
        _check_readable_classes(splits, everything, self.store)

    def keys(self, split: str) -> list[str]:
        return [s.key for s in self.splits[split]]

    def labels(self, split: str) -> torch.Tensor:
        return torch.tensor([s.label for s in self.splits[split]], dtype=torch.long)

    def dataset(self, split: str, train: bool, epoch: int) -> ImageDataset:
        ds = self.DATASET(self.splits[split], self.store, self.train_tf if train else self.eval_tf, self.seed)
        ds.epoch = epoch
        return ds

    def device_dataset(self, split: str, epoch: int) -> ImageDataset:
        """``split``'s training items for ``data.augment_on=device``: uint8 crops and flips with each item's jitter
        factors (``augment.split_transform``), drawn as the loader transform draws them; ``batch_augment``
        finishes each batch on the device. The feature cache's views keep the loader transform (``dataset``)."""
        ds = self.dataset(split, train=True, epoch=epoch)  # a subclass's own dataset (multi-label: TagDataset)
        ds.transform = split_transform(self.train_tf).worker
        return ds

    def batch_augment(self) -> BatchAugment:
        """The device's part of ``data.augment_on=device``: float, per-sample colour jitter, normalise, channels-last."""
        return split_transform(self.train_tf).device

    def transform_id(self, train: bool) -> str:
        return describe(self.train_tf if train else self.eval_tf)
