"""Segmentation data: find the images and their class-index masks, check every pair once.

Layouts of DATA (told apart by what the folder holds):
  * ``masks``: ``images/`` + ``masks/`` + ``classes.txt`` (line i names class index i). With split folders
    ``images/{train,val[,test]}/`` and ``masks/{train,val[,test]}/`` (a test/ without masks is not used), or flat
    (a seeded validation split is made). A mask is the ``.png`` (or .bmp/.tif) with its image's stem and
    subfolder: one uint8 class index per pixel.
  * ``voc``: Pascal VOC, ``JPEGImages/`` + ``SegmentationClass/*.png`` (palette PNGs: the palette index is
    the class) + ``ImageSets/Segmentation/{train,val[,test]}.txt``; the 21 VOC classes unless a
    ``classes.txt`` or ``labelmap.txt`` names them. Also found inside ``VOCdevkit/VOC20xx/``.
  * ``coco``: a COCO instances json (given directly: a seeded split), or a folder with
    ``annotations/instances_{train,val}*.json``. Polygons and RLE (compressed or not) are rasterised;
    class 0 is ``background`` (pixels no object covers), categories follow by id; ``iscrowd`` regions are
    ignored (255). Where objects overlap, smaller ones are drawn over larger ones.
  * ``labelme``: LabelMe's ``.json`` beside each image (``tasks/labelme.py``), in the folder or its ``train/``,
    ``val/`` folders: its polygons, rectangles and circles drawn as COCO's polygons are, ``background`` first.

255 (``IGNORE_INDEX``) marks pixels that no loss or metric counts. Every image is decoded and every mask
read once here: unreadable images and masks are reported skips (``skipped``), like the image task's;
a mask of another size than its image, or holding a class index without a name, is a DataError naming
the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from headstart.core.splits import stratified_split
from headstart.errors import DataError
from headstart.progress import progress_bar
from headstart.tasks.detection import coco_files
from headstart.tasks.exports import export_splits, is_export, labelled_images, tool_of
from headstart.tasks.image.data import MAX_PIXELS, VAL_NAMES
from headstart.tasks.image.decode import (
    IMAGE_EXTENSIONS,
    image_beside,
    image_header,
    is_image_file,
    open_image,
    quiet_pil,
    too_large_reason,
    unreadable_reason,
)
from headstart.tasks.image.stored import Stored
from headstart.tasks.labelme import labelme_splits, read_file, unannotated
from headstart.tasks.segmentation import (
    MASK_STEM_SUFFIXES,
    deeper_layout,
    inner_folder,
    is_hf_segmentation,
    masks_beside,
    named_mask_folder,
    paired_folders,
    split_masks,
    split_named,
)
from headstart.tasks.tables import SPLIT_FOLDERS

IGNORE_INDEX = 255
MAX_CLASSES = 255  # indices 0..254; 255 is the ignore index
BACKGROUND = "background"
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
CLASS_FILES = ("classes.txt", "labelmap.txt", "class_dict.csv", "_classes.csv")  # _classes.csv: Roboflow's
PIXEL_VALUE = "pixel value"  # the first column of Roboflow's _classes.csv ('Pixel Value, Class'): lines by value
VOID_NAMES = {"void", "unlabelled", "unlabeled", "ignore"}  # classes that mark pixels without a label
MASK_EXTENSIONS = (".png", ".PNG", ".bmp", ".tif", ".tiff", ".gif")  # lossless (Carvana's masks are GIFs)
LOSSY_MASKS = (".jpg", ".jpeg", ".JPG", ".JPEG")  # blurred class indices: read only as binary masks (Kvasir-SEG)
BINARY_CLASSES = ["background", "foreground"]  # the classes of binary masks without a class file
MASKS_LOOKED_AT = 32  # masks read to tell binary ones (0/1, 0/255) without a class file


@dataclass
class CocoObjects:
    """The annotations of one image of a COCO json: ``(class index, segmentation, iscrowd)`` each."""

    source: Path  # the json
    image_id: Any
    height: int
    width: int
    objects: list[tuple[int, Any, bool]] = field(default_factory=list)

    def rasterise(self) -> np.ndarray:
        """(height, width) uint8: 0 background, crowd regions 255, then objects, larger ones first."""
        from faster_coco_eval.core import mask as coco_mask  # a dependency already (COCO mAP); imported when used

        out = np.zeros((self.height, self.width), dtype=np.uint8)
        drawn = []
        for index, segmentation, crowd in self.objects:
            m = _decode_segmentation(coco_mask, segmentation, self.height, self.width)
            if m is not None:
                drawn.append((crowd, -int(m.sum()), index, m))
        for crowd, _, _, m in drawn:
            if crowd:
                out[m] = IGNORE_INDEX
        for _, _, index, m in sorted((d for d in drawn if not d[0]), key=lambda d: d[1]):  # stable: json order on ties
            out[m] = index
        return out


def _decode_segmentation(coco_mask: Any, segmentation: Any, h: int, w: int) -> np.ndarray | None:
    """A COCO segmentation (polygons, uncompressed or compressed RLE) as an (h, w) bool mask; an export's bitmap
    (``exports.Region.pixels``) draws its own."""
    if hasattr(segmentation, "mask"):
        return segmentation.mask(h, w)
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return None
        rle = coco_mask.merge(coco_mask.frPyObjects([[float(v) for v in p] for p in polygons], h, w))
    elif isinstance(segmentation["counts"], list):
        rle = coco_mask.frPyObjects({"size": [h, w], "counts": [int(c) for c in segmentation["counts"]]}, h, w)
    else:
        rle = {"size": [h, w], "counts": segmentation["counts"]}
    return coco_mask.decode(rle).astype(bool)


@dataclass
class SegSample:
    """One image and where its mask comes from: an index PNG (``mask``), COCO annotations (``coco``) or a mask stored
    in a dataset's row (``mask_data``: ``hf_datasets``, whose images are stored there too: ``data``)."""

    image: Path  # the image file; a dataset row's name (``train:12``) when ``data`` holds the image
    key: str = ""  # sha1 of the image's bytes and of its mask's values, filled when the pair is checked
    mask: Path | None = None
    coco: CocoObjects | None = None
    colours: dict[int, int] | None = None  # colour masks: 0xRRGGBB -> class index (``read_colours``)
    remap: np.ndarray | None = None  # the class file's index -> the model's (a void class -> 255): ``ignored_classes``
    binary: bool = False  # a lossy (JPEG) binary mask: a grey level from 128 up is the foreground (1), else 0
    class_pixels: list[int] = field(default_factory=list)  # pixels of each class (255 not counted), when checked
    data: Stored | None = None  # where a dataset stores the image (a Parquet or Arrow row), else the file ``image``
    mask_data: Stored | None = None  # where a dataset stores the mask file (the row's mask column)

    @property
    def source(self) -> bytes | Path:
        """The image as ``decode.open_image`` takes it: its file, or its file's bytes from where a dataset stores
        them."""
        return self.image if self.data is None else self.data.read()

    @property
    def mask_name(self) -> str:
        """The mask as messages name it."""
        if self.coco is not None:
            return f"{self.coco.source} (image id {self.coco.image_id}, {self.image.name})"
        return f"{self.image} (its mask)" if self.mask_data is not None else str(self.mask)

    def raw_mask(self) -> np.ndarray:
        """The mask file's values (class indices, or colours' classes), before ``remap``."""
        if self.mask_data is not None:
            return read_index_png(self.mask_name, self.colours, self.mask_data.read())
        if self.mask is None:
            raise DataError(f"{self.image} has no mask")
        return read_index_png(self.mask, self.colours)

    def read_mask(self) -> np.ndarray:
        """(H, W) uint8 class index per pixel, 255 = ignore; the image's size (after EXIF rotation)."""
        if self.coco is not None:
            return self.coco.rasterise()
        if self.binary and self.mask is not None:
            with Image.open(self.mask) as im:
                return (np.array(im.convert("L")) >= 128).astype(np.uint8)
        mask = self.raw_mask()
        return mask if self.remap is None else self.remap[mask]


@dataclass
class SegmentationSplits:
    """What ``discover`` found: classes, the splits, what was skipped (with why) and notes for the user."""

    classes: list[str]
    train: list[SegSample]
    val: list[SegSample]
    test: list[SegSample] = field(default_factory=list)
    layout: str = ""  # "masks" | "voc" | "coco"
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    notes: list[str] = field(default_factory=list)  # what the user should check (files not used, copies): warnings
    read: list[str] = field(default_factory=list)  # how DATA was read (the split made, the class file's colours...)
    val_held_out: bool = False  # validation was split off the training items (DATA gave none)


def pixel_counts(samples: Sequence[SegSample], num_classes: int) -> list[int]:
    """Pixels of each class over ``samples`` (checked by ``discover``; 255 not counted)."""
    total = np.zeros(num_classes, dtype=np.int64)
    for s in samples:
        if s.class_pixels:
            total += np.asarray(s.class_pixels[:num_classes], dtype=np.int64)
    return total.tolist()


def read_index_png(path: Path | str, colours: dict[int, int] | None = None, data: bytes | None = None) -> np.ndarray:
    """A mask file (``data``: its bytes, ``path`` then only names it) as (H, W) uint8 class indices: grey levels
    (mode L) or palette indices (mode P, not colours).

    16/32-bit masks are taken as they are when their values fit 0..255; a grey mask saved as RGB (R = G = B)
    is read as grey. A colour (RGB) mask needs ``colours``, the class of each colour (``read_colours``: a
    ``labelmap.txt`` or ``class_dict.csv`` beside the data); without them it is a DataError.
    """
    with Image.open(path if data is None else io.BytesIO(data)) as im:
        im.load()
        mode = im.mode
        if colours is not None and mode in ("RGB", "RGBA"):
            return colour_indices(np.array(im.convert("RGB")), colours, path)
        if mode in ("L", "P"):
            return np.array(im, dtype=np.uint8)
        if mode == "1":
            return np.array(im, dtype=np.uint8)
        if mode in ("LA", "PA"):
            return np.array(im.getchannel(0), dtype=np.uint8)
        if mode.startswith("I") or mode == "F":
            values = np.array(im)
            if values.size and (values.min() < 0 or values.max() > 255 or (mode == "F" and (values % 1).any())):
                raise DataError(f"{path}: a {mode} mask with values {values.min():g}..{values.max():g}; expected "
                                "whole class indices 0..254 (255 = ignore)")
            return values.astype(np.uint8)
        rgb = np.array(im.convert("RGB"))
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return np.ascontiguousarray(rgb[..., 0])
    raise DataError(f"{path}: a colour ({mode}) mask; expected one class index per pixel (a single-channel "
                    "PNG, mode L or palette P, whose pixel values are 0..N-1 and 255 = ignore). Convert the colours "
                    "to class indices")


def colour_indices(rgb: np.ndarray, colours: dict[int, int], path: Path | str) -> np.ndarray:
    """(H, W) class indices of an (H, W, 3) colour mask; a colour no class has is a DataError naming it."""
    keys = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    found, inverse = np.unique(keys, return_inverse=True)
    lut = np.array([colours.get(int(k), -1) for k in found], dtype=np.int32)
    unknown = found[lut < 0]
    if unknown.size:
        k = int(unknown[0])
        pixels = int((keys == k).sum())
        raise DataError(f"{path}: colour rgb({k >> 16}, {(k >> 8) & 255}, {k & 255}) on {pixels} pixel(s) is no "
                        f"class's colour ({len(unknown)} such colour(s)); the class file gives "
                        f"{len(colours)} colours. Add it to the class file, or repaint those pixels")
    return lut[inverse].reshape(keys.shape).astype(np.uint8)


def _class_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} cannot be read as UTF-8 text: {exc}") from exc
    lines = text.splitlines()
    if path.name == "labelmap.txt":
        lines = [ln for ln in lines if not ln.lstrip().startswith("#")]
    elif _by_values(path):
        lines = _by_value(path, lines[1:])  # Roboflow's 'Pixel Value, Class': the names, in the order of the values
    elif path.suffix.lower() == ".csv":
        lines = lines[1:]  # the header line: name,r,g,b
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _by_values(path: Path) -> bool:
    """Whether a class file is Roboflow's ``_classes.csv`` of ``Pixel Value, Class``."""
    if path.suffix.lower() != ".csv":
        return False
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        return f.readline().strip().lower().startswith(PIXEL_VALUE)


def _by_value(path: Path, lines: list[str]) -> list[str]:
    """Lines of ``value, name`` as the names of values 0, 1, 2... (each value once, none missing)."""
    named: dict[int, str] = {}
    for number, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        value, _, name = line.partition(",")
        try:
            named[int(value)] = name
        except ValueError:
            raise DataError(f"{path}:{number}: expected 'pixel value, class name', found '{line.strip()}'") from None
    if sorted(named) != list(range(len(named))):
        raise DataError(f"{path}: its pixel values are {sorted(named)[:12]}; expected each of 0, 1, 2... once")
    return [named[v] for v in range(len(named))]


def read_colours(path: Path) -> dict[int, int] | None:
    """The class of each colour (0xRRGGBB -> index) of a class file that gives colours: ``labelmap.txt`` (CVAT's and
    VOC exports: ``name:r,g,b::``) or ``class_dict.csv`` (Kaggle's CamVid: ``name,r,g,b``); None for
    ``classes.txt`` or a file without them."""
    if path.name == "classes.txt" or _by_values(path):
        return None
    colours: dict[int, int] = {}
    for index, line in enumerate(_class_lines(path)):
        fields = line.split(",", 1)[1] if path.suffix.lower() == ".csv" else (line.split(":") + [""])[1]
        try:
            r, g, b = (int(v) for v in fields.replace(" ", "").split(",")[:3])
        except ValueError:
            return None  # names only: masks hold indices
        key = (r << 16) | (g << 8) | b
        if key in colours:
            raise DataError(f"{path}: rgb({r}, {g}, {b}) is the colour of two classes (lines {colours[key] + 1} and "
                            f"{index + 1})")
        colours[key] = index
    return colours or None


def ignored_classes(names: list[str]) -> tuple[list[str], np.ndarray | None, list[str]]:
    """The classes a model learns, the mask index map and the names left out: a class named ``void``,
    ``unlabelled``/``unlabeled`` or ``ignore`` (Kaggle's CamVid has 'Void') marks pixels without a label, so its
    index becomes 255 (``IGNORE_INDEX``), neither learned nor scored, and the indices above it move down."""
    void = [i for i, n in enumerate(names) if n.strip().lower() in VOID_NAMES]
    if not void or len(void) == len(names):
        return names, None, []
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    kept = [i for i in range(len(names)) if i not in void]
    lut[kept] = np.arange(len(kept), dtype=np.uint8)
    return [names[i] for i in kept], lut, [names[i] for i in void]


def _class_table(path: Path | None) -> tuple[list[str], np.ndarray | None, dict[int, int] | None, list[str]]:
    """What a class file says (none: the 21 VOC classes): the classes learned, the index map of a void class
    (``ignored_classes``), the colour of each class (``read_colours``) and notes saying so."""
    if path is None:
        return list(VOC_CLASSES), None, None, []
    classes, remap, void = ignored_classes(read_classes(path))
    colours = read_colours(path)
    notes = []
    if void:
        notes.append(f"class(es) {void} of {path.name} mark unlabelled pixels: ignored (255), not learned or scored")
    if colours is not None:
        notes.append(f"colour (RGB) masks read by the colours of {path.name}")
    return classes, remap, colours, notes


def read_classes(path: Path) -> list[str]:
    """Class names, line i = index i: ``classes.txt`` (one name a line), ``labelmap.txt`` (``name:r,g,b::``) or
    ``class_dict.csv`` (``name,r,g,b`` under a header line)."""
    lines = _class_lines(path)
    if path.name == "labelmap.txt":
        lines = [ln.split(":", 1)[0] for ln in lines]
    elif path.suffix.lower() == ".csv" and not _by_values(path):
        lines = [ln.split(",", 1)[0] for ln in lines]
    names = [ln.strip() for ln in lines]
    if not names:
        raise DataError(f"{path} names no class: expected one class name per line (line i = class index i)")
    blank = [i + 1 for i, n in enumerate(names) if not n]
    if blank:
        raise DataError(f"{path}: line {blank[0]} is empty; each line names the class of its index (line 1 = "
                        "index 0), so a gap would shift every class after it. Name the class or remove the line")
    twice = [n for n, k in Counter(names).items() if k > 1]
    if twice:
        raise DataError(f"{path}: class name(s) given twice: {twice[:5]}")
    if len(names) > MAX_CLASSES:
        raise DataError(f"{path} names {len(names)} classes; at most {MAX_CLASSES} fit in 8-bit masks (255 = ignore)")
    return names


def discover(data: str | Path, val_fraction: float = 0.2, seed: int = 0) -> SegmentationSplits:
    """Find the classes and the train/val(/test) image-mask pairs of DATA, and check every pair."""
    root = Path(data)
    if not root.exists():
        raise DataError(f"Data not found: {root}")
    if is_hf_segmentation(root):  # a Hub dataset's Parquet files (or a save_to_disk folder) of images and masks
        from headstart.tasks.segmentation.hf_datasets import read_hf_segmentation

        splits = read_hf_segmentation(root, val_fraction, seed)
    elif root.is_file():
        if is_export(root):  # Label Studio's, CVAT's or VIA's polygons and rectangles
            splits = _exports(root, {"train": root}, val_fraction, seed)
        elif root.suffix.lower() in (".yaml", ".yml"):  # a YOLO dataset's data.yaml: its polygons drawn as masks
            splits = _yolo(root, val_fraction, seed)
        elif root.suffix.lower() != ".json":
            raise DataError(f"{root}: expected a folder (images/ + masks/, Pascal VOC), a COCO instances .json, a "
                            "YOLO data.yaml of polygons or a Parquet file of images and masks (two Image columns)")
        else:
            splits = _coco_file(root, val_fraction, seed)
    else:
        inner = inner_folder(root)
        if inner != root and (inner / "images").is_dir() and (inner / "masks").is_dir():
            splits = discover(inner, val_fraction, seed)
            splits.read.insert(0, f"read inside {inner.relative_to(root)}/, the one folder {root.name}/ holds")
            return splits
        entries = [p for p in root.iterdir() if not p.name.startswith(".")]
        if not entries:
            raise DataError(f"{root} is empty: expected images/ + masks/ + classes.txt, a Pascal VOC folder "
                            "(JPEGImages/, SegmentationClass/) or a COCO json")
        voc = _voc_root(root)
        if (root / "images").is_dir() and (root / "masks").is_dir():
            splits = _mask_folders(root, val_fraction, seed)
        elif (root / "data.yaml").is_file() or (root / "dataset.yaml").is_file():  # YOLO: its polygons as masks
            splits = _yolo(root, val_fraction, seed)
        elif voc is not None:
            splits = _voc(voc, val_fraction, seed)
        elif paired := paired_folders(root):
            splits = _paired(root, paired, val_fraction, seed)
        elif named := named_mask_folder(root, nested=True):
            splits = _pairs(root, {"train": named}, _class_file(root, False, "masks"),
                            f"{named[0].name}/ + {named[1].relative_to(root).as_posix()}/", False, val_fraction, seed)
        elif masks_beside(root):  # x.tif beside x_mask.tif (LGG's kaggle_3m/ of patients, BUSI's class folders)
            splits = _beside(root, val_fraction, seed)
        elif exports := export_splits(root):  # a labelling tool's export: its polygons drawn as masks
            splits = _exports(root, exports, val_fraction, seed)
        elif labelme_splits(root):  # LabelMe's .json beside each image: their shapes drawn as masks
            splits = _labelme(root, val_fraction, seed)
        elif coco_files(root):
            splits = _coco_folder(root, val_fraction, seed)
        elif deeper := deeper_layout(root):
            splits = discover(deeper, val_fraction, seed)
            others = sorted(p.name + "/" for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                            and p not in deeper.parents and p != deeper)
            splits.read.insert(0, f"read in {deeper.relative_to(root).as_posix()}/, the one image-mask layout under "
                                   f"{root.name}/" + (f"; not read: {', '.join(others)}" if others else ""))
            return splits
        else:
            found = sorted(p.name + ("/" if p.is_dir() else "") for p in entries)
            raise DataError(
                f"{root}: no segmentation layout recognised. Looked for: images/ + masks/ folders (with classes.txt); "
                "train/ + train_labels/ (or trainannot/) folders with a class file; "
                "a Pascal VOC folder with JPEGImages/ and SegmentationClass/ (also under VOCdevkit/VOC20xx/); COCO "
                f"instances jsons (*.json or annotations/*.json). Found: {', '.join(found[:12])}"
                + ("..." if len(found) > 12 else "")
            )
    for name in ("train", "val"):
        if not getattr(splits, name):
            kinds = Counter(why.split(" (")[0] for _, why in splits.skipped)
            example = f", e.g. {splits.skipped[0][0]}: {splits.skipped[0][1]}" if splits.skipped else ""
            raise DataError(f"{root}: no usable image-mask pair left in the {name} split ({len(splits.skipped)} "
                            f"skipped: {', '.join(f'{n} {kind}' for kind, n in kinds.most_common(3))}{example})")
    return splits


# ------------------------------------------------------------------------------------------ checking
def _image_size(data: bytes, max_pixels: int | None) -> tuple[int, int] | str:
    """(width, height) after EXIF rotation of a fully decoded image, or why it cannot be used."""
    if not data:
        return "empty file (0 bytes)"
    try:
        with quiet_pil():
            _, w, h = image_header(data)
            if (too_large := too_large_reason(w, h, max_pixels)) is not None:
                return too_large
            open_image(data)
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
        return unreadable_reason(exc)
    return w, h


def _check(sample: SegSample, classes: list[str], classes_from: str) -> tuple[str, str]:
    """``("ok", "")``, ``("skip", why)`` or ``("error", message)``; fills ``key`` and ``class_pixels``."""
    try:
        data = sample.data.read() if sample.data is not None else sample.image.read_bytes()
    except OSError as exc:
        return "skip", f"cannot open file ({exc.strerror or exc})"
    size = _image_size(data, MAX_PIXELS)
    if isinstance(size, str):
        return "skip", size
    try:
        mask = sample.read_mask()
    except DataError as exc:
        return "error", str(exc)
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
        why = unreadable_reason(exc).replace("not a readable image", "not a readable PNG")
        return "skip", f"mask {sample.mask_name} unreadable: {why}"
    w, h = size
    if mask.shape != (h, w):
        return "error", (f"{sample.mask_name}: the mask is {mask.shape[1]} x {mask.shape[0]} pixels but its image "
                         f"{sample.image} is {w} x {h} (width x height, after EXIF rotation): a mask must have its "
                         "image's size. Check that they belong together")
    counts = np.bincount(mask.ravel(), minlength=256)
    n = len(classes)
    bad = [i for i in np.flatnonzero(counts[n:IGNORE_INDEX]) + n]
    if bad:
        return "error", (f"{sample.mask_name}: class index {bad[0]} ({counts[bad[0]]} pixels"
                         + (f"; also {', '.join(map(str, bad[1:4]))}" if len(bad) > 1 else "")
                         + f") but {classes_from} names {n} classes (indices 0..{n - 1}; 255 = ignore). Fix the "
                         "mask or name the class")
    sample.class_pixels = counts[:n].tolist()
    labels = hashlib.sha1(f"{mask.shape}".encode() + mask.tobytes()).hexdigest()
    sample.key = hashlib.sha1(f"{hashlib.sha1(data).hexdigest()}:{labels}".encode()).hexdigest()
    return "ok", ""


def check_samples(samples: list[SegSample], classes: list[str], classes_from: str,
                  skipped: list[tuple[str, str]]) -> list[SegSample]:
    """Decode every image and read every mask once (4 threads): the usable samples, in order.

    Unreadable images or masks are appended to ``skipped``; a mask of the wrong size or with an unnamed class
    index raises a DataError naming the file (and how many more such files there are).
    """
    ok, errors = [], []
    with ThreadPoolExecutor(4) as pool, progress_bar("Checking images and masks", len(samples)) as advance:
        for sample, (status, why) in zip(samples, pool.map(lambda s: _check(s, classes, classes_from), samples)):
            advance()
            if status == "ok":
                ok.append(sample)
            elif status == "skip":
                skipped.append((str(sample.image), why))
            else:
                errors.append(why)
    if errors:
        more = f" ({len(errors) - 1} more file(s) have errors like it)" if len(errors) > 1 else ""
        raise DataError(errors[0] + more)
    return ok


def _held_out(samples: list[SegSample], val_fraction: float, seed: int,
              where: str, by_folder: bool = False) -> tuple[list[SegSample], list[SegSample]]:
    """A seeded validation split; pairs with the same content (``by_folder``: in the same folder) stay on one side."""
    if len(samples) < 2:
        raise DataError(f"{where}: {len(samples)} usable image-mask pair(s); a validation split needs at least 2 "
                        "(or give a validation split)")
    groups = [str(s.image.parent) if by_folder else s.key for s in samples]
    train_idx, val_idx = stratified_split([0] * len(samples), val_fraction, seed, groups=groups)
    if not val_idx:
        raise DataError(f"{where}: all {len(samples)} image-mask pairs are copies of one; a validation split needs 2 "
                        "different ones")
    return [samples[i] for i in train_idx], [samples[i] for i in val_idx]


def _finish(splits: SegmentationSplits, given: dict[str, list[SegSample]], classes_from: str,
            val_fraction: float, seed: int, where: Path, by_folder: bool = False) -> SegmentationSplits:
    """Check the pairs of each given split; make the validation split when none was given (``by_folder``: each
    folder's pairs on one side)."""
    checked = {name: check_samples(items, splits.classes, classes_from, splits.skipped) for name, items in given.items()}
    if "val" not in checked:
        splits.train, splits.val = _held_out(checked.get("train", []), val_fraction, seed, where, by_folder)
        splits.val_held_out = True
        splits.read.append(f"validation: {len(splits.val)} pairs split off the {len(splits.train) + len(splits.val)} "
                            f"({val_fraction:.0%}, seed {seed}" + (", each folder's on one side)" if by_folder else ")"))
    else:
        splits.train, splits.val = checked.get("train", []), checked["val"]
    splits.test = checked.get("test", [])
    train_keys = {s.key for s in splits.train}
    for name in ("val", "test"):
        copies = [s for s in getattr(splits, name) if s.key in train_keys]
        if copies and not splits.val_held_out:
            splits.notes.append(f"{len(copies)} {name} pair(s) are identical to training pairs (e.g. {copies[0].image}): "
                                f"the {name} scores are optimistic")
    return splits


# ------------------------------------------------------------------------------------------ layouts
def _split_folders(folder: Path) -> dict[str, Path]:
    subdirs = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
    found = {}
    if "train" in subdirs:
        found["train"] = subdirs["train"]
    val = next((subdirs[n] for n in VAL_NAMES if n in subdirs), None)
    if val is not None:
        found["val"] = val
    if "test" in subdirs:
        found["test"] = subdirs["test"]
    return found


CLASS_FILE_LEVELS = 2  # folders above the data looked in for its class file (the Semantic Drone Dataset's)


def _class_file(root: Path, required: bool, layout: str) -> Path | None:
    """The class file in ``root`` (``CLASS_FILES``, or a ``*class_dict*.csv``: the Semantic Drone Dataset's
    ``class_dict_seg.csv``, the Massachusetts Roads' ``label_class_dict.csv``), else in one of the
    ``CLASS_FILE_LEVELS`` folders above it (the drone set's masks are in ``dataset/semantic_drone_dataset/``, two
    levels below its class file)."""
    found = None
    for folder in (root, root / "train", *list(root.absolute().parents)[:CLASS_FILE_LEVELS]):  # Roboflow's: in train/
        found = next((folder / n for n in CLASS_FILES if (folder / n).is_file()), None) or next(
            iter(sorted(folder.glob("*class_dict*.csv"))), None)
        if found is not None:
            break
    if found is None and required:
        raise DataError(f"{root}: no classes.txt; the {layout} layout needs one, with one class name per line "
                        "(line 1 = class index 0 in the masks, line 2 = index 1, ...)")
    return found


def _mask_folders(root: Path, val_fraction: float, seed: int) -> SegmentationSplits:
    images, masks = root / "images", root / "masks"
    classes_file = _class_file(root, required=False, layout="images/ + masks/")
    image_splits = _split_folders(images)
    folders = ({name: (folder, masks / folder.name) for name, folder in image_splits.items()} if image_splits
               else {"train": (images, masks)})
    if image_splits and "train" not in image_splits:
        raise DataError(f"{images} has {', '.join(f.name + '/' for f in image_splits.values())} but no train/ folder")
    return _pairs(root, folders, classes_file, "masks", bool(image_splits), val_fraction, seed)


def _paired(root: Path, folders: dict[str, tuple[Path, Path]], val_fraction: float, seed: int) -> SegmentationSplits:
    """Split folders beside their masks' folders (``paired_folders``), a class file beside them."""
    layout = f"{folders['train'][0].name}/ + {folders['train'][1].name}/"
    classes_file = _class_file(root, required=False, layout=layout)
    splits = _pairs(root, folders, classes_file, "paired folders", True, val_fraction, seed)
    if not _split_folders(root).keys() <= folders.keys():
        splits.notes.append(f"split folder(s) without a masks' folder beside them: not used "
                            f"({', '.join(sorted(set(_split_folders(root)) - set(folders)))})")
    return splits


def _pairs(root: Path, folders: dict[str, tuple[Path, Path]], classes_file: Path | None, layout: str,
           given_splits: bool, val_fraction: float, seed: int) -> SegmentationSplits:
    """The image-mask pairs of ``{split: (images folder, masks folder)}``: a mask has its image's relative path and stem
    (or the stem + ``_L``, ``_mask``...: ``MASK_STEM_SUFFIXES``), a lossless suffix; colours read by the class file's.
    Without a class file the masks must be binary (``_binary_masks``); JPEG masks are read only as binary ones."""
    classes, remap, colours, notes = (_class_table(classes_file) if classes_file is not None
                                      else (list(BINARY_CLASSES), None, None, []))
    splits = SegmentationSplits(classes, [], [], layout=layout, read=notes)
    given: dict[str, list[SegSample]] = {}
    for name, (image_dir, mask_dir) in folders.items():
        files = sorted(p for p in image_dir.rglob("*") if is_image_file(p))
        if name == "test" and not mask_dir.is_dir():
            splits.notes.append(f"{image_dir} has no {mask_dir}: not used as a test split (no masks to score)")
            continue
        if given_splits and not mask_dir.is_dir():
            raise DataError(f"{mask_dir} not found: the masks of {image_dir} go there (same file stem, .png)")
        if not files:
            raise DataError(f"No images in {image_dir} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        given[name] = []
        wanted = set()
        for file in files:
            stem = mask_dir / file.relative_to(image_dir).with_suffix("")
            candidates = [stem.with_name(stem.name + tail + ext) for ext in (*MASK_EXTENSIONS, *LOSSY_MASKS)
                          for tail in MASK_STEM_SUFFIXES]
            candidates.sort(key=lambda c: c.suffix in LOSSY_MASKS)  # a lossless mask first, any stem
            wanted.update(candidates)
            mask = next((c for c in candidates if c.is_file()), None)
            if mask is not None:
                given[name].append(SegSample(file, mask=mask, colours=colours, remap=remap))
            else:
                splits.skipped.append((str(file), f"no mask (looked for {candidates[0]})"))
        orphans = sorted(p for p in mask_dir.rglob("*") if p.suffix in (*MASK_EXTENSIONS, *LOSSY_MASKS)
                         and p not in wanted and not p.name.startswith("."))
        if orphans:
            splits.notes.append(f"{len(orphans)} mask(s) in {mask_dir} have no image (not used), e.g. {orphans[0].name}")
        if not given[name]:
            raise DataError(f"No image in {image_dir} has a mask in {mask_dir}: expected masks with the images' stems "
                            f"and .png (e.g. {mask_dir / files[0].with_suffix('.png').name}); found "
                            f"{', '.join(p.name for p in sorted(mask_dir.glob('*'))[:3]) or 'nothing'}")
    samples = [s for items in given.values() for s in items]
    lossy = [s for s in samples if s.mask is not None and s.mask.suffix in LOSSY_MASKS]
    if classes_file is not None:
        if lossy:
            raise DataError(f"{lossy[0].mask}: a JPEG mask ({len(lossy)} of them) blurs the class indices of "
                            f"{classes_file.name} at every edge; save the masks as PNG (JPEG masks are read only as "
                            "binary ones, without a class file)")
        return _finish(splits, given, str(classes_file), val_fraction, seed, root)
    classes_from, note = _binary_masks(root, samples, layout)
    splits.read.append(note)
    return _finish(splits, given, classes_from, val_fraction, seed, root)


def _binary_masks(root: Path, samples: list[SegSample], layout: str, names_file: str = "a classes.txt"
                  ) -> tuple[str, str]:
    """Masks without a class file: binary ones (0/1, or 0/255 as most tools save them, 255 then the foreground, or
    JPEGs thresholded at 128) are ``background`` and ``foreground`` (each sample told how to read its mask); any
    other values need a class file (a DataError naming them). Returns what the classes come from, and a note."""
    lossless = [s for s in samples if s.mask_data is not None or s.mask is not None and s.mask.suffix not in LOSSY_MASKS]
    values: set[int] = set()
    for s in lossless[:: max(1, len(lossless) // MASKS_LOOKED_AT)][:MASKS_LOOKED_AT]:
        values.update(np.unique(s.raw_mask()).tolist())
    if not values <= {0, 1, IGNORE_INDEX}:
        raise DataError(f"{root}: no class file, and the masks hold values {sorted(values)[:12]}: name the class of each "
                        f"value in {names_file} beside {layout} (line 1 = value 0, line 2 = value 1...; 255 = ignore). "
                        "Without one, masks must be binary: 0 and 1, or 0 and 255")
    zero_255 = values == {0, IGNORE_INDEX} or (not lossless)
    lut = None
    if zero_255:  # 0/255: 255 is the foreground here, not the ignore index
        lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        lut[0], lut[IGNORE_INDEX] = 0, 1
    for s in samples:
        s.binary = s.mask is not None and s.mask.suffix in LOSSY_MASKS
        s.remap = lut
    how = ("JPEG, grey level 128 and up the foreground" if not lossless else "0 and 255" if zero_255
           else "0 and 1" + (" (255 ignored)" if IGNORE_INDEX in values else ""))
    jpeg = (f"; {len(samples) - len(lossless)} JPEG mask(s) read as grey level >= 128"
            if lossless and len(lossless) < len(samples) else "")
    return (f"binary masks ({how}: background, foreground)",
            f"no class file: binary masks ({how}) read as background and foreground{jpeg} (a classes.txt names them)")


def _beside(root: Path, val_fraction: float, seed: int) -> SegmentationSplits:
    """Images with their masks beside them (``split_masks``: ``x.tif`` and ``x_mask.tif``), anywhere under ``root``;
    a class file beside them names the mask values, else they are binary. Images in several folders keep each
    folder's images on one side of the validation split (LGG's folder per patient: its slices are near-copies)."""
    images, masks = split_masks(sorted(p for p in root.rglob("*") if is_image_file(p)))
    unmasked = [image for image in images if image not in masks]
    folders = {image.parent for image in masks}
    layout = (f"images with their masks beside them ({next(iter(masks.values()))[0].name})"
              + (f" in split folders {', '.join(sorted(f.name + '/' for f in folders))}" if split_named(folders) else
                 f" in {len(folders)} folders" if len(folders) > 1 else ""))
    classes_file = _class_file(root, required=False, layout="masks beside images")
    classes, remap, colours, notes = (_class_table(classes_file) if classes_file is not None
                                      else (list(BINARY_CLASSES), None, None, []))
    splits = SegmentationSplits(classes, [], [], layout=layout, read=notes)
    samples = [SegSample(image, mask=found[0], colours=colours, remap=remap) for image, found in masks.items()]
    for image in unmasked:
        splits.skipped.append((str(image), "no mask beside it (looked for NAME_mask with a lossless suffix)"))
    several = sum(len(found) > 1 for found in masks.values())
    if several:
        splits.notes.append(f"{several} image(s) have several masks (e.g. {next(f for f in masks.values() if len(f) > 1)[1].name}"
                            "): the first is read")
    if classes_file is None:
        classes_from, note = _binary_masks(root, samples, layout)
        splits.read.append(note)
    else:
        classes_from = str(classes_file)
    if split_named(folders):  # train/, valid/, test/ of pairs (Roboflow's export): those splits
        given: dict[str, list[SegSample]] = {}
        for sample in samples:
            given.setdefault(SPLIT_FOLDERS[sample.image.parent.name.lower()], []).append(sample)
        return _finish(splits, given, classes_from, val_fraction, seed, root)
    return _finish(splits, {"train": samples}, classes_from, val_fraction, seed, root,
                   by_folder=len(folders) > 1)


def _voc_root(root: Path) -> Path | None:
    """The folder holding JPEGImages/ and SegmentationClass/: DATA, or VOC20xx/ or VOCdevkit/VOC20xx/ in it."""
    candidates = [root, *sorted(root.glob("VOC*")), *sorted(root.glob("VOCdevkit/VOC*"))]
    return next((c for c in candidates if (c / "JPEGImages").is_dir() and (c / "SegmentationClass").is_dir()), None)


def _voc(root: Path, val_fraction: float, seed: int) -> SegmentationSplits:
    classes_file = _class_file(root, required=False, layout="voc") or _class_file(root.parent, False, "voc")
    classes, remap, colours, notes = _class_table(classes_file)  # CVAT's exports: colour PNGs and labelmap.txt
    classes_from = str(classes_file) if classes_file else "the 21 Pascal VOC classes (no classes.txt or labelmap.txt)"
    splits = SegmentationSplits(classes, [], [], layout="voc", read=notes)
    images, masks = root / "JPEGImages", root / "SegmentationClass"
    lists = root / "ImageSets" / "Segmentation"
    ids: dict[str, tuple[Path, list[str]]] = {}
    for name, file in (("train", "train.txt"), ("val", "val.txt"), ("test", "test.txt")):
        if (lists / file).is_file():
            ids[name] = (lists / file, [ln.split()[0] for ln in (lists / file).read_text().splitlines() if ln.strip()])
    if "val" not in ids:
        pool = next((lists / f for f in ("trainval.txt", "train.txt") if (lists / f).is_file()), None)
        if pool is not None:
            ids = {"train": (pool, [ln.split()[0] for ln in pool.read_text().splitlines() if ln.strip()])}
        else:
            stems = sorted(p.stem for p in masks.glob("*.png") if not p.name.startswith("."))
            if not stems:
                raise DataError(f"No masks (.png) in {masks}")
            ids = {"train": (masks, stems)}
            unused = sum(1 for p in images.iterdir() if is_image_file(p) and not (masks / (p.stem + ".png")).is_file())
            if unused:
                splits.read.append(f"{unused} image(s) in {images} have no mask in {masks} (not used: VOC keeps "
                                    "detection-only images there too)")
    given: dict[str, list[SegSample]] = {}
    for name, (source, stems) in ids.items():
        if not stems:
            raise DataError(f"{source} lists no image ids")
        given[name] = []
        for stem in stems:
            image, mask = image_beside(images, stem), masks / f"{stem}.png"
            if image is None:
                splits.skipped.append((str(images / f"{stem}.jpg"), f"listed in {source.name} but the image is missing"))
            elif not mask.is_file():
                splits.skipped.append((str(image), f"no mask (looked for {mask})"))
            else:
                given[name].append(SegSample(image, mask=mask, colours=colours, remap=remap))
    return _finish(splits, given, classes_from, val_fraction, seed, root)


def _labelme(root: Path, val_fraction: float, seed: int) -> SegmentationSplits:
    """LabelMe's annotations (``tasks/labelme.py``): class 0 is ``background`` (pixels no shape covers), the labels
    follow sorted; each area shape is drawn as COCO's polygons are (smaller ones over larger ones)."""
    folders = labelme_splits(root)
    read = {split: [read_file(f) for f in sorted(folder.glob("*.json"))] for split, folder in folders.items()}
    labels = sorted({s.label for files in read.values() for f in files for s in f.shapes if s.outline() is not None})
    if not labels:
        raise DataError(f"{root}: no labelled area shape (polygon, rectangle, circle) in its LabelMe files")
    classes = [BACKGROUND, *[label for label in labels if label != BACKGROUND]]
    splits = SegmentationSplits(classes, [], [], layout="labelme")
    given, lines = {}, 0
    for split, files in read.items():
        given[split] = []
        for found in files:
            objects = []
            for shape in found.shapes:
                outline = shape.outline()
                if outline is None:
                    lines += 1
                    continue
                objects.append((classes.index(shape.label), [outline], False))
            given[split].append(SegSample(found.image, coco=CocoObjects(found.path, found.path.stem,
                                                                        round(found.height), round(found.width),
                                                                        objects)))
        if unannotated_images := unannotated(folders[split], files):
            splits.notes.append(f"{folders[split].name}/: {unannotated_images} image(s) without a LabelMe .json (not "
                                "annotated yet), not read")
    if lines:
        splits.notes.append(f"{lines} LabelMe shape(s) that mark no area (points, lines), not drawn")
    where = ", ".join(f"{folder.name}/ {len(read[split])}" for split, folder in folders.items())
    return _finish(splits, given, f"LabelMe {root.name} ({where}; background + {len(labels)} labels)", val_fraction,
                   seed, root)


def _yolo(root: Path, val_fraction: float, seed: int) -> SegmentationSplits:
    """A YOLO dataset (``detection.data.yolo_files``: ``data.yaml``, Ultralytics' ``-seg`` datasets and Roboflow's
    "YOLOv8 segmentation" exports): class 0 ``background``, the yaml's names after it; each polygon (and box) of an
    image's label file drawn as COCO's polygons are (smaller ones over larger ones)."""
    from headstart.tasks.detection.data import yolo_files, yolo_shapes

    found = yolo_files(root)
    names = found.classes
    classes = [BACKGROUND, *[n for n in names if n != BACKGROUND]]
    index = [classes.index(n) for n in names]
    splits = SegmentationSplits(classes, [], [], layout=f"{found.layout}, its polygons drawn as masks")
    given: dict[str, list[SegSample]] = {}
    boxes = unlabelled = 0
    for split, pairs in found.splits.items():
        given[split] = []
        for image, label in pairs:
            try:
                _, width, height = image_header(image)
            except Exception as exc:  # noqa: BLE001 - any decoder error: the file is skipped with its reason
                splits.skipped.append((str(image), unreadable_reason(exc)))
                continue
            shapes = yolo_shapes(label, len(names), found.names_file) if label is not None and label.is_file() else []
            unlabelled += label is None or not label.is_file()
            boxes += sum(box for *_, box in shapes)
            objects = [(index[cls], [[v for x, y in outline for v in (x * width, y * height)]], False)
                       for cls, outline, _ in shapes]
            given[split].append(SegSample(image, coco=CocoObjects(label or image, image.name, height, width, objects)))
    if unlabelled:
        splits.read.append(f"{unlabelled} image(s) without a label file: all background")
    if boxes:
        splits.notes.append(f"{boxes} shape(s) are boxes (class cx cy w h), not polygons: drawn as rectangles")
    return _finish(splits, given, f"{found.names_file} (background + {len(names)} classes)", val_fraction, seed, root)


def _exports(root: Path, exports: dict[str, Path], val_fraction: float, seed: int) -> SegmentationSplits:
    """A labelling tool's export (``tasks/exports/``: Label Studio's, CVAT's, VIA's, Supervisely's) or one per split
    folder: class 0 is ``background`` (pixels no region covers), the labels follow sorted; each polygon, rectangle,
    circle drawn as COCO's polygons are, each bitmap as its pixels (smaller regions over larger ones). Tasks not
    labelled yet are left out and counted."""
    read = {split: labelled_images(path) for split, path in exports.items()}  # each export parsed once
    labels = sorted({r.label for found in read.values() for t, _ in found.items for r in t.regions})
    if not labels:
        raise DataError(f"{root}: no labelled polygon, rectangle or bitmap in its export(s) "
                        f"({', '.join(p.name for p in exports.values())})")
    classes = [BACKGROUND, *[label for label in labels if label != BACKGROUND]]
    splits = SegmentationSplits(classes, [], [], layout="export")
    given: dict[str, list[SegSample]] = {}
    unlabelled = unread = 0
    for split, found in read.items():
        path = exports[split]
        unlabelled, unread = unlabelled + found.unlabelled, unread + found.unread
        given[split] = []
        for task, file in found.items:
            if not file.is_file():
                splits.skipped.append((str(file), f"not found (task {task.number} of {path.name} names it)"))
                continue
            try:
                _, width, height = image_header(file)
            except Exception as exc:  # noqa: BLE001 - any decoder error: the file is skipped with its reason
                splits.skipped.append((str(file), unreadable_reason(exc)))
                continue
            objects = [(classes.index(r.label), r.pixels if r.pixels is not None else
                        [[v for x, y in r.outline for v in (x * width, y * height)]], False)
                       for r in task.regions if len(r.outline) >= 3]
            given[split].append(SegSample(file, coco=CocoObjects(path, task.number, height, width, objects)))
    if unlabelled:
        splits.notes.append(f"{unlabelled} task(s) without an annotation (not labelled yet), not read")
    if unread:
        splits.notes.append(f"{unread} mark(s) that are no area drawn (points, lines, key points), not read")
    tool = tool_of(next(iter(exports.values())))
    where = ", ".join(f"{p.parent.name}/{p.name}" if len(exports) > 1 else p.name for p in exports.values())
    splits.layout = f"{tool} export {where}, its regions drawn as masks"
    return _finish(splits, given, f"{tool} export {where} (background + {len(labels)} labels)", val_fraction, seed,
                   root)


def _coco_classes(coco: dict, path: Path) -> tuple[list[str], dict[Any, int]]:
    cats = sorted(coco["categories"], key=lambda c: c["id"])
    names = [BACKGROUND] + [str(c["name"]) for c in cats]
    if len(names) > MAX_CLASSES:
        raise DataError(f"{path}: {len(cats)} categories; at most {MAX_CLASSES - 1} fit in 8-bit masks with background")
    return names, {c["id"]: i + 1 for i, c in enumerate(cats)}


def _load_coco(path: Path) -> dict:
    try:
        coco = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not a readable COCO json: {exc}") from exc
    if not isinstance(coco, dict):
        raise DataError(f"{path}: expected a COCO instances json (an object with 'images', 'annotations', "
                        f"'categories'), found a {type(coco).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise DataError(f"{path}: expected a COCO instances file with a '{key}' list; found keys {sorted(coco)[:8]}")
    if not coco["categories"]:
        raise DataError(f"{path}: 'categories' is empty")
    return coco


def _valid_segmentation(seg: Any, h: int, w: int, where: str) -> None:
    if isinstance(seg, list):
        if not seg or not all(isinstance(p, list) and len(p) % 2 == 0 and all(isinstance(v, (int, float)) for v in p)
                              for p in seg):
            raise DataError(f"{where}: expected 'segmentation' polygons [[x1, y1, x2, y2, ...], ...] (pixels), "
                            f"found {str(seg)[:80]}")
        return
    if isinstance(seg, dict) and isinstance(seg.get("counts"), (list, str)) and isinstance(seg.get("size"), list):
        if [int(v) for v in seg["size"]] != [h, w]:
            raise DataError(f"{where}: the RLE mask is {seg['size'][1]} x {seg['size'][0]} but the image is "
                            f"{w} x {h} ('size' is [height, width])")
        if isinstance(seg["counts"], list) and sum(int(c) for c in seg["counts"]) != h * w:
            raise DataError(f"{where}: the uncompressed RLE counts add up to {sum(seg['counts'])} pixels, the image "
                            f"has {h} x {w} = {h * w}")
        return
    raise DataError(f"{where}: expected 'segmentation' as polygons or an RLE {{'size': [h, w], 'counts': ...}}; found "
                    f"{str(seg)[:80]} (a detection json without masks cannot train segmentation)")


def _coco_samples(path: Path, coco: dict, index: dict[Any, int], image_dirs: Sequence[Path],
                  splits: SegmentationSplits) -> list[SegSample]:
    if not coco["images"]:
        raise DataError(f"{path}: 'images' is empty")
    images = {}
    for im in coco["images"]:
        if not isinstance(im, dict) or "id" not in im or not im.get("file_name"):
            raise DataError(f"{path}: each entry of 'images' needs an 'id' and a 'file_name'; found {str(im)[:80]}")
        if int(im.get("height") or 0) <= 0 or int(im.get("width") or 0) <= 0:
            raise DataError(f"{path}: image id {im['id']} ({im['file_name']}) has no width/height; COCO images need both")
        images[im["id"]] = im
    objects: dict[Any, list[tuple[int, Any, bool]]] = {i: [] for i in images}
    tiny = 0
    for ann in coco["annotations"]:
        where = f"{path}: annotation id {ann.get('id')}"
        if ann.get("category_id") not in index:
            raise DataError(f"{where}: category_id {ann.get('category_id')} has no entry in 'categories' "
                            f"(known ids {sorted(index)[:10]})")
        im = images.get(ann.get("image_id"))
        if im is None:
            raise DataError(f"{where}: image_id {ann.get('image_id')} has no entry in 'images'")
        h, w = int(im["height"]), int(im["width"])
        seg = ann.get("segmentation")
        _valid_segmentation(seg, h, w, where)
        if isinstance(seg, list) and not any(len(p) >= 6 for p in seg):
            tiny += 1
            continue
        objects[ann["image_id"]].append((index[ann["category_id"]], seg, bool(ann.get("iscrowd", 0))))
    if tiny:
        splits.notes.append(f"{path.name}: {tiny} annotation(s) with polygons of fewer than 3 points were not drawn")
    dirs = [*image_dirs, path.parent, path.parent / "images", path.parent.parent / "images", path.parent.parent]
    samples = []
    for image_id, im in images.items():
        name = Path(str(im.get("file_name", "")))
        h, w = int(im["height"]), int(im["width"])
        file = name if name.is_absolute() else next((d / name for d in dirs if (d / name).is_file()), None)
        if file is None:
            splits.skipped.append((str(name), f"listed in {path.name} but not found in {', '.join(map(str, dirs[:3]))}"))
            continue
        samples.append(SegSample(file, coco=CocoObjects(path, image_id, h, w, objects[image_id])))
    if not samples:
        first = images[next(iter(images))].get("file_name")
        raise DataError(f"{path}: none of its {len(images)} images was found (e.g. {first}); looked in "
                        f"{', '.join(map(str, dirs))}")
    return samples


def _coco_file(path: Path, val_fraction: float, seed: int) -> SegmentationSplits:
    coco = _load_coco(path)
    classes, index = _coco_classes(coco, path)
    splits = SegmentationSplits(classes, [], [], layout="coco")
    samples = _coco_samples(path, coco, index, [], splits)
    return _finish(splits, {"train": samples}, f"{path} (background + {len(classes) - 1} categories)",
                   val_fraction, seed, path)


def _coco_folder(root: Path, val_fraction: float, seed: int) -> SegmentationSplits:
    jsons = coco_files(root)
    by_split = {}
    for name, pattern in (("train", r"train"), ("val", r"val"), ("test", r"test")):
        match = [p for p in jsons if re.search(pattern, p.stem, re.IGNORECASE)]
        if match:
            by_split[name] = match[0]
    if "train" not in by_split:
        if len(jsons) == 1:
            return _coco_file(jsons[0], val_fraction, seed)
        raise DataError(f"{root}: expected COCO jsons with 'train' and 'val' in their names (e.g. annotations/"
                        f"instances_train2017.json), found {[p.name for p in jsons]}")
    splits = SegmentationSplits([], [], [], layout="coco")
    given: dict[str, list[SegSample]] = {}
    for name, path in by_split.items():
        coco = _load_coco(path)
        if name == "test" and not coco["annotations"]:
            splits.notes.append(f"{path.name} has no annotations: not used as a test split")
            continue
        classes, index = _coco_classes(coco, path)
        if splits.classes and classes != splits.classes:
            raise DataError(f"{path} lists other categories than {by_split['train']}: {classes[1:6]}... vs "
                            f"{splits.classes[1:6]}...")
        splits.classes = classes
        sub = path.stem.split("_")[-1]  # instances_val2017 -> val2017
        dirs = [root / "images" / sub, root / sub, root / "images" / name, root / name]
        given[name] = _coco_samples(path, coco, index, dirs, splits)
    return _finish(splits, given, f"{by_split['train']} (background + {len(splits.classes) - 1} categories)",
                   val_fraction, seed, root)
