"""ImageClassifier, random init, BN gamma rules, partial fine-tuning, optimizer groups."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from medtl.errors import ConfigError
from medtl.models import (ImageClassifier, apply_bn_gamma, create_model, param_groups,
                          set_trainable)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(0)
    return create_model("resnet18", 3)[0]


def _bn(model, name):
    return dict(model.backbone.named_modules())[name]


def test_random_init_deterministic_and_info():
    torch.manual_seed(5)
    a, report = create_model("resnet18", 2, drop_rate=0.2)
    torch.manual_seed(5)
    b, _ = create_model("resnet18", 2, drop_rate=0.2)
    assert report is None
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert isinstance(a, ImageClassifier) and isinstance(a.backbone.fc, nn.Identity)
    assert isinstance(a.dropout, nn.Dropout) and a.dropout.p == 0.2
    assert a.info["arch"] == "resnet18" and a.info["weights"] == "none"
    assert a.info["mean"] == [0.485, 0.456, 0.406] and a.info["input_size"] == [3, 224, 224]
    assert torch.allclose(a.mean, torch.tensor([0.485, 0.456, 0.406]))
    with pytest.raises(ConfigError, match="unknown backbone"):
        create_model("vgg16x", 2)  # vgg16 itself builds: any timm name does (test_models_timm.py)


def test_forward_grayscale_rgb_any_size(r18):
    r18.eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for h, w in ((32, 32), (61, 97), (224, 224)):
            g = torch.rand(2, 1, h, w)
            out_g = r18(g)
            out_rgb = r18(g.expand(-1, 3, -1, -1).clone())
            assert out_g.shape == (2, 3)
            assert torch.equal(out_g, out_rgb)
        x = torch.rand(2, 3, 40, 40)
        feats = r18.features(x)
        assert feats.shape == (2, 512)
        # normalisation happens inside: same as the backbone on normalised input
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        assert torch.allclose(feats, r18.backbone((x - mean) / std), atol=1e-6)
        assert torch.allclose(r18(x), r18.head(feats), atol=1e-6)
    with pytest.raises(ValueError, match="expected images of shape"):
        r18(torch.rand(2, 2, 32, 32))


def test_gradients_reach_the_input(r18):
    r18.eval()
    x = torch.rand(1, 1, 32, 32, requires_grad=True)
    r18(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_bn_gamma_rules_resnet50():
    torch.manual_seed(0)
    model, _ = create_model("resnet50", 2)
    got = apply_bn_gamma(model, {"layer4.*.bn3": 0.0, "layer3.*.bn2": 0.5})
    names = [n for n, _ in got]
    assert names == [f"layer3.{i}.bn2" for i in range(6)] + [f"layer4.{i}.bn3" for i in range(3)]
    assert all(torch.all(_bn(model, f"layer4.{i}.bn3").weight == 0) for i in range(3))
    assert torch.all(_bn(model, "layer3.5.bn2").weight == 0.5)
    assert torch.all(_bn(model, "layer4.0.bn2").weight == 1.0)  # untouched

    # the last matching rule wins, whatever its specificity
    got = apply_bn_gamma(model, {"layer4.2.bn3": 0.25, "layer4.*.bn3": 2.0})
    assert dict(got)["layer4.2.bn3"] == 2.0
    got = apply_bn_gamma(model, {"layer4.*.bn3": 2.0, "layer4.2.bn3": 0.25})
    assert dict(got)["layer4.2.bn3"] == 0.25 and dict(got)["layer4.1.bn3"] == 2.0
    assert torch.all(_bn(model, "layer4.2.bn3").weight == 0.25)
    # globs cover downsample BNs too
    got = apply_bn_gamma(model, {"layer*.0.downsample.*": 0.0})
    assert [n for n, _ in got] == [f"layer{i}.0.downsample.1" for i in range(1, 5)]

    with pytest.raises(ConfigError, match=r"rule 'layer5\.\*' matches no BatchNorm layer "
                                          r"\(names look like bn1, layer1\.0\.bn1, .*layer4\.2\.bn3"):
        apply_bn_gamma(model, {"layer4.*.bn3": 0.0, "layer5.*": 0.0})
    with pytest.raises(ConfigError, match="finite number"):
        apply_bn_gamma(model, {"layer4.*.bn3": float("nan")})
    assert apply_bn_gamma(model, {}) == []


def test_bn_gamma_rules_resnet50d():
    torch.manual_seed(0)
    model, _ = create_model("resnet50d", 2)
    got = apply_bn_gamma(model, {"conv1.*": 0.1, "layer4.*.bn3": 0.0})
    assert [n for n, _ in got] == ["conv1.1", "conv1.4", "layer4.0.bn3", "layer4.1.bn3",
                                   "layer4.2.bn3"]
    assert torch.all(_bn(model, "conv1.4").weight == 0.1)
    # resnet50d's downsample is (AvgPool, conv, BN): the BN is downsample.2
    got = apply_bn_gamma(model, {"layer2.0.downsample.*": 0.0})
    assert [n for n, _ in got] == ["layer2.0.downsample.2"]


def test_set_trainable_and_frozen_bn_stays_eval():
    torch.manual_seed(0)
    model, _ = create_model("resnet18", 2)
    assert set_trainable(model, "head") == ["head"]
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())

    names = set_trainable(model, "last:1")
    assert names == ["backbone.layer4", "head"]
    for n, p in model.named_parameters():
        assert p.requires_grad == (n.startswith(("backbone.layer4.", "head."))), n
    model.train()
    assert model.training and model.backbone.layer4[0].bn1.training
    assert not model.backbone.bn1.training and not model.backbone.layer3[1].bn2.training
    frozen_before = model.backbone.layer3[1].bn2.running_mean.clone()
    live_before = model.backbone.layer4[1].bn2.running_mean.clone()
    model(torch.rand(4, 1, 32, 32)).sum().backward()
    assert torch.equal(model.backbone.layer3[1].bn2.running_mean, frozen_before)
    assert not torch.equal(model.backbone.layer4[1].bn2.running_mean, live_before)
    assert model.backbone.conv1.weight.grad is None

    assert set_trainable(model, "last:4") == [f"backbone.layer{i}" for i in range(1, 5)] + ["head"]
    assert not model.backbone.conv1.weight.requires_grad
    names = set_trainable(model, "all")
    assert names == ["backbone.conv1", "backbone.bn1"] + [f"backbone.layer{i}" for i in range(1, 5)] \
        + ["head"]
    model.train()
    assert all(m.training for m in model.modules())
    model.eval()
    assert not any(m.training for m in model.modules())

    for bad in ("last:0", "last:5", "some", "last:x"):
        with pytest.raises(ConfigError, match="train.trainable"):
            set_trainable(model, bad)


def test_set_trainable_resnet50d_deep_stem_frozen():
    torch.manual_seed(0)
    model, _ = create_model("resnet50d", 2)
    assert set_trainable(model, "last:2") == ["backbone.layer3", "backbone.layer4", "head"]
    model.train()
    assert not model.backbone.conv1[0].weight.requires_grad
    assert not model.backbone.conv1[1].training  # stem BN
    assert model.backbone.layer3[0].downsample[2].training


def test_param_groups_no_bias_decay():
    torch.manual_seed(0)
    model, _ = create_model("resnet18", 2)
    set_trainable(model, "last:1")
    groups = param_groups(model, 1e-4)
    assert [g["weight_decay"] for g in groups] == [1e-4, 0.0]
    decay, no_decay = groups[0]["params"], groups[1]["params"]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(decay) + len(no_decay) == len(trainable)
    assert {id(p) for p in decay} | {id(p) for p in no_decay} == {id(p) for p in trainable}
    assert all(p.ndim >= 2 for p in decay) and all(p.ndim == 1 for p in no_decay)
    bn = model.backbone.layer4[0].bn1
    assert any(p is bn.weight for p in no_decay) and any(p is model.head.bias for p in no_decay)
    assert any(p is model.head.weight for p in decay)
    torch.optim.SGD(groups, lr=0.1, momentum=0.9)  # accepted by an optimizer

    (single,) = param_groups(model, 1e-4, no_bias_decay=False)
    assert single["weight_decay"] == 1e-4 and len(single["params"]) == len(trainable)
