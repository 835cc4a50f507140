"""BatchNorm folding for extraction: same features, every BatchNorm found, the model left as it was."""

import pytest
import torch
from torch import nn

from headstart.core.backbones import registry
from headstart.core.backbones.fusion import batchnorm_folded


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v2"])
def test_folded_extraction_matches_and_is_undone(name):
    backbone = registry.create_backbone(name).eval().to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    state = {k: v.clone() for k, v in backbone.state_dict().items()}
    batchnorms = sum(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    with torch.inference_mode():
        full, partial = backbone.extract(x), backbone.extract(x, 3)
    with batchnorm_folded(backbone, backbone.num_groups, x[0]) as folded:
        assert folded == batchnorms > 40  # timm's BatchNormAct2d (EfficientNet) and torchvision's BatchNorm2d
        assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
        with torch.inference_mode():
            assert torch.allclose(backbone.extract(x), full, atol=1e-3 * full.abs().max())
    with batchnorm_folded(backbone, 3, x[0]) as folded:
        assert 0 < folded < batchnorms  # only the stages that run
        with torch.inference_mode():
            assert torch.allclose(backbone.extract(x, 3), partial, atol=1e-3 * partial.abs().max())
    after = backbone.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in backbone.modules()) == batchnorms


def test_training_batchnorms_are_not_folded():
    backbone = registry.create_backbone("mobilenet_v2").train()  # batch statistics: not an affine map
    state = {k: v.clone() for k, v in backbone.state_dict().items()}
    with batchnorm_folded(backbone, backbone.num_groups, torch.randn(3, 224, 224)) as folded:
        assert folded == 0
    assert all(torch.equal(v, state[k]) for k, v in backbone.state_dict().items())  # running stats untouched


def test_the_fold_is_undone_when_extraction_fails():
    backbone = registry.create_backbone("mobilenet_v2").eval()
    weight = backbone.body.features[0][0].weight.clone()
    with pytest.raises(RuntimeError, match="stop"), batchnorm_folded(backbone, 2, torch.randn(3, 224, 224)):
        raise RuntimeError("stop")
    assert torch.equal(backbone.body.features[0][0].weight, weight)
    assert isinstance(backbone.body.features[0][1], nn.BatchNorm2d)
