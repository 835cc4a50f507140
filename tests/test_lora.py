"""Strategy ``lora`` on image transformers (core/backbones/lora.py): adapters on a ViT's attention, only they and the
head train, the run reloads and exports; networks and tasks without attention are refused before any data is read.

No ViT weights install offline here (../shared/README.md), so the ViT is timm's ViT-Tiny architecture with seeded
random weights given as a weights file (``--weights``), as a user gives a local checkpoint: the checks are on what
LoRA does to a transformer (which parameters move, what is saved and reloaded), not on what its features are worth.
The text encoder's LoRA run, on real MiniLM weights, is ``tests/test_text.py::test_lora_run_reloads_to_identical_...``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import hymenoptera_subset
from safetensors.torch import load_file, save_file

from headstart.config import load_config
from headstart.core.backbones import lora, registry
from headstart.errors import ConfigError
from headstart.tasks.detection.task import Detector
from headstart.tasks.image.task import ImageClassifier

VIT = "timm:vit_tiny_patch16_224"


@pytest.fixture(scope="module")
def vit_weights(tmp_path_factory) -> Path:
    import timm

    torch.manual_seed(0)
    body = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path_factory.mktemp("vit") / "vit_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in body.state_dict().items()}, str(path))
    return path


def test_adapters_go_on_each_vit_s_attention_and_start_as_the_identity():
    for name, expected, blocks in ((VIT, ["qkv"], 12), ("timm:swin_tiny_patch4_window7_224", ["qkv"], 12)):
        torch.manual_seed(0)
        backbone = registry.create_backbone(name, pretrained=False).eval()
        x = torch.randn(1, 3, 224, 224)
        with torch.no_grad():
            before = backbone(x)
        assert lora.targets(backbone) == expected
        n = lora.add(backbone, r=4, alpha=8, dropout=0.0)
        adapted = {k.rsplit(".lora_", 1)[0] for k, _ in backbone.body.named_parameters() if ".lora_" in k}
        assert len(adapted) == blocks and all(k.endswith(expected[0]) for k in adapted), sorted(adapted)[:3]
        assert 0 < n < 0.05 * backbone.spec.num_params  # low rank: a few % of the network at most
        with torch.no_grad():
            assert torch.equal(backbone(x), before)  # lora_B starts at zero: the network is unchanged
        # every adapter parameter belongs to a layer group, so strategies can train it
        grouped = {id(p) for g in range(backbone.num_groups) for _, p in backbone.group_parameters(g)}
        assert all(id(p) in grouped for k, p in backbone.body.named_parameters() if "lora_" in k)


def test_lora_is_refused_where_there_is_no_attention_before_data_is_read(tmp_path):
    missing = tmp_path / "no-such-folder-is-read"
    with pytest.raises(ConfigError, match=r"efficientnet_lite0 .* has none \(a convolutional network\?\)"):
        lora.targets(registry.create_backbone("efficientnet_lite0", pretrained=False))
    with pytest.raises(ConfigError, match="the detection task cannot use it"):
        Detector(strategy="lora").fit(missing, out=tmp_path / "det")
    assert not (tmp_path / "det").exists()
    # torchvision's ViT: its nn.MultiheadAttention is refused (peft's adapter of it breaks reloading), naming timm's
    with pytest.raises(ConfigError, match=r"MultiheadAttention .*timm:vit_base_patch16_224"):
        lora.targets(registry.create_backbone("tv:vit_b_16", pretrained=False))
    with pytest.raises(ConfigError, match="train.lora_targets"):
        lora.add(registry.create_backbone(VIT, pretrained=False), names=["no_such_module"])
    # the keys' earlier home (text.lora_*) still reads, as run folders saved before hold it
    assert load_config(overrides={"text.lora_r": 4}).train.lora_r == 4


@pytest.mark.slow
def test_a_vit_lora_run_trains_only_its_adapters_and_head_and_reloads(hymenoptera, vit_weights, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    data = hymenoptera_subset(tmp_path / "data", {"train": 16, "val": 8}, link=True)
    run = tmp_path / "vit-lora"
    # no linear phase: the best epoch is a LoRA epoch, so what is saved is what LoRA trained
    clf = ImageClassifier(model=VIT, strategy="lora", epochs=2, overrides={
        "model.weights": str(vit_weights), "train.head_epochs": 0, "train.lora_r": 4, "train.refit": False,
        "train.batch_size": 8, "cache.views": 1, "train.calibrate": False, "train.explain": False}).fit(data, out=run)
    assert [h["phase"] for h in clf.history_] == ["lora", "lora"]
    saved = load_file(str(run / "model.safetensors"))
    given = load_file(str(vit_weights))
    base = {k: v for k, v in saved.items() if k.startswith("backbone.") and "lora_" not in k}
    assert len(base) == len(given)
    moved = [k for k, v in base.items() if not torch.equal(v, given[k.replace("base_layer.", "").split(".", 2)[-1]])]
    assert not moved, moved[:3]  # the ViT's own weights are the file's, bit for bit
    lora_b = [v for k, v in saved.items() if "lora_B" in k]
    assert len(lora_b) == 12 and sum(bool(v.abs().sum() > 0) for v in lora_b) == 12  # every adapter trained
    spec = json.loads((run / "spec.json").read_text())
    assert spec["backbone"]["extra"]["lora"]["targets"] == ["qkv"] and spec["backbone"]["extra"]["lora"]["r"] == 4
    images = sorted((data / "val").rglob("*.jpg"))
    _, before = clf.predict_proba(images)
    loaded = ImageClassifier.load(run)
    _, after = loaded.predict_proba(images)
    assert torch.equal(torch.as_tensor(before), torch.as_tensor(after))  # adapters re-added and loaded on reload
