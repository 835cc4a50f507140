"""Feature cache for frozen phases: outputs of the frozen part of a backbone, computed once.

Entries are keyed per item by the hash of the item's content (image bytes, text), inside a
namespace that holds everything else that changes the output: backbone, weights, preprocessing,
where the backbone is cut, the transform and the augmentation view. A changed file or a changed
preprocessing therefore misses; the same files in another split, run or strategy hit.
Shards are safetensors files with the keys in their metadata.
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
from safetensors import safe_open
from safetensors.torch import save_file


def default_root() -> Path:
    env = os.environ.get("HEADSTART_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "headstart" / "features"


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class FeatureCache:
    """Per-item cached tensors under one namespace, on disk."""

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

    def get(self, keys: Sequence[str], compute: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
        """Stacked entries of ``keys``; ``compute(indices)`` fills the missing ones (then stored)."""
        rows = self._load()
        missing: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in rows and key not in missing:
                missing[key] = i
        self.hits += len(keys) - len(missing)
        if missing:
            features = compute(list(missing.values())).detach().cpu().contiguous()
            self.computed += len(missing)
            self._write(list(missing), features)
            rows.update(zip(missing, features))
        return torch.stack([rows[k] for k in keys])

    def _write(self, keys: list[str], features: torch.Tensor) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "namespace.json").write_text(json.dumps(self.namespace, indent=2, default=str))
        tmp = self.dir / f".{uuid.uuid4().hex}.tmp"
        save_file({"features": features}, str(tmp), metadata={"keys": json.dumps(keys)})
        tmp.replace(self.dir / f"{uuid.uuid4().hex}.safetensors")
