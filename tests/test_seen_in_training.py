"""``evaluate`` says when the evaluated items are copies of items the saved model trained on (trained_items.txt)."""

from __future__ import annotations

import json
import shutil

from conftest import HYMENOPTERA, SHARED, hymenoptera_subset, needs_shared, train_cli
from typer.testing import CliRunner

from headstart.cli import app
from headstart.core import runfolder

SMS = SHARED / "sms_spam" / "SMSSpamCollection.tsv"


def _evaluate(run, data) -> dict:
    res = CliRunner().invoke(app, ["evaluate", str(run), str(data), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout[res.stdout.index("{"):])


@needs_shared(HYMENOPTERA)
def test_evaluating_on_training_images_is_said(tmp_path, session_cache):
    data = hymenoptera_subset(tmp_path / "d", {"train": 12, "val": 6})
    run = tmp_path / "run"
    train_cli(data, run, "--strategy", "linear", "cache.views=1")
    assert len(runfolder.read_trained_keys(run)) == 24  # DATA's own validation split: no refit, the 24 training images
    assert _evaluate(run, data / "val")["seen_in_training"] == 0
    mixed = tmp_path / "mixed"
    shutil.copytree(data / "val", mixed)
    for cls in ("ants", "bees"):  # three training photos a class among the evaluated ones, under other names
        for i, jpg in enumerate(sorted((data / "train" / cls).iterdir())[:3]):
            shutil.copy(jpg, mixed / cls / f"new_{i}.jpg")
    report = _evaluate(run, mixed)
    assert report["num_samples"] == 18 and report["seen_in_training"] == 6
    assert any(w.startswith("6 of the 18 evaluated images are identical copies of images the model trained on")
               for w in report["warnings"]), report["warnings"]


@needs_shared(SMS)
def test_evaluating_on_training_texts_is_said_and_a_refit_counts_validation(tmp_path, session_cache):
    rows = SMS.read_text(encoding="utf-8").splitlines()
    table = tmp_path / "sms.tsv"
    table.write_text("\n".join(rows[:401]) + "\n", encoding="utf-8")  # header and 400 messages: a split is drawn
    run = tmp_path / "run"
    metrics = train_cli(table, run, "--strategy", "linear")
    assert "refit" in metrics  # the saved model trained on validation too: every distinct text is a trained one
    assert len(runfolder.read_trained_keys(run)) == len({row.split("\t", 1)[1] for row in rows[1:401]})
    report = _evaluate(run, table)
    assert report["seen_in_training"] == report["num_samples"] == 400, report


@needs_shared(SMS)
def test_multilabel_texts_seen_in_training_are_said(tmp_path, session_cache):
    """GoEmotions-style label lists: evaluating on the training table counts every text the model trained on."""
    rows = [line.split("\t", 1) for line in SMS.read_text(encoding="utf-8").splitlines()[1:241]]
    table = tmp_path / "tags.jsonl"
    table.write_text("".join(json.dumps({"text": t, "labels": [y] + (["long"] if len(t) > 80 else [])}) + "\n"
                             for y, t in rows), encoding="utf-8")
    run = tmp_path / "run"
    train_cli(table, run, "--strategy", "linear", "--task", "multilabel")
    report = _evaluate(run, table)
    distinct = len({t for _, t in rows})
    assert report["seen_in_training"] >= 0.75 * distinct  # no refit for multi-label: validation stays unseen
    assert any("identical copies of texts the model trained on" in w for w in report["warnings"])
