"""Every bad input of the corpus (tests/corrupt_corpus.py) gets its documented outcome through the CLI: exit
code 2 and a short message naming the problem, or a skip listed in skipped.txt; never a traceback, never a
half-made run folder. Disk-full faults injected at the checkpoint, cache and model writes: a clear message,
no temporary file left, and the run resumes. Data checks that protect the split."""

from __future__ import annotations

import errno
import io
import json
import re
import warnings
from csv import DictReader
from pathlib import Path

import corrupt_corpus as corpus
import pytest
from typer.testing import CliRunner

from headstart.cli import app

runner = CliRunner()
TRAIN = ["--model", "mobilenet_v2", "--strategy", "linear", "cache.views=1", "train.refit=false"]


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Messages on one line however long the paths in them (rich wraps at 80 columns without a terminal)."""
    from headstart.progress import console

    monkeypatch.setattr(console, "_width", 1000)


def flat(text: str) -> str:
    """Output with rich's line wrapping undone (messages are wrapped at the console width)."""
    return " ".join(text.split())


def invoke(args: list[str]):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output[-3000:]
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


@pytest.fixture(scope="module")
def skip_run(tmp_path_factory, session_cache):
    """One training run on a CSV of 20 good images, every skipped kind of bad file and a duplicate row."""
    folder = tmp_path_factory.mktemp("corpus-skips")
    csv, listed = corpus.skip_dataset(folder / "data")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = invoke(["train", csv, "--out", folder / "run", *TRAIN])
    assert result.exit_code == 0, result.output[-3000:]
    return folder / "run", listed, flat(result.output), [w for w in caught if "Decompression" in w.category.__name__]


@pytest.mark.parametrize("case", sorted(corpus.SKIPS))
def test_a_bad_file_among_good_ones_is_skipped_and_listed_with_its_reason(case, skip_run):
    run, listed, output, _ = skip_run
    lines = dict(line.split("\t", 1) for line in (run / "skipped.txt").read_text().splitlines())
    assert listed[case] in lines, lines
    assert corpus.SKIPS[case][1] in lines[listed[case]]
    assert " at 0x" not in lines[listed[case]]  # never an object's address


def test_the_skip_run_reports_what_it_kept_and_never_leaks_a_raw_warning(skip_run):
    run, _, output, bomb_warnings = skip_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["skipped"] == len(corpus.SKIPS)
    assert not bomb_warnings  # PIL's DecompressionBombWarning: the huge PNG is a reported skip instead
    assert "1 row(s) repeat an earlier row's file and label" in " ".join(output.split()) and "GIF" in output  # the
    # repeated row (read once) and the stray .gif are reported
    report = (run / "report.md").read_text()
    assert "&lt;i&gt;one&lt;/i&gt;" in report and "<i>" not in report  # class names are text, not HTML


@pytest.mark.parametrize("case", sorted(corpus.ERRORS))
def test_a_bad_input_is_one_clear_error(case, tmp_path, skip_run):
    spec = corpus.ERRORS[case]
    args = spec.build(tmp_path, skip_run[0] if spec.needs_run else None)
    result = invoke(args)
    output = flat(result.output)
    assert result.exit_code == 2, result.output[-3000:]
    assert spec.expect in output, output
    assert len(re.findall(r"(?:^| )Error: ", output)) == 1
    assert not (tmp_path / "run").exists()  # no run folder (nor config.yaml) is left behind
    assert not (tmp_path / "pwned").exists()  # the pickled checkpoint ran nothing


def test_predict_lists_every_unreadable_input_as_a_row_with_an_error(skip_run, tmp_path):
    from headstart.tasks.image.task import ImageClassifier

    run = skip_run[0]
    good = corpus.png(tmp_path / "in" / "a_good.png", 0, seed=11)
    (tmp_path / "in" / "b_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    corpus.png(tmp_path / "in" / "c_good.png", 1, seed=12)
    rows = json.loads(invoke(["predict", run, tmp_path / "in", "--format", "json"]).stdout)
    assert [Path(r["path"]).name for r in rows] == ["a_good.png", "b_broken.png", "c_good.png"]  # input order
    assert "label" not in rows[1] and "not a readable image" in rows[1]["error"]
    assert all("error" not in r and r["label"] in corpus.CLASSES for r in (rows[0], rows[2]))
    csv = invoke(["predict", run, tmp_path / "in", "--format", "csv"])
    assert csv.exit_code == 0
    table_rows = list(DictReader(io.StringIO(csv.stdout)))
    assert list(table_rows[0]) == ["path", "label", "probability", "top_k", "unfamiliar", "error"]
    assert table_rows[1]["label"] == "" and "not a readable image" in table_rows[1]["error"]
    assert table_rows[0]["error"] == "" and table_rows[0]["label"] in corpus.CLASSES
    table = invoke(["predict", run, tmp_path / "in"])
    assert table.exit_code == 0 and "not read" in table.output
    api = ImageClassifier.load(run).predict([good, tmp_path / "in" / "b_broken.png"])
    assert len(api) == 1 and "error" not in api[0]  # the Python API's rows are unchanged unless errors=True


def test_detection_predict_lists_unreadable_images_and_fails_when_nothing_was_read(tmp_path, session_cache):
    """The torch path of a detection run: one error row per unreadable file, exit 2 when none could be read."""
    from PIL import Image, ImageDraw

    root = tmp_path / "yolo"
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    for i in range(8):  # a red square on grey, somewhere else in each image
        image = Image.new("RGB", (64, 64), (120, 120, 120))
        x, y = 4 + 5 * i, 30 - 3 * i
        ImageDraw.Draw(image).rectangle([x, y, x + 20, y + 20], fill=(220, 30, 30))
        image.save(root / "images" / "train" / f"{i}.png")
        (root / "labels" / "train" / f"{i}.txt").write_text(f"0 {(x + 10) / 64} {(y + 10) / 64} {21 / 64} {21 / 64}\n")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nnames:\n  0: square\n")
    run = tmp_path / "run"
    args = ["train", root, "--task", "detection", "--out", run, "--model", "mobilenet_v2", "--strategy", "linear",
            "--epochs", "1", "detection.image_size=64", "cache.views=1", "train.refit=false"]
    refused = invoke(args)  # FCOS's stride-128 level would be 1x1 with one channel per GroupNorm group
    assert refused.exit_code == 2 and "detection.neck_channels=64" in refused.output and not run.exists()
    result = invoke([*args, "detection.neck_channels=64"])
    assert result.exit_code == 0, result.output[-3000:]
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.open(root / "images" / "train" / "0.png").save(inputs / "a_good.png")
    (inputs / "b_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    Image.open(root / "images" / "train" / "5.png").save(inputs / "c_good.png")
    result = invoke(["predict", run, inputs, "--format", "json"])
    assert result.exit_code == 0, result.output[-2000:]
    rows = json.loads(result.stdout)
    assert [Path(r["path"]).name for r in rows] == ["a_good.png", "b_broken.png", "c_good.png"]  # input order
    assert all("detections" in r and "error" not in r for r in (rows[0], rows[2]))
    assert "detections" not in rows[1] and "not a readable image" in rows[1]["error"]
    csv = invoke(["predict", run, inputs, "--format", "csv"])
    assert csv.exit_code == 0
    lines = list(DictReader(io.StringIO(csv.stdout)))
    assert [r for r in lines if Path(r["path"]).name == "b_broken.png"] == [
        {"path": str(inputs / "b_broken.png"), "label": "", "score": "", "x1": "", "y1": "", "x2": "", "y2": "",
         "error": rows[1]["error"]}]
    alone = invoke(["predict", run, inputs / "a_good.png", "--format", "json"])  # one image: a batch of one
    assert alone.exit_code == 0 and "detections" in json.loads(alone.stdout)[0], alone.output[-2000:]
    (inputs / "a_good.png").unlink()
    (inputs / "c_good.png").unlink()
    nothing = invoke(["predict", run, inputs])
    assert nothing.exit_code == 2 and "Nothing could be predicted" in flat(nothing.output), nothing.output[-2000:]
    said = flat(nothing.output).split("Nothing could be predicted")[-1]  # the error names each input and why
    assert "b_broken.png: not a readable image" in said, nothing.output[-2000:]


# ------------------------------------------------------------------------------- faults at write time
def _disk_full(path) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", str(path))


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    return corpus.class_folders(tmp_path_factory.mktemp("corpus-small"), per_class=10)


def test_a_full_cache_disk_warns_once_and_the_run_goes_on(small_data, tmp_path, monkeypatch):
    from headstart.core import cache

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")  # what a full disk leaves: a piece of the temporary file
        raise _disk_full(filename)

    monkeypatch.setattr(cache, "save_file", full)
    cache_dir = tmp_path / "cache"
    result = invoke(["train", small_data, "--out", tmp_path / "run", *TRAIN, f"cache.dir={cache_dir}", "cache.views=2"])
    assert result.exit_code == 0, result.output[-3000:]
    assert flat(result.output).count("feature cache cannot be written") == 1
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert not [p.name for p in cache_dir.rglob("*") if p.is_file() and p.name != "namespace.json"]  # no shard, no .tmp


def _small_disk(monkeypatch, folder: Path, free: int) -> None:
    """``shutil.disk_usage`` reports ``free`` bytes for paths under ``folder`` (a small disk mounted there)."""
    import shutil

    real = shutil.disk_usage
    folder.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=free)
                        if str(Path(path).absolute()).startswith(str(folder)) else real(path))


def test_a_run_folder_on_a_disk_too_small_fails_before_any_feature_is_extracted(small_data, tmp_path, monkeypatch):
    disk, cache_dir = tmp_path / "small-disk", tmp_path / "cache"
    _small_disk(monkeypatch, disk, 20 * 2**20)
    result = invoke(["train", small_data, "--out", disk / "run", *TRAIN, f"cache.dir={cache_dir}"])
    assert result.exit_code == 2, result.output[-3000:]
    output = flat(result.output)
    found = re.search(r"Not enough disk space for the checkpoints and the model in (\S+): about (\d+) MB needed, "
                      r"(\d+) MB free there", output)
    assert found, output
    assert found.group(1) == str(disk / "run") and found.group(3) == "20"
    from headstart.core.backbones import registry

    weights_mb = registry.create_backbone("mobilenet_v2").spec.num_params * 4 / 2**20
    # each checkpoint holds the weights twice and two checkpoints coexist while one is written; reports: 16 MB
    assert 4 * weights_mb <= int(found.group(2)) <= 4 * weights_mb + 16 + 2  # + BatchNorm buffers, the head
    assert not (disk / "run").exists()  # nothing left behind
    assert not list(cache_dir.rglob("*.safetensors"))  # and nothing extracted


def test_a_cache_disk_too_small_for_the_features_warns_once_and_keeps_them_in_memory(small_data, tmp_path,
                                                                                     monkeypatch):
    cache_dir = tmp_path / "cache-disk" / "features"
    _small_disk(monkeypatch, tmp_path / "cache-disk", 50 * 1024)  # 50 KB: 20 images x 2 rows x 1280 floats is 200 KB
    result = invoke(["train", small_data, "--out", tmp_path / "run", *TRAIN, f"cache.dir={cache_dir}"])
    assert result.exit_code == 0, result.output[-3000:]
    output = flat(result.output)
    assert output.count("needs about 0.2 MB for this run and its disk has 0.0 MB free") == 1, output
    assert "feature cache cannot be written" not in output  # nothing was tried
    assert not list(cache_dir.rglob("*.safetensors")) and (tmp_path / "run" / "model.safetensors").is_file()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["val"]["accuracy"] >= 0.75  # red against blue: the features in memory trained the head


def test_decoding_and_torch_threads_follow_device_threads(small_data, tmp_path, monkeypatch):
    """``device.threads`` sets torch's intra-op threads and the image-decoding thread pools, in training (set
    before any image is read) and in ``predict`` (from the run's config)."""
    import concurrent.futures

    import torch

    from headstart.tasks.image import data as image_data
    from headstart.tasks.image import dataset as image_dataset
    from headstart.tasks.image.task import ImageClassifier

    pools: list[tuple[int | None, int]] = []  # (decoding threads, torch threads) of each pool opened

    class Recording(concurrent.futures.ThreadPoolExecutor):
        def __init__(self, max_workers=None, *args, **kwargs):
            pools.append((max_workers, torch.get_num_threads()))
            super().__init__(max_workers, *args, **kwargs)

    monkeypatch.setattr(image_data, "ThreadPoolExecutor", Recording)  # hashing the files
    monkeypatch.setattr(image_dataset, "ThreadPoolExecutor", Recording)  # decoding them
    before = torch.get_num_threads()
    try:
        result = invoke(["train", small_data, "--out", tmp_path / "run", *TRAIN, "device.threads=3"])
        assert result.exit_code == 0, result.output[-3000:]
        assert len(pools) >= 2 and set(pools) == {(3, 3)}, pools  # hashing and decoding the files, 3 threads each
        torch.set_num_threads(1)
        pools.clear()
        rows = ImageClassifier.load(tmp_path / "run").predict([small_data / "a" / "0.png"])
        assert rows[0]["label"] == "a" and pools and set(pools) == {(3, 3)}, pools
    finally:
        torch.set_num_threads(before)


def test_a_full_disk_at_a_checkpoint_then_at_the_model_write_is_resumed_to_the_end(small_data, tmp_path,
                                                                                   monkeypatch):
    import safetensors.torch
    import torch

    run = tmp_path / "run"
    real_save, calls = torch.save, []

    def checkpoint_fills_the_disk(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 2:  # the second checkpoint: the first one stays whole
            Path(f).write_bytes(b"partial")
            raise _disk_full(f)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", checkpoint_fills_the_disk)
    args = ["train", small_data, "--out", run, *TRAIN, "--epochs", "3", "train.head_solver=adamw",
            "train.checkpoint_seconds=0"]
    result = invoke(args)
    assert result.exit_code == 2, result.output[-3000:]
    output = flat(result.output)
    assert "No space left on the device while writing" in output and "checkpoint" in output and "--resume" in output
    assert sorted(p.name for p in run.iterdir() if "checkpoint" in p.name) == ["checkpoint.pt"]  # no .tmp
    monkeypatch.setattr(torch, "save", real_save)

    def model_fills_the_disk(tensors, filename, metadata=None):
        raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", model_fills_the_disk)
    result = invoke(["train", "--resume", run])
    assert result.exit_code == 2, result.output[-3000:]
    assert "model.safetensors" in flat(result.output) and "No space left" in flat(result.output)
    assert (run / "checkpoint.pt").is_file() and not (run / "model.safetensors").exists()
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp")]
    monkeypatch.undo()

    result = invoke(["train", "--resume", run])
    assert result.exit_code == 0, result.output[-3000:]
    assert (run / "model.safetensors").is_file() and not (run / "checkpoint.pt").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert json.loads((run / "headstart.json").read_text())["status"] == "complete"
    assert len(metrics["phases"]) == 1 and metrics["phases"][0]["epochs"] == 3


# ------------------------------------------------------------------------------- data checks that protect the split
def test_exact_duplicates_stay_on_one_side_of_the_split_and_are_reported(tmp_path):
    import shutil

    from headstart.tasks.image.data import discover

    root = corpus.class_folders(tmp_path / "folders", per_class=10)
    for i in range(4):  # 4 copies of a/0.png under other names, 2 copies of b/1.png
        shutil.copy(root / "a" / "0.png", root / "a" / f"copy{i}.png")
    for i in range(2):
        shutil.copy(root / "b" / "1.png", root / "b" / f"copy{i}.png")
    for seed in range(5):
        splits = discover(root, val_fraction=0.3, seed=seed)
        train, val = {s.key for s in splits.train}, {s.key for s in splits.val}
        assert not train & val  # never one copy in training and one in validation
    assert any("6 exact-duplicate file(s)" in n for n in splits.notes)

    rows = [f"{root / 'a' / f'{i}.png'},a" for i in range(8)] + [f"{root / 'b' / f'{i}.png'},b" for i in range(8)]
    (tmp_path / "rows.csv").write_text("path,label\n" + "\n".join(rows + rows[:3]) + "\n")  # 3 rows twice
    for seed in range(5):
        splits = discover(tmp_path / "rows.csv", val_fraction=0.3, seed=seed)
        assert not {s.path for s in splits.train} & {s.path for s in splits.val}
    assert any("3 row(s) repeat an earlier row's file and label" in n for n in splits.notes)
    assert len(splits.train) + len(splits.val) == 16  # each image once

    shutil.copytree(root, tmp_path / "given" / "train")
    (tmp_path / "given" / "val" / "a").mkdir(parents=True)
    (tmp_path / "given" / "val" / "b").mkdir(parents=True)
    for i in range(3):  # 3 of the 5 validation files are training files under another name
        shutil.copy(root / "a" / f"{i}.png", tmp_path / "given" / "val" / "a" / f"v{i}.png")
    corpus.png(tmp_path / "given" / "val" / "b" / "new0.png", 1, seed=900)
    corpus.png(tmp_path / "given" / "val" / "b" / "new1.png", 1, seed=901)
    notes = discover(tmp_path / "given").notes
    assert any("3 of the 5 validation images are byte-identical copies of training images" in n for n in notes)

    from headstart.tasks.text.data import discover as discover_texts

    texts = [f"message {i}" for i in range(20)] + ["win a prize now"] * 6  # one text 6 times
    (tmp_path / "texts.csv").write_text("text,label\n" + "".join(f"{t},{'spam' if 'prize' in t or i % 2 else 'ham'}\n"
                                                              for i, t in enumerate(texts)))
    for seed in range(5):
        splits = discover_texts(tmp_path / "texts.csv", seed=seed)
        assert not {s.text for s in splits.train} & {s.text for s in splits.val}
    assert any("5 duplicate text(s)" in n for n in splits.notes)


def test_every_class_of_two_or_more_items_gets_a_validation_item_and_small_classes_are_named(tmp_path):
    from headstart.core.splits import split_notes, stratified_split
    from headstart.tasks.image.data import discover

    labels = [0] * 2 + [1] * 3 + [2] * 1 + [3] * 40
    for seed in range(10):
        train, val = stratified_split(labels, 0.1, seed)
        assert {labels[i] for i in val} == {0, 1, 3}
    notes = split_notes(labels, [labels[i] for i in val], ["two", "three", "one", "many"], "images")
    assert len(notes) == 1 and "one" in notes[0] and "three" not in notes[0]
    root = corpus.class_folders(tmp_path / "d", per_class=5)
    corpus.png(root / "lonely" / "0.png", 0, seed=123)
    splits = discover(root)
    assert any("too few images" in n and "lonely" in n for n in splits.notes)


def test_yolo_label_files_without_an_image_are_counted(tmp_path):
    from headstart.tasks.detection.data import ISSUE_ORPHAN, read_yolo

    for i in range(4):
        corpus.png(tmp_path / "images" / "train" / f"{i}.png", 0, seed=i)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    for i in range(6):  # 4.txt and 5.txt have no image
        (tmp_path / "labels" / "train" / f"{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data.yaml").write_text("names: [thing]\ntrain: images/train\n")
    assert read_yolo(tmp_path).issues[ISSUE_ORPHAN] == 2
