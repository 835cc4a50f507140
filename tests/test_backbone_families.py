"""Layer groups of real torchvision / timm / transformers architectures (random weights, CPU).

Each backbone is compared with an independent copy of the library's own model: the pooled features must be
the model's own penultimate features, every parameter must sit in a group, and every group but the last must
own parameters (so that ``partial:K``, ``gradual`` and layer decay act on real layers).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from headstart.core.backbones import hf_text, registry, timm_models, torchvision_models
from headstart.core.backbones.spec import BackboneSpec
from headstart.errors import ConfigError

torch.set_num_threads(1)


def _check_groups(backbone, min_groups: int = 4) -> None:
    sizes = [sum(p.numel() for _, p in backbone.group_parameters(g)) for g in range(backbone.num_groups)]
    assert backbone.num_groups >= min_groups, backbone.spec.group_names
    assert sum(sizes) == sum(p.numel() for p in backbone.body.parameters())  # every parameter in one group
    assert all(sizes[:-1]), dict(zip(backbone.spec.group_names, sizes))  # partial:K unfreezes real layers
    assert len(backbone.spec.groups) == backbone.num_groups


def _check_features(backbone, reference: nn.Module, own, x: torch.Tensor) -> None:
    """``backbone(x)`` and every split point give the reference model's own pooled features."""
    backbone.eval()
    reference.eval()
    with torch.no_grad():
        expected = own(reference, x)
        got = backbone(x)
        assert got.shape == expected.shape == (x.shape[0], backbone.spec.feature_dim)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
        for cut in sorted({1, backbone.num_groups // 2, backbone.num_groups - 1}):
            torch.testing.assert_close(backbone(backbone.extract(x, cut), start=cut), got, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------------------ torchvision
def _tv_reference(arch: str, backbone) -> nn.Module:
    import torchvision

    kwargs = {"aux_logits": False, "transform_input": True, "init_weights": False} \
        if arch in ("googlenet", "inception_v3") else {}
    model = torchvision.models.get_model(arch, weights=None, **kwargs)
    missing, unexpected = model.load_state_dict(backbone.body.state_dict(), strict=False)
    assert not unexpected and all(k.split(".")[0] in ("fc", "head", "heads", "classifier") for k in missing), missing
    return model


def _without(attr: str, index: int | None = None):
    """The model's own forward with its classifier (``attr`` or ``attr[index]``) replaced by an identity."""

    def own(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if index is None:
            setattr(model, attr, nn.Identity())
        else:
            getattr(model, attr)[index] = nn.Identity()
        return model(x)

    return own


def _squeezenet_own(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.flatten(nn.functional.adaptive_avg_pool2d(model.features(x), 1), 1)


TV_FAMILIES = {  # arch: (input size, how the model's own penultimate features are read)
    "swin_t": (224, _without("head")),
    "swin_v2_t": (224, _without("head")),
    "regnet_y_400mf": (64, _without("fc")),
    "googlenet": (64, _without("fc")),
    "inception_v3": (96, _without("fc")),
    "shufflenet_v2_x0_5": (64, _without("fc")),
    "mnasnet0_5": (64, _without("classifier", -1)),
    "resnet18": (64, _without("fc")),
    "densenet121": (64, _without("classifier")),
    "squeezenet1_1": (64, _squeezenet_own),
    "mobilenet_v3_small": (64, _without("classifier", -1)),
    "efficientnet_b0": (64, _without("classifier", -1)),
    "convnext_tiny": (64, _without("classifier", -1)),
    "maxvit_t": (224, _without("classifier", -1)),
}


@pytest.mark.parametrize("arch", list(TV_FAMILIES))
def test_torchvision_families_have_real_groups_and_their_own_features(arch):
    size, own = TV_FAMILIES[arch]
    backbone = registry.create_backbone(f"tv:{arch}", pretrained=False)
    _check_groups(backbone)
    x = torch.randn(2, 3, size, size)
    _check_features(backbone, _tv_reference(arch, backbone), own, x)


def test_torchvision_swin_pools_over_space_and_hands_on_nchw_maps():
    """The issue: tv:swin_t gave 7 features (pooling a channels-last map over the wrong axis)."""
    backbone = registry.create_backbone("tv:swin_t", pretrained=False).eval()
    assert backbone.spec.feature_dim == 768
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        shapes = [tuple(backbone.extract(x, end).shape) for end in range(1, backbone.num_groups)]
    assert shapes == [(1, 96, 56, 56), (1, 96, 56, 56), (1, 192, 28, 28), (1, 384, 14, 14)]


def test_unknown_torchvision_structure_names_what_is_supported():
    with pytest.raises(ValueError, match="no known stage layout.*Swin.*MaxViT.*timm:"):
        torchvision_models._stage_layout(nn.Sequential(nn.Linear(2, 2)))


# ------------------------------------------------------------------------------------------------------ timm
def _timm_reference(arch: str, backbone) -> nn.Module:
    import timm

    model = timm.create_model(arch, pretrained=False, num_classes=0)
    model.load_state_dict(backbone.body.state_dict())
    return model


def _timm_own(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.forward_head(model.forward_features(x), pre_logits=True)


TIMM_FAMILIES = {  # arch: (input size, expected group names, or None)
    "swin_tiny_patch4_window7_224": (224, ["stem", "layers.0", "layers.1", "layers.2", "layers.3"]),
    "convnext_atto": (64, ["stem", "stages.0", "stages.1", "stages.2", "stages.3"]),
    "resnet18": (64, ["stem", "layer1", "layer2", "layer3", "layer4"]),
    "efficientnet_b0": (64, ["stem", *[f"blocks{i}" for i in range(7)], "head"]),
    "mobilenetv3_small_050": (64, None),
    "vit_tiny_patch16_224": (224, ["embed", *[f"block{i}" for i in range(12)]]),
    "regnetx_002": (64, ["stem", "s1", "s2", "s3", "s4"]),
    "maxvit_pico_rw_256": (256, ["stem", "stages.0", "stages.1", "stages.2", "stages.3"]),
    "efficientformerv2_s0": (224, None),
    "cspdarknet53": (64, None),
    "fastvit_t8": (64, ["stem", "stages.0", "stages.1", "stages.2", "stages.3"]),  # stages iterated, not called
    "eva02_tiny_patch14_224": (224, ["embed", *[f"block{i}" for i in range(12)]]),  # rotary embedding per block
}


@pytest.mark.parametrize("arch", list(TIMM_FAMILIES))
def test_timm_families_have_real_groups_and_their_own_features(arch):
    size, names = TIMM_FAMILIES[arch]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backbone = registry.create_backbone(f"timm:{arch}", pretrained=False)
    assert not [w for w in caught if "could not be cut" in str(w.message)]
    _check_groups(backbone)
    if names is not None:
        assert backbone.spec.group_names == names
    _check_features(backbone, _timm_reference(arch, backbone), _timm_own, torch.randn(2, 3, size, size))


def test_timm_swin_hands_on_nchw_maps():
    backbone = registry.create_backbone("timm:swin_tiny_patch4_window7_224", pretrained=False).eval()
    with torch.no_grad():
        shapes = [tuple(backbone.extract(torch.randn(1, 3, 224, 224), end).shape) for end in (1, 2, 5 - 1)]
    assert shapes == [(1, 96, 56, 56), (1, 96, 56, 56), (1, 384, 14, 14)]


def test_timm_transformer_with_blocks_list_gets_embed_and_block_groups():
    """BEiT: class token, position and relative-position handling happen before/inside the blocks."""
    import timm

    model = timm.create_model("beit_base_patch16_224", pretrained=False, num_classes=0, depth=3, embed_dim=64,
                              num_heads=2, img_size=64)
    reference = copy.deepcopy(model)
    spec = timm_models.spec_from_cfg("timm:beit", "beit_base_patch16_224", None)
    spec.input_size = 64
    backbone = timm_models.build("beit_base_patch16_224", spec, model=model)
    assert backbone.spec.group_names == ["embed", "block0", "block1", "block2"]
    _check_groups(backbone, min_groups=4)
    _check_features(backbone, reference, _timm_own, torch.randn(2, 3, 64, 64))


def test_timm_model_that_cannot_be_cut_warns_and_stays_one_group():
    import timm

    model = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    features = model.forward_features
    model.forward_features = lambda x: features(x) * 2  # an operation between children: no child sequence
    spec = timm_models.spec_from_cfg("timm:resnet10t", "resnet10t", None)
    spec.input_size = 64
    with pytest.warns(UserWarning, match="could not be cut into layer groups.*ONE group"):
        backbone = timm_models.build("resnet10t", spec, model=model)
    assert backbone.num_groups == 1 and backbone.spec.group_names == ["body"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(backbone.eval()(x), model.forward_head(features(x) * 2, pre_logits=True))


# ------------------------------------------------------------------------------------------------------ text
TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)


def _text_config(kind: str):
    import transformers

    if kind == "electra":
        return transformers.ElectraConfig(embedding_size=16, **TINY)  # embeddings_project 16 -> 32
    if kind == "deberta-v2":
        return transformers.DebertaV2Config(**TINY, relative_attention=True, position_buckets=8,
                                            norm_rel_ebd="layer_norm", pos_att_type=["p2c", "c2p"],
                                            conv_kernel_size=3, position_biased_input=False)
    if kind == "deberta":
        return transformers.DebertaConfig(**TINY, relative_attention=True, pos_att_type=["p2c", "c2p"])
    if kind == "distilbert":
        return transformers.DistilBertConfig(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37,
                                             max_position_embeddings=64)
    return transformers.AutoConfig.for_model(kind, **TINY)


def _text_backbone(config):
    import transformers

    torch.manual_seed(0)
    body = transformers.AutoModel.from_config(config)
    reference = copy.deepcopy(body).eval()
    spec = BackboneSpec(name="tiny", source="hf", arch="", weights=None, modality="text", extra={"pooling": "mean"})
    return hf_text.build(body, spec), reference


@pytest.mark.parametrize("kind", ["electra", "deberta-v2", "deberta", "bert", "roberta", "distilbert"])
def test_text_hidden_states_equal_the_transformers_model(kind):
    backbone, reference = _text_backbone(_text_config(kind))
    backbone.eval()
    _check_groups(backbone, min_groups=3)
    ids = torch.randint(5, 99, (3, 11))
    mask = torch.ones_like(ids)
    ids[1, 7:], mask[1, 7:] = reference.config.pad_token_id or 0, 0
    ids[2, 4:], mask[2, 4:] = reference.config.pad_token_id or 0, 0
    batch = {"input_ids": ids, "attention_mask": mask}
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        hidden = backbone.run_stage(backbone.num_groups - 1, backbone.extract(batch, backbone.num_groups - 1))
        torch.testing.assert_close(hidden["hidden"], expected, atol=1e-5, rtol=1e-4)
        weights = mask.unsqueeze(-1).float()
        torch.testing.assert_close(backbone(batch), (expected * weights).sum(1) / weights.sum(1), atol=1e-5, rtol=1e-4)
    assert backbone.spec.feature_dim == 32


@pytest.mark.parametrize("kind, targets", [("electra", ["key", "query", "value"]),
                                           ("deberta-v2", ["key_proj", "query_proj", "value_proj"]),
                                           ("deberta", ["in_proj"]), ("distilbert", ["k_lin", "q_lin", "v_lin"])])
def test_lora_finds_each_text_family_s_attention_and_its_adapters_train(kind, targets):
    """Strategy lora on every text family headstart cuts into layers: the adapters start as the identity and the
    gradient of the pooled output reaches every one of them (each projection is called as a module)."""
    from headstart.core.backbones import lora

    backbone, _ = _text_backbone(_text_config(kind))
    assert lora.targets(backbone) == targets
    batch = {"input_ids": torch.randint(5, 99, (2, 9)), "attention_mask": torch.ones(2, 9, dtype=torch.long)}
    backbone.eval()
    with torch.no_grad():
        before = backbone(batch)
    lora.add(backbone, r=2, alpha=4, dropout=0.0)
    with torch.no_grad():
        torch.testing.assert_close(backbone(batch), before, atol=0, rtol=0)
    for name, p in backbone.body.named_parameters():
        p.requires_grad_("lora_" in name)
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)  # as after some training: the gradient then reaches lora_A too
    backbone(batch).square().sum().backward()
    adapters = [(n, p) for n, p in backbone.body.named_parameters() if "lora_" in n]
    assert len(adapters) == 2 * len(targets) * backbone.spec.extra["hf_config"]["num_hidden_layers" if kind != "distilbert"
                                                                               else "n_layers"]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in adapters), [n for n, p in adapters
                                                                                     if p.grad is None][:3]


def test_electra_projection_and_deberta_relative_embeddings_are_grouped():
    electra, _ = _text_backbone(_text_config("electra"))
    assert any(n.startswith("embeddings_project.") for n, _ in electra.group_parameters(0))
    deberta, _ = _text_backbone(_text_config("deberta-v2"))
    first = {n for n, _ in deberta.group_parameters(0)}
    assert "encoder.rel_embeddings.weight" in first and "encoder.LayerNorm.weight" in first
    assert any(n.startswith("encoder.conv.") for n, _ in deberta.group_parameters(1))


def test_text_model_whose_layers_cannot_run_alone_is_refused():
    import transformers

    config = transformers.MPNetConfig(**TINY)  # relative position bias computed once by the encoder
    with pytest.raises(ConfigError, match="MPNetModel.*cannot be cut into layers"):
        _text_backbone(config)
