"""Which unlabelled items to label next (``headstart suggest``): the least sure, unlike one another, never an item
labelled already; on real SMS messages and real digit images with real pretrained weights."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_text import FAST, SMS, needs_minilm, needs_sms, sms_split  # noqa: F401 - sms_split: the fixture
from typer.testing import CliRunner

from headstart.cli import _next_round, app
from headstart.core import runfolder
from headstart.errors import ConfigError, DataError
from headstart.tasks.classification import suggest
from headstart.tasks.text.task import TextClassifier

runner = CliRunner()


def test_margins_are_the_gap_to_the_decision():
    p = np.array([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05], [0.34, 0.33, 0.33]])
    assert suggest.margins(p) == pytest.approx([0.2, 0.85, 0.01])
    # an operating point deciding class 1 at 0.25: the first item is 0.05 from deciding otherwise
    assert suggest.margins(p, positive=1, threshold=0.25) == pytest.approx([0.05, 0.2, 0.01])
    # multi-label: the label nearest its own threshold
    assert suggest.margins(p, thresholds=[0.4, 0.2, 0.5]) == pytest.approx([0.1, 0.15, 0.06])


def test_a_batch_is_the_least_sure_items_one_per_group_not_fifty_copies():
    rng = np.random.default_rng(0)
    copies = rng.normal(0, 0.01, (50, 16)) + np.eye(16)[0]  # fifty near-copies the model is least sure of
    apart = np.eye(16)[1:6] + rng.normal(0, 0.01, (5, 16))  # five unsure items unlike them and one another
    sure = rng.normal(0, 1, (200, 16))  # items the model is sure of
    features = np.concatenate([copies, apart, sure])
    margin = np.concatenate([np.full(50, 0.05), np.full(5, 0.1), np.full(200, 0.9)])
    picked = suggest.choose(margin, features, 6)
    assert sum(i < 50 for i in picked) == 1 and set(range(50, 55)) <= set(picked)
    assert picked[0] < 50  # least sure first
    plain = np.argsort(margin, kind="stable")[:6].tolist()
    assert sum(i < 50 for i in plain) == 6  # what margin alone would ask: six copies of one item
    # a pool no bigger than the batch: all of it, least sure first
    assert suggest.choose([0.3, 0.1, 0.2], np.eye(3), 5) == [1, 2, 0]


def test_first_picks_are_one_typical_item_per_group_biggest_group_first():
    rng = np.random.default_rng(0)
    groups = [np.eye(8)[g] + rng.normal(0, 0.05, (size, 8)) for g, size in ((0, 50), (1, 30), (2, 10))]
    groups[0][0] = np.eye(8)[0] * 0.6 + np.eye(8)[3] * 0.4  # an odd member of the biggest group
    x = np.concatenate(groups)
    picked = suggest.first(x, 3)
    assert [size for _, size in picked] == [50, 30, 10]
    assert [row for row, _ in picked][0] in range(1, 50) and picked[1][0] in range(50, 80) and picked[2][0] >= 80
    centre = x[1:50].mean(axis=0)
    typical = np.linalg.norm(x[1:50] - centre, axis=1)
    assert np.linalg.norm(x[picked[0][0]] - centre) <= np.quantile(typical, 0.25)  # near the middle, not the edge
    assert suggest.first(x[:2], 5) == [(0, 1), (1, 1)]


def test_the_csv_has_a_label_column_to_fill_beside_the_guesses(tmp_path):
    rows = [{"path": "a.png", "rank": 1, "label": "cat", "probability": 0.55,
             "top_k": [("cat", 0.55), ("dog", 0.45)], "margin": 0.1, "unfamiliar": True},
            {"path": "b.png", "rank": 2, "labels": [{"label": "sea", "probability": 0.6}],
             "probabilities": {"sea": 0.6, "sky": 0.45, "sun": 0.1}, "margin": 0.05}]
    suggest.write_csv(rows, tmp_path / "to_label.csv", "path")
    got = list(csv.DictReader((tmp_path / "to_label.csv").open()))
    assert [r["label"] for r in got] == ["", ""]
    assert (got[0]["guess"], got[0]["runner_up"], got[0]["unfamiliar"]) == ("cat", "dog", "true")
    assert (got[1]["guess"], got[1]["runner_up"], got[1]["runner_up_probability"]) == ("sea", "sky", "0.4500")


@needs_sms
@needs_minilm
def test_sms_suggestions_leave_out_labelled_texts_and_find_the_rare_class(sms_split, tmp_path,  # noqa: F811
                                                                          session_cache):
    run = tmp_path / "run"
    TextClassifier(strategy="linear", overrides=FAST).fit(sms_split["small"], out=run)
    with sms_split["small"].open(encoding="utf-8", newline="") as f:
        labelled = [r["SMS"] for r in csv.DictReader(f)]  # training and validation messages
    with SMS.open(encoding="utf-8", newline="") as f:
        everything = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    truth = {text: label for label, text in everything}
    others = [t for _, t in everything if t not in set(labelled)][:1200]
    pool = labelled[:50] + others + others[:20]  # some labelled already, some twice
    (tmp_path / "pool.txt").write_text("\n".join(t.replace("\n", " ") for t in pool) + "\n", encoding="utf-8")
    out = tmp_path / "next.csv"
    result = runner.invoke(app, ["suggest", str(run), "--file", str(tmp_path / "pool.txt"), "-n", "30",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 30 and all(r["label"] == "" for r in rows)
    assert not {r["text"] for r in rows} & set(labelled) and len({r["text"] for r in rows}) == 30
    margins = [float(r["margin"]) for r in rows]
    assert margins == sorted(margins)
    # the library's count of what it left out: the 50 labelled messages (and their copies among the others) and
    # the 20 repeats (and the others' own repeats)
    clf = TextClassifier.load(run)
    picked = clf.suggest(pool, 30)
    assert [r["text"] for r in picked] == [r["text"] for r in rows]
    assert clf.weighed_["labelled"] >= 50 and clf.weighed_["repeated"] >= 20
    assert clf.weighed_["read"] == len(pool)
    # every pick is among the least sure of the pool: the prefilter's 10 x 30
    all_margins = np.sort(clf._margins(clf.predict_proba(others)[1]))
    assert max(margins) <= all_margins[suggest.PREFILTER * 30 - 1] + 1e-4
    # near the boundary spam is far commoner than in the pile (13 %): labels spent where they teach most
    share = sum(truth[r["text"]] == "spam" for r in rows) / len(rows)
    pile = sum(truth[t] == "spam" for t in others) / len(others)
    assert share >= 2 * pile, (share, pile)
    # filled in, the file trains the next round (--add): its 30 texts join training, a text of DATA listed again is
    # left out, validation is unchanged; a label DATA does not have is refused, named
    filled = [{**r, "label": truth[r["text"]]} for r in rows] + [{"text": labelled[0], "label": truth[labelled[0]]}]
    with out.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(filled)
    nxt = TextClassifier(strategy="linear", overrides=FAST, add=out).fit(sms_split["small"], out=tmp_path / "next")
    before = json.loads((run / "metrics.json").read_text())
    assert nxt.metrics_["num_train"] == before["num_train"] + 30 and nxt.metrics_["num_val"] == before["num_val"]
    (tmp_path / "wrong.csv").write_text("text,label\nsee you at 8,maybe\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"labels DATA does not know: \{'maybe': 1\}; its classes are \['ham', 'spam'\]"):
        TextClassifier(strategy="linear", overrides=FAST, add=tmp_path / "wrong.csv").fit(sms_split["small"])
    # with no run yet: typical messages of 20 groups of the pile, both kinds among them, written as a file to fill
    first = tmp_path / "first.csv"
    result = runner.invoke(app, ["suggest", "--first", "--file", str(tmp_path / "pool.txt"), "-n", "20",
                                 "--out", str(first)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(first.open(encoding="utf-8")))
    assert len(rows) == 20 and all(r["label"] == "" for r in rows)
    sizes = [int(r["group_size"]) for r in rows]
    assert sizes == sorted(sizes, reverse=True) and sum(sizes) == len(set(pool))  # every distinct text in one group
    assert {truth[r["text"]] for r in rows} == {"ham", "spam"}


def test_digit_suggestions_skip_the_run_s_own_images_and_copies(digits_dir, tmp_path, session_cache, monkeypatch):
    from headstart.tasks.image.task import ImageClassifier

    data, pool = tmp_path / "data", tmp_path / "pool"
    pool.mkdir()
    for digit in "0123456789":
        files = sorted((digits_dir / digit).iterdir())
        (data / digit).mkdir(parents=True)
        for f in files[:5]:
            shutil.copy(f, data / digit / f.name)
        for f in files:  # the whole digit folder, its 5 labelled images included, unsorted
            shutil.copy(f, pool / f"{digit}_{f.name}")
    shutil.copy(sorted(pool.glob("7_*"))[-1], pool / "copy_of_a_seven.png")
    run = tmp_path / "run"
    ImageClassifier(model="mobilenet_v2", strategy="linear", cache_views=1, refit=False).fit(data, out=run)
    assert len(runfolder.read_trained_keys(run)) + len(runfolder.read_trained_keys(run, runfolder.HELD_OUT)) == 50
    monkeypatch.chdir(tmp_path)  # the pile named relative to here; the file goes into the run folder
    result = runner.invoke(app, ["suggest", "run", "pool", "-n", "12"])
    assert result.exit_code == 0, result.output
    out = run / "to_label.csv"
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 12
    labelled = {f.name for f in data.rglob("*.png")}
    assert not [r for r in rows if Path(r["path"]).name.split("_", 1)[1] in labelled]
    clf = ImageClassifier.load(run)
    clf.suggest(str(pool), 12)
    keys = {f: hashlib.sha1(f.read_bytes()).hexdigest() for f in sorted(pool.iterdir())}
    known = {hashlib.sha1(f.read_bytes()).hexdigest() for f in data.rglob("*.png")}
    distinct = set(keys.values()) - known
    assert clf.weighed_ == {"read": 201, "labelled": sum(k in known for k in keys.values()),
                            "repeated": 201 - sum(k in known for k in keys.values()) - len(distinct)}
    assert clf.weighed_["labelled"] >= 50 and clf.weighed_["repeated"] >= 1
    # with no run: a typical digit of each of ten groups by the pretrained features, every distinct image in one
    # group (the copy left out); they span 7 or more digits (ten drawn at random: 6.6 on average)
    first = ImageClassifier(model="mobilenet_v2")
    firsts = first.suggest_first(str(pool), 10)
    assert first.weighed_ == {"read": 201, "labelled": 0, "repeated": 201 - len(set(keys.values()))}
    assert sum(r["group_size"] for r in firsts) == len(set(keys.values()))
    assert len({Path(r["path"]).name.split("_", 1)[0] for r in firsts}) >= 7
    # the filled file is training data: its label column, its rows without a label left out
    for i, r in enumerate(rows):
        r["label"] = Path(r["path"]).name.split("_", 1)[0] if i < 10 else ""
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    checked = ImageClassifier().check(out)
    assert "label column 'label'" in checked["layout"] and sum(checked["sizes"].values()) == 10
    assert [s["why"] for s in checked["skipped"]] == ["empty label"] * 2
    assert set(checked["classes"]) == {r["label"] for r in rows[:10]}
    # ... and trains the next round: `train DATA --add to_label.csv` adds its 10 labelled images to the training
    # split (validation unchanged); an image of DATA listed again is left out, the rows without a label are named
    with out.open("a", newline="") as f:
        again = sorted((data / "4").iterdir())[0]
        csv.writer(f).writerow([str(again), "4", *[""] * (len(rows[0]) - 2)])
    result = runner.invoke(app, ["check", "data", "--add", str(out), "--model", "mobilenet_v2", "--json"])
    assert result.exit_code == 0, result.output  # check reads it as train will, first
    checked = json.loads(result.stdout)
    assert "+ 10 images added to training (--add)" in checked["layout"]
    assert [s["why"] for s in checked["skipped"]] == ["empty label"] * 2
    nxt = tmp_path / "run-next"
    result = runner.invoke(app, ["train", "data", "--add", str(out), "--out", str(nxt), "--model", "mobilenet_v2",
                                 "--strategy", "linear", "--no-refit", "cache.views=1"])
    assert result.exit_code == 0, result.output
    before, after = (json.loads((r / "metrics.json").read_text()) for r in (run, nxt))
    assert after["num_train"] == before["num_train"] + 10 == checked["sizes"]["train"]
    assert after["num_val"] == before["num_val"] == checked["sizes"]["val"]
    assert "+ 10 images added to training (--add)" in after["layout"]
    added = {hashlib.sha1(Path(r["path"]).read_bytes()).hexdigest() for r in rows[:10]}
    assert added <= set(runfolder.read_trained_keys(nxt))  # the next suggest leaves them out
    assert (nxt / "skipped.txt").read_text().count("empty label") == 2
    assert ImageClassifier.load(nxt).config.data.add == [str(out.resolve())]
    # the command suggest gives for the round after: the run's DATA, every table added so far and the new one
    command = _next_round(nxt, ImageClassifier.load(nxt), tmp_path / "round3.csv")
    assert command == f"headstart train {data.resolve()} --add {out.resolve()} --add {tmp_path / 'round3.csv'}"
    # a label DATA does not have is refused before anything trains, naming it
    wrong = tmp_path / "wrong.csv"
    wrong.write_text(f"path,label\n{rows[0]['path']},eleven\n")
    result = runner.invoke(app, ["check", "data", "--add", str(wrong)])
    assert result.exit_code != 0 and "labels DATA never saw: {'eleven': 1}" in " ".join(result.output.split())
    with pytest.raises(DataError, match=r"labels DATA never saw: \{'eleven': 1\}\. DATA knows: 0, 1"):
        ImageClassifier(model="mobilenet_v2", strategy="linear", add=[wrong]).fit(data, out=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_only_single_label_classification_adds_tables(tmp_path, digits_dir):
    from headstart.core.estimator import build_config
    from headstart.tasks import get_task
    from headstart.tasks.multilabel.task import MultiLabelClassifier

    assert build_config(get_task("text"), add="new.csv").data.add == [str(Path("new.csv").resolve())]
    with pytest.raises(ConfigError, match=r"Unknown argument 'add' for task 'detection' \(it is for --task image, "):
        build_config(get_task("detection"), add="x.csv")
    result = runner.invoke(app, ["train", str(tmp_path), "--task", "segmentation", "--add", "x.csv"])
    assert result.exit_code != 0 and "Unknown argument 'add'" in result.output
    # multi-label: the config key is refused once DATA is read, before anything trains (a blank there is no tag)
    tags = tmp_path / "tags.csv"
    files = sorted(digits_dir.rglob("*.png"))[::10]
    tags.write_text("path,labels\n" + "".join(f"{f},{'odd' if int(f.parent.name) % 2 else 'even'};digit\n"
                                                for f in files))
    with pytest.raises(ConfigError, match="the multilabel task does not read it"):
        MultiLabelClassifier(overrides={"data.add": str(tags)}).fit(tags, out=tmp_path / "ml")
    assert not (tmp_path / "ml").exists()
