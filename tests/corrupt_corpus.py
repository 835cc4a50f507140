"""A corpus of bad inputs: each case writes one bad input into a folder and says what headstart must do.

Two kinds of outcome:
  * ``ERRORS``: the command ends with exit code 2 and a short message (no traceback) holding ``expect``;
    ``build(folder, run)`` writes the input and returns the CLI arguments (``run``: a trained run folder
    to copy, for the cases that need one; None for the others);
  * ``SKIPS``: a bad file among good ones is left out and listed in ``skipped.txt`` with a reason
    holding ``expect``; ``skip_dataset(folder)`` writes all of them, with 20 good images, into one CSV.
Everything is written from scratch (tiny PNGs drawn here), so the corpus needs no data folder.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

CLASSES = ("zero", "<i>one</i>")  # the second one carries HTML: report.md must show it as text


def png(path: Path, label: int, seed: int, size: int = 32) -> Path:
    """A small noisy image whose colour says its class."""
    rng = random.Random(seed)
    base = (200, 40, 40) if label == 0 else (40, 40, 200)
    pixels = bytes(max(0, min(255, c + rng.randint(-40, 40))) for _ in range(size * size) for c in base)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.frombytes("RGB", (size, size), pixels).save(path)
    return path


def class_folders(root: Path, classes: tuple[str, ...] = ("a", "b"), per_class: int = 6) -> Path:
    for label, name in enumerate(classes):
        for i in range(per_class):
            png(root / name / f"{i}.png", label % 2, seed=label * 1000 + i)
    return root


def huge_png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` grey pixels but holds one compressed row: it cannot be
    decoded, so a reader that decodes it before checking the size fails differently (and would need GBs)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1))) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


# ------------------------------------------------------------------------------- files that are skipped
def _corrupt_jpeg(folder: Path) -> Path:
    good = io.BytesIO()
    Image.new("RGB", (32, 32), (9, 9, 9)).save(good, "JPEG")
    data = bytearray(good.getvalue())
    data[2:40] = b"\x00" * 38  # the JPEG markers after SOI are gone
    (folder / "corrupt.jpg").write_bytes(bytes(data))
    return folder / "corrupt.jpg"


def _zero_bytes(folder: Path) -> Path:
    (folder / "zero.png").write_bytes(b"")
    return folder / "zero.png"


def _truncated_png(folder: Path) -> Path:
    png(folder / "whole.png", 0, seed=5, size=64)
    data = (folder / "whole.png").read_bytes()
    (folder / "whole.png").unlink()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    return folder / "truncated.png"


def _html_named_jpg(folder: Path) -> Path:
    (folder / "page.jpg").write_text("<html><body>403 Forbidden</body></html>")
    return folder / "page.jpg"


def _huge_png(folder: Path) -> Path:
    return huge_png_header(folder / "huge.png", 12000, 12000)  # 144M pixels: PIL warns, headstart refuses it


def _bomb_png(folder: Path) -> Path:
    return huge_png_header(folder / "bomb.png", 20000, 20000)  # 400M pixels: over twice PIL's limit


def _missing_file(folder: Path) -> Path:
    return folder / "never_written.png"


def _empty_label(folder: Path) -> Path:
    return png(folder / "unlabelled.png", 0, seed=77)


SKIPS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "corrupt_jpeg": (_corrupt_jpeg, "not a readable image"),
    "zero_byte_file": (_zero_bytes, "empty file (0 bytes)"),
    "truncated_png": (_truncated_png, "not a readable image"),
    "html_saved_as_jpg": (_html_named_jpg, "not a readable image"),
    "huge_png_12000x12000": (_huge_png, "12000 x 12000 = 144.0M pixels, over data.max_pixels"),
    "decompression_bomb_20000x20000": (_bomb_png, "image too large: 400.0M pixels"),
    "csv_row_of_a_missing_file": (_missing_file, "cannot open file"),
    "csv_row_with_empty_label": (_empty_label, "empty label"),
}


def skip_dataset(folder: Path, per_class: int = 10) -> tuple[Path, dict[str, str]]:
    """A CSV of ``per_class`` good images per class of ``CLASSES``, every ``SKIPS`` file, a stray GIF (kept,
    reported as another format) and one duplicate row; returns the CSV and ``{case: the name skipped.txt lists}``."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [(png(folder / f"good_{label}_{i}.png", label, seed=label * 100 + i).name, CLASSES[label])
            for label in (0, 1) for i in range(per_class)]
    Image.new("P", (32, 32), 3).save(folder / "stray.gif")
    rows.append(("stray.gif", CLASSES[0]))
    rows.append(rows[0])  # the same file listed twice
    listed = {}
    for i, (name, (write, _)) in enumerate(SKIPS.items()):
        path = write(folder)
        rows.append((path.name, "" if name == "csv_row_with_empty_label" else CLASSES[i % 2]))
        listed[name] = str(path)
    lines = ["path,label"] + [f"{p},{label}" for p, label in rows]
    (folder / "data.csv").write_text("\n".join(lines) + "\n")
    line_of_empty = 2 + [p for p, _ in rows].index(Path(listed["csv_row_with_empty_label"]).name)
    listed["csv_row_with_empty_label"] = f"data.csv:{line_of_empty}"
    return folder / "data.csv", listed


# ------------------------------------------------------------------------------- inputs that are errors
@dataclass(frozen=True)
class Case:
    """A bad input (``build`` writes it and returns the CLI arguments) and the message it must get."""

    build: Callable[[Path, Path | None], list[str]]
    expect: str
    needs_run: bool = False


def _out(folder: Path) -> str:
    return str(folder / "run")


def _train(data: Path, folder: Path, *extra: str) -> list[str]:
    return ["train", str(data), "--out", _out(folder), "--model", "mobilenet_v2", "--strategy", "linear", *extra]


def _copy_run(run: Path, folder: Path) -> Path:
    target = folder / "copy"
    shutil.copytree(run, target)
    return target


def _missing_data(folder: Path, run: Path | None) -> list[str]:
    return _train(folder / "nowhere", folder)


def _empty_class(folder: Path, run: Path | None) -> list[str]:
    root = class_folders(folder / "data")
    (root / "c").mkdir()
    return _train(root, folder)


def _single_class(folder: Path, run: Path | None) -> list[str]:
    return _train(class_folders(folder / "data", classes=("only",)), folder)


def _class_all_unreadable(folder: Path, run: Path | None) -> list[str]:
    root = class_folders(folder / "data")
    for i in range(3):
        (root / "broken" / f"{i}.jpg").parent.mkdir(exist_ok=True)
        (root / "broken" / f"{i}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return _train(root, folder)


def _fifty_singletons(folder: Path, run: Path | None) -> list[str]:
    return _train(class_folders(folder / "data", classes=tuple(f"c{i:02d}" for i in range(50)), per_class=1), folder)


def _unknown_key(folder: Path, run: Path | None) -> list[str]:
    return _train(class_folders(folder / "data"), folder, "train.learning_rate=0.1")


def _bad_value(folder: Path, run: Path | None) -> list[str]:
    return _train(class_folders(folder / "data"), folder, "train.lr=-1")


def _bad_strategy(folder: Path, run: Path | None) -> list[str]:
    args = _train(class_folders(folder / "data"), folder)
    args[args.index("linear")] = "nonsense"
    return args


def _unknown_model(folder: Path, run: Path | None) -> list[str]:
    args = _train(class_folders(folder / "data"), folder)
    args[args.index("mobilenet_v2")] = "no_such_net"
    return args


def _override_without_equals(folder: Path, run: Path | None) -> list[str]:
    return _train(class_folders(folder / "data"), folder, "train.lr")


def _invalid_yaml(folder: Path, run: Path | None) -> list[str]:
    (folder / "bad.yaml").write_text("train: [lr: 0.1\n  epochs: {\n")
    return _train(class_folders(folder / "data"), folder, "--config", str(folder / "bad.yaml"))


def _strict_with_bad_file(folder: Path, run: Path | None) -> list[str]:
    root = class_folders(folder / "data")
    (root / "a" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return _train(root, folder, "--strict")


def _csv_missing_label_column(folder: Path, run: Path | None) -> list[str]:
    (folder / "t.csv").write_text("file,width,height\na.png,3,4\n")  # no label by name, and two columns left
    return _train(folder / "t.csv", folder)


def _csv_not_utf8(folder: Path, run: Path | None) -> list[str]:  # Excel's Windows-1252 CSV, names read right
    (folder / "t.csv").write_bytes("path,label\ncaf\xe9_1.png,x\ncaf\xe9_2.png,x\nth\xe9_1.png,y\nth\xe9_2.png,y\n"
                                   .encode("cp1252"))
    return _train(folder / "t.csv", folder)


def _csv_header_only(folder: Path, run: Path | None) -> list[str]:
    (folder / "t.csv").write_text("path,label\n")
    return _train(folder / "t.csv", folder)


def _csv_field_over_131072(folder: Path, run: Path | None) -> list[str]:
    """A 200,000-character field is read (the csv module's default limit is 131,072): the run then stops at
    the real problem of this table, one label only."""
    (folder / "t.csv").write_text(f"path,label,notes\na.png,x,{'n' * 200_000}\nb.png,x,short\n")
    return _train(folder / "t.csv", folder)


def _text_field_over_131072(folder: Path, run: Path | None) -> list[str]:
    (folder / "t.csv").write_text(f"text,label\n{'word ' * 40_000},spam\nhello,spam\n")
    return ["train", str(folder / "t.csv"), "--task", "text", "--out", _out(folder)]


def _text_bad_jsonl(folder: Path, run: Path | None) -> list[str]:
    (folder / "t.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", label: y}\n')
    return ["train", str(folder / "t.jsonl"), "--out", _out(folder)]


def _yolo_bad_label_line(folder: Path, run: Path | None) -> list[str]:
    root = folder / "yolo"
    for i in range(4):
        png(root / "images" / "train" / f"{i}.png", 0, seed=i)
        (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
        (root / "labels" / "train" / f"{i}.txt").write_text("0 0.5 0.5 0.2\n" if i == 2 else "0 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text("names: [thing]\ntrain: images/train\n")
    return ["train", str(root), "--task", "detection", "--out", _out(folder)]


def _out_is_a_file(folder: Path, run: Path | None) -> list[str]:
    (folder / "taken").write_text("a file")
    args = _train(class_folders(folder / "data"), folder)
    args[args.index("--out") + 1] = str(folder / "taken" / "run")
    return args


def _unseen_label_at_evaluate(folder: Path, run: Path | None) -> list[str]:
    root = folder / "eval"
    png(root / "zero" / "0.png", 0, seed=1)
    png(root / "cats" / "0.png", 1, seed=2)
    return ["evaluate", str(run), str(root)]


def _not_a_run_folder(folder: Path, run: Path | None) -> list[str]:
    (folder / "empty").mkdir()
    return ["predict", str(folder / "empty"), str(folder)]


def _predict_nothing_readable(folder: Path, run: Path | None) -> list[str]:
    (folder / "in").mkdir()
    (folder / "in" / "a.png").write_bytes(b"not a png")
    (folder / "in" / "b.jpg").write_bytes(b"")
    return ["predict", str(run), str(folder / "in"), "--format", "json"]


def _predict_bad_format(folder: Path, run: Path | None) -> list[str]:
    return ["predict", str(run), str(folder), "--format", "xml"]


def _truncated_weights(folder: Path, run: Path | None) -> list[str]:
    copy = _copy_run(run, folder)
    data = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(data[: len(data) // 3])
    png(folder / "x.png", 0, seed=3)
    return ["predict", str(copy), str(folder / "x.png")]


def _invalid_spec_json(folder: Path, run: Path | None) -> list[str]:
    copy = _copy_run(run, folder)
    (copy / "spec.json").write_text('{"task": "image", "classes": [')
    png(folder / "x.png", 0, seed=3)
    return ["predict", str(copy), str(folder / "x.png")]


def _unknown_architecture(folder: Path, run: Path | None) -> list[str]:
    copy = _copy_run(run, folder)
    spec = json.loads((copy / "spec.json").read_text())
    spec["backbone"]["name"] = spec["backbone"]["arch"] = "no_such_net"
    (copy / "spec.json").write_text(json.dumps(spec))
    png(folder / "x.png", 0, seed=3)
    return ["predict", str(copy), str(folder / "x.png")]


def _interrupted(run: Path, folder: Path) -> Path:
    copy = _copy_run(run, folder)
    meta = json.loads((copy / "headstart.json").read_text())
    (copy / "headstart.json").write_text(json.dumps({**meta, "status": "running"}))
    return copy


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _pickled_checkpoint(folder: Path, run: Path | None) -> list[str]:
    copy = _interrupted(run, folder)
    (copy / "checkpoint.pt").write_bytes(pickle.dumps({"format": 2, "state": _RunsCode(folder / "pwned")}))
    return ["train", "--resume", str(copy)]


def _foreign_checkpoint(folder: Path, run: Path | None) -> list[str]:
    import torch

    copy = _interrupted(run, folder)
    torch.save({"format": 2, "model": {"conv.weight": torch.zeros(3, 3)}, "state": {"epoch": 1}, "best_model": None},
               copy / "checkpoint.pt")
    return ["train", "--resume", str(copy)]


def _garbage_checkpoint(folder: Path, run: Path | None) -> list[str]:
    copy = _interrupted(run, folder)
    (copy / "checkpoint.pt").write_bytes(os.urandom(4096))
    return ["train", "--resume", str(copy)]


def _resume_without_config(folder: Path, run: Path | None) -> list[str]:
    """A folder that stopped before training started (no config.yaml): resume cannot know what to train.
    (One with config.yaml and no checkpoint starts again from the first epoch: tests/test_kill_resume.py.)"""
    copy = _interrupted(run, folder)
    (copy / "config.yaml").unlink()
    return ["train", "--resume", str(copy)]


def _resume_complete_run(folder: Path, run: Path | None) -> list[str]:
    return ["train", "--resume", str(run)]


def _retrain_into_complete_run(folder: Path, run: Path | None) -> list[str]:
    args = _train(class_folders(folder / "data"), folder)
    args[args.index("--out") + 1] = str(_copy_run(run, folder))
    return args


def _missing_config_file(folder: Path, run: Path | None) -> list[str]:
    return _train(class_folders(folder / "data"), folder, "--config", str(folder / "nope.yaml"))


def _config_is_a_list(folder: Path, run: Path | None) -> list[str]:
    (folder / "list.yaml").write_text("- train\n- lr\n")
    return _train(class_folders(folder / "data"), folder, "--config", str(folder / "list.yaml"))


def _unknown_task(folder: Path, run: Path | None) -> list[str]:
    return _train(class_folders(folder / "data"), folder, "--task", "nonsense")


def _coco_not_json(folder: Path, run: Path | None) -> list[str]:
    (folder / "coco.json").write_text("{not json")
    return ["train", str(folder / "coco.json"), "--task", "detection", "--out", _out(folder)]


def _predict_missing_file(folder: Path, run: Path | None) -> list[str]:
    return ["predict", str(run), str(folder / "never_written.png")]


ERRORS: dict[str, Case] = {
    "missing_config_file": Case(_missing_config_file, "nope.yaml"),
    "config_file_holding_a_list": Case(_config_is_a_list, "must hold a mapping"),
    "unknown_task": Case(_unknown_task, "Unknown task 'nonsense'"),
    "coco_json_not_json": Case(_coco_not_json, "coco.json is not a readable COCO json"),
    "predict_a_missing_file": Case(_predict_missing_file, "never_written.png", needs_run=True),
    "missing_data_path": Case(_missing_data, "Data not found"),
    "empty_class_folder": Case(_empty_class, "Class folder(s) with no images"),
    "single_class": Case(_single_class, "Only one class"),
    "class_whose_files_are_all_unreadable": Case(_class_all_unreadable, "class 'broken'"),
    "fifty_classes_of_one_image": Case(_fifty_singletons, "every class has a single image (50 classes"),
    "unknown_config_key": Case(_unknown_key, "train.learning_rate"),
    "invalid_config_value": Case(_bad_value, "train.lr"),
    "bad_strategy": Case(_bad_strategy, "nonsense"),
    "unknown_model": Case(_unknown_model, "no_such_net"),
    "override_without_equals": Case(_override_without_equals, "not of the form key=value"),
    "invalid_yaml_config": Case(_invalid_yaml, "bad.yaml"),
    "strict_stops_at_a_bad_file": Case(_strict_with_bad_file, "bad.png"),
    "csv_without_a_label_column": Case(_csv_missing_label_column, "cannot tell which column holds the"),
    "csv_not_utf8_naming_missing_files": Case(_csv_not_utf8, "skipped, e.g. café_"),
    "csv_header_only": Case(_csv_header_only, "has no data rows"),
    "csv_field_over_131072_chars": Case(_csv_field_over_131072, "1 distinct label"),
    "text_field_over_131072_chars": Case(_text_field_over_131072, "at least 2 classes"),
    "jsonl_line_not_json": Case(_text_bad_jsonl, "t.jsonl:2"),
    "yolo_label_line_with_4_values": Case(_yolo_bad_label_line, "2.txt:1"),
    "out_folder_under_a_file": Case(_out_is_a_file, "taken"),
    "label_never_seen_at_evaluate": Case(_unseen_label_at_evaluate, "never saw", needs_run=True),
    "predict_on_a_folder_that_is_not_a_run": Case(_not_a_run_folder, "not a headstart run folder"),
    "predict_nothing_readable": Case(_predict_nothing_readable, "Nothing could be predicted", needs_run=True),
    "predict_unknown_format": Case(_predict_bad_format, "--format", needs_run=True),
    "truncated_model_safetensors": Case(_truncated_weights, "model.safetensors", needs_run=True),
    "invalid_json_in_spec_json": Case(_invalid_spec_json, "spec.json", needs_run=True),
    "unknown_architecture_in_spec_json": Case(_unknown_architecture, "no_such_net", needs_run=True),
    "pickled_checkpoint_that_would_run_code": Case(_pickled_checkpoint, "cannot be loaded safely", needs_run=True),
    "checkpoint_of_another_model": Case(_foreign_checkpoint, "does not fit this model", needs_run=True),
    "checkpoint_of_random_bytes": Case(_garbage_checkpoint, "checkpoint.pt", needs_run=True),
    "resume_of_a_folder_without_config": Case(_resume_without_config, "has no config.yaml", needs_run=True),
    "resume_of_a_finished_run": Case(_resume_complete_run, "already complete", needs_run=True),
    "train_into_a_finished_run": Case(_retrain_into_complete_run, "already holds a trained model", needs_run=True),
}
