"""report.html of a run: self-contained, rendered by headless Chromium with its figures and metrics."""

import json
import re
import shutil

import pytest
import torch

from headstart.core.report.html_report import confident_mistakes
from headstart.tasks.image.task import ImageClassifier


def test_confident_mistakes_are_the_wrong_ones_by_confidence():
    logits = torch.tensor([[4.0, 0.0], [0.0, 1.0], [0.0, 3.0], [2.0, 0.0]])
    labels = torch.tensor([0, 0, 0, 1])
    found = confident_mistakes(["a", "b", "c", "d"], logits, labels, ["x", "y"], k=5, is_image=False)
    assert [m.item for m in found] == ["c", "d", "b"]  # 0.953 > 0.881 > 0.731, 'a' is right
    assert (found[0].true, found[0].predicted) == ("x", "y")
    assert found[0].confidence == pytest.approx(torch.tensor([0.0, 3.0]).softmax(0)[1].item())


def test_confident_hits_are_the_surest_right_ones_of_each_class_in_turn():
    from headstart.core.report.html_report import confident_hits

    logits = torch.tensor([[4.0, 0.0], [1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 5.0], [6.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 0])  # 5 is wrong (a confident 'x' for a 'y'), 6 too
    found = confident_hits(list("abcdefg"), logits, labels, ["x", "y"], per_class=2, is_image=False)
    assert [m.item for m in found] == ["a", "e", "c", "d"]  # x's surest, y's surest, then the second of each
    assert all(m.true == m.predicted for m in found) and [m.index for m in found] == [0, 4, 2, 3]
    assert [m.item for m in confident_hits(list("abcdefg"), logits, labels, ["x", "y"], k=3)] == ["a", "e", "c"]


def test_auroc_ranks_as_scikit_learn_and_the_baseline_ranks_nothing():
    from sklearn.metrics import roc_auc_score

    from headstart.core.report.outputs import score_rows
    from headstart.tasks.classification.metrics import classification_report

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (300,), generator=g)
    logits = torch.randn(300, 3, generator=g) + 1.5 * torch.nn.functional.one_hot(labels, 3)  # informative, noisy
    report = classification_report(logits, labels, ["a", "b", "c"])
    probs = logits.softmax(1).numpy()
    assert report["auroc"] == pytest.approx(roc_auc_score(labels.numpy(), probs, multi_class="ovr"), abs=1e-5)
    assert 0.75 < report["auroc"] < 0.95 and report["baseline"]["auroc"] == 0.5
    assert report["baseline"]["balanced_accuracy"] == pytest.approx(1 / 3)
    binary = classification_report(logits[:, :2], (labels == 1).long(), ["no", "yes"])
    assert binary["auroc"] == pytest.approx(roc_auc_score((labels == 1).numpy(), logits[:, :2].softmax(1)[:, 1]),
                                            abs=1e-5)  # the positive class's AUROC
    rows = {name: (model, base) for name, model, base in score_rows(binary)}
    assert rows["AUROC"] == (f"{binary['auroc']:.4f}", "0.5000") and rows["samples"] == ("300", "")
    one = classification_report(logits[:5], torch.zeros(5, dtype=torch.long), ["a", "b", "c"])
    assert one["auroc"] is None and "AUROC" not in {r[0] for r in score_rows(one)}  # nothing to rank against


def test_a_class_never_predicted_is_named_beside_a_fair_accuracy():
    """A partial collapse (a rare class of 8 samples never predicted, accuracy 0.87): a warning names it; a model that
    predicts every class, or one of too few samples to say, gets none."""
    from headstart.tasks.classification.metrics import classification_report

    labels = torch.tensor([0] * 30 + [1] * 22 + [2] * 8 + [3] * 3)
    wrong = torch.tensor([0] * 30 + [1] * 22 + [0] * 8 + [1] * 3)  # classes 2 and 3 go to 0 and 1
    warned = classification_report(torch.nn.functional.one_hot(wrong, 4).float() * 5, labels, ["a", "b", "c", "d"])
    named = [w for w in warned["warnings"] if "never predicted" in w]
    assert named and "1 class(es) never predicted on these 63 samples" in named[0] and "'c' (8 samples)" in named[0]
    assert "'d'" not in named[0] and warned["accuracy"] > 0.8  # 3 samples of d: too few to say
    right = classification_report(torch.nn.functional.one_hot(labels, 4).float() * 5, labels, ["a", "b", "c", "d"])
    assert not [w for w in right["warnings"] if "never predicted" in w]


def test_roc_figure_draws_each_class_against_the_rest(tmp_path):
    from PIL import Image

    from headstart.core.report.outputs import plot_roc

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (120,), generator=g)
    logits = torch.randn(120, 3, generator=g) + 2 * torch.nn.functional.one_hot(labels, 3)
    from headstart.tasks.classification.metrics import auroc

    three = plot_roc(logits, labels, ["a", "b", "c"], tmp_path / "three.png", "three")
    assert list(three) == ["a", "b", "c"] and sum(three.values()) / 3 == pytest.approx(auroc(logits, labels, 3))
    binary = (labels == 1).long()  # 'b' is the rarer class: its curve is the one drawn
    assert plot_roc(logits[:, :2], binary, ["a", "b"], tmp_path / "two.png", "two") == {
        "b": pytest.approx(auroc(logits[:, :2], binary, 2))}
    assert plot_roc(logits, torch.zeros(120, dtype=torch.long), ["a", "b", "c"], tmp_path / "one.png", "one") == {}
    for name in ("three", "two", "one"):
        with Image.open(tmp_path / f"{name}.png") as shown:
            assert shown.size[0] > 400


@pytest.fixture(scope="module")
def run(digits_dir, tmp_path_factory, session_cache):
    """A linear run on 6 images of each digit (50 train, 10 val): some mistakes to show."""
    data = tmp_path_factory.mktemp("digits-small")
    for c in range(10):
        (data / str(c)).mkdir()
        for f in sorted((digits_dir / str(c)).iterdir())[:6]:
            shutil.copy(f, data / str(c) / f.name)
    out = tmp_path_factory.mktemp("report") / "run"
    return ImageClassifier(model="mobilenet_v2", strategy="linear", epochs=3, cache_views=1).fit(data, out=out)


def test_report_is_self_contained(run):
    html = (run.run_dir_ / "report.html").read_text()
    assert "http://" not in html and "https://" not in html  # nothing to fetch: opens from disk, offline
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    meta = json.loads((run.run_dir_ / "headstart.json").read_text())
    assert meta["data_fingerprint"] in html  # the data hash, with seeds and versions
    assert "train.seed" in html and "torch" in html


def test_report_renders_in_chromium_with_figures_and_metrics(run, chromium):
    dom = chromium(run.run_dir_ / "report.html", "run-report.png")
    assert "figures rendered: 4 of 4" in dom  # learning curve, confusion matrix, calibration, ROC decoded by the browser
    assert dom.count('data-rendered="yes"') == 4
    val = run.metrics_["val"]
    assert f"{val['accuracy']:.4f}" in dom and f"{val['macro_f1']:.4f}" in dom
    per_class = dom[dom.index('id="per-class"'):]
    per_class = per_class[:per_class.index("</table>")]
    assert per_class.count("<tr") == 1 + 10  # header and the ten digits
    wrong = val["num_samples"] - round(val["accuracy"] * val["num_samples"])
    mistakes = dom[dom.index('id="sec-mistakes"'):]
    mistakes = mistakes[:mistakes.index("</section>")]
    cards = mistakes.count('class="card mistake')
    assert cards == min(12, wrong)
    assert mistakes.count('data-thumb="1"') == cards  # each mistake shows its image
    assert mistakes.count('data-heat="1"') == cards  # and where the model looked
    shown = [int(p) for p in re.findall(r"</b> \((\d+)%\)", mistakes)]
    assert shown == sorted(shown, reverse=True)  # most confident first
    doubts = dom[dom.index('id="sec-doubts"'):]
    doubts = doubts[:doubts.index("</section>")]  # the training labels the held-out heads doubt, in their gallery
    assert doubts.count('data-thumb="1"') == min(12, run.metrics_["label_doubts"]["count"])
