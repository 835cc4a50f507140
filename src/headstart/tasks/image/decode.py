"""Decoding image files to 8-bit RGB with numpy, PIL and pydicom only (no torch): training, predict and the ONNX engine.

Decoding turns any image file into 8-bit RGB without clipping: 16-bit (``I;16``), 32-bit integer
(``I``) and float (``F``) images are scaled to 0-255, never cut at 255. With intensity ``window``
(``data.intensity``, recorded as ``spec.extra["intensity"]``) every image is also stretched to its
own 0.5-99.5th percentiles (to its min..max when it has few distinct values): scans stored with
values 0..2 or 1000..1300 become visible images. ``off`` decodes 8-bit images exactly as PIL does.
DICOM files (``dicom``) come in as their viewer shows them: windowed by the file when it says how, else as values.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from headstart.errors import DataError
from headstart.tasks.image.dicom import DicomError, dicom_size, is_dicom, read_dicom
from headstart.tasks.tables import IMAGE_SUFFIXES

_INTERPOLATION = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}

INTENSITY_MODES = ("off", "window", "auto")  # auto (decode only): window the images that need it
WINDOW_PERCENTILES = (0.5, 99.5)
FEW_LEVELS = 32  # images with at most this many distinct values are windowed to their min..max
LOW_RANGE = 32  # an 8-bit image whose 0.5-99.5th percentiles span fewer levels (1/8 of 0-255) has little range


HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1")  # iPhone photos
AVIF_BRANDS = (b"avif", b"avis")


class CodecError(ValueError):
    """An image in a format whose decoder is not installed; the message names what to install."""


def _register_heif() -> bool:
    """Register pillow-heif's HEIF opener with PIL (its documented plugin hook); False when it is not installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


HEIF_READABLE = _register_heif()


def _missing_codec(head: bytes) -> str | None:
    """Why PIL cannot open an image whose first bytes are ``head``, when a decoder is missing, else None."""
    brand = head[8:12] if head[4:8] == b"ftyp" else b""  # ISO base media file: HEIF and AVIF
    if brand in HEIF_BRANDS and not HEIF_READABLE:
        return "a HEIC/HEIF photo (what iPhones take), and pillow-heif is not installed: pip install pillow-heif"
    if brand in AVIF_BRANDS:
        from PIL import features

        if not features.check("avif"):
            return f"an AVIF image, which this Pillow ({Image.__version__}) cannot read: pip install 'pillow>=11.3'"
    return None


def _open(data: bytes | Path) -> Image.Image:
    """``Image.open``, with CodecError naming what to install for a format whose decoder is missing."""
    try:
        return Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    except Image.UnidentifiedImageError:
        if isinstance(data, bytes):
            head = data[:16]
        else:
            with Path(data).open("rb") as f:
                head = f.read(16)
        why = _missing_codec(head)
        if why is None:
            raise
        raise CodecError(why) from None


def decode(data: bytes | Path, short_side: int, interpolation: str, intensity: str = "off") -> Image.Image:
    """Decode an image file (EXIF-rotated, 8-bit RGB) and resize its shorter side to ``short_side``.

    ``intensity``: ``off`` (8-bit files as PIL decodes them; higher depths scaled to 0-255), ``window``
    (every image stretched to its own percentiles, see ``to_rgb``) or ``auto`` (``window`` for the images
    that ``intensity_issue`` flags, ``off`` for the others). Raises whatever PIL raises for unreadable or
    truncated files.
    """
    return resize(to_rgb(open_image(data, short_side), intensity), short_side, interpolation)


def open_image(data: bytes | Path, short_side: int | None = None) -> Image.Image:
    """The file's image at its own depth (EXIF-rotated; DICOM as a viewer shows it, see ``dicom``).

    With ``short_side``, JPEGs much larger than it are decoded at a reduced scale."""
    if is_dicom(data):
        return read_dicom(data)
    image = _open(data)
    if short_side and image.format == "JPEG":  # decode at a reduced scale when the photo is much larger
        image.draft("RGB", (2 * short_side, 2 * short_side))
    image.load()
    return on_white(ImageOps.exif_transpose(image))


TRANSPARENT = "transparent"  # ``Image.info`` key of an image ``on_white`` composited


def on_white(image: Image.Image) -> Image.Image:
    """An image with transparent pixels composited onto white, as a viewer shows it (RGB; ``info["transparent"]``
    set); others unchanged. ``convert("RGB")`` alone would show what the file keeps under its transparent pixels:
    black in most cutouts, anything in some, so that one object would be seen on several backgrounds."""
    if image.mode not in ("RGBA", "LA", "PA", "La", "RGBa") and "transparency" not in image.info:
        return image
    rgba = image.convert("RGBA")
    if rgba.getchannel("A").getextrema()[0] == 255:  # an alpha channel that hides nothing
        return image
    flat = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    flat.info[TRANSPARENT] = True
    return flat


def image_header(data: bytes | Path) -> tuple[str, int, int]:
    """(format, width, height) of an image file or its bytes as displayed (EXIF rotation applied), from its header."""
    if is_dicom(data):
        return ("DICOM", *dicom_size(data))
    with _open(data) as image:
        w, h = image.size
        return image.format or "?", *((h, w) if image.getexif().get(0x0112) in (5, 6, 7, 8) else (w, h))


def resize(image: Image.Image, short_side: int, interpolation: str) -> Image.Image:
    w, h = image.size
    scale = short_side / min(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return image.resize(size, _INTERPOLATION.get(interpolation, Image.Resampling.BILINEAR), reducing_gap=3.0)


def bit_depth(image: Image.Image) -> str | None:
    """``16-bit``, ``32-bit integer`` or ``float`` for images that 8-bit RGB cannot hold as they are, else None."""
    if image.mode.startswith("I;16"):
        return "16-bit"
    if image.mode.startswith("I"):
        return "32-bit integer"
    if image.mode.startswith("F"):
        return "float"
    return None


def intensity_issue(image: Image.Image) -> str | None:
    """Why an image (from ``open_image``) needs windowing to be seen, or None.

    16-bit, 32-bit integer and float images, and 8-bit images whose values (0.5-99.5th percentiles,
    all channels together) span fewer than ``LOW_RANGE`` of the 256 levels.
    """
    depth = bit_depth(image)
    if depth is not None:
        return depth
    counts = np.asarray(_eight_bit(image).histogram(), dtype=np.int64).reshape(-1, 256).sum(axis=0)
    lo, hi = _count_percentiles(counts)
    if hi - lo < LOW_RANGE:
        return f"little range (values span {hi - lo + 1} of 256 levels)"
    return None


def to_rgb(image: Image.Image, intensity: str = "off") -> Image.Image:
    """8-bit RGB of an image from ``open_image`` (same size).

    ``off``: 8-bit images as ``convert("RGB")``; 16-bit values / 257; 32-bit integers in 0..65535 / 257;
    floats in [0, 1] x 255; other integer or float ranges windowed to the image's min..max.
    ``window``: every image stretched linearly so that its 0.5th..99.5th percentiles (min..max when it has
    at most ``FEW_LEVELS`` distinct values) map to 0..255, all channels together; a constant image as ``off``.
    ``auto``: ``window`` when ``intensity_issue`` flags the image, else ``off``.
    """
    if intensity not in INTENSITY_MODES:
        raise ValueError(f"intensity must be one of {INTENSITY_MODES}, not {intensity!r}")
    if intensity == "auto":
        intensity = "window" if intensity_issue(image) else "off"
    depth = bit_depth(image)
    if depth is None and intensity == "off":
        return image.convert("RGB")
    values = np.asarray(_eight_bit(image)) if depth is None else _native_values(image)
    lo, hi = _window(values) if intensity == "window" else (None, None)
    if lo is None or hi <= lo:
        lo, hi = _fixed_range(values)
    out = _stretch(values, lo, hi)
    return Image.fromarray(out, "RGB" if out.ndim == 3 else "L").convert("RGB")


def _eight_bit(image: Image.Image) -> Image.Image:
    return image if image.mode in ("L", "RGB") else image.convert("RGB")


def _native_values(image: Image.Image) -> np.ndarray:
    """A single-channel high-depth image as a numpy array of its values (native byte order; NaN/inf kept)."""
    values = np.asarray(image)
    return values.astype(values.dtype.newbyteorder("=")) if not values.dtype.isnative else values


def _fixed_range(values: np.ndarray) -> tuple[float, float]:
    """The 'off' mapping's lo..hi: the full range of the type where it has one, else the image's min..max."""
    if values.dtype == np.uint8:
        return 0.0, 255.0
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    if values.dtype.kind in "iu" and lo >= 0 and hi <= 65535:
        return 0.0, 65535.0
    if values.dtype.kind == "f" and lo >= 0 and hi <= 1:
        return 0.0, 1.0
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _window(values: np.ndarray) -> tuple[float | None, float]:
    """The window of ``window``: the 0.5-99.5th percentiles, or min..max for images with few levels."""
    flat = values.ravel()
    if flat.dtype.kind == "f":
        flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return None, 0.0
    lo, hi = flat.min(), flat.max()
    if flat.dtype.kind in "iu" and int(hi) - int(lo) <= 1 << 20:  # exact, from the histogram of levels
        counts = np.bincount(flat)[int(lo):] if lo >= 0 else np.bincount(flat.astype(np.int64) - int(lo))
        if np.count_nonzero(counts) <= FEW_LEVELS:
            return float(lo), float(hi)
        p_lo, p_hi = _count_percentiles(counts)
        return float(lo) + p_lo, float(lo) + p_hi
    sample = flat[:: max(1, flat.size // 1_000_000)]
    if np.unique(sample).size <= FEW_LEVELS:
        return float(lo), float(hi)
    p_lo, p_hi = np.percentile(sample.astype(np.float64), WINDOW_PERCENTILES)
    return (float(p_lo), float(p_hi)) if p_hi > p_lo else (float(lo), float(hi))


def _count_percentiles(counts: np.ndarray) -> tuple[int, int]:
    """The levels at the ``WINDOW_PERCENTILES`` of a histogram of integer levels."""
    cum = np.cumsum(counts)
    n = int(cum[-1])
    lo = int(np.searchsorted(cum, n * WINDOW_PERCENTILES[0] / 100, side="right"))
    hi = int(np.searchsorted(cum, n * WINDOW_PERCENTILES[1] / 100, side="left"))
    return min(lo, len(counts) - 1), min(hi, len(counts) - 1)


def _stretch(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``values`` mapped linearly so that lo..hi -> 0..255, clipped and rounded to uint8 (NaN -> 0)."""
    scale = 255.0 / (hi - lo)
    top = int(values.max(initial=0)) if values.dtype.kind in "iu" else -1
    if 0 <= top <= 65535 and (values.dtype.kind == "u" or values.min(initial=0) >= 0):  # a lookup table per level
        levels = np.arange(top + 1, dtype=np.float64)
        table = np.rint(np.clip((levels - lo) * scale, 0, 255)).astype(np.uint8)
        return table[values]
    out = (values.astype(np.float64) - lo) * scale
    out = np.nan_to_num(out, nan=0.0, posinf=255.0, neginf=0.0)
    return np.rint(np.clip(out, 0, 255)).astype(np.uint8)


IMAGE_EXTENSIONS = set(IMAGE_SUFFIXES)


def is_image_file(path: Path) -> bool:
    """A file with an image extension that is not hidden, or a DICOM file named without one (PACS exports)."""
    if path.name.startswith(".") or not path.is_file():
        return False
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    numbered = not path.suffix or path.suffix[1:].isdigit()  # IM000001, or a UID: 1.2.840.113619.2.55.3.504
    return numbered and path.name != "DICOMDIR" and is_dicom(path)


def image_beside(folder: Path, stem: str) -> Path | None:
    """The image file ``folder/stem.<suffix>`` for the first image suffix (any case) that exists, or None."""
    for suffix in IMAGE_SUFFIXES:
        for cased in (suffix, suffix.upper()):
            if (folder / (stem + cased)).is_file():
                return folder / (stem + cased)
    return None


MEMORY_NAME = "<memory {}>"  # how predictions name an image held in memory: its place among the inputs


def predict_items(inputs: Any) -> list[Any]:
    """``predict``'s inputs as a list: a file, folder, bytes, PIL image, array or tensor alone is one item (a 4-D array
    or tensor, N x H x W x C or N x C x H x W, is N images)."""
    if isinstance(inputs, (str, Path, bytes, Image.Image)):
        return [inputs]
    if getattr(getattr(inputs, "dtype", None), "kind", "") in ("O", "U", "S"):
        return list(inputs)  # an array or a pandas Series of paths
    if _is_array(inputs):
        return list(inputs) if len(inputs.shape) == 4 else [inputs]
    try:
        return list(inputs)
    except TypeError:  # a number...: image_files names what it is
        return [inputs]


def _is_tensor(item: Any) -> bool:
    return hasattr(item, "detach") and hasattr(item, "shape")


def _is_array(item: Any) -> bool:
    """A NumPy array (or anything NumPy reads as one, with a shape) or a torch tensor."""
    return hasattr(item, "shape") and hasattr(item, "__array__") or _is_tensor(item)


def in_memory(item: Any) -> bytes | None:
    """An image held in memory as the bytes of a lossless file (PNG; TIFF for float and 32-bit values), decoded as
    any file is; None when ``item`` is not one. A PIL image has its EXIF orientation applied, as its file would. A
    NumPy array or torch tensor is H x W, H x W x C or C x H x W (C: 1, 3 or 4, RGB(A)) of uint8, uint16, bool or
    integers, or of floats: in 0..1 for colour (torchvision's ``ToTensor``), any range for one channel (a scan's)."""
    if isinstance(item, (str, Path)):  # a path (NumPy's str_ too, which has a shape)
        return None
    if isinstance(item, Image.Image):
        image = ImageOps.exif_transpose(item)
        if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I", "F"):
            image = image.convert("RGB")  # CMYK, YCbCr, LAB: as their files decode
    elif _is_array(item):
        image = _array_image(item.detach().cpu().numpy() if _is_tensor(item) else np.asarray(item))
    else:
        return None
    out = io.BytesIO()
    image.save(out, "TIFF" if image.mode in ("I", "F") else "PNG")
    return out.getvalue()


def _array_image(array: np.ndarray) -> Image.Image:
    """A PIL image of an array's values (``in_memory``); a DataError says what shape or values were expected."""
    expected = ("H x W, H x W x C or C x H x W (C: 1, 3 or 4) of uint8, uint16 or bool, or floats in 0..1 "
                "(any range for one channel)")
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # C x H x W: a tensor's layout
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or array.ndim == 3 and array.shape[-1] not in (3, 4) or not array.size:
        raise DataError(f"An image in memory must be {expected}; found an array of shape {tuple(array.shape)}")
    kind = array.dtype.kind
    if kind == "b":
        array = array.astype(np.uint8) * 255
    elif kind == "f":
        if not np.isfinite(array).all():
            raise DataError("An image in memory holds NaN or infinite values")
        if array.ndim == 2:
            return Image.fromarray(array.astype(np.float32), "F")  # as a float TIFF: decoded to its own range
        if array.min() < 0 or array.max() > 1:
            raise DataError(f"A colour image in memory of floats must hold values in 0..1 (torchvision's ToTensor); "
                            f"found {float(array.min()):.3g}..{float(array.max()):.3g} (normalised? pass it before "
                            "normalisation, or as uint8)")
        array = np.rint(array * 255).astype(np.uint8)
    elif kind in "iu":
        if array.min() < 0 or array.max() > 65535:
            raise DataError(f"An image in memory of integers must hold values in 0..65535; found "
                            f"{int(array.min())}..{int(array.max())}")
        if array.ndim == 3 and array.dtype != np.uint8:  # colour of 16 bits: as an image file of 8 would hold it
            array = (array.astype(np.float64) / (257 if array.max() > 255 else 1)).round().astype(np.uint8)
        elif array.dtype not in (np.uint8, np.uint16):
            array = array.astype(np.uint16 if array.max() > 255 else np.uint8)
    else:
        raise DataError(f"An image in memory must be {expected}; found values of type {array.dtype}")
    return Image.fromarray(np.ascontiguousarray(array))  # uint16: I;16, saved as a 16-bit PNG


def not_an_input(item: Any) -> DataError:
    """The error for an input ``predict`` cannot take."""
    return DataError(f"Cannot predict a {type(item).__name__}: expected image files or folders, the bytes of an image "
                     "file, PIL images, or NumPy arrays / torch tensors of pixels")


def image_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files from a mix of files and folders (folders searched recursively, without the masks beside their
    images: ``segmentation.split_masks``), as ``predict`` takes them."""
    from headstart.tasks.segmentation import split_masks

    files: list[Path] = []
    for item in inputs:
        if not isinstance(item, (str, Path)):
            raise not_an_input(item)
        p = Path(item)
        if p.is_dir():
            files += split_masks(sorted(q for q in p.rglob("*") if is_image_file(q)))[0]
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"Not found: {p}")
    if not files:
        raise DataError(f"No image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {', '.join(map(str, inputs))}")
    return files


def _file_stem(name: str) -> str:
    """``name`` without an image suffix, any character outside letters, digits, ``.``, ``-`` and ``_`` as ``_``."""
    suffix = Path(name).suffix
    stem = name[:-len(suffix)] if suffix.lower() in IMAGE_EXTENSIONS else name
    return re.sub(r"[^\w.-]+", "_", stem).strip("_") or "image"


@dataclass(frozen=True)
class OutputFolder:
    """A folder (a path, ``os.PathLike``) receiving one output file per input image, named once for a whole job: a
    batch job (``predict --out``) predicts chunk by chunk, and ``a/x.jpg`` and ``b/x.jpg`` in different chunks must
    not both write ``x``. ``names``: ``output_stems`` of every input of the job, by ``str(Path(input))``."""

    path: Path
    names: dict[str, str]

    @classmethod
    def of(cls, folder: str | Path, inputs: Sequence[str | Path]) -> OutputFolder:
        return cls(Path(folder), dict(zip((str(Path(i)) for i in inputs), output_stems(inputs))))

    def __fspath__(self) -> str:
        return str(self.path)


def output_stems(paths: Sequence[str | Path], folder: str | Path | OutputFolder | None = None) -> list[str]:
    """A distinct output file name (no suffix) per input, for ``--save-masks`` / ``--save-images``; the names an
    ``OutputFolder`` chose for its whole job where ``folder`` is one.

    Each is the input's name without its image suffix; inputs that share one (``a/x.jpg`` and ``b/x.jpg``, ``x.jpg``
    and ``x.png``) get as many of their parent folders, joined by ``_``, as tells them apart (``a_x``, ``b_x``), else
    their suffix too (``x_jpg``), else their position (``x_2``): one image's outputs never overwrite another's. Images
    in memory keep their place in the name, in characters every file system takes (a table's row ``train.csv:12``:
    ``train.csv_12``; ``<memory 0>``: ``memory_0``).
    """
    if isinstance(folder, OutputFolder) and all(str(Path(p)) in folder.names for p in paths):
        return [folder.names[str(Path(p))] for p in paths]
    parts = [Path(p).parts for p in paths]
    stems = [_file_stem(Path(p).name) for p in paths]
    names = list(stems)
    for stem in {s for s in stems if stems.count(s) > 1}:
        same = [i for i, s in enumerate(stems) if s == stem]
        for depth in range(1, max(len(parts[i]) for i in same)):
            tried = ["_".join((*parts[i][-1 - depth: -1], stem)) for i in same]
            if len(set(tried)) == len(same):
                break
        else:
            tried = [f"{stem}_{Path(paths[i]).suffix.lstrip('.')}" for i in same]
        for i, name in zip(same, tried):
            names[i] = name
    seen: dict[str, int] = {}
    for i, name in enumerate(names):  # the same file given twice, or a built name that is another file's stem
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            names[i] = f"{name}_{seen[name]}"
    return names


def too_large_reason(width: int, height: int, max_pixels: int | None) -> str | None:
    """Why an image of ``width`` x ``height`` (read from its header) is not decoded, or None when it may be."""
    if max_pixels and width * height > max_pixels:
        return (f"image too large: {width} x {height} = {width * height / 1e6:.1f}M pixels, over data.max_pixels "
                f"({max_pixels / 1e6:.1f}M); not decoded. Downscale it")
    return None


def unreadable_reason(exc: Exception) -> str:
    """Why PIL could not decode a file, in words (never an object's repr or memory address)."""
    if isinstance(exc, (DicomError, CodecError)):
        return str(exc)
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not a readable image (not an image format PIL knows, or a damaged header)"
    if isinstance(exc, Image.DecompressionBombError):  # over twice PIL's limit: refused by PIL at open
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)) / 1e6:.1f}M pixels" if found else "too many pixels"
        return f"image too large: {size}, over data.max_pixels; not decoded. Downscale it"
    text = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the file", str(exc)).strip()
    return f"not a readable image ({type(exc).__name__}{': ' + text if text else ''})"


@contextmanager
def quiet_pil() -> Iterator[None]:
    """PIL's DecompressionBombWarning silenced while images are read: a too-large image is a reported skip."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield
