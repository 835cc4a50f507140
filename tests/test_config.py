import pytest

from headstart.config import load_config
from headstart.errors import ConfigError


def test_defaults_and_dotted_overrides():
    cfg = load_config(overrides=["train.lr=3e-4", "train.strategy=partial:2", "cache.enabled=false"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.strategy == "partial:2"
    assert cfg.cache.enabled is False
    assert cfg.model.name == "efficientnet_lite0"


def test_unknown_key_fails_with_suggestion():
    with pytest.raises(ConfigError, match=r"Unknown config key 'train\.lrr'.*Did you mean 'train\.lr'"):
        load_config(overrides=["train.lrr=0.1"])
    with pytest.raises(ConfigError, match="Unknown config key 'optimizer'"):
        load_config(overrides={"optimizer.lr": 0.1})


def test_wrong_value_names_key_and_value():
    with pytest.raises(ConfigError, match=r"'train\.epochs'.*'three'"):
        load_config(overrides=["train.epochs=three"])
    with pytest.raises(ConfigError, match=r"'model\.dropout'"):
        load_config(overrides=["model.dropout=1.5"])


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  epochs: 7\n  lr: 0.01\nmodel:\n  name: mobilenet_v2\n")
    cfg = load_config(path, ["train.lr=0.02"])
    assert (cfg.train.epochs, cfg.train.lr, cfg.model.name) == (7, 0.02, "mobilenet_v2")
    path.write_text("train:\n  epoch: 7\n")
    with pytest.raises(ConfigError, match="Did you mean 'train.epochs'"):
        load_config(path)


def test_config_roundtrip(tmp_path):
    cfg = load_config(overrides=["train.seed=5"])
    cfg.dump(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


def test_moved_keys_keep_working():
    """Class weights and balanced sampling moved from text.* to train.* (images use them too); old configs still load."""
    cfg = load_config(overrides={"text.class_weights": True, "text.balanced_sampling": True})
    assert cfg.train.class_weights and cfg.train.balanced_sampling
    assert "class_weights" not in cfg.to_dict()["text"]
