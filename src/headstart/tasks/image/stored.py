"""Images whose file bytes live inside another file (a Hugging Face dataset's Arrow or Parquet file): a reference
that reads them when asked (``Stored``), so that a dataset of 100k images is not held in memory as bytes.
``payload`` gives the bytes of an image held in memory or stored so."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np


@runtime_checkable
class Stored(Protocol):
    """An image file's bytes stored elsewhere, read by ``read`` (picklable: data-loading workers read them too)."""

    def read(self) -> bytes: ...


def payload(data: bytes | Stored) -> bytes:
    """The bytes of an image in memory or stored in another file."""
    return data if isinstance(data, bytes) else data.read()


def bitmap(pixels: np.ndarray) -> bytes:
    """An image (H x W or H x W x 3 uint8) as the bytes of an uncompressed BMP file, for images stored as pixels and
    read when needed: 0.2 ms to write and read at 256 x 256 where a PNG takes 10 ms (the bytes are not kept, so their
    size does not matter)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="BMP")
    return buf.getvalue()
