"""A two-class model's operating point: the rules on hand-made scores, then a real SMS run deciding at recall>=0.95
through predict, reload, evaluate, the batch writer and the reports."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from test_text import FAST, needs_minilm, needs_sms, sms_split  # noqa: F401 - sms_split: the fixture
from typer.testing import CliRunner

from headstart.cli import app
from headstart.config import load_config
from headstart.core.intervals import wilson
from headstart.errors import ConfigError
from headstart.tasks.classification import operating_point as op
from headstart.tasks.text.task import TextClassifier

# sorted: 0.9 P, 0.8 P, 0.7 P, 0.65 N, 0.6 P, 0.4 N, 0.3 P, 0.2 N, 0.1 N, 0.05 N
SCORES = [0.9, 0.8, 0.7, 0.6, 0.3, 0.65, 0.4, 0.2, 0.1, 0.05]
TRUTH = [True] * 5 + [False] * 5


@pytest.mark.parametrize("rule, threshold", [
    ("recall>=1", (0.3 + 0.2) / 2),  # every positive: down to 0.3, halfway to the next score below
    ("recall>=0.6", (0.7 + 0.65) / 2),  # three of five: the highest threshold that keeps them
    ("sensitivity>=60%", (0.7 + 0.65) / 2),
    ("specificity>=0.8", (0.6 + 0.4) / 2),  # one false positive allowed: the lowest threshold with at most one
    ("specificity>=1", (0.7 + 0.65) / 2),
    ("precision>=1", (0.7 + 0.65) / 2),  # the most positives found with none wrong
    ("f1", (0.3 + 0.2) / 2),  # F1 0.75, 0.8, 0.833 at 0.7, 0.6, 0.3; lower falls
    ("youden", (0.7 + 0.65) / 2),  # 0.6 at 0.7, 0.6 and 0.3: ties go to the highest threshold
    ("argmax", 0.5),
])
def test_each_rule_picks_its_threshold(rule, threshold):
    t, met = op.choose(SCORES, TRUTH, rule)
    assert met and t == pytest.approx(threshold)
    kind, bound = op.parse(rule)
    if bound is not None:  # the bound holds at the threshold chosen
        assert op.rates(SCORES, TRUTH, t)[kind]["value"] >= bound


def test_scores_another_runtime_could_reorder_get_no_threshold_between_them():
    scores, truth = [0.9, 0.7000001, 0.7, 0.2], [True, True, False, False]  # a negative 1e-7 under a positive
    t, met = op.choose(scores, truth, "precision>=1")
    assert met and t == pytest.approx((0.9 + 0.7000001) / 2)  # not between 0.7000001 and 0.7
    for nudge in (1e-6, -1e-6):  # every validation item decided alike when its last digits move
        assert op.rates([x + nudge for x in scores], truth, t) == op.rates(scores, truth, t)
    t, _ = op.choose(scores, truth, "recall>=1")  # down to every positive, the lowest at 0.7000001 ...
    assert t == pytest.approx((0.7 + 0.2) / 2)  # ... and 0.7, one value with it: halfway below them both
    # a confident model's 1.0 (float32) and 0.99999 (ONNX's of the same item) are one value: no precision 1 there
    t, met = op.choose([1.0, 0.99999, 0.5, 0.2], [True, False, True, False], "precision>=1")
    assert not met and t == pytest.approx((0.5 + 0.2) / 2)  # the most precise (2 of 3), said to fall short
    t, _ = op.choose([0.9, 0.4, 0.3], [True, False, True], "recall>=1")  # everything positive: halfway down to 0
    assert t == pytest.approx(0.15)


def test_a_bound_already_met_gives_nothing_away_for_nothing():
    # every positive above every negative: recall 1 and specificity 1 at once, whichever the rule asks for
    scores, truth = [0.9, 0.8, 0.4, 0.3, 0.2], [True, True, False, False, False]
    for rule in ("recall>=0.5", "specificity>=0.5", "precision>=0.5", "f1", "youden"):
        t, _ = op.choose(scores, truth, rule)
        rates = op.rates(scores, truth, t)
        assert rates["recall"]["value"] == rates["specificity"]["value"] == 1.0, rule


def test_an_unreachable_precision_keeps_the_most_precise_threshold_and_says_so():
    t, met = op.choose([0.5, 0.9, 0.4], [True, False, False], "precision>=0.9")
    assert not met and t == pytest.approx(0.45)  # 1 of 2 above it: the best precision there is


def test_rates_intervals_and_decisions():
    r = op.rates(SCORES, TRUTH, 0.5)
    assert r["counts"] == {"tp": 4, "fp": 1, "fn": 1, "tn": 4}
    assert r["recall"]["value"] == 0.8 and r["precision"]["of"] == 5
    z2 = 1.959964 ** 2  # Wilson at the edges: n / (n + z^2) below all-right, z^2 / (n + z^2) above none-right
    assert wilson(19, 19)[0] == pytest.approx(19 / (19 + z2)) and wilson(19, 19)[1] == pytest.approx(1.0)
    assert wilson(0, 40) == (0.0, pytest.approx(z2 / (40 + z2)))
    low, high = wilson(8, 10)
    assert low < 0.8 < high and wilson(80, 100)[1] - wilson(80, 100)[0] < high - low
    assert wilson(0, 0) == (0.0, 1.0) and r["recall"]["ci95"] is not None  # nothing known: anything
    probs = np.array([[0.7, 0.3], [0.8, 0.2], [0.1, 0.9]], np.float32)
    for positive, threshold, expected in ((1, 0.25, [1, 0, 1]), (0, 0.65, [0, 0, 1])):
        point = op.OperatingPoint(positive, threshold, "x")
        assert point.decide(probs).tolist() == expected == point.decide(torch.from_numpy(probs)).tolist()
        assert [point.decide_one(p) for p in probs] == expected


def test_among_more_classes_the_positive_wins_at_its_threshold_else_the_most_probable_other():
    probs = np.array([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.7, 0.1, 0.2]], np.float32)
    point = op.OperatingPoint(2, 0.25, "recall>=0.9")  # class 2 from p >= 0.25, though class 0 or 1 is likelier
    assert point.decide(probs).tolist() == [0, 2, 2, 0] == point.decide(torch.from_numpy(probs)).tolist()
    assert [point.decide_one(p) for p in probs] == [0, 2, 2, 0]
    assert op.OperatingPoint(0, 0.6, "x").decide(probs).tolist() == [1, 1, 2, 0]  # below 0.6: the best of the others
    with pytest.raises(ValueError, match="train.positive_class names"):
        op.positive_class(["a", "b", "c"], [5, 5, 5], None)
    rows = op.alternatives(SCORES, TRUTH, argmax=[True, True, False, False, False] + [True] + [False] * 4)
    assert rows[0]["rule"] == "argmax" and rows[0]["threshold"] is None and rows[0]["recall"] == 0.4
    assert rows[0]["precision"] == pytest.approx(2 / 3)  # the argmax's own decisions, not a threshold of 0.5


def test_rules_are_read_or_refused_by_the_config():
    assert load_config(overrides=["train.operating_point=Recall >= 0.95"]).train.operating_point == "recall>=0.95"
    for bad in ("recall>0.9", "recall>=1.5", "auc", "recall>=0"):
        with pytest.raises(ConfigError, match="operating point"):
            load_config(overrides=[f"train.operating_point={bad}"])
    assert op.positive_class(["ham", "spam"], [700, 100], None) == 1
    assert op.positive_class(["benign", "malignant"], [100, 700], None) == 0  # the rarer
    assert op.positive_class(["a", "b"], [5, 5], "a") == 0
    with pytest.raises(ValueError, match="not a class"):
        op.positive_class(["a", "b"], [5, 5], "c")


@needs_sms
@needs_minilm
def test_an_sms_model_decides_at_recall_95_everywhere(sms_split, tmp_path, session_cache, monkeypatch):  # noqa: F811
    run = tmp_path / "run"
    est = TextClassifier(strategy="linear", overrides={**FAST, "train.operating_point": "recall>=0.95"}).fit(
        sms_split["small"], out=run)
    val = est.metrics_["val"]
    point = val["operating_point"]
    assert point["positive"] == "spam" and point["rule"] == "recall>=0.95"  # the rarer class
    assert point["recall"]["value"] >= 0.95 and point["recall"]["ci95"][0] < 0.95  # a few positives: a wide interval
    assert json.loads((run / "spec.json").read_text())["operating_point"] == {
        k: point[k] for k in ("positive", "threshold", "rule")}
    rules = {r["rule"]: r for r in val["operating_points"]["rules"]}
    assert set(rules) == set(op.SHOWN) and rules["recall>=0.95"]["threshold"] == pytest.approx(point["threshold"],
                                                                                                 abs=1e-4)
    # the validation texts, predicted: spam exactly where p(spam) >= the threshold, and the run's confusion matrix
    with sms_split["small"].open(encoding="utf-8", newline="") as f:
        held = [(r["SMS"], r["Label"]) for r in csv.DictReader(f) if r["split"] == "val"]
    texts, truth = [t for t, _ in held], [label for _, label in held]
    again = TextClassifier.load(run)
    rows = again.predict(texts, top_k=2)
    p_spam = [dict(r["top_k"])["spam"] for r in rows]
    assert [r["label"] for r in rows] == ["spam" if p >= point["threshold"] else "ham" for p in p_spam]
    assert all(r["probability"] == dict(r["top_k"])[r["label"]] for r in rows)
    matrix = [[sum(t == a and r["label"] == b for t, r in zip(truth, rows)) for b in ("ham", "spam")]
              for a in ("ham", "spam")]
    # the run's confusion matrix, but for texts next to the threshold: bf16 text features move a little with the padding
    # of the batch a text was extracted in, and the cache may hold those of another test's batches
    near = sum(abs(p - point["threshold"]) < 0.05 for p in p_spam)
    moved = sum(abs(a - b) for mine, theirs in zip(matrix, val["confusion_matrix"]) for a, b in zip(mine, theirs)) // 2
    assert moved <= near and sum(map(sum, matrix)) == sum(map(sum, val["confusion_matrix"])), (
        matrix, val["confusion_matrix"], near)
    evaluated = again.evaluate(sms_split["small"])
    moved = sum(abs(a - b) for mine, theirs in zip(evaluated["confusion_matrix"], matrix) for a, b in zip(mine, theirs))
    assert moved // 2 <= near, (evaluated["confusion_matrix"], matrix, near)
    sure = [r["probability"] for r in rows]  # the decided class's: the saved thresholds decide; texts at one may move
    for mine, theirs in zip(evaluated["selective"], val["selective"]):
        close = sum(abs(q - theirs["threshold"]) < 0.05 for q in sure) if theirs["threshold"] is not None else 0
        assert mine["threshold"] == theirs["threshold"] and abs(mine["kept"] - theirs["kept"]) <= close, (
            mine, theirs, close)
    # the batch writer (predict --out) decides the same
    (tmp_path / "texts.txt").write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["predict", str(run), "--file", str(tmp_path / "texts.txt"), "--out",
                                      str(tmp_path / "p.jsonl")])
    assert result.exit_code == 0, result.output
    written = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    differ = [i for i, (w, r) in enumerate(zip(written, rows)) if w["label"] != r["label"]]
    assert len(written) == len(rows) and all(abs(p_spam[i] - point["threshold"]) < 0.05 for i in differ), differ
    monkeypatch.setenv("HEADSTART_QUIET", "0")  # the table says how it decided
    shown = CliRunner().invoke(app, ["predict", str(run), texts[0]])
    assert shown.exit_code == 0 and f"p(spam) >= {point['threshold']:.3g}" in " ".join(shown.output.split())
    # the reports: the decision's rates and the table of rules, the decided class marked on the ROC
    md = (run / "report.md").read_text()
    assert "## Operating points" in md and "| recall>=0.95 |" in md and "recall of spam (sensitivity)" in md
    assert "## Acting on confident predictions only" in md  # how many messages it decides alone, how well
    assert all(r["accuracy"] >= r["target"] for r in val["selective"] if r["threshold"] is not None)
    assert 'id="operating-points"' in (run / "report.html").read_text() and (run / "roc.png").is_file()


def test_a_digit_is_flagged_at_its_threshold_among_ten(digits_dir, tmp_path, session_cache):
    from headstart.tasks.image.task import ImageClassifier

    run = tmp_path / "run"
    est = ImageClassifier(model="mobilenet_v2", strategy="linear", cache_views=1, refit=False, operating_point=
                          "recall>=0.99", overrides={"train.positive_class": "8"}).fit(digits_dir, out=run)
    val = est.metrics_["val"]
    point, rows = val["operating_point"], {r["rule"]: r for r in val["operating_points"]["rules"]}
    assert point["positive"] == "8" and point["recall"]["value"] >= 0.99 and rows["argmax"]["threshold"] is None
    assert val["per_class"]["8"]["recall"] == pytest.approx(point["recall"]["value"])  # the 8s decided at the point
    assert rows["argmax"]["recall"] <= point["recall"]["value"]  # a threshold under what argmax needs finds more
    files = sorted((digits_dir / "8").glob("*.png"))[:20] + sorted((digits_dir / "3").glob("*.png"))[:20]
    predicted = ImageClassifier.load(run).predict(files, top_k=10)
    for r in predicted:  # 8 from its threshold on, else the most probable of the other nine
        p = dict(r["top_k"])
        assert r["label"] == ("8" if p["8"] >= point["threshold"] else max((c for c in p if c != "8"), key=p.get))


@needs_sms
@needs_minilm
def test_an_operating_point_needs_two_classes_and_a_known_positive(tmp_path, session_cache):
    table = tmp_path / "three.csv"
    table.write_text("text,label\n" + "".join(f"message number {i},{'abc'[i % 3]}\n" for i in range(30)))
    with pytest.raises(ConfigError, match="name it with train.positive_class"):
        TextClassifier(strategy="linear", overrides={**FAST, "train.operating_point": "f1"}).fit(
            table, out=tmp_path / "r1")
    assert not (tmp_path / "r1").exists()  # refused before training: nothing left behind
    table.write_text("text,label\n" + "".join(f"message number {i},{'ab'[i % 2]}\n" for i in range(30)))
    from headstart.tasks.multilabel.text import MultiLabelTextClassifier

    tags = tmp_path / "tags.jsonl"  # multi-label: a threshold per label already
    tags.write_text("".join(json.dumps({"text": f"message {i}", "labels": ["ab"[i % 2], "c"][: 1 + i % 3 // 2]})
                            + "\n" for i in range(30)))
    with pytest.raises(ConfigError, match="one threshold per label"):
        MultiLabelTextClassifier(strategy="linear", overrides={**FAST, "train.operating_point": "f1"}).fit(
            tags, out=tmp_path / "r3")
    with pytest.raises(ConfigError, match="'spam' is not a class"):
        TextClassifier(strategy="linear", overrides={**FAST, "train.positive_class": "spam"}).fit(
            table, out=tmp_path / "r2")
