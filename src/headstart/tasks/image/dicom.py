"""DICOM files (what scanners, PACS exports and medical datasets hold) read as images, with pydicom.

A file's pixels become what a DICOM viewer shows: the modality LUT first (Rescale Slope / Intercept, so a CT
holds Hounsfield units), then the file's first VOI window (Window Center / Width, linear or sigmoid) or VOI LUT
when it has one, giving an 8-bit image; MONOCHROME1 (where a low value is white) is inverted so that every file
shows bone, or whatever is dense, the same way; palette and YBR colour become RGB. A grey file without a window
keeps its values, as a float image, for ``decode.to_rgb`` to scale (or ``data.intensity`` to window) like any
16-bit scan. Multi-frame files (cine loops, volumes) and files without pixels are refused with their reason, as
are compressed files whose decoder is not installed (``pip install 'headstart[dicom]'`` adds them).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

DICOM_SUFFIXES = (".dcm", ".dicom")
PREAMBLE = 128  # a DICOM file: 128 bytes, then "DICM", then the file meta information
MAGIC = b"DICM"
OTHER_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm",  # what PIL reads
                        ".jfif", ".jpe", ".pbm", ".pnm", ".tga", ".jp2", ".j2k",  # .jfif: JPEGs as browsers save them
                        ".heic", ".heif", ".avif")  # phone photos: HEIF via pillow-heif, AVIF via Pillow >= 11.3
# (.ppm: GTSRB's images as first published, and torchvision's GTSRB)
CODECS = "pip install 'headstart[dicom]' (pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg)"


class DicomError(ValueError):
    """A DICOM file that holds no image headstart can read; the message says why, in the user's words."""


def is_dicom(source: bytes | Path) -> bool:
    """Whether a file (or its bytes) is DICOM: the ``DICM`` marker after the preamble, or a .dcm / .dicom name."""
    if isinstance(source, bytes):
        return source[PREAMBLE:PREAMBLE + len(MAGIC)] == MAGIC
    if source.suffix.lower() in DICOM_SUFFIXES:
        return True
    if source.suffix.lower() in OTHER_IMAGE_SUFFIXES:  # a .jpg is not opened to look (decoding's hot path)
        return False
    try:
        with open(source, "rb") as f:
            return f.read(PREAMBLE + len(MAGIC))[PREAMBLE:] == MAGIC
    except OSError:
        return False


def _read(source: bytes | Path, pixels: bool):
    import pydicom
    from pydicom.errors import InvalidDicomError

    force = not isinstance(source, bytes) and source.suffix.lower() in DICOM_SUFFIXES  # old files without a preamble
    try:
        ds = pydicom.dcmread(io.BytesIO(source) if isinstance(source, bytes) else source,
                             stop_before_pixels=not pixels, force=force)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError) as exc:
        raise DicomError(f"not a readable DICOM file ({type(exc).__name__}: {exc})") from None
    if "Rows" not in ds or "Columns" not in ds:
        kind = f" (a {ds.Modality} object)" if "Modality" in ds else ""
        raise DicomError(f"a DICOM file with no image{kind}: it has no Rows / Columns")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DicomError(f"a multi-frame DICOM file ({frames} frames, e.g. a cine loop or a volume): headstart reads "
                         "single images; export the frames to learn from as files of their own")
    return ds


def dicom_size(source: bytes | Path) -> tuple[int, int]:
    """(width, height) of a DICOM image, from its header (pixels not read)."""
    ds = _read(source, pixels=False)
    return int(ds.Columns), int(ds.Rows)


def read_dicom(source: bytes | Path) -> Image.Image:
    """The image of a single-frame DICOM file: 8-bit ``L`` when the file has a VOI window or LUT, ``RGB`` for colour,
    else ``F`` (float) holding the modality values (MONOCHROME1 inverted). Raises ``DicomError`` with the reason."""
    ds = _read(source, pixels=True)
    try:
        pixels = ds.pixel_array  # YBR colour comes back as RGB
    except AttributeError:
        raise DicomError(f"a DICOM file with no pixel data (a {ds.get('Modality', 'non-image')} object)") from None
    except (RuntimeError, NotImplementedError) as exc:
        syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        name = getattr(syntax, "name", str(syntax or "an unknown transfer syntax"))
        if "missing" in str(exc) or "no pixel data handlers" in str(exc):
            raise DicomError(f"compressed DICOM ({name}) whose decoder is not installed: {CODECS}") from None
        first = str(exc).strip().splitlines()[-1].strip()
        raise DicomError(f"compressed DICOM ({name}) that its decoders could not read ({first})") from None
    except ValueError as exc:  # truncated pixel data, inconsistent group 0028 elements
        raise DicomError(f"a damaged DICOM file ({exc})") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        return Image.fromarray(_to_uint8(apply_color_lut(pixels, ds)), "RGB")
    if pixels.ndim == 3:  # RGB (YBR already converted)
        return Image.fromarray(_to_uint8(pixels, int(ds.get("BitsStored", 8))), "RGB")
    from pydicom.pixels import apply_modality_lut

    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    shown = _voi(values, ds)
    invert = photometric == "MONOCHROME1"
    if shown is not None:
        return Image.fromarray(255 - shown if invert else shown, "L")
    if invert:
        values = values.max(initial=0) + values.min(initial=0) - values
    return Image.fromarray(values.astype(np.float32), "F")


def _voi(values: np.ndarray, ds) -> np.ndarray | None:
    """The file's first VOI window (or VOI LUT) applied, as uint8, or None when the file has neither."""
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None and width >= 1:
        if str(ds.get("VOILUTFunction", "LINEAR")).upper() == "SIGMOID":
            out = 255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
        else:  # LINEAR (PS3.3 C.11.2.1.2.1); LINEAR_EXACT differs by half a level
            out = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0
        return np.rint(np.clip(out, 0, 255)).astype(np.uint8)
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        from pydicom.pixels import apply_voi_lut

        item = ds.VOILUTSequence[0]
        bits = int(item.LUTDescriptor[2]) if "LUTDescriptor" in item else 16
        out = np.asarray(apply_voi_lut(values.astype(np.int64), ds, index=0), dtype=np.float64)
        return np.rint(np.clip(out * 255.0 / (2 ** bits - 1), 0, 255)).astype(np.uint8)
    return None


def _first(value) -> float | None:
    """A window element's first value (files may list several windows), or None."""
    if value is None or value == "":
        return None
    try:
        return float(value if isinstance(value, (str, int, float)) else value[0])
    except (TypeError, ValueError, IndexError):
        return None


def _to_uint8(pixels: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Colour samples as uint8: 8-bit as they are, deeper ones scaled from their stored (or type's) range."""
    if pixels.dtype == np.uint8:
        return pixels
    top = float(2 ** bits - 1) if bits else float(np.iinfo(pixels.dtype).max)
    return np.rint(np.clip(pixels.astype(np.float64) * (255.0 / top), 0, 255)).astype(np.uint8)
