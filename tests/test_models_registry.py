"""Architecture and weight registries, and `medtl weights list`."""
from __future__ import annotations

import json

import pytest
import torch

from medtl.errors import ConfigError, MedtlError
from medtl.models import (FAMILIES, WeightSource, build_architecture, get_weights,
                          list_architectures, list_weights)
from medtl.models.weights import HUB_CONVENTION_FORMATS

README_URLS = {
    "resnet18.tv_in1k": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet50.tv_in1k": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    "resnet50.tv2_in1k": "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
    "resnet50.a1_in1k": "https://github.com/rwightman/pytorch-image-models/releases/download/"
                        "v0.1-rsb-weights/resnet50_a1_0-14fe96d1.pth",
    "resnet50.sin": "https://bitbucket.org/robert_geirhos/texture-vs-shape-pretrained-models/raw/"
                    "6f41d2e86fc60566f78de64ecff35cc61eb6436f/resnet50_train_60_epochs-c8e5653e.pth.tar",
    "resnet50.sin_in": "https://bitbucket.org/robert_geirhos/texture-vs-shape-pretrained-models/raw/"
                       "60b770e128fffcbd8562a3ab3546c1a735432d03/"
                       "resnet50_train_45_epochs_combined_IN_SF-2a0d100e.pth.tar",
    "resnet50.sin_in_in": "https://bitbucket.org/robert_geirhos/texture-vs-shape-pretrained-models/"
                          "raw/60b770e128fffcbd8562a3ab3546c1a735432d03/resnet50_finetune_60_epochs_"
                          "lr_decay_after_30_start_resnet50_train_45_epochs_combined_IN_SF-ca06340c"
                          ".pth.tar",
    "resnet50d.gluon_in1k": "https://github.com/rwightman/pytorch-pretrained-gluonresnet/releases/"
                            "download/v0.1/gluon_resnet50_v1d-818a1b1b.pth",
}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def load_weights_cmd():
    from medtl.cli import weights_cmd

    return weights_cmd


def test_architectures():
    assert list_architectures() == ["resnet18", "resnet50", "resnet50d", "densenet121", "efficientnet_b0",
                                    "convnext_tiny", "vit_small_patch16_224"]
    with pytest.raises(ConfigError, match="unknown backbone 'resnet51'.*resnet18, resnet50, resnet50d"):
        build_architecture("resnet51")
    net = build_architecture("resnet50d")
    assert type(net).__module__.startswith("timm")
    assert "conv1.0.weight" in net.state_dict()  # deep stem


def test_weight_registry_metadata():
    assert list_weights()[:len(README_URLS)] == list(README_URLS)  # DenseNet tags: test_models_timm.py
    for name, url in README_URLS.items():
        s = get_weights(name)
        assert isinstance(s, WeightSource)
        assert s.url == url
        assert s.filename == url.rsplit("/", 1)[1]
        assert f"-{s.sha256_prefix}." in s.filename
        assert s.arch == name.split(".")[0]
        assert s.family in FAMILIES
        assert s.mean == (0.485, 0.456, 0.406) and s.std == (0.229, 0.224, 0.225)
        assert s.input_size == (3, 224, 224)
        assert s.citation and s.top1 and 50 < s.top1 < 90
        assert s.format in ("torchvision", "geirhos", "timm")
    assert get_weights("resnet18.tv_in1k").sha256 == (
        "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec")
    assert all(get_weights(n).sha256 is None for n in list_weights() if n != "resnet18.tv_in1k")
    families = {n: get_weights(n).family for n in list_weights()}
    assert families["resnet50.sin"] == "SIN" and families["resnet50.sin_in"] == "SIN+IN"
    assert families["resnet50.sin_in_in"] == "SIN+IN→IN"
    assert families["resnet50.tv2_in1k"] == families["resnet50d.gluon_in1k"] == "tricks"
    assert {get_weights(n).format for n in ("resnet50.sin", "resnet50.sin_in")} == {"geirhos"}
    assert "geirhos" not in HUB_CONVENTION_FORMATS
    assert list_weights("resnet18") == ["resnet18.tv_in1k"]


def test_unknown_weights_name():
    with pytest.raises(ConfigError, match="unknown weights 'resnet50.nope'.*resnet50.sin_in"):
        get_weights("resnet50.nope")


def test_cli_list(tmp_path):
    from typer.testing import CliRunner

    wc = load_weights_cmd()
    runner = CliRunner()
    res = runner.invoke(wc.app, ["list"])
    assert res.exit_code == 0, res.output
    for name in README_URLS:
        assert name in res.output
    assert "SIN+IN→IN" in res.output and "76.72" in res.output

    # a cached file shows up with its path
    cached = tmp_path / "torch" / "hub" / "checkpoints" / get_weights("resnet50.tv_in1k").filename
    cached.parent.mkdir(parents=True)
    torch.save({"x": torch.zeros(1)}, cached)
    res = runner.invoke(wc.app, ["list", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert rows["resnet50.tv_in1k"]["cached"] == str(cached)
    assert rows["resnet50.sin"]["cached"] is None
    assert rows["resnet50.sin"]["url"] == README_URLS["resnet50.sin"]
    assert rows["resnet50.sin"]["family"] == "SIN" and rows["resnet50.sin"]["top1"] == 60.18


def test_cli_fetch_unknown_name_raises():
    from typer.testing import CliRunner

    res = CliRunner().invoke(load_weights_cmd().app, ["fetch", "nope"])
    assert isinstance(res.exception, MedtlError) and "unknown weights 'nope'" in str(res.exception)
