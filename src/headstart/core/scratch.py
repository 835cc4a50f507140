"""Scratch tensors: big feature matrices in memory-mapped files instead of the process's own memory.

A tensor above ``limit_mb`` (``cache.memory_mb``) is backed by a file in a scratch folder (beside the feature cache,
or the temporary folder): its pages are the kernel's page cache, written out and read back as memory is needed, so
the process's anonymous memory (what runs out) stays flat however many images a run has. The file has no name: it
is an anonymous temporary file (``O_TMPFILE`` on Linux; elsewhere unlinked as soon as it is made, or deleted when
closed on Windows), so nothing is left behind, even by a crash. Its space is reserved before it is mapped
(``posix_fallocate``): a full disk is an error up front (``DiskSpaceError``, naming the folder and the bytes needed),
never a crash on a later write. A folder that cannot be written falls back to memory, with one warning.
Below the limit a tensor is a plain ``torch.empty``: small runs are exactly as before. Either way only where the
bytes live changes, never the numbers.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from headstart.config import CacheConfig
from headstart.errors import DiskSpaceError

DEFAULT_LIMIT_MB = 1024  # cache.memory_mb's default
_WARNED: set[str] = set()  # scratch folders that could not be written (already reported)


def scratch_tensor(shape: Sequence[int], dtype: torch.dtype = torch.float32, folder: str | Path | None = None,
                   limit_mb: int | None = DEFAULT_LIMIT_MB) -> torch.Tensor:
    """An uninitialised tensor: in memory up to ``limit_mb`` (``None``: always), above it in a memory-mapped file.

    ``folder``: where the file goes (made if missing; ``None``: ``tempfile.gettempdir()``). Raises ``DiskSpaceError``
    when its disk has less free space than the tensor; a folder that cannot be written gives a tensor in memory and
    one warning.
    """
    return _scratch(tuple(shape), dtype, folder, limit_mb)[0]


def _scratch(shape: tuple[int, ...], dtype: torch.dtype, folder: str | Path | None,
             limit_mb: int | None) -> tuple[torch.Tensor, bool]:
    """``scratch_tensor`` and whether it is file-backed."""
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    if limit_mb is None or nbytes <= limit_mb * 2**20 or nbytes == 0:
        return torch.empty(shape, dtype=dtype), False
    where = Path(folder) if folder is not None else Path(tempfile.gettempdir())
    try:
        where.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(where).free
    except OSError as exc:
        return _in_memory(shape, dtype, where, exc), False
    if free < nbytes:
        raise _too_small(where, nbytes, free)
    try:
        with tempfile.TemporaryFile(dir=where) as file:  # no name: nothing to clean up
            _reserve(file, nbytes, where)
            mapped = _map(file, nbytes)
    except OSError as exc:
        return _in_memory(shape, dtype, where, exc), False
    return mapped.view(dtype).view(shape), True


def _reserve(file, nbytes: int, where: Path) -> None:
    """Give the file its ``nbytes``, allocated on disk where the system can (a full disk: ``DiskSpaceError`` now)."""
    try:
        os.posix_fallocate(file.fileno(), 0, nbytes)
        return
    except AttributeError:  # no posix_fallocate (Windows, macOS): the disk_usage check above is what is known
        pass
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _too_small(where, nbytes, shutil.disk_usage(where).free) from exc
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
    file.truncate(nbytes)  # a file system without fallocate: sized, its blocks allocated as pages are written


def _map(file, nbytes: int) -> torch.Tensor:
    """The file's bytes as a flat uint8 tensor, mapped shared (the mapping keeps the file after it is closed)."""
    import numpy as np

    return torch.from_numpy(np.memmap(file, dtype=np.uint8, mode="r+", shape=(nbytes,)))


def _too_small(where: Path, nbytes: int, free: int) -> DiskSpaceError:
    return DiskSpaceError(
        f"A feature matrix of {nbytes / 2**20:.1f} MB ({nbytes} bytes) is kept in a memory-mapped scratch file in "
        f"{where}, and its disk has {free / 2**20:.1f} MB free. Free space there, set cache.dir (or HEADSTART_CACHE) "
        "to a folder with room, or raise cache.memory_mb to keep matrices of this size in memory")


def _in_memory(shape: tuple[int, ...], dtype: torch.dtype, where: Path, exc: OSError) -> torch.Tensor:
    if str(where) not in _WARNED:
        from headstart.progress import warn

        _WARNED.add(str(where))
        warn(f"The scratch folder {where} cannot be written ({exc.strerror or exc}): feature matrices above "
             "cache.memory_mb are kept in memory instead of memory-mapped files there. Set cache.dir (or "
             "HEADSTART_CACHE) to a writable folder")
    return torch.empty(shape, dtype=dtype)


@dataclass
class Scratch:
    """Where a run's big tensors go: files in ``folder`` (``None``: the temporary folder) above ``limit_mb``.

    ``mapped`` counts the bytes of the tensors it placed in files.
    """

    folder: str | Path | None = None
    limit_mb: int | None = DEFAULT_LIMIT_MB
    mapped: int = 0

    @classmethod
    def of(cls, cache: CacheConfig) -> Scratch:
        """The scratch of a run's ``CacheConfig``: beside the feature cache, or the temporary folder without it."""
        from headstart.core.cache import default_root

        return cls(Path(cache.dir or default_root()) if cache.enabled else None, cache.memory_mb)

    def empty(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``scratch_tensor(shape, dtype)`` in this scratch."""
        out, mapped = _scratch(tuple(shape), dtype, self.folder, self.limit_mb)
        self.mapped += mapped * out.numel() * out.element_size()
        return out
