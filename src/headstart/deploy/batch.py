"""Batch inference into a file: ``headstart predict RUN FOLDER --out preds.csv`` (or ``.jsonl``).

Inputs are predicted in chunks of ``CHUNK`` items and each chunk's rows are appended and flushed before the
next one starts, so memory stays flat however large the folder is, a progress bar shows the ETA, and an
interrupted run (Ctrl-C, a killed job) continues where it stopped: items already in the file are skipped, and a
last line cut off mid-write is dropped first. ``.jsonl`` holds every task's rows as they are (boxes, labels,
errors); ``.csv`` holds single-label classification rows (``path|text, label, probability, top_k, error``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from headstart.errors import ConfigError, DataError

CHUNK = 256  # items per predict call: a few hundred decoded images in memory at a time
FORMATS = (".csv", ".jsonl")


def csv_columns(key: str) -> list[str]:
    return [key, "label", "probability", "top_k", "error"]


def csv_row(row: dict[str, Any], key: str) -> list[str]:
    """One classification row as CSV cells (``top_k`` as ``class:probability;...``)."""
    if "error" in row:
        return [row[key], "", "", "", row["error"]]
    if "top_k" not in row or "label" not in row:
        raise ConfigError("--out FILE.csv holds single-label classification rows; write this run's predictions to a "
                          ".jsonl file instead")
    return [row[key], row["label"], f"{row['probability']:.6f}",
            ";".join(f"{c}:{p:.6f}" for c, p in row["top_k"]), ""]


def _complete_lines(path: Path) -> bytes:
    """The file's bytes up to its last newline (a line cut off by an interruption is dropped)."""
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1]


def done_items(path: Path, key: str) -> set[str]:
    """The items (``key`` values) an earlier, interrupted run already wrote to ``path``."""
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
    if rows and rows[0] != csv_columns(key):
        raise DataError(f"{path} has the columns {rows[0]}, not {csv_columns(key)}: it was not written by this run's "
                        "predict --out; choose another --out or delete the file")
    return {r[0] for r in rows[1:] if r}


def predict_to_file(predict: Callable[[list[Any]], list[dict[str, Any]]], items: Sequence[Any], out: str | Path,
                    key: str = "path") -> dict[str, int]:
    """Predict ``items`` chunk by chunk into ``out``, skipping the ones already there; counts of what happened.

    ``predict(chunk)`` returns one row per item, in order, with ``key`` naming the item and ``error`` for an
    item it could not read (``Estimator.predict(..., errors=True)``).
    """
    from headstart.progress import progress_bar, say

    out = Path(out)
    if out.suffix not in FORMATS:
        raise ConfigError(f"--out must end in {' or '.join(FORMATS)}, found '{out.name}'")
    done = done_items(out, key)
    todo = [item for item in items if str(item) not in done]
    if done:
        say(f"Resuming {out}: {len(done)} item(s) already predicted, {len(todo)} to go")
        out.write_bytes(_complete_lines(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    counts = {"written": 0, "errors": 0, "skipped_done": len(items) - len(todo)}
    with out.open("a", newline="", encoding="utf-8") as f, progress_bar(f"Predicting into {out.name}", len(todo)) as advance:
        writer = csv.writer(f)
        if out.suffix == ".csv" and not done:
            writer.writerow(csv_columns(key))
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start: start + CHUNK]
            rows = predict(chunk)
            for row in rows:
                if out.suffix == ".csv":
                    writer.writerow(csv_row(row, key))
                else:
                    f.write(json.dumps(row) + "\n")
                counts["errors"] += "error" in row
            f.flush()  # a chunk is on disk before the next one starts: an interruption loses at most one chunk
            counts["written"] += len(rows)
            advance(len(chunk))
    say(f"Wrote {counts['written']} row(s) to {out} ({counts['errors']} unreadable, "
        f"{counts['skipped_done']} already there)")
    return counts
