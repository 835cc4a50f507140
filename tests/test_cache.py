"""The feature cache: hits, invalidation by content and by preprocessing, same numbers as no cache."""

import shutil

import pytest
import torch

from headstart.core.backbones import registry
from headstart.core.cache import FeatureCache
from headstart.tasks.image.data import ImageData, discover
from headstart.tasks.image.task import ImageClassifier


def test_cache_store_hits_and_namespaces(tmp_path):
    calls = []

    def compute(indices):
        calls.append(list(indices))
        return torch.arange(len(indices), dtype=torch.float32)[:, None] + 10 * torch.tensor(indices)[:, None]

    cache = FeatureCache({"backbone": "a"}, tmp_path)
    first = cache.get(["k1", "k2", "k3"], compute)
    assert calls == [[0, 1, 2]] and cache.computed == 3
    again = FeatureCache({"backbone": "a"}, tmp_path)  # a new process sees the same files
    assert torch.equal(again.get(["k3", "k1"], compute), first[[2, 0]])
    assert again.computed == 0 and again.hits == 2 and len(calls) == 1
    mixed = FeatureCache({"backbone": "a"}, tmp_path).get(["k1", "k9"], compute)
    assert calls[-1] == [1] and mixed.shape == (2, 1)
    other = FeatureCache({"backbone": "b"}, tmp_path)
    other.get(["k1"], compute)
    assert other.computed == 1


def _fit(data, tmp_path, name, cache_dir, **kw):
    return ImageClassifier(model="mobilenet_v2", strategy="linear", epochs=2, cache_views=2,
                           overrides={"cache.dir": str(cache_dir), **kw}).fit(data, out=tmp_path / name)


def test_second_run_hits_and_a_changed_file_or_preprocessing_misses(digits_dir, tmp_path):
    data = tmp_path / "digits"
    shutil.copytree(digits_dir, data)
    cache_dir = tmp_path / "cache"
    first = _fit(data, tmp_path, "a", cache_dir)
    # two augmented views and the plain images (the L-BFGS head fits both) of train, plus val
    n = first.metrics_["num_train"] * 3 + first.metrics_["num_val"]
    assert first.metrics_["cache"] == {"items_served": 0, "items_computed": n}
    second = _fit(data, tmp_path, "b", cache_dir)
    assert second.metrics_["cache"] == {"items_served": n, "items_computed": 0}
    assert second.metrics_["val_accuracy"] == first.metrics_["val_accuracy"]
    # one file changes content: only that file is computed again (once per view it appears in)
    victim = sorted((data / "3").iterdir())[0]
    from PIL import Image

    Image.open(sorted((data / "8").iterdir())[0]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(victim)
    third = _fit(data, tmp_path, "c", cache_dir)
    assert third.metrics_["cache"]["items_computed"] in (1, 2, 3)
    # another preprocessing (augmentation) misses for the training views, hits for validation and plain images
    fourth = _fit(data, tmp_path, "d", cache_dir, **{"data.augment": "light"})
    assert fourth.metrics_["cache"]["items_computed"] == first.metrics_["num_train"] * 2


def test_cached_features_equal_the_uncached_forward(digits_dir, tmp_path):
    from headstart.config import load_config
    from headstart.core import loop
    from headstart.tasks.classification.model import TransferClassifier
    from headstart.tasks.classification.training import ClassificationSteps

    cfg = load_config(overrides={"cache.dir": str(tmp_path / "c"), "model.name": "mobilenet_v2",
                                 "device.precision": "32-true"})
    backbone = registry.create_backbone("mobilenet_v2")
    data = ImageData(discover(digits_dir), backbone.spec)
    model = TransferClassifier(backbone, len(data.classes)).eval()
    fabric = loop.make_fabric(cfg.device)
    for cut in (backbone.num_groups, backbone.num_groups - 2):
        cached = ClassificationSteps(data, cfg).features(fabric, model, "val", cut, False, 0)
        with torch.no_grad():
            direct = torch.cat([backbone.extract(x, cut) for x, _ in
                                torch.utils.data.DataLoader(data.dataset("val", False, 0), batch_size=16)])
        tol = 1e-4 if cut == backbone.num_groups else 2e-2  # stage maps are stored as float16
        assert torch.allclose(cached, direct, atol=tol, rtol=1e-3)
        logits_cached = model(cached, start=cut)
        logits_direct = model(direct, start=cut)
        assert torch.allclose(logits_cached, logits_direct, atol=1e-2)
        assert (logits_cached.argmax(1) == logits_direct.argmax(1)).float().mean() >= 0.97


@pytest.mark.slow
def test_cached_and_uncached_linear_agree_on_hymenoptera(hymenoptera, tmp_path, session_cache):
    cached = ImageClassifier(strategy="linear", epochs=5).fit(hymenoptera, out=tmp_path / "cached")
    uncached = ImageClassifier(strategy="linear", epochs=5, cache=False).fit(hymenoptera, out=tmp_path / "uncached")
    assert abs(cached.metrics_["val_accuracy"] - uncached.metrics_["val_accuracy"]) <= 0.02
    assert uncached.metrics_["cache"]["items_computed"] == 0


def test_the_heads_pass_keeps_the_partial_candidates_features(digits_dir, tmp_path):
    """``auto``: the linear phase's extraction also stores the partial candidate's frozen outputs (Phase.prefetch),
    exactly those the candidate would compute itself, so the candidate runs no image through the backbone."""
    from headstart.config import load_config
    from headstart.core import loop, strategies
    from headstart.tasks.classification.model import TransferClassifier
    from headstart.tasks.classification.training import ClassificationSteps

    cfg = load_config(overrides={"cache.dir": str(tmp_path / "c"), "model.name": "mobilenet_v2", "cache.views": 2})
    backbone = registry.create_backbone("mobilenet_v2")
    data = ImageData(discover(digits_dir), backbone.spec)
    model = TransferClassifier(backbone, len(data.classes)).eval()
    fabric = loop.make_fabric(cfg.device)
    head, partial = strategies.plan("auto", backbone.num_groups, cfg.train)[:2]
    assert head.prefetch == partial.trainable > 0
    n = backbone.num_groups
    steps = ClassificationSteps(data, cfg)
    steps.prepare(fabric, model, head, n)
    later = ClassificationSteps(data, cfg)
    later.prepare(fabric, model, partial, n - partial.trainable)
    assert sum(c.computed for c in later.caches) == 0  # every view and the validation maps were served
    assert sum(c.hits for c in later.caches) == 2 * len(data.keys("train")) + len(data.keys("val"))
    cfg_fresh = load_config(overrides={"cache.dir": str(tmp_path / "fresh"), "model.name": "mobilenet_v2",
                                       "cache.views": 2})
    fresh = ClassificationSteps(data, cfg_fresh)
    fresh.prepare(fabric, model, partial, n - partial.trainable)
    assert sum(c.computed for c in fresh.caches) > 0
    assert torch.equal(fresh.train_views, later.train_views) and torch.equal(fresh.val_inputs, later.val_inputs)
