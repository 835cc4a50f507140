"""Feature cache for frozen phases: outputs of the frozen part of a backbone, computed once.

Entries are keyed per item by the hash of the item's content (image bytes, text), inside a
namespace that holds everything else that changes the output: backbone, weights, preprocessing,
where the backbone is cut, the transform and the augmentation view. A changed file or a changed
preprocessing therefore misses; the same files in another split, run or strategy hit.
Shards are safetensors files with the keys in their metadata. Only their headers are read to index
them (key -> shard, row); ``get`` memory-maps the shards it needs and copies the requested rows into one
stacked tensor, so the cache itself holds no features in memory, however many items it has: a shard is
mapped only while its rows are copied, and the pages read are the kernel's page cache, not the process's.
Rows computed by ``fill`` are dropped once their shard is stored. A shard whose header does not describe
its file (truncated, damaged, another format) is skipped and its items computed again, never trusted.
A shard that cannot be written (disk full, read-only folder) is not fatal: the features are used from
memory, with one warning per cache folder, and computed again next time. So it is when the run's
estimate does not fit the free space (``reserve``, checked before extraction): nothing is written then.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from headstart.core.scratch import DEFAULT_LIMIT_MB, Scratch


def default_root() -> Path:
    env = os.environ.get("HEADSTART_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "headstart" / "features"


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


_WARNED: set[str] = set()  # cache roots whose failed writes were already reported
_NO_WRITES: set[str] = set()  # cache roots too full for this run's features: kept in memory only


def reserve(root: str | Path | None, need: int, free: int) -> bool:
    """Whether the cache folder ``root`` can take ``need`` more bytes (``free`` left on its disk).

    When it cannot, one warning says so and this process keeps the features it computes in memory instead of
    writing them (the run goes on, as after a failed write); a later call with enough space writes again.
    """
    where = str(Path(root or default_root()))
    if free >= need:
        _NO_WRITES.discard(where)
        return True
    from headstart.progress import warn

    _NO_WRITES.add(where)
    _WARNED.add(where)  # a failing write after this would say the same again
    warn(f"The feature cache in {where} needs about {need / 2**20:.1f} MB for this run and its disk has "
         f"{free / 2**20:.1f} MB free: training goes on without storing features (they are computed again next "
         "run). Free space there, or set cache.dir (or HEADSTART_CACHE) to a folder with room")
    return False


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8}
_HEADER_MAX = 100 * 2**20  # safetensors' own limit on the JSON header
_DAMAGED = (OSError, ValueError, KeyError, TypeError)  # what reading a broken header raises (json's errors: ValueError)


@dataclass
class _Shard:
    """The features of one shard: a stored file (mapped on demand) or, when it could not be stored, in memory."""

    path: Path | None = None
    offset: int = 0  # where the features start in the file
    dtype: torch.dtype = torch.float32
    shape: tuple[int, ...] = ()
    rows: torch.Tensor | None = None  # the features themselves (not stored)

    def open(self) -> torch.Tensor:
        """The shard's features: memory-mapped copy-on-write from its file (nothing is read until indexed)."""
        if self.rows is not None:
            return self.rows
        import numpy as np

        if 0 in self.shape:
            return torch.empty(self.shape, dtype=self.dtype)
        # numpy has no bfloat16: the same 16 bits mapped as int16, viewed as bfloat16 by torch
        np_dtype = torch.empty((), dtype=torch.int16 if self.dtype == torch.bfloat16 else self.dtype).numpy().dtype
        mapped = torch.from_numpy(np.memmap(self.path, dtype=np_dtype, mode="c", offset=self.offset, shape=self.shape))
        return mapped.view(torch.bfloat16) if self.dtype == torch.bfloat16 else mapped


def read_header(path: Path) -> tuple[list[str], _Shard]:
    """The keys and the features' place in a shard, from its safetensors header alone.

    Raises ``ValueError`` when the header does not describe the file exactly (one tensor ``features`` whose bytes
    end where the file ends, as many keys as rows): a truncated or damaged shard.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        raw = f.read(8)
        length = int.from_bytes(raw, "little") if len(raw) == 8 else -1
        if not 0 < length <= min(_HEADER_MAX, size - 8):
            raise ValueError(f"{path}: a header of {length} bytes in a file of {size}")
        header = json.loads(f.read(length))
    entry = header["features"]
    dtype, shape = _DTYPES[entry["dtype"]], tuple(int(n) for n in entry["shape"])
    begin, stop = (int(n) for n in entry["data_offsets"])
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    if set(header) - {"features", "__metadata__"} or begin != 0 or stop != nbytes or 8 + length + stop != size:
        raise ValueError(f"{path}: features of {nbytes} bytes at {begin}..{stop} do not fill its {size} bytes")
    keys = json.loads(header["__metadata__"]["keys"])
    if not shape or len(keys) != shape[0] or not all(isinstance(k, str) for k in keys):
        raise ValueError(f"{path}: {len(keys)} keys for features of shape {list(shape)}")
    return keys, _Shard(path, 8 + length, dtype, shape)


class FeatureCache:
    """Per-item cached tensors under one namespace, on disk."""

    CHUNK = 2048  # items computed and stored per shard while filling (what an interrupted extraction loses)
    GATHER_BYTES = 4 * 2**20  # rows copied out of a shard at a time by ``get``: no shard-sized temporary

    def __init__(self, namespace: dict[str, Any], root: str | Path | None = None,
                 memory_mb: int = DEFAULT_LIMIT_MB) -> None:
        self.namespace = namespace
        self.dir = Path(root or default_root()) / digest(namespace)[:24]
        self.scratch = Scratch(self.dir.parent, memory_mb)  # ``get``'s results above ``memory_mb``: mapped files
        self.hits = 0
        self.computed = 0
        self._index: dict[str, tuple[int, int]] | None = None  # key -> (shard, row)
        self._shards: list[_Shard] = []

    def _load(self) -> dict[str, tuple[int, int]]:
        """The index of every readable shard (later shards win for a key stored twice); no features are read."""
        if self._index is None:
            self._index, self._shards = {}, []
            for path in sorted(self.dir.glob("*.safetensors")):
                try:
                    keys, shard = read_header(path)
                except _DAMAGED:
                    continue  # a damaged shard is recomputed, never trusted
                self._add(keys, shard)
        return self._index

    @property
    def bytes_in_memory(self) -> int:
        """Bytes of features the cache itself holds in memory: the rows it could not store (stored ones are mapped
        from their shards when read)."""
        return sum(s.rows.numel() * s.rows.element_size() for s in self._shards if s.rows is not None)

    def _add(self, keys: list[str], shard: _Shard) -> None:
        number = len(self._shards)
        self._shards.append(shard)
        self._index.update((key, (number, row)) for row, key in enumerate(keys))

    def missing(self, keys: Sequence[str]) -> list[int]:
        """Indices into ``keys`` of the entries not in the cache (the first of each repeated key)."""
        index = self._load()
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in index and key not in first:
                first[key] = i
        return list(first.values())

    def get(self, keys: Sequence[str], compute: Callable[[list[int]], torch.Tensor],
            chunk: int | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Stacked entries of ``keys`` (in ``dtype``, default as stored); ``compute(indices)`` fills the missing
        ones (then stored). The result is the only copy of the features in memory (above ``memory_mb``, in a
        memory-mapped scratch file beside the cache: ``core.scratch``)."""
        missing = self.missing(keys)
        self.hits += len(keys) - len(missing)
        self.fill(keys, missing, compute, chunk)
        while True:  # ends: each turn drops one stored shard, and rows kept in memory are always readable
            try:
                return self._stack(keys, dtype)
            except _Unreadable as gone:  # a shard removed or changed since it was indexed: its rows computed again
                self._forget(gone.shard)
                self._fill(keys, self.missing(keys), compute, chunk, store=False)

    def _stack(self, keys: Sequence[str], dtype: torch.dtype | None) -> torch.Tensor:
        """The rows of ``keys`` copied shard by shard (each mapped only while its rows are copied)."""
        index = self._load()
        if not keys:
            return torch.empty(0, dtype=dtype or torch.float32)
        places = torch.tensor([index[k] for k in keys])
        order = torch.argsort(places[:, 0], stable=True)
        numbers, counts = torch.unique_consecutive(places[order, 0], return_counts=True)
        first = self._shards[int(numbers[0])]
        out = self.scratch.empty((len(keys), *first.shape[1:]), dtype or first.dtype)
        for number, positions in zip(numbers.tolist(), order.split(counts.tolist())):
            try:
                rows = self._shards[number].open()
            except (OSError, ValueError) as exc:  # gone, or shorter than its header says (np.memmap's ValueError)
                raise _Unreadable(number) from exc
            step = max(1, self.GATHER_BYTES // max(1, math.prod(rows.shape[1:]) * rows.element_size()))
            for part in positions.split(step):
                out.index_copy_(0, part, rows[places[part, 1]].to(out.dtype))
        return out

    def _forget(self, number: int) -> None:
        self._index = {key: place for key, place in self._index.items() if place[0] != number}

    def fill(self, keys: Sequence[str], indices: Sequence[int], compute: Callable[[list[int]], torch.Tensor],
             chunk: int | None = None) -> None:
        """Compute the entries of ``keys[i]`` for ``indices``, ``chunk`` items (default ``CHUNK``) at a time.

        Each chunk is stored as its own shard as soon as it is computed: an extraction that stops (Ctrl-C,
        a crash, a time limit) resumes from the last stored shard, and the cost of one chunk is all it loses.
        A stored chunk is dropped from memory (``get`` maps it back); one that could not be stored is kept.
        """
        self._fill(keys, indices, compute, chunk)

    def _fill(self, keys: Sequence[str], indices: Sequence[int], compute: Callable[[list[int]], torch.Tensor],
              chunk: int | None = None, store: bool = True) -> None:
        self._load()
        indices, chunk = list(indices), chunk or self.CHUNK
        for start in range(0, len(indices), chunk):
            part = indices[start: start + chunk]
            features = compute(part).detach().cpu().contiguous()
            names = [keys[i] for i in part]
            self.computed += len(part)
            path = self._store(names, features) if store else None
            shard = None
            if path is not None:
                try:
                    stored, shard = read_header(path)
                except _DAMAGED:
                    shard = None  # written but not readable back: kept in memory
                else:
                    shard = shard if stored == names else None
            self._add(names, shard or _Shard(dtype=features.dtype, shape=tuple(features.shape), rows=features))

    def refresh(self) -> None:
        """Read the shards' index again on next use (other processes, e.g. other devices' ranks, wrote some).

        Also what lets go of everything the cache holds: rows kept in memory and the index.
        """
        self._index, self._shards = None, []

    def _store(self, keys: list[str], features: torch.Tensor) -> Path | None:
        """Write a shard (its path); when that fails (OSError) warn once and carry on without storing it (None)."""
        if str(self.dir.parent) in _NO_WRITES:
            return None
        try:
            return self._write(keys, features)
        except (OSError, SafetensorError) as exc:  # safetensors reports I/O errors as SafetensorError
            root = str(self.dir.parent)
            if root not in _WARNED:
                from headstart.progress import warn

                _WARNED.add(root)
                what = f"{exc.strerror or exc}: {exc.filename or self.dir}" if isinstance(exc, OSError) else str(exc)
                warn(f"The feature cache cannot be written ({what}): "
                     "training goes on without storing features (they are computed again next run). Free space "
                     "there, or set cache.dir (or HEADSTART_CACHE) to a writable folder")

    def _write(self, keys: list[str], features: torch.Tensor) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "namespace.json").write_text(json.dumps(self.namespace, indent=2, default=str))
        tmp, path = self.dir / f".{uuid.uuid4().hex}.tmp", self.dir / f"{uuid.uuid4().hex}.safetensors"
        try:
            save_file({"features": features}, str(tmp), metadata={"keys": json.dumps(keys)})
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        return path


class _Unreadable(Exception):
    """A shard indexed earlier that cannot be read now (removed, replaced): its items are computed again."""

    def __init__(self, shard: int) -> None:
        super().__init__(shard)
        self.shard = shard
