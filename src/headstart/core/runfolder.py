"""The run folder: what a trained model is on disk, for every task, and loading it back with checks.

Layout: ``headstart.json`` (format, task, status, data), ``config.yaml``, ``spec.json`` (task,
classes, backbone spec, head or detector), ``model.safetensors``, ``history.csv``,
``metrics.json``, PNG plots, ``report.md``, ``report.html``, ``skipped.txt`` and, while training,
``checkpoint.pt`` (tensors and plain values only; see ``core.loop``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from headstart import __version__
from headstart.errors import DiskSpaceError, RunFolderError

FORMAT_VERSION = 2  # 2: one save/load for every task; checkpoints load with weights_only=True
META = "headstart.json"
SPEC = "spec.json"
WEIGHTS = "model.safetensors"
REPORTS_BYTES = 16 * 2**20  # history, metrics, plots, report.md and report.html: a few MB at most


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFolderError(f"{path} cannot be read as JSON ({exc}); the run folder is damaged") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path} holds {type(data).__name__}, expected a JSON object; the run folder is damaged")
    return data


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (a temporary file beside it, renamed; removed when the write fails)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def as_os_error(exc: Exception, path: Path) -> OSError:
    """A safetensors I/O failure (it raises SafetensorError with 'os error N' in the text) as an OSError on ``path``."""
    found = re.search(r"os error (\d+)", str(exc))
    code = int(found.group(1)) if found else errno.EIO
    return OSError(code, os.strerror(code), str(path))


def write_meta(run: Path, **fields: Any) -> None:
    path = run / META
    meta = _read_json(path) if path.exists() else {}
    meta.update(fields, format=FORMAT_VERSION, headstart_version=__version__)
    write_text_atomic(path, json.dumps(meta, indent=2))


def not_a_run(run: str | Path) -> RunFolderError:
    """The error for a folder given as a run folder that is none (often the data, given first)."""
    return RunFolderError(f"{run} is not a headstart run folder: {META} is missing (a run folder is what `headstart "
                          "train DATA --out RUN` wrote: give it first, then the images or texts)")


def read_meta(run: str | Path, task: str | None = None, complete: bool = False) -> dict[str, Any]:
    """The run's metadata; RunFolderError when it is not a (compatible, finished when ``complete``) run."""
    run = Path(run)
    if not run.is_dir():
        raise RunFolderError(f"Run folder not found: {run}")
    path = run / META
    if not path.exists():
        raise not_a_run(run)
    meta = _read_json(path)
    if meta.get("format") != FORMAT_VERSION:
        raise RunFolderError(
            f"{run} was made by an older version: run-folder format {meta.get('format')} (headstart "
            f"{meta.get('headstart_version')}); this headstart ({__version__}) reads format {FORMAT_VERSION}. "
            "Train it again with this version"
        )
    if task is not None and meta.get("task") != task:
        raise RunFolderError(f"{run} holds a '{meta.get('task')}' model, expected a '{task}' model")
    if complete and (meta.get("status") != "complete" or not (run / WEIGHTS).exists()):
        raise RunFolderError(f"{run} has no finished model (status '{meta.get('status')}'); "
                             f"finish it with: headstart train --resume {run}")
    return meta


def save_model(run: Path, model: Any, info: dict[str, Any]) -> None:
    """``model.safetensors`` (every tensor of the model) and ``spec.json`` (what rebuilds its architecture)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    try:  # safetensors writes a temporary file and renames it: the old model.safetensors stays whole on failure
        save_file(state, str(run / WEIGHTS), metadata={"task": str(info.get("task")),
                                                       "arch": model.backbone.spec.arch})
    except SafetensorError as exc:
        raise as_os_error(exc, run / WEIGHTS) from None
    write_text_atomic(run / SPEC, json.dumps(info, indent=2))


TRAINED = "trained_items.txt"  # the content keys of the items the saved model trained on, one a line
HELD_OUT = "held_out_items.txt"  # those of DATA's other labelled items (validation, test): labelled, not trained on


def write_trained_keys(run: Path, keys: list[str], name: str = TRAINED) -> None:
    """``trained_items.txt`` (``name``: ``HELD_OUT``): what ``evaluate`` (and ``suggest``) compare their items with
    (41 bytes an item)."""
    write_text_atomic(run / name, "".join(f"{k}\n" for k in sorted(set(keys)) if k))


def read_trained_keys(run: str | Path, name: str = TRAINED) -> set[str] | None:
    """The content keys of the items a run's saved model trained on (``name``: ``HELD_OUT``, DATA's other labelled
    items); None for runs saved without them."""
    path = Path(run) / name
    return set(path.read_text().split()) if path.is_file() else None


def read_spec(run: str | Path) -> dict[str, Any]:
    """spec.json of a run, checked for the fields every task records."""
    path = Path(run) / SPEC
    if not path.is_file():
        raise RunFolderError(f"{run} has no {SPEC}: the run is incomplete; train it again")
    info = _read_json(path)
    missing = [k for k in ("task", "classes", "backbone") if k not in info]
    if missing:
        raise RunFolderError(f"{path} lacks {', '.join(missing)}; it was not written by this headstart")
    return info


def load_model(run: str | Path, model: Any) -> Any:
    """``model`` (the architecture of spec.json) with the weights of ``model.safetensors``; eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(run) / WEIGHTS
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise RunFolderError(f"{path} cannot be read ({exc}): the file is damaged or truncated; train again") from None
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise RunFolderError(
            f"The weights in {path} do not fit the architecture in {SPEC} ({model.backbone.spec.arch}): "
            f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}), "
            f"{len(wrong)} of another shape (e.g. {wrong[:2]})"
        )
    model.load_state_dict(state)
    model.eval()
    return model


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks (the model hash of exports, the server's /metadata)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def free_bytes(path: str | Path) -> int:
    """Free bytes on the disk that holds ``path`` (its nearest existing parent when it does not exist yet)."""
    where = Path(path).absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    return shutil.disk_usage(where).free


def bytes_needed(model: Any, trains_backbone: bool, refit: bool = False) -> int:
    """Peak bytes a training run writes into its run folder: checkpoints, ``model.safetensors``, reports.

    A checkpoint holds the weights twice (last and best) and AdamW's two float32 moments of what trains; while
    one is written the previous one is still there (during ``--refit``, the main run's as well).
    """
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    trained = [p for n, p in model.named_parameters() if trains_backbone or not n.startswith("backbone.")]
    checkpoint = 2 * weights + 2 * 4 * sum(p.numel() for p in trained)
    return (3 if refit else 2) * checkpoint + REPORTS_BYTES


def check_free_space(folder: str | Path, need: int, what: str) -> None:
    """DiskSpaceError naming ``folder``, its free space and the estimate when its disk has less than ``need``."""
    free = free_bytes(folder)
    if free < need:
        raise DiskSpaceError(f"Not enough disk space for {what} in {folder}: about {need / 2**20:.0f} MB needed, "
                             f"{free / 2**20:.0f} MB free there. Free some space or choose another --out "
                             "(nothing was trained yet)")
