"""The converged linear head: multinomial logistic regression by L-BFGS with a cross-validated L2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from headstart.tasks.classification.probe import fit_head_cv, fit_logistic, stratified_folds


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = torch.tensor(d.data, dtype=torch.float32), torch.tensor(d.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    return x[order[:600]], y[order[:600]], x[order[600:]], y[order[600:]]


def test_folds_keep_an_items_views_together_and_spread_classes():
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1] * 3)  # 8 items, 3 views each
    groups = torch.arange(8).repeat(3)
    fold = stratified_folds(y, groups, 2, seed=1)
    for g in range(8):
        assert len(set(fold[groups == g].tolist())) == 1
    for c in (0, 1):
        assert set(fold[y == c].tolist()) == {0, 1}


def test_cross_validated_head_is_as_good_as_scikit_learns(digits):
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, xv, yv = digits
    fit = fit_head_cv(x, y, 10)
    ours = float(((xv @ fit.weight.T + fit.bias).argmax(1) == yv).float().mean())
    sk = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=10, cv=5, max_iter=3000, scoring="accuracy"))
    sk.fit(x.numpy(), y.numpy())
    theirs = float((sk.predict(xv.numpy()) == yv.numpy()).mean())
    assert ours >= theirs - 0.01, (ours, theirs)
    assert set(fit.cv_accuracy) and fit.l2 in fit.cv_accuracy
    assert fit.cv_accuracy[fit.l2] == max(fit.cv_accuracy.values())


def test_cross_validation_keeps_augmented_views_only_where_they_help(digits):
    """Mirror images of 8x8 digits are a label-changing augmentation: the head drops them; brightness jitter stays."""
    x, y, xv, yv = digits
    x, y = x[:300], y[:300]
    n, views = len(y), 3
    groups, plain = torch.arange(n).repeat(views), torch.arange(views * n) < n
    mirrored = x.view(-1, 8, 8).flip(2).reshape(n, 64)
    fit = fit_head_cv(torch.cat([x, mirrored, mirrored]), y.repeat(views), 10, groups, plain=plain)
    assert not fit.augmented and max(fit.cv_accuracy_plain.values()) > max(fit.cv_accuracy.values()) + 0.05
    plain_only = fit_head_cv(x, y, 10)
    assert torch.equal((xv @ fit.weight.T + fit.bias).argmax(1), (xv @ plain_only.weight.T + plain_only.bias).argmax(1))
    jitter = torch.cat([x, x * 1.1, x * 0.9])  # brighter and darker ink: still the same digit
    fit = fit_head_cv(jitter, y.repeat(views), 10, groups, plain=plain)
    assert fit.augmented and float(((xv @ fit.weight.T + fit.bias).argmax(1) == yv).float().mean()) > 0.9


def test_the_head_is_fitted_on_raw_features_and_converges(digits):
    x, y, _, _ = digits
    weak, strong = fit_logistic(x, y, 10, l2=1e-5), fit_logistic(x, y, 10, l2=1e-1)
    assert weak.train_loss < strong.train_loss < 2.3  # better than chance (ln 10), less so with a strong L2
    assert float(((x @ weak.weight.T + weak.bias).argmax(1) == y).float().mean()) > 0.99


def test_a_feature_training_barely_wakes_gets_no_weight_that_held_out_items_could_blow_up(digits):
    """A channel the training images all but never wake (one training row 0.001, the rest 0) is not standardised
    to unit variance, where the L2 penalty costs it nothing: its raw weight stays of the order of the other
    features', and held-out images that wake it a little (up to 0.05, far below the pixels' 0-16) are classified as
    without it. Before the floor (``probe.STD_FLOOR``) its weight was 1,227 (the largest of the others: 2.2), and
    those images' logits moved by up to 60."""
    x, y, xv, yv = digits
    x, y = x[:300], y[:300]
    woken = torch.zeros(len(y), 1)
    woken[0] = 1e-3
    held_out = torch.rand(len(yv), 1, generator=torch.Generator().manual_seed(0)) * 0.05
    without = fit_head_cv(x, y, 10)
    fit = fit_head_cv(torch.cat([x, woken], 1), y, 10)
    typical = float(without.weight.abs().max())
    assert float(fit.weight[:, -1].abs().max()) < typical, (float(fit.weight[:, -1].abs().max()), typical)
    before = (xv @ without.weight.T + without.bias).argmax(1)
    after = (torch.cat([xv, held_out], 1) @ fit.weight.T + fit.bias).argmax(1)
    assert float((before == after).float().mean()) >= 0.99
    assert float((after == yv).float().mean()) >= float((before == yv).float().mean()) - 0.01


def _sklearn_probe_accuracy(clf, data) -> float:
    """LogisticRegressionCV on the un-augmented frozen features of the run's own training and validation images."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from headstart.core import loop
    from headstart.core.backbones import registry
    from headstart.tasks.classification.model import TransferClassifier
    from headstart.tasks.classification.training import ClassificationSteps
    from headstart.tasks.image.data import discover
    from headstart.tasks.image.dataset import ImageData

    cfg = clf.config
    model = TransferClassifier(registry.create_backbone(cfg.model.name), len(clf.classes_))  # pretrained, frozen
    images = ImageData(discover(data, cfg.data.val_fraction, cfg.train.seed), model.backbone.spec)
    steps, fabric = ClassificationSteps(images, cfg), loop.make_fabric(cfg.device)
    cut = model.backbone.num_groups
    xtr, xva = (steps.features(fabric, model, split, cut, False, 0).numpy() for split in ("train", "val"))
    sk = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=10, cv=5, max_iter=3000, scoring="accuracy"))
    sk.fit(xtr, images.labels("train").numpy())
    return float((sk.predict(xva) == images.labels("val").numpy()).mean())


@pytest.mark.slow
def test_lbfgs_linear_phase_matches_scikit_learn_and_fine_tuning_never_ends_below_it(digits_dir, tmp_path,
                                                                                     session_cache):
    """On 200 tiny digits (far from ImageNet photos) the solved head is as good as LogisticRegressionCV on the
    same frozen features; lp-ft after it returns the best of both phases."""
    from headstart.tasks.image.task import ImageClassifier

    clf = ImageClassifier(model="mobilenet_v2", strategy="lp-ft", epochs=1).fit(digits_dir, out=tmp_path / "run")
    assert clf.config.train.head_solver == "lbfgs"  # the default
    linear = [r for r in clf.history_ if r["phase"] == "linear"]
    assert len(linear) == 1 and linear[0]["head_l2"] > 0  # one solve, no epochs
    assert clf.metrics_["val_accuracy"] >= max(r["val_accuracy"] for r in clf.history_) - 1e-6
    theirs = _sklearn_probe_accuracy(clf, digits_dir)
    assert linear[0]["val_accuracy"] >= theirs - 0.026, (linear[0]["val_accuracy"], theirs)  # 1 of 40 images


BLOOD_CELLS = Path(__file__).resolve().parents[2] / "shared" / "data" / "blood_cells"


@pytest.mark.slow
def test_default_head_is_within_a_point_of_scikit_learn_on_microscopy(tmp_path, session_cache):
    """blood_cells (every third training crop: 284 of 851, 3 classes, far from ImageNet photos; all 344 validation
    crops), default backbone and head solver."""
    from headstart.tasks.image.task import ImageClassifier

    if not BLOOD_CELLS.is_dir():
        pytest.skip(f"{BLOOD_CELLS} is absent (the ../shared data folder)")
    data = tmp_path / "blood_cells"
    for split, step in (("train", 3), ("val", 1)):
        for crop in sorted((BLOOD_CELLS / split).glob("*/*.jpg"))[::step]:
            (data / split / crop.parent.name).mkdir(parents=True, exist_ok=True)
            (data / split / crop.parent.name / crop.name).symlink_to(crop)
    # one cached view instead of four keeps the test's extraction short; the solver is the default's
    clf = ImageClassifier(strategy="linear", cache_views=1).fit(data, out=tmp_path / "run")
    assert clf.metrics_["num_train"] == 284 and clf.metrics_["num_val"] == 344
    theirs = _sklearn_probe_accuracy(clf, data)
    assert clf.metrics_["val_accuracy"] >= theirs - 0.01, (clf.metrics_["val_accuracy"], theirs)


def test_held_out_predictions_score_the_cross_validation_and_find_flipped_labels(digits):
    from headstart.tasks.classification.probe import label_doubts

    x, y, _, _ = digits
    noisy = y.clone()
    flipped = torch.randperm(len(y), generator=torch.Generator().manual_seed(1))[:12]
    noisy[flipped] = (noisy[flipped] + 1 + torch.randint(0, 9, (12,), generator=torch.Generator().manual_seed(2))) % 10
    assert bool((noisy[flipped] != y[flipped]).all())
    fit = fit_head_cv(x, noisy, 10)
    own, guess, sure = fit.held_out
    assert len(own) == len(y) and not torch.isnan(own).any()
    # the held-out predictions are the ones cross-validation scored: their accuracy is the chosen L2's
    assert round(float((guess == noisy).float().mean()), 4) == fit.cv_accuracy[fit.l2]
    assert torch.allclose(sure, torch.maximum(sure, own))  # the predicted class is the most probable
    doubted = {row for row, *_ in label_doubts(fit.held_out, noisy)}
    found = doubted & set(flipped.tolist())
    assert len(found) >= 7 and len(doubted - found) <= 2, (sorted(found), sorted(doubted - found))  # 8 and 0 here
    for row, predicted, p_label, p_predicted in label_doubts(fit.held_out, noisy):
        assert predicted != int(noisy[row]) and p_label < 0.1 < 0.7 < p_predicted
