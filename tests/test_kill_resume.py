"""kill -9 at four points of one run, each followed by ``headstart train --resume RUN``: the same final model
(every tensor equal), history and metrics as an uninterrupted run of the same command.

One small run (digits, 5 classes of 8 images, ``lp-ft``: 6 cached head epochs, then 2 fine-tuning epochs) is
killed with SIGKILL when markers appear in its run folder and feature cache, nothing inside headstart helps:
  1. extraction: the first cache shard (view 1 of 2) is on disk, no checkpoint yet;
  2. head phase: the first checkpoint (epoch 1 of the 6 head epochs) is on disk;
  3. fine-tuning: the checkpoint of the first fine-tuning epoch is on disk, the second is running;
  4. final save: ``model.safetensors`` is on disk, the run is not marked complete yet.
Each kill is resumed by a new process, which the next kill stops; the last resume runs to the end.
Where each kill landed is checked from the files it left (the checkpoint's epoch, the shards).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

HEAD_EPOCHS, FT_EPOCHS = 6, 2
ARGS = ["--model", "mobilenet_v2", "--strategy", "lp-ft", "--epochs", str(FT_EPOCHS),
        f"train.head_epochs={HEAD_EPOCHS}", "train.head_solver=adamw", "cache.views=2", "data.augment=light",
        "train.checkpoint_seconds=0", "train.refit=false"]
WALL_CLOCK = ("seconds", "epoch_seconds")  # history columns that differ between any two runs


@pytest.fixture(scope="module")
def small_digits(digits_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kill-digits")
    for digit in "01234":
        (root / digit).mkdir()
        for f in sorted((digits_dir / digit).iterdir())[:8]:
            shutil.copy(f, root / digit / f.name)
    return root


def _command(*args: object) -> list[str]:
    return [sys.executable, "-m", "headstart.cli", "train", *map(str, args)]


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "HEADSTART_QUIET": "1", "HF_HUB_OFFLINE": "1", "HEADSTART_CACHE": str(cache)}


def _kill_when(args: list[str], cache: Path, log: Path, ready: Callable[[], bool], timeout: float = 240) -> None:
    """Start ``headstart train ARGS``, SIGKILL it as soon as ``ready()`` holds (polled every 5 ms)."""
    with log.open("w") as out:
        proc = subprocess.Popen(args, env=_env(cache), stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if ready():
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None and time.monotonic() >= deadline:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before its kill point:\n{log.read_text()[-3000:]}"


def _checkpoint_epoch(run: Path) -> int:
    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["state"]["epoch"]


def _history(run: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader((run / "history.csv").open()))
    return [{k: v for k, v in row.items() if k not in WALL_CLOCK} for row in rows]


@pytest.fixture(scope="module")
def runs(small_digits, tmp_path_factory):
    """The uninterrupted run and the run killed four times (and resumed each time); where each kill landed."""
    root = tmp_path_factory.mktemp("kill-resume")
    whole = subprocess.run(_command(small_digits, "--out", root / "whole", *ARGS), env=_env(root / "cache-whole"),
                           capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stdout[-2000:] + whole.stderr[-2000:]

    run, cache = root / "killed", root / "cache-killed"
    first = _command(small_digits, "--out", run, *ARGS)
    resume = _command("--resume", run)
    shards = lambda: sorted(cache.rglob("*.safetensors"))  # noqa: E731
    landed = {}

    _kill_when(first, cache, root / "1.log", lambda: len(shards()) >= 1)
    landed["extraction"] = {"shards": len(shards()), "checkpoint": (run / "checkpoint.pt").exists()}

    _kill_when(resume, cache, root / "2.log", lambda: (run / "checkpoint.pt").exists())
    landed["head"] = _checkpoint_epoch(run)

    seen = {"stamp": None}

    def fine_tuning_epoch_saved() -> bool:  # the checkpoint is read again only when it was replaced
        try:
            info = (run / "checkpoint.pt").stat()
            stamp = (info.st_ino, info.st_mtime_ns)  # os.replace: a new file each time
            if stamp == seen["stamp"]:
                return False
            seen["stamp"] = stamp
            return _checkpoint_epoch(run) > HEAD_EPOCHS
        except Exception:  # noqa: BLE001 - the checkpoint is being replaced at this moment
            seen["stamp"] = None
            return False

    _kill_when(resume, cache, root / "3.log", fine_tuning_epoch_saved)
    landed["fine-tuning"] = _checkpoint_epoch(run)

    _kill_when(resume, cache, root / "4.log", lambda: (run / "model.safetensors").exists())
    landed["final save"] = {"status": json.loads((run / "headstart.json").read_text())["status"],
                            "checkpoint": (run / "checkpoint.pt").exists()}

    last = subprocess.run(resume, env=_env(cache), capture_output=True, text=True, timeout=300)
    assert last.returncode == 0, last.stdout[-2000:] + last.stderr[-2000:]
    return root / "whole", run, landed


def test_each_kill_landed_where_it_was_meant_to(runs):
    _, _, landed = runs
    # kill 1 stopped the extraction of view 2 (only view 1's shard written) before any epoch ended
    assert landed["extraction"] == {"shards": 1, "checkpoint": False}
    assert 1 <= landed["head"] < HEAD_EPOCHS  # kill 2: inside the head phase (resumed without a checkpoint)
    assert landed["fine-tuning"] == HEAD_EPOCHS + 1  # kill 3: in the second of the 2 fine-tuning epochs
    assert landed["final save"] == {"status": "running", "checkpoint": True}  # kill 4: after the model write


def test_the_resumed_run_ends_with_the_uninterrupted_runs_model_and_metrics(runs):
    whole, run, _ = runs
    assert json.loads((run / "headstart.json").read_text())["status"] == "complete"
    assert not (run / "checkpoint.pt").exists()
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert len(_history(run)) == HEAD_EPOCHS + FT_EPOCHS
    assert _history(run) == _history(whole)  # losses, validation scores and learning rates of every epoch
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit for bit
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (whole, run))
    assert mb["best_epoch"] == ma["best_epoch"]
    assert mb["val"] == ma["val"]  # accuracy, macro-F1, loss, per-class scores: exactly equal
