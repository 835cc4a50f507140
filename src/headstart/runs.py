"""The run folder: what a trained model is on disk, and loading it back with checks.

Layout: ``headstart.json`` (format, task, status, data), ``config.yaml``, ``spec.json`` (backbone spec,
classes), ``model.safetensors``, ``history.csv``, ``metrics.json``, PNG plots, ``report.md``,
``skipped.txt`` and, while training, ``checkpoint.pt``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from headstart import __version__, registry
from headstart.errors import RunFolderError
from headstart.spec import BackboneSpec
from headstart.tasks.classification import TransferClassifier

FORMAT_VERSION = 1
META = "headstart.json"


def write_meta(run: Path, **fields: Any) -> None:
    path = run / META
    meta = json.loads(path.read_text()) if path.exists() else {}
    meta.update(fields, format=FORMAT_VERSION, headstart_version=__version__)
    path.write_text(json.dumps(meta, indent=2))


def read_meta(run: str | Path, task: str | None = None) -> dict[str, Any]:
    """The run's metadata; RunFolderError when it is not a (compatible) headstart run."""
    run = Path(run)
    if not run.is_dir():
        raise RunFolderError(f"Run folder not found: {run}")
    path = run / META
    if not path.exists():
        raise RunFolderError(f"{run} is not a headstart run folder: {META} is missing")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT_VERSION:
        raise RunFolderError(
            f"{run} was written in run-folder format {meta.get('format')} (headstart "
            f"{meta.get('headstart_version')}); this headstart ({__version__}) reads format {FORMAT_VERSION}"
        )
    if task is not None and meta.get("task") != task:
        raise RunFolderError(f"{run} holds a '{meta.get('task')}' model, expected a '{task}' model")
    return meta


def save_classifier(run: Path, model: TransferClassifier, classes: list[str], train_counts: list[int],
                    dropout: float) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(run / "model.safetensors"), metadata={"arch": model.backbone.spec.arch})
    spec = {"backbone": model.backbone.spec.to_dict(), "classes": classes, "train_counts": train_counts,
            "head": {"type": "linear", "dropout": dropout}}
    (run / "spec.json").write_text(json.dumps(spec, indent=2))


def load_classifier(run: str | Path) -> tuple[TransferClassifier, dict[str, Any]]:
    """The trained model of a run folder and its spec.json contents."""
    run = Path(run)
    meta = read_meta(run)
    if meta.get("status") != "complete" or not (run / "model.safetensors").exists():
        raise RunFolderError(
            f"{run} has no finished model (status '{meta.get('status')}'); "
            f"finish it with: headstart train --resume {run}"
        )
    info = json.loads((run / "spec.json").read_text())
    spec = BackboneSpec.from_dict(info["backbone"])
    backbone = registry.rebuild(spec)
    model = TransferClassifier(backbone, len(info["classes"]), info["head"]["dropout"])
    state = load_file(str(run / "model.safetensors"))
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise RunFolderError(
            f"The weights in {run}/model.safetensors do not fit the architecture in spec.json "
            f"({spec.arch}, {len(info['classes'])} classes): {len(missing)} missing (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}), {len(wrong)} of another shape (e.g. {wrong[:2]})"
        )
    model.load_state_dict(state)
    model.eval()
    return model, info
