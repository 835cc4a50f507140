"""The feature cache: hits, invalidation by content and by preprocessing, same numbers as no cache."""

import shutil
from pathlib import Path

import pytest
import torch

from headstart.core.backbones import registry
from headstart.core.cache import FeatureCache
from headstart.tasks.image.data import discover
from headstart.tasks.image.dataset import ImageData
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
    data = tmp_path / "digits"  # five classes of 8 images: the counts below hold for any data
    for digit in "13578":
        (data / digit).mkdir(parents=True)
        for f in sorted((digits_dir / digit).iterdir())[:8]:
            shutil.copy(f, data / digit / f.name)
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
    cached = ImageClassifier(strategy="linear", epochs=3).fit(hymenoptera, out=tmp_path / "cached")
    uncached = ImageClassifier(strategy="linear", epochs=3, cache=False).fit(hymenoptera, out=tmp_path / "uncached")
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
    assert steps.head_rows.shape[0] == 3 and steps.train_views.shape[0] == 2  # the head: plain rows + 2 views
    assert later.head_rows is None and later.train_views.shape[0] == 3  # fine-tuning draws among all three
    plain = ClassificationSteps(data, cfg).features(fabric, model, "train", n - partial.trainable, False, 0)
    assert torch.equal(later.train_views[0], plain)  # slot 0: the un-augmented maps
    # the plain images and 2 views of each, then validation
    assert sum(c.hits for c in later.caches) == 3 * len(data.keys("train")) + len(data.keys("val"))
    cfg_fresh = load_config(overrides={"cache.dir": str(tmp_path / "fresh"), "model.name": "mobilenet_v2",
                                       "cache.views": 2})
    fresh = ClassificationSteps(data, cfg_fresh)
    fresh.prepare(fabric, model, partial, n - partial.trainable)
    assert sum(c.computed for c in fresh.caches) > 0
    assert torch.equal(fresh.train_views, later.train_views) and torch.equal(fresh.val_inputs, later.val_inputs)


# ------------------------------------------------------------------------------- memory-mapped shards
def _rss_anon_mb() -> float | None:
    """The process's anonymous resident memory (Linux); file-backed pages of mapped shards are not in it."""
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    line = next(x for x in status.read_text().splitlines() if x.startswith("RssAnon:"))
    return int(line.split()[1]) / 1024


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.bfloat16], ids=["fp16", "fp32", "bf16"])
def test_features_read_back_from_mapped_shards_are_the_computed_ones_bit_for_bit(tmp_path, dtype):
    features = torch.randn(50, 6, 5, generator=torch.Generator().manual_seed(1)).to(dtype)
    keys = [f"{i:064x}" for i in range(50)]
    cache = FeatureCache({"dtype": str(dtype)}, tmp_path)
    first = cache.get(keys, lambda idx: features[idx], chunk=16)  # 4 shards
    assert cache.bytes_in_memory == 0 and len(list(cache.dir.glob("*.safetensors"))) == 4
    again = FeatureCache({"dtype": str(dtype)}, tmp_path)  # another process: everything from the files
    order = torch.randperm(50, generator=torch.Generator().manual_seed(2)).tolist() + [7, 7]
    read = again.get([keys[i] for i in order], lambda idx: pytest.fail(f"recomputed {idx}"))
    bits = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32}[dtype]
    assert read.dtype == first.dtype == dtype and torch.equal(first.view(bits), features.view(bits))
    assert torch.equal(read.view(bits), features[order].view(bits)) and again.bytes_in_memory == 0
    assert torch.equal(again.get(keys, None, dtype=torch.float32), features.float())  # converted as it is copied


def test_fill_keeps_no_stored_rows_in_memory_and_keeps_those_it_cannot_store(tmp_path):
    from headstart.core.cache import reserve

    rows, width, chunk = 8192, 5120, 2048  # 160 MB of float32 in 4 shards of 40 MB
    keys = [f"{i:064x}" for i in range(rows)]

    def compute(idx):
        return torch.tensor(idx, dtype=torch.float32)[:, None] + torch.arange(width, dtype=torch.float32)

    cache = FeatureCache({"n": rows}, tmp_path / "disk")
    before = _rss_anon_mb()
    cache.fill(keys, range(rows), compute, chunk)
    grown = None if before is None else _rss_anon_mb() - before
    assert cache.computed == rows and cache.missing(keys) == [] and cache.bytes_in_memory == 0
    if grown is not None:
        assert grown < 60, f"RssAnon grew by {grown:.0f} MB filling 160 MB of stored features"
    out = cache.get(keys[::1000], None)
    assert torch.equal(out[:, 0], torch.arange(0, rows, 1000, dtype=torch.float32)) and out.shape == (9, width)
    # writes off (the run's features do not fit the disk): the rows stay in memory, nothing is written
    full = tmp_path / "full"
    assert not reserve(full, need=2**40, free=0)
    try:
        kept = FeatureCache({"n": 10}, full)
        assert torch.equal(kept.get(keys[:10], compute, chunk=4), compute(list(range(10))))
        assert kept.bytes_in_memory == 10 * width * 4 and not list(full.rglob("*.safetensors"))
    finally:
        assert reserve(full, need=0, free=1)


def test_a_truncated_or_damaged_shard_is_skipped_and_recomputed(tmp_path):
    from headstart.core.cache import read_header

    keys = [f"{i:064x}" for i in range(12)]
    calls: list[list[int]] = []

    def compute(idx):
        calls.append(list(idx))
        return torch.tensor(idx, dtype=torch.float16)[:, None].repeat(1, 3)

    FeatureCache({"n": 1}, tmp_path).get(keys, compute, chunk=4)
    shards = {read_header(p)[0][0]: p for p in FeatureCache({"n": 1}, tmp_path).dir.glob("*.safetensors")}
    truncated, damaged, removed = shards[keys[4]], shards[keys[8]], shards[keys[0]]
    truncated.write_bytes(truncated.read_bytes()[:-5])  # a write cut short: the header promises more bytes
    damaged.write_bytes(b"\xff" * 8 + damaged.read_bytes()[8:])  # a header length beyond the file
    calls.clear()
    again = FeatureCache({"n": 1}, tmp_path)
    assert again.missing(keys) == list(range(4, 12))  # neither is trusted
    removed.unlink()  # and one goes away after it was indexed (another process cleaning the cache)
    out = again.get(keys, compute, chunk=4)
    assert sorted(i for c in calls for i in c) == list(range(12)) and again.computed == 12
    assert torch.equal(out[:, 0], torch.arange(12, dtype=torch.float16))
    assert FeatureCache({"n": 1}, tmp_path).missing(keys) == list(range(4))  # the recomputed 4..11 were stored
