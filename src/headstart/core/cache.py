"""Feature cache for frozen phases: outputs of the frozen part of a backbone, computed once.

Entries are keyed per item by the hash of the item's content (image bytes, text), inside a
namespace that holds everything else that changes the output: backbone, weights, preprocessing,
where the backbone is cut, the transform and the augmentation view. A changed file or a changed
preprocessing therefore misses; the same files in another split, run or strategy hit.
Shards are safetensors files with the keys in their metadata. A shard that cannot be written (disk
full, read-only folder) is not fatal: the features are used from memory, with one warning per cache
folder, and computed again next time. So it is when the run's estimate does not fit the free space
(``reserve``, checked before extraction): nothing is written then.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file


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


class FeatureCache:
    """Per-item cached tensors under one namespace, on disk."""

    CHUNK = 2048  # items computed and stored per shard while filling (what an interrupted extraction loses)

    def __init__(self, namespace: dict[str, Any], root: str | Path | None = None) -> None:
        self.namespace = namespace
        self.dir = Path(root or default_root()) / digest(namespace)[:24]
        self.hits = 0
        self.computed = 0
        self._rows: dict[str, torch.Tensor] | None = None

    def _load(self) -> dict[str, torch.Tensor]:
        if self._rows is None:
            self._rows = {}
            for shard in sorted(self.dir.glob("*.safetensors")):
                try:
                    with safe_open(str(shard), framework="pt") as f:
                        keys = json.loads(f.metadata()["keys"])
                        features = f.get_tensor("features")
                except Exception:  # noqa: BLE001 - a damaged shard is recomputed, never trusted
                    continue
                self._rows.update(zip(keys, features))
        return self._rows

    def missing(self, keys: Sequence[str]) -> list[int]:
        """Indices into ``keys`` of the entries not in the cache (the first of each repeated key)."""
        rows = self._load()
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in rows and key not in first:
                first[key] = i
        return list(first.values())

    def get(self, keys: Sequence[str], compute: Callable[[list[int]], torch.Tensor],
            chunk: int | None = None) -> torch.Tensor:
        """Stacked entries of ``keys``; ``compute(indices)`` fills the missing ones (then stored)."""
        missing = self.missing(keys)
        self.hits += len(keys) - len(missing)
        self.fill(keys, missing, compute, chunk)
        rows = self._load()
        return torch.stack([rows[k] for k in keys])

    def fill(self, keys: Sequence[str], indices: Sequence[int], compute: Callable[[list[int]], torch.Tensor],
             chunk: int | None = None) -> None:
        """Compute the entries of ``keys[i]`` for ``indices``, ``chunk`` items (default ``CHUNK``) at a time.

        Each chunk is stored as its own shard as soon as it is computed: an extraction that stops (Ctrl-C,
        a crash, a time limit) resumes from the last stored shard, and the cost of one chunk is all it loses.
        """
        rows = self._load()
        indices, chunk = list(indices), chunk or self.CHUNK
        for start in range(0, len(indices), chunk):
            part = indices[start: start + chunk]
            features = compute(part).detach().cpu().contiguous()
            names = [keys[i] for i in part]
            self.computed += len(part)
            self._store(names, features)
            rows.update(zip(names, features))

    def refresh(self) -> None:
        """Read the shards again on next use (other processes, e.g. other devices' ranks, wrote some)."""
        self._rows = None

    def _store(self, keys: list[str], features: torch.Tensor) -> None:
        """Write a shard; when that fails (OSError) warn once and carry on without storing it."""
        if str(self.dir.parent) in _NO_WRITES:
            return
        try:
            self._write(keys, features)
        except (OSError, SafetensorError) as exc:  # safetensors reports I/O errors as SafetensorError
            root = str(self.dir.parent)
            if root not in _WARNED:
                from headstart.progress import warn

                _WARNED.add(root)
                what = f"{exc.strerror or exc}: {exc.filename or self.dir}" if isinstance(exc, OSError) else str(exc)
                warn(f"The feature cache cannot be written ({what}): "
                     "training goes on without storing features (they are computed again next run). Free space "
                     "there, or set cache.dir (or HEADSTART_CACHE) to a writable folder")

    def _write(self, keys: list[str], features: torch.Tensor) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "namespace.json").write_text(json.dumps(self.namespace, indent=2, default=str))
        tmp = self.dir / f".{uuid.uuid4().hex}.tmp"
        try:
            save_file({"features": features}, str(tmp), metadata={"keys": json.dumps(keys)})
            tmp.replace(self.dir / f"{uuid.uuid4().hex}.safetensors")
        finally:
            tmp.unlink(missing_ok=True)
