import pytest
import yaml

from medtl.config import RunConfig, build_config, config_to_yaml, load_config, valid_keys
from medtl.errors import ConfigError


def test_defaults_are_valid_and_roundtrip(tmp_path):
    cfg = build_config({})
    text = config_to_yaml(cfg)
    p = tmp_path / "c.yaml"
    p.write_text(text)
    assert load_config(p) == cfg


def test_dotted_overrides_parse_yaml_values():
    cfg = build_config({}, ["data.path=/x/y.npz", "train.epochs=3", "train.lr=0.01",
                            "train.bn_gamma={'layer4.*.bn2': 0.0, 'layer3.*.bn2': 1}",
                            "model.weights=none", "data.image_size=28", "train.warmup_epochs=0"])
    assert cfg.data.path == "/x/y.npz"
    assert cfg.train.epochs == 3 and cfg.train.lr == 0.01
    assert cfg.train.bn_gamma == {"layer4.*.bn2": 0.0, "layer3.*.bn2": 1.0}
    assert cfg.data.image_size == 28 and cfg.train.warmup_epochs == 0


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        build_config({}, ["train.epoch=3"])
    msg = str(e.value)
    assert "unknown key 'train.epoch'" in msg
    assert "valid keys under train:" in msg and "train.epochs" in msg
    assert "warmup_epochs" in msg and "\n" not in msg


def test_unknown_top_level_key_in_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({"trian": {"epochs": 1}}))
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid config: unknown key 'trian'"):
        load_config(p)


def test_bad_values_are_named():
    with pytest.raises(ConfigError, match="train.trainable"):
        build_config({}, ["train.trainable=some"])
    with pytest.raises(ConfigError, match="train.epochs"):
        build_config({}, ["train.epochs=0"])
    with pytest.raises(ConfigError, match="expected key=value"):
        build_config({}, ["train.epochs"])


def test_missing_and_invalid_yaml_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "x.yaml"
    p.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)


def test_required_keys_exist():
    keys = set(valid_keys())
    for k in ["data.path", "data.format", "data.image_size", "model.backbone", "model.weights",
              "train.epochs", "train.batch_size", "train.lr", "train.warmup_epochs", "train.bn_gamma"]:
        assert k in keys


def test_trainable_forms():
    assert build_config({}, ["train.trainable=last:2"]).train.trainable == "last:2"
    assert build_config({}, ["train.trainable=head"]).train.trainable == "head"
    assert isinstance(RunConfig(), RunConfig)
