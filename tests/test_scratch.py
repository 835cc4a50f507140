"""Scratch tensors: above cache.memory_mb, feature matrices live in memory-mapped files, with the same numbers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from headstart import progress
from headstart.config import load_config
from headstart.core.cache import FeatureCache
from headstart.core.scratch import Scratch, scratch_tensor
from headstart.errors import DiskSpaceError
from headstart.tasks.classification.probe import fit_head_cv
from headstart.tasks.multilabel.probe import fit_multilabel_cv

STATUS = Path("/proc/self/status")


def status_mb(field: str) -> float:
    line = next(line for line in STATUS.read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


@pytest.mark.skipif(not STATUS.exists(), reason="RssAnon / RssFile come from Linux's /proc/self/status")
def test_a_tensor_above_the_limit_is_a_mapped_file_that_leaves_nothing_behind(tmp_path):
    scratch = Scratch(tmp_path / "scratch", limit_mb=16)
    small = scratch.empty((1000, 100))
    assert scratch.mapped == 0  # 0.4 MB: a plain tensor
    shape, mb = (48, 2**18), 48  # 48 MB of float32
    anon, file = status_mb("RssAnon"), status_mb("RssFile")
    big = scratch.empty(shape)
    big.fill_(2.5)  # every page written
    big[7] = torch.arange(2**18, dtype=torch.float32)
    assert scratch.mapped == mb * 2**20
    # written pages of a mapped file: counted in RssFile (which a tensor in RAM would not grow), not in RssAnon
    assert status_mb("RssFile") - file > mb * 3 / 4
    assert status_mb("RssAnon") - anon < mb / 4
    assert list((tmp_path / "scratch").iterdir()) == []  # the file has no name: nothing to clean up, even on a crash
    assert torch.equal(big[7], torch.arange(2**18, dtype=torch.float32)) and bool((big[8:] == 2.5).all())
    file = status_mb("RssFile")
    in_ram = scratch_tensor(shape, torch.float32, tmp_path, limit_mb=None)  # limit None: always in memory
    in_ram.copy_(big)
    assert status_mb("RssFile") - file < mb / 4 and torch.equal(in_ram, big)
    for dtype in (torch.bfloat16, torch.float16, torch.int64, torch.bool):
        values = (torch.arange(3 * 2**17) % 5).view(3, -1).to(dtype)
        mapped = scratch_tensor(values.shape, dtype, tmp_path / "scratch", limit_mb=0)
        mapped.copy_(values)
        assert mapped.dtype == dtype and torch.equal(mapped, values)
    assert small.shape == (1000, 100)


def test_a_disk_too_small_is_an_error_naming_the_folder_and_the_bytes(tmp_path):
    need = shutil.disk_usage(tmp_path).free + 2**30
    with pytest.raises(DiskSpaceError, match="cache.memory_mb") as raised:
        scratch_tensor((need // 4 + 1,), torch.float32, tmp_path, limit_mb=1)
    assert str(tmp_path) in str(raised.value) and str((need // 4 + 1) * 4) in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_folder_falls_back_to_memory_with_one_warning(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    scratch = Scratch(tmp_path / "a-file" / "scratch", limit_mb=0)
    with progress.console.capture() as captured:
        first, second = scratch.empty((256, 64)), scratch.empty((256, 64))
    first.fill_(1.5)
    second.copy_(first)
    assert scratch.mapped == 0 and torch.equal(second, torch.full((256, 64), 1.5))
    assert " ".join(captured.get().split()).count("cannot be written") == 1


def test_the_knob_reaches_the_scratch_and_the_cache_maps_what_it_returns(tmp_path):
    cfg = load_config(overrides={"cache.dir": str(tmp_path / "cache"), "cache.memory_mb": 0})
    assert Scratch.of(cfg.cache) == Scratch(tmp_path / "cache", 0)
    assert Scratch.of(load_config(overrides={"cache.enabled": False}).cache).folder is None  # the temporary folder
    assert load_config().cache.memory_mb == 1024

    def compute(indices):
        return torch.tensor(indices, dtype=torch.float32)[:, None] * torch.linspace(-1, 1, 300)

    keys = [f"k{i}" for i in range(40)]
    in_ram = FeatureCache({"n": 1}, tmp_path / "cache").get(keys, compute)
    cache = FeatureCache({"n": 1}, tmp_path / "cache", memory_mb=0)
    mapped = cache.get(keys[::-1], compute)
    assert cache.computed == 0 and cache.scratch.mapped == mapped.numel() * 4
    assert torch.equal(mapped, in_ram.flip(0))
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cache.dir.name]  # only the cache's own folder


@pytest.fixture(scope="module")
def views():
    """120 items of 4 classes in 3 views (the plain rows first), 32 features."""
    g = torch.Generator().manual_seed(0)
    n, views = 120, 3
    y = torch.arange(n) % 4
    base = torch.randn(4, 32, generator=g)[y] * 1.5 + torch.randn(n, 32, generator=g)
    x = torch.cat([base] + [base + 0.5 * torch.randn(n, 32, generator=g) for _ in range(views - 1)])
    return x, y.repeat(views), torch.arange(n).repeat(views), torch.arange(views * n) < n


def _same(a, b) -> None:
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert (a.l2, a.train_loss, a.cv_accuracy, a.cv_accuracy_plain) == (b.l2, b.train_loss, b.cv_accuracy,
                                                                        b.cv_accuracy_plain)


def test_the_heads_are_the_same_bit_for_bit_from_mapped_files(views, tmp_path):
    x, y, groups, plain = views
    weight = torch.tensor([1.0, 2.0, 1.0, 0.5])
    scratch = Scratch(tmp_path, limit_mb=0)
    in_ram = fit_head_cv(x, y, 4, groups, class_weight=weight, plain=plain)
    mapped = fit_head_cv(x, y, 4, groups, class_weight=weight, plain=plain, scratch=scratch)
    assert scratch.mapped >= x.numel() * 4  # the fold buffer (and the held-out rows) were files
    _same(mapped, in_ram)
    assert max(in_ram.cv_accuracy.values()) > 0.9  # a real fit, not two equal failures
    tags = torch.stack([y == 0, y == 1, y % 2 == 0], 1)
    scratch = Scratch(tmp_path, limit_mb=0)
    in_ram = fit_multilabel_cv(x, tags, groups, plain, pos_weight=torch.tensor([1.0, 3.0, 1.0]))
    mapped = fit_multilabel_cv(x, tags, groups, plain, pos_weight=torch.tensor([1.0, 3.0, 1.0]), scratch=scratch)
    assert scratch.mapped >= x.numel() * 4
    _same(mapped, in_ram)
    assert in_ram.cv_metric == "mAP" and max(in_ram.cv_accuracy.values()) > 0.9
    assert list(tmp_path.iterdir()) == []
