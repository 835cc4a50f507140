"""data.augment_on=device: uint8 crops and jitter factors from the loader, per-sample jitter and normalisation per batch.

Real photos (hymenoptera), real weights. The device part runs on the CPU here: it is device-agnostic torch code.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import hymenoptera_subset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from headstart.config import RunConfig
from headstart.core import loop
from headstart.core.backbones import registry
from headstart.errors import ConfigError
from headstart.tasks.classification.training import ClassificationSteps
from headstart.tasks.image.augment import color_jitter, split_transform
from headstart.tasks.image.data import discover
from headstart.tasks.image.dataset import ImageData, item_rng
from headstart.tasks.image.task import ImageClassifier
from headstart.tasks.multilabel.data import train_transform as tag_transform

N = 12  # items compared per test
OPS = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)  # v2.ColorJitter's op ids 0, 1, 2


@pytest.fixture(scope="module")
def subset(hymenoptera, tmp_path_factory) -> Path:
    """12 training and 4 validation photos per class."""
    return hymenoptera_subset(tmp_path_factory.mktemp("hymenoptera-augment"), {"train": 12, "val": 4}, link=True)


@pytest.fixture(scope="module")
def spec():
    return registry.create_backbone("efficientnet_lite0").spec


@pytest.fixture(scope="module")
def data(subset, spec):
    """``augment -> ImageData`` (the photos read once per setting)."""
    return {aug: ImageData(discover(subset), spec, augment=aug, seed=7) for aug in ("none", "light", "standard")}


def loader_batch(d: ImageData, epoch: int, items) -> torch.Tensor:
    ds = d.dataset("train", train=True, epoch=epoch)
    return torch.stack([ds[i][0] for i in items])


def device_batch(d: ImageData, epoch: int, items) -> dict[str, torch.Tensor]:
    ds = d.device_dataset("train", epoch)
    return torch.utils.data.default_collate([ds[i][0] for i in items])


def per_image(x: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """torchvision's functional ops one image at a time, in each image's own order, with its own factors."""
    out = []
    for img, rows in zip(x, steps):
        for op, factor, _ in rows.tolist():
            img = OPS[int(op)](img, factor)
        out.append(img)
    return torch.stack(out)


def test_batched_jitter_equals_torchvision_per_image(data):
    batch = device_batch(data["standard"], 0, range(N))
    steps = batch["jitter"]
    assert steps.shape == (N, 3, 3)
    assert sorted(steps[0, :, 0].tolist()) == [0.0, 1.0, 2.0]  # brightness, contrast, saturation, each once
    assert len({tuple(s[:, 1].tolist()) for s in steps}) == N  # factors per sample, not one set for the batch
    assert len({tuple(s[:, 0].tolist()) for s in steps}) > 1  # and orders per sample
    assert ((steps[..., 1] >= 0.8) & (steps[..., 1] <= 1.2)).all()  # ColorJitter(0.2, 0.2, 0.2)'s ranges
    x = F.to_dtype(batch["image"], torch.float32, scale=True)
    # extreme factors too (black, grey, beyond the range): the clamps and blends of every op
    extreme = steps.clone()
    extreme[:4, :, 1] = torch.tensor([[0.0, 2.0, 1.7], [2.5, 0.0, 0.3], [1.9, 1.8, 0.0], [0.5, 3.0, 2.0]])
    extreme[:4, :, 2] = (1.0 - extreme[:4, :, 1].double()).float()
    for s in (steps, extreme):
        got = color_jitter(x, s)
        want = per_image(x, s)
        # float32 on [0, 1]: the batch differs from the one-image ops only in summation order and fused adds
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert (color_jitter(x, extreme) - x).abs().mean() > 0.05  # the extreme factors did change the pixels


def test_split_path_without_jitter_equals_loader_path(data, spec):
    """Same item seeds, same crops and flips: bit-identical, not within a tolerance. Both paths resize the
    decoded PIL image with PIL (uint8 out): the loader path then converts to float, the split path ships the
    same uint8 tensor and converts on the device with the same torchvision functions."""
    for aug in ("light", "none"):
        d = data[aug]
        want = loader_batch(d, 2, range(N))
        batch = device_batch(d, 2, range(N))
        assert batch["image"].dtype == torch.uint8 and set(batch) == {"image"}
        assert batch["image"].shape == (N, 3, spec.input_size, spec.input_size)
        got = d.batch_augment()(batch)
        assert got.dtype == torch.float32 and got.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(got, want), aug
    light = data["light"]
    assert not torch.equal(loader_batch(light, 2, range(N)), loader_batch(light, 3, range(N)))  # epochs differ


def test_split_path_draws_the_loader_paths_jitter(data):
    """With jitter on, the device uses the factors and order the loader's ColorJitter draws for the item; the loader
    jitters with PIL's uint8 kernels, the device with torchvision's float ones, so pixels differ by a few levels."""
    d = data["standard"]
    want = loader_batch(d, 1, range(N))
    got = d.batch_augment()(device_batch(d, 1, range(N)))
    other = d.batch_augment()(device_batch(d, 2, range(N)))
    std = torch.tensor(d.train_tf.transforms[-1].std).view(1, 3, 1, 1)
    levels = ((got - want).abs() * std * 255)  # in 8-bit levels
    assert levels.mean() < 2.5 and levels.amax() < 8, (levels.mean(), levels.amax())
    assert ((other - want).abs() * std * 255).mean() > 10  # another epoch's draws are far: the test can fail


def test_the_same_item_seeds_give_the_same_batches(data):
    """Per-item draws and per-sample device ops: an item's tensor depends on (seed, epoch, file) alone, not on its
    batch, its position or the loader's workers."""
    d = data["standard"]
    augment = d.batch_augment()
    forward = augment(device_batch(d, 4, range(N)))
    backward = augment(device_batch(d, 4, reversed(range(N))))
    assert torch.equal(forward, backward.flip(0))
    ds = d.device_dataset("train", 4)
    batches = {w: [augment(x) for x, _ in loop.loader(ds, 8, None, shuffle_seed=5, num_workers=w)] for w in (0, 2)}
    assert all(torch.equal(a, b) for a, b in zip(*batches.values(), strict=True))
    labels = [y for _, y in loop.loader(ds, 8, None, shuffle_seed=5)]
    assert sum(len(y) for y in labels) == len(ds) and not torch.equal(torch.cat(labels), d.labels("train"))  # shuffled
    assert not torch.equal(forward, augment(device_batch(d, 5, range(N))))


def test_multilabel_transform_splits_too_and_hue_is_refused(data, spec):
    """The multi-label task's whole-image transform (resize, flip, jitter) splits the same way; hue does not."""
    d = data["light"]
    for aug in ("light", "standard"):
        tf = tag_transform(spec, aug)
        split = split_transform(tf)
        images = [d.store.get(s.path) for s in d.splits["train"][:4]]
        with item_rng(1, 0, "x"):
            want = torch.stack([tf(im) for im in images])
        with item_rng(1, 0, "x"):
            got = split.device(torch.utils.data.default_collate([split.worker(im) for im in images]))
        assert got.shape == want.shape == (4, 3, spec.input_size, spec.input_size)
        if aug == "light":
            assert torch.equal(got, want)
        else:
            assert ((got - want).abs() * 255 * 0.5).mean() < 2.5  # PIL's uint8 jitter vs the float one (std 0.5)
    with pytest.raises(ValueError, match="hue"):
        split_transform(v2.Compose([v2.ColorJitter(hue=0.1), *tf.transforms[-3:]]))


def test_steps_pick_the_path_by_augment_on(data):
    """auto on the CPU keeps the loader's float batches; device hands uint8 crops to train_step, which finishes them."""
    d = data["standard"]
    fabric = loop.make_fabric(RunConfig().device)
    for setting, kind in (("auto", torch.float32), ("loader", torch.float32), ("device", torch.uint8)):
        cfg = RunConfig.model_validate({"data": {"augment_on": setting}, "train": {"batch_size": 4}})
        steps = ClassificationSteps(d, cfg)
        x, y = next(iter(steps.train_loader(fabric, 0, 0, 1)))
        image = x["image"] if isinstance(x, dict) else x
        assert image.dtype == kind and len(y) == 4, setting
    no_device_path = NoDevicePath(d)
    cfg = RunConfig.model_validate({"data": {"augment_on": "auto"}, "train": {"batch_size": 4}})
    x, _ = next(iter(ClassificationSteps(no_device_path, cfg).train_loader(fabric, 0, 0, 1)))
    assert x.dtype == torch.float32
    cfg = RunConfig.model_validate({"data": {"augment_on": "device"}, "train": {"batch_size": 4}})
    with pytest.raises(ConfigError, match="augment_on=device"):
        ClassificationSteps(no_device_path, cfg).train_loader(fabric, 0, 0, 1)


class NoDevicePath:
    """The data side of a classification task without image augmentation (texts): no ``device_dataset``."""

    collate = None

    def __init__(self, data: ImageData) -> None:
        self.data, self.classes = data, data.classes

    def labels(self, split: str) -> torch.Tensor:
        return self.data.labels(split)

    def dataset(self, split: str, train: bool, epoch: int):
        return self.data.dataset(split, train, epoch)


def fine_tune(data: Path, out: Path, epochs: int, **overrides) -> ImageClassifier:
    return ImageClassifier(model="efficientnet_lite0", strategy="full", epochs=epochs, overrides={
        "train.batch_size": 8, "train.early_stopping": 0, **overrides}).fit(data, out=out)


def test_full_finetuning_with_device_augmentation_trains(subset, tmp_path):
    clf = fine_tune(subset, tmp_path / "run", 2, **{"data.augment_on": "device"})
    losses = [r["train_loss"] for r in clf.history_]
    assert len(losses) == 2 and losses[-1] < losses[0] - 0.05, losses
    assert clf.metrics_["val_accuracy"] > 0.5  # 8 validation photos, 4 per class: above the majority's half
    assert "augment_on: device" in (clf.run_dir_ / "config.yaml").read_text()


def test_without_jitter_device_and_loader_runs_train_the_same_model(subset, tmp_path):
    """Crops and flips only: the device path is the loader path with the float conversion moved, to the bit."""
    runs = [fine_tune(subset, tmp_path / where, 1, **{"data.augment_on": where, "data.augment": "light"})
            for where in ("device", "loader")]
    assert [r["train_loss"] for r in runs[0].history_] == [r["train_loss"] for r in runs[1].history_]
    weights = [r.model_.state_dict() for r in runs]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_run_says_its_device_and_lightning_prints_no_precision_line():
    """Every command began with Lightning's 'Using bfloat16 Automatic Mixed Precision (AMP)' (predict too); a
    training run now says what it computes on in its own line."""
    import logging

    from headstart.config import DeviceConfig

    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    lightning = logging.getLogger("lightning_fabric.utilities.rank_zero")
    collect = Collect()
    lightning.addHandler(collect)
    threads = torch.get_num_threads()  # make_fabric sets them: the tests after this one keep theirs
    try:
        cfg = DeviceConfig(precision="bf16-mixed", threads=1)
        fabric = loop.make_fabric(cfg)
        assert loop.device_line(fabric, cfg) == "Device cpu: 1 thread(s), bf16 mixed precision"
        cfg = DeviceConfig(precision="32-true", threads=1)
        assert loop.device_line(loop.make_fabric(cfg), cfg) == "Device cpu: 1 thread(s), fp32"
        lightning.info("another message of Lightning's")
    finally:
        lightning.removeHandler(collect)
        torch.set_num_threads(threads)
    assert seen == ["another message of Lightning's"], seen
