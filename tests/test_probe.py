"""The converged linear head: multinomial logistic regression by L-BFGS with a cross-validated L2."""

from __future__ import annotations

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
    sk = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=10, cv=5, max_iter=3000)).fit(x.numpy(), y.numpy())
    theirs = float((sk.predict(xv.numpy()) == yv.numpy()).mean())
    assert ours >= theirs - 0.01, (ours, theirs)
    assert set(fit.cv_accuracy) and fit.l2 in fit.cv_accuracy
    assert fit.cv_accuracy[fit.l2] == max(fit.cv_accuracy.values())


def test_the_head_is_fitted_on_raw_features_and_converges(digits):
    x, y, _, _ = digits
    weak, strong = fit_logistic(x, y, 10, l2=1e-5), fit_logistic(x, y, 10, l2=1e-1)
    assert weak.train_loss < strong.train_loss < 2.3  # better than chance (ln 10), less so with a strong L2
    assert float(((x @ weak.weight.T + weak.bias).argmax(1) == y).float().mean()) > 0.99
