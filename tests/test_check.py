"""``headstart check DATA``: the data read as training reads it, without training, and what is wrong with it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import HYMENOPTERA, SHARED, hymenoptera_subset, needs_shared
from PIL import Image
from typer.testing import CliRunner

from headstart.cli import app

SMS = SHARED / "sms_spam" / "SMSSpamCollection.tsv"


def _check(*args: str) -> tuple[int, dict]:
    res = CliRunner().invoke(app, ["check", *args, "--json"])
    start = res.stdout.find("{\n")
    return res.exit_code, (json.loads(res.stdout[start:]) if start >= 0 else {"output": res.output})


@needs_shared(HYMENOPTERA)
def test_a_folder_with_problems_is_reported_without_training(tmp_path, session_cache):
    root = hymenoptera_subset(tmp_path / "d", {"train": 20, "val": 8})
    (root / "train" / "ants" / "broken.jpg").write_bytes(b"not a jpeg")
    first_bee = sorted((root / "train" / "bees").iterdir())[0]
    Image.open(first_bee).convert("RGB").resize((250, 180)).save(root / "val" / "bees" / "again.jpg", quality=70)
    for jpg in sorted((root / "train" / "bees").glob("*.jpg")) + sorted((root / "val" / "bees").glob("*.jpg")):
        Image.open(jpg).convert("RGB").save(jpg.with_suffix(".png"))  # the bees come from another source: PNGs
        jpg.unlink()
    code, report = _check(str(root), "--fail-on-warnings")
    assert code == 1, report
    assert report["task"] == "image" and report["classes"] == ["ants", "bees"]
    assert report["sizes"] == {"train": 40, "val": 17, "test": 0}, report["sizes"]
    assert [Path(s["item"]).name for s in report["skipped"]] == ["broken.jpg"]
    warnings = " | ".join(report["warnings"])
    assert "the image format tells classes apart: 'bees' 100% PNG" in warnings, warnings
    assert "1 of the 17 validation images are near-copies of training images" in warnings, warnings
    assert not list(tmp_path.rglob("skipped.txt")) and not (Path("runs") / "d").exists()  # nothing written


@needs_shared(HYMENOPTERA)
def test_a_clean_folder_passes(tmp_path, session_cache):
    root = hymenoptera_subset(tmp_path / "d", {"train": 12, "val": 6})
    code, report = _check(str(root), "--fail-on-warnings")
    assert code == 0 and report["warnings"] == [] and report["skipped"] == [], report
    assert report["sizes"] == {"train": 24, "val": 12, "test": 0}


@needs_shared(SMS)
def test_a_text_table_is_checked_with_its_duplicates(tmp_path):
    table = tmp_path / "sms.tsv"
    shutil.copy(SMS, table)
    code, report = _check(str(table))
    assert code == 0 and report["task"] == "text" and report["classes"] == ["ham", "spam"]
    assert report["sizes"]["train"] + report["sizes"]["val"] == 5574
    assert any(w.startswith("464 duplicate text(s)") for w in report["warnings"]), report["warnings"]


@needs_shared(HYMENOPTERA)
def test_check_labels_lists_the_training_labels_to_check(tmp_path, session_cache):
    root = hymenoptera_subset(tmp_path / "d", {"train": 40, "val": 10})
    ant = sorted((root / "train" / "ants").iterdir())[4]  # 116570827_e9c126745d.jpg: a plain photo of ants
    ant.rename(root / "train" / "bees" / f"filed_{ant.name}")
    code, report = _check(str(root), "--labels", "--fail-on-warnings")
    assert code == 1 and report["sizes"] == {"train": 80, "val": 20}, report
    doubts = report["label_doubts"]
    assert doubts["of"] == 80 and doubts["count"] >= 1, doubts
    assert doubts["items"][0]["item"].endswith(f"filed_{ant.name}") and doubts["items"][0]["predicted"] == "ants"
    assert not list(tmp_path.rglob("metrics.json"))  # its run folder was temporary
    code, report = _check(str(root), "--labels", "--task", "multilabel")
    assert code == 2 and "single-label image and text classification" in " ".join(report["output"].split())
