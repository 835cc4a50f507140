"""The task registry and the one architecture: a task registered from outside the package trains,
evaluates, predicts and reports through the CLI; the CLI starts without torch; configs are per task;
a resume checkpoint that would run code is refused."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED
from typer.testing import CliRunner

from headstart.cli import app
from headstart.core.estimator import build_config
from headstart.errors import ConfigError
from headstart.tasks import get_task, infer_task, task_names

runner = CliRunner()


def test_importing_the_cli_imports_no_torch():
    code = "import sys, headstart.cli; print(sorted(m for m in ('torch', 'torchvision', 'lightning_fabric', " \
           "'torchmetrics', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_folder_of_class_folders_is_recognised_without_torch(tmp_path):
    """``headstart train FOLDER`` knows FOLDER is an image task before torch loads: a wrong key fails at once."""
    (tmp_path / "imgs" / "cats").mkdir(parents=True)
    (tmp_path / "ml").mkdir()
    (tmp_path / "ml" / "labels.csv").write_text("path,labels\na.jpg,x;y\n")
    code = ("import sys; from headstart.tasks import infer_task; "
            f"print(infer_task({str(tmp_path / 'imgs')!r}), 'torch' in sys.modules, "
            f"infer_task({str(tmp_path / 'ml')!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["image", "False", "multilabel"]  # a labels table is read (with torch loaded)


def test_help_names_every_registered_task():
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0
    for name in task_names():
        assert name in result.output


def test_keyword_and_keys_of_another_task_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="for task 'image'.*--task detection"):
        build_config(get_task("image"), classes="person")
    with pytest.raises(ConfigError, match=r"detection\.family.*another task"):
        build_config(get_task("text"), overrides={"detection.family": "ssd"})
    path = tmp_path / "c.yaml"
    path.write_text("text:\n  max_length: 64\n")
    with pytest.raises(ConfigError, match=r"text\.max_length"):
        build_config(get_task("detection"), path)


def test_keywords_win_over_overrides_for_every_task():
    for name in ("image", "text", "detection"):
        cfg = build_config(get_task(name), overrides={"train.epochs": 7}, epochs=5)
        assert cfg.train.epochs == 5, name
        assert cfg.task == name


def test_tasks_are_inferred_from_the_data(tmp_path):
    (tmp_path / "yolo").mkdir()
    (tmp_path / "yolo" / "data.yaml").write_text("names: [a]\n")
    assert infer_task(tmp_path / "yolo") == "detection"
    table = tmp_path / "t.csv"
    table.write_text("text,label\nhello there,a\nbye now,b\n")
    assert infer_task(table) == "text"
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    assert infer_task(tmp_path / "imgs") == "image"


@pytest.fixture(scope="module")
def toy_task():
    """A task from two files outside the package (tests/toy_rotation), registered by importing it."""
    from toy_rotation.task import TASK

    return TASK


def test_a_toy_task_trains_evaluates_predicts_and_reports_through_the_cli(toy_task, tmp_path, session_cache):
    coco = SHARED / "coco128" / "images" / "train2017"
    if not coco.is_dir():
        pytest.skip(f"{coco} is absent (the ../shared data folder)")
    images = tmp_path / "images"
    images.mkdir()
    # 40 COCO photos, 160 rotated items: scenes have an up (ants and bees on a flower often have none: with
    # hymenoptera's photos validation hovered at 0.31-0.44, one item above the bar; with these 0.34-0.56)
    for f in sorted(coco.glob("*.jpg"))[:40]:
        shutil.copy(f, images / f.name)
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(images), "--task", "rotation", "--out", str(run), "--epochs", "10"])
    assert result.exit_code == 0, result.output
    for name in ("model.safetensors", "spec.json", "metrics.json", "report.html", "learning_curve.png",
                 "confusion_matrix.png", "history.csv"):
        assert (run / name).is_file(), name
    meta = json.loads((run / "headstart.json").read_text())
    assert (meta["task"], meta["status"]) == ("rotation", "complete")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val"]["baseline"]["accuracy"] == pytest.approx(0.25)
    assert metrics["val_accuracy"] > 0.4  # pretrained features tell rotated photos apart
    assert "rotation" in (run / "report.html").read_text()

    result = runner.invoke(app, ["evaluate", str(run), str(images), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["num_samples"] == 160 and report["accuracy"] > 0.5

    result = runner.invoke(app, ["predict", str(run), str(images), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output[result.output.index("["):])
    assert len(rows) == 40 and all(r["label"] in ("0", "90", "180", "270") for r in rows)
    assert sum(r["label"] == "0" for r in rows) > 20  # the stored photos are upright (measured: 38 of 40)


def test_a_checkpoint_that_would_run_code_is_refused(digits_dir, tmp_path, session_cache):
    """A run folder someone hands you: its checkpoint.pt is a pickle that runs a command when loaded."""
    from headstart.tasks.image.task import ImageClassifier

    small = tmp_path / "small"
    for c in range(3):
        shutil.copytree(digits_dir / str(c), small / str(c))
    run = tmp_path / "run"
    ImageClassifier(model="mobilenet_v2", strategy="linear", epochs=1, cache_views=1).fit(small, out=run)
    meta = json.loads((run / "headstart.json").read_text())
    (run / "headstart.json").write_text(json.dumps({**meta, "status": "running"}))
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (run / "checkpoint.pt").write_bytes(pickle.dumps({"format": 2, "state": Payload()}))
    result = runner.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 2, result.output
    assert "cannot be loaded safely" in result.output
    assert not marker.exists()  # nothing was executed
    assert (run / "model.safetensors").is_file()  # and nothing of the run was lost


def test_run_folders_of_the_old_format_are_refused_clearly(digits_dir, tmp_path):
    run = tmp_path / "old"
    run.mkdir()
    (run / "headstart.json").write_text(json.dumps({"format": 1, "task": "image-classification",
                                                    "status": "complete", "headstart_version": "0.1.0"}))
    result = runner.invoke(app, ["predict", str(run), str(Path(digits_dir) / "0")])
    assert result.exit_code == 2
    assert "made by an older version" in " ".join(result.output.split())  # the console wraps long lines


def test_os_errors_become_one_line_naming_the_file(tmp_path):
    import errno

    from headstart.cli import os_error_message

    blocker = tmp_path / "taken.txt"
    blocker.write_text("a file where the run folder should go")
    result = runner.invoke(app, ["train", str(tmp_path), "--out", str(blocker / "run")])
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "taken.txt" in result.output
    full = os_error_message(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "ckpt")))
    assert "No space left" in full and "MB free there" in full and "--resume" in full
    denied = os_error_message(PermissionError(errno.EACCES, "Permission denied", "/read-only/run"))
    assert "/read-only/run" in denied and "--out" in denied
