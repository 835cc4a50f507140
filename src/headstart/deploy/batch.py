"""Batch inference into a file: ``headstart predict RUN FOLDER --out preds.csv`` (or ``.jsonl``).

Inputs are predicted in chunks of ``CHUNK`` items and each chunk's rows are appended and flushed before the
next one starts, so memory stays flat however large the folder is, a progress bar shows the ETA, and an
interrupted run (Ctrl-C, a killed job) continues where it stopped: items already in the file are skipped, and a
last line cut off mid-write is dropped first. ``.jsonl`` holds every task's rows as they are (boxes, labels,
errors); ``.csv`` holds single-label classification rows (``path|text, label, probability, top_k, unfamiliar,
error``).

Image and multi-label runs on the PyTorch engine stream (``stream_image_rows``): a torch ``DataLoader``
(``core.loop.loader``) whose worker processes open, decode and transform the files (``--workers``, default
``data.num_workers`` of the run, else up to 4), pinned memory when the model is on CUDA, the forward pass at
the run's precision (bf16 autocast where native), rows written chunk by chunk as above. Text and detection
runs, and the ONNX engine, predict chunk by chunk in this process.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from headstart.errors import ConfigError, DataError

CHUNK = 256  # items per predict call (or per flush when streaming): a few hundred decoded images in memory at a time
STREAMED_TASKS = ("image", "multilabel")  # predicted through a DataLoader with decoding worker processes
FORMATS = (".csv", ".jsonl")


EXPLAINED = ("heatmap", "evidence")  # columns a CSV gains when its rows carry them (--save-heatmaps, --evidence)


def csv_columns(key: str, explained: Sequence[str] = ()) -> list[str]:
    """The CSV's header: the item, its class, probability, top-k, unfamiliar flag, error, then ``explained``."""
    return [key, "label", "probability", "top_k", "unfamiliar", "error", *explained]


def csv_row(row: dict[str, Any], key: str, explained: Sequence[str] = ()) -> list[str]:
    """One classification row as CSV cells (``top_k`` as ``class:probability;...``; ``unfamiliar`` 1 or 0, empty
    where the run has no such check, as the ONNX engine; ``heatmap`` its file, ``evidence`` as ``word:weight;...``)."""
    if "error" in row:
        return [row[key], "", "", "", "", row["error"], *("" for _ in explained)]
    if "top_k" not in row or "label" not in row:
        raise ConfigError("--out FILE.csv holds single-label classification rows; write this run's predictions to a "
                          ".jsonl file instead")
    shown = {"heatmap": row.get("heatmap", ""),
             "evidence": ";".join(f"{w}:{v:.4f}" for w, v in row.get("evidence", []))}
    return [row[key], row["label"], f"{row['probability']:.6f}", ";".join(f"{c}:{p:.6f}" for c, p in row["top_k"]),
            str(int(row["unfamiliar"])) if "unfamiliar" in row else "", "", *(shown[c] for c in explained)]


def _complete_lines(path: Path) -> bytes:
    """The file's bytes up to its last newline (a line cut off by an interruption is dropped)."""
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1]


def done_items(path: Path, key: str, explained: Sequence[str] = ()) -> set[str]:
    """The items (``key`` values) an earlier, interrupted run already wrote to ``path`` (a CSV: with the columns
    ``csv_columns(key, explained)``)."""
    if not path.exists():
        return set()
    text = _complete_lines(path).decode("utf-8", errors="replace")
    if path.suffix == ".jsonl":
        done = set()
        for number, line in enumerate(text.splitlines(), 1):
            try:
                done.add(json.loads(line)[key])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataError(f"{path}:{number} is not a prediction row of this run (expected a JSON object with "
                                f"'{key}'); choose another --out or delete the file") from None
        return done
    rows = list(csv.reader(io.StringIO(text)))
    if rows and rows[0] != csv_columns(key, explained):
        raise DataError(f"{path} has the columns {rows[0]}, not {csv_columns(key, explained)}: it was not written by "
                        "this run's predict --out with these options; choose another --out or delete the file")
    return {r[0] for r in rows[1:] if r}


def predict_to_file(predict: Callable[[list[Any]], list[dict[str, Any]]] | None, items: Sequence[Any],
                    out: str | Path, key: str = "path",
                    stream: Callable[[list[Any]], Iterator[list[dict[str, Any]]]] | None = None,
                    name: Callable[[Any], str] = str, explained: Sequence[str] = ()) -> dict[str, int]:
    """Predict ``items`` chunk by chunk into ``out``, skipping the ones already there; counts of what happened.

    ``predict(chunk)`` returns one row per item, in order, with ``key`` naming the item and ``error`` for an
    item it could not read (``Estimator.predict(..., errors=True)``). ``stream(items)`` instead yields such rows a
    chunk at a time (``stream_image_rows``); each chunk is written and flushed before the next is asked for.
    ``name(item)``: how the rows name an item (a text of several parts shows them joined by " | ").
    ``explained``: the CSV's extra columns (``EXPLAINED``: the options that give the rows a heat map, evidence).
    """
    from headstart.progress import progress_bar, say

    out = Path(out)
    if out.suffix not in FORMATS:
        raise ConfigError(f"--out must end in {' or '.join(FORMATS)}, found '{out.name}'")
    done = done_items(out, key, explained)
    todo = [item for item in items if name(item) not in done]
    if done:
        say(f"Resuming {out}: {len(done)} item(s) already predicted, {len(todo)} to go")
        out.write_bytes(_complete_lines(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    counts = {"written": 0, "errors": 0, "skipped_done": len(items) - len(todo)}
    with out.open("a", newline="", encoding="utf-8") as f, progress_bar(f"Predicting into {out.name}", len(todo)) as advance:
        writer = csv.writer(f)
        if out.suffix == ".csv" and not done:
            writer.writerow(csv_columns(key, explained))
        chunks = stream(todo) if stream is not None else \
            (predict(todo[start: start + CHUNK]) for start in range(0, len(todo), CHUNK))
        for rows in chunks:
            for row in rows:
                if out.suffix == ".csv":
                    writer.writerow(csv_row(row, key, explained))
                else:
                    f.write(json.dumps(row) + "\n")
                counts["errors"] += "error" in row
            f.flush()  # a chunk is on disk before the next one starts: an interruption loses at most one chunk
            counts["written"] += len(rows)
            advance(len(rows))
    say(f"Wrote {counts['written']} row(s) to {out} ({counts['errors']} unreadable, "
        f"{counts['skipped_done']} already there)")
    return counts


def default_workers(configured: int = 0) -> int:
    """Decoding worker processes: ``data.num_workers`` when set, else one per spare CPU core, at most 4."""
    return configured or max(0, min(4, (os.cpu_count() or 1) - 1))


class _FileImages:
    """Image files as ``(pixels, index, why)``: decoded and transformed where it is called (a loader's worker).

    ``why`` is empty for a readable file; for an unreadable one the pixels are zeros and ``why`` says why, in
    the words of the in-process path (``onnx_engine.read_decoded``, which mirrors ``ImageStore``).
    """

    def __init__(self, files: list[Path], pre: dict[str, Any], transform: Any, shape: tuple[int, int, int]) -> None:
        self.files, self.pre, self.transform, self.shape = files, pre, transform, shape

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Any, int, str]:
        import torch

        from headstart.deploy.onnx_engine import read_decoded

        image = read_decoded(self.files[index], self.pre)
        if isinstance(image, str):
            return torch.zeros(self.shape), index, image
        return self.transform(image), index, ""


def stream_image_rows(estimator: Any, files: list[Path], top_k: int | None, workers: int = 0,
                      chunk: int | None = None) -> Iterator[list[dict[str, Any]]]:
    """Rows of ``estimator.predict(files, top_k=top_k, errors=True)``, ``chunk`` files at a time (default ``CHUNK``),
    from a DataLoader whose ``workers`` processes decode the files (image and multi-label classifiers)."""
    import torch

    from headstart.core import loop
    from headstart.core.backbones.fusion import batchnorm_folded
    from headstart.progress import warn
    from headstart.tasks.classification.model import head_logits

    model, cfg = estimator._require_fitted(), estimator.config
    estimator.heatmaps_ = []  # this pass draws none: no row takes a heat map an earlier predict drew
    spec = model.backbone.spec
    pre = {"resize_shorter_side": spec.resize_size, "interpolation": spec.interpolation,
           "intensity": spec.extra.get("intensity", "off"), "max_pixels": cfg.data.max_pixels}
    dataset = _FileImages(files, pre, estimator._eval_transform(spec), (3, spec.input_size, spec.input_size))
    fabric = loop.make_fabric(cfg.device)
    model.eval()
    model.to(fabric.device, memory_format=torch.channels_last)
    batches = loop.loader(dataset, loop.inference_batch_size(cfg, fabric), num_workers=workers,
                          pin_memory=fabric.device.type == "cuda")
    chunk = chunk or CHUNK
    rows: list[dict[str, Any]] = []
    example = loop.first_input(fabric, dataset)  # BatchNorms folded as predict folds them (``predict_logits``)
    with batchnorm_folded(model.backbone, model.backbone.num_groups, example), torch.inference_mode():
        for x, indices, reasons in batches:
            readable = [i for i, why in enumerate(reasons) if not why]
            probs, flags = torch.empty(0), [{}] * len(readable)
            if readable:
                with fabric.autocast():
                    x = fabric.to_device(x[readable])
                    features = model.backbone(loop.autocast_images(loop.channels_last(x)))
                    logits = head_logits(model.head, features).to("cpu", torch.float32)
                probs = estimator._activate(estimator._unfamiliar((logits, features.to("cpu", torch.float32))))
                flags = estimator._flags(readable)  # as predict's rows: {"unfamiliar": ...}, {} without the check
            at = {i: r for r, i in enumerate(readable)}
            for i, (index, why) in enumerate(zip(indices.tolist(), reasons)):
                path = str(files[index])
                if why and cfg.data.strict:
                    raise DataError(f"{path}: {why} (data.strict is on: unreadable images stop the run)")
                if why:
                    warn(f"skipped {path}: {why}")
                    rows.append({"path": path, "error": why})
                else:
                    rows.append({"path": path, **estimator.row(probs[at[i]], top_k), **flags[at[i]]})
            if len(rows) >= chunk:
                yield rows
                rows = []
    if rows:
        yield rows
