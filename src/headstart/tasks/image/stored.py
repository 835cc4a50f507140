"""Images whose file bytes live inside another file (a Hugging Face dataset's Arrow or Parquet file): a reference
that reads them when asked (``Stored``), so that a dataset of 100k images is not held in memory as bytes.
``payload`` gives the bytes of an image held in memory or stored so."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Stored(Protocol):
    """An image file's bytes stored elsewhere, read by ``read`` (picklable: data-loading workers read them too)."""

    def read(self) -> bytes: ...


def payload(data: bytes | Stored) -> bytes:
    """The bytes of an image in memory or stored in another file."""
    return data if isinstance(data, bytes) else data.read()
