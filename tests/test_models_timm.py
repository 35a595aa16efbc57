"""timm backbones by name: build, head removal, grayscale input, input sides, fast convs, BlurPool,
BN gamma and partial fine-tuning on DenseNet, EfficientNet, ConvNeXt and ViT (tiny inputs)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from medtl.config import build_config
from medtl.errors import ConfigError
from medtl.models import (ImageClassifier, apply_bn_gamma, build_architecture, create_model,
                          list_architectures, set_trainable)
from medtl.models.archs import check_input_side, get_architecture, strip_head
from medtl.models.fastconv import TrimmedConv2d

TIMM_ARCHS = ["densenet121", "efficientnet_b0", "convnext_tiny", "vit_small_patch16_224"]
#: (features, head tensor names that must be gone, head-module tensors that stay in the backbone)
EXPECT = {
    "densenet121": (1024, ["classifier.weight"], []),
    "efficientnet_b0": (1280, ["classifier.weight"], []),
    "convnext_tiny": (768, ["head.fc.weight"], ["head.norm.weight"]),
    "vit_small_patch16_224": (384, ["head.weight"], []),
}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


@pytest.fixture(scope="module")
def models():
    out = {}
    for arch in TIMM_ARCHS:
        torch.manual_seed(0)
        out[arch] = create_model(arch, 3)[0].eval()
    return out


def _copy(models, arch: str) -> ImageClassifier:
    """A fresh copy of the module's model (building ConvNeXt/ViT anew costs more than copying)."""
    return copy.deepcopy(models[arch])


@pytest.mark.parametrize("arch", TIMM_ARCHS)
def test_timm_arch_builds_without_head_and_takes_gray_input(models, arch):
    model = models[arch]
    width, gone, kept = EXPECT[arch]
    assert arch in list_architectures() and get_architecture(arch).library == "timm"
    assert isinstance(model, ImageClassifier) and model.num_features == width
    assert model.head.in_features == width and model.head.out_features == 3
    sd = model.backbone.state_dict()
    assert not any(k in sd for k in gone) and all(k in sd for k in kept)
    torch.manual_seed(1)
    g = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        out = model(g)
        assert out.shape == (2, 3) and torch.isfinite(out).all()
        assert torch.equal(out, model(g.expand(-1, 3, -1, -1).clone()))  # 1 -> 3 channels inside
        assert model.features(g).shape == (2, width)
    if arch == "efficientnet_b0":  # random init is deterministic under the seed (the cheapest to rebuild)
        torch.manual_seed(0)
        again = create_model(arch, 3)[0].state_dict()
        assert all(torch.equal(v, again[k]) for k, v in model.state_dict().items())


def test_vit_takes_28_to_224_px_and_keeps_the_224_px_tensors(models):
    vit = models["vit_small_patch16_224"]
    assert vit.backbone.state_dict()["pos_embed"].shape == (1, 197, 384)  # 14x14 patches + cls
    assert vit.info["mean"] == [0.5, 0.5, 0.5]  # timm's normalisation for this ViT
    with torch.no_grad():
        for side in (28, 32, 50, 224):
            assert vit(torch.rand(1, 1, side, side)).shape == (1, 3)
    check_input_side("vit_small_patch16_224", 28)


@pytest.mark.parametrize("arch, smallest", [("densenet121", 29), ("convnext_tiny", 32),
                                            ("efficientnet_b0", 1), ("resnet18", 1)])
def test_registered_smallest_input_side_is_exact(models, arch, smallest):
    assert get_architecture(arch).min_side == smallest
    net = models.get(arch) or create_model(arch, 2)[0].eval()
    with torch.no_grad():
        net(torch.rand(1, 1, max(smallest, 1), max(smallest, 1)))
        if smallest > 1:
            with pytest.raises(RuntimeError):
                net(torch.rand(1, 1, smallest - 1, smallest - 1))
    check_input_side(arch, max(smallest, 1))
    if smallest > 1:
        with pytest.raises(ConfigError) as err:
            check_input_side(arch, smallest - 1)
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith(f"model.backbone: {arch} needs inputs of at least {smallest} px")
        assert f"this run feeds {smallest - 1} px" in msg


def test_unregistered_timm_names_build_and_are_checked_by_a_forward_pass():
    assert "convnext_atto" not in list_architectures() and "resnet10t" not in list_architectures()
    spec = get_architecture("convnext_atto")
    assert not spec.registered and spec.min_side is None
    check_input_side("convnext_atto", 32)
    state = torch.random.get_rng_state()
    with pytest.raises(ConfigError, match=r"^model\.backbone: timm's convnext_atto does not take 28 px inputs \(.+\)"):
        check_input_side("convnext_atto", 28)
    assert torch.equal(torch.random.get_rng_state(), state)  # the check draws nothing from the run's RNG
    # a CNN that does not take timm's dynamic-size arguments (the refused first try draws no random
    # numbers: the same network as timm's own), and a ViT that does
    from medtl.models.archs import _import_timm

    torch.manual_seed(0)
    ours = build_architecture("resnet10t").state_dict()
    torch.manual_seed(0)
    theirs = _import_timm().create_model("resnet10t", pretrained=False).state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    model, _ = create_model("resnet10t", 2)
    vit, _ = create_model("vit_tiny_patch16_224", 2)
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 1, 28, 28)).shape == (1, 2)
        assert vit.eval()(torch.rand(1, 1, 28, 28)).shape == (1, 2)
    assert list_architectures()[-1] == "vit_small_patch16_224"  # resolved names are not listed
    with pytest.raises(ConfigError, match=r"unknown backbone 'resnet1000' \(registered: resnet18, .*densenet121.*"
                                          r"; or any model name timm knows\)"):
        create_model("resnet1000", 2)


@pytest.mark.parametrize("arch", ["densenet121", "efficientnet_b0", "convnext_tiny"])
def test_fast_convs_exact_on_timm_archs(models, arch):
    fast = models[arch]  # create_model's default: train.fast_conv on
    plain = _copy(models, arch)
    n = 0
    for m in plain.modules():
        if isinstance(m, TrimmedConv2d):
            m.__class__, n = nn.Conv2d, n + 1  # the same parameters through the plain convolution
    assert n > 0 and not any(isinstance(m, TrimmedConv2d) for m in plain.modules())
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        a, b = plain(x), fast(x)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), (a - b).abs().max()


@pytest.mark.parametrize("arch", TIMM_ARCHS)
def test_blurpool_refused_for_non_resnets(arch):
    with pytest.raises(ConfigError) as err:
        build_architecture(arch, "blurpool")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"model.antialias: blurpool is built for resnet18, resnet50, resnet50d, not {arch}")


def test_bn_gamma_on_densenet_and_efficientnet(models):
    dn = models["densenet121"]
    got = apply_bn_gamma(dn, {"features.denseblock4.*.norm2": 0.0, "features.norm5": {"gamma": 0.5, "beta": 0.0}})
    assert [n for n, _ in got] == [f"features.denseblock4.denselayer{i}.norm2" for i in range(1, 17)] \
        + ["features.norm5"]
    mods = dict(dn.backbone.named_modules())
    assert torch.all(mods["features.denseblock4.denselayer16.norm2"].weight == 0)
    assert torch.all(mods["features.norm5"].weight == 0.5) and torch.all(mods["features.norm5"].bias == 0)
    assert torch.all(mods["features.denseblock3.denselayer1.norm2"].weight == 1)
    with pytest.raises(ConfigError, match=r"rule 'layer4\.\*\.bn3' matches no BatchNorm layer \(names look like "
                                          r"features\.norm0, .*features\.norm5 in densenet121\)"):
        apply_bn_gamma(dn, {"layer4.*.bn3": 0.0})
    eff = models["efficientnet_b0"]
    got = apply_bn_gamma(eff, {"blocks.6.*.bn3": {"gamma": 0.0, "beta": 0.0}})
    assert [n for n, _ in got] == ["blocks.6.0.bn3"]
    assert torch.all(dict(eff.backbone.named_modules())["blocks.6.0.bn3"].weight == 0)


@pytest.mark.parametrize("arch, norms", [("convnext_tiny", "LayerNorm, LayerNorm2d"),
                                         ("vit_small_patch16_224", "LayerNorm")])
def test_bn_gamma_refused_on_layernorm_networks(models, arch, norms):
    for rule in ({"stages.3.*": 0.0}, {"layer4.*.bn3": 0.0}):
        with pytest.raises(ConfigError) as err:
            apply_bn_gamma(models[arch], rule)
        msg = str(err.value)
        assert "\n" not in msg
        assert msg.startswith(f"train.bn_gamma: {arch} has no BatchNorm layer (it normalises with {norms})")
    assert apply_bn_gamma(models[arch], {}) == []


@pytest.mark.parametrize("arch, spec, names, n_stages", [
    ("densenet121", "last:1", ["backbone.features.denseblock4", "backbone.features.norm5"], 4),
    ("densenet121", "last:2", ["backbone.features.denseblock3", "backbone.features.transition3",
                               "backbone.features.denseblock4", "backbone.features.norm5"], 4),
    ("efficientnet_b0", "last:1", ["backbone.blocks.6", "backbone.conv_head", "backbone.bn2"], 7),
    ("convnext_tiny", "last:1", ["backbone.stages.3", "backbone.head"], 4),
    ("vit_small_patch16_224", "last:2", ["backbone.blocks.10", "backbone.blocks.11", "backbone.norm"], 12),
])
def test_trainable_last_n_stages_of_timm_models(models, arch, spec, names, n_stages):
    model = _copy(models, arch)
    assert set_trainable(model, spec) == names + ["head"]
    prefixes = tuple(n[len("backbone."):] + "." for n in names)
    for n, p in model.backbone.named_parameters():
        assert p.requires_grad == n.startswith(prefixes), n
    assert all(p.requires_grad for p in model.head.parameters())
    model.train()
    for n, m in model.backbone.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            assert m.training == (n + ".").startswith(prefixes), n  # frozen BN keeps its statistics
    with pytest.raises(ConfigError, match=rf"N must be between 1 and {n_stages} \({arch} has {n_stages} stages\)"):
        set_trainable(model, f"last:{n_stages + 1}")


def test_trainable_head_freezes_loose_parameters_and_refuses_unknown_stages(models):
    vit = _copy(models, "vit_small_patch16_224")
    assert set_trainable(vit, "head") == ["head"]
    assert not vit.backbone.cls_token.requires_grad and not vit.backbone.pos_embed.requires_grad
    names = set_trainable(vit, "all")
    assert names[:2] == ["backbone.cls_token", "backbone.pos_embed"] and names[-1] == "head"
    assert all(p.requires_grad for p in vit.parameters())
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = ImageClassifier(plain, 4, 2, info={"arch": "tiny"})
    with pytest.raises(ConfigError, match=r"^train\.trainable: 'last:1' needs the stages of the backbone, and tiny "
                                          r"has neither ResNet stages nor timm parameter groups; use 'all' or 'head'$"):
        set_trainable(model, "last:1")


def test_strip_head_of_torchvision_and_timm_models():
    tv = build_architecture("resnet18")
    assert strip_head(tv) == 512 and isinstance(tv.fc, nn.Identity)
    timm_net = build_architecture("densenet121")
    assert strip_head(timm_net) == 1024 and isinstance(timm_net.classifier, nn.Identity)


def test_weights_strict_config_key():
    assert build_config({}, []).model.weights_strict is True
    assert build_config({}, ["model.weights_strict=false"]).model.weights_strict is False


@pytest.mark.e2e
def test_densenet121_finetunes_and_goes_through_every_probe(tmp_path, monkeypatch):
    """`medtl finetune --set model.backbone=densenet121`, then the robustness suite (tiny probe
    settings): every probe runs on DenseNet (Grad-CAM finds its last convolution)."""
    from medtl.cli import run as cli
    from medtl.probes import suite

    tiny = {"translation": {"max_shift": 1, "n_images": 12, "n_pairs": 1, "scale_pct": 1},
            "adversarial": {"steps": 1, "n_images": 16, "attacks": ["fgsm_linf"], "eps": [0.0, 8 / 255]},
            "corruptions": {"n_images": 16, "corruptions": ["gaussian_noise"]},
            "explain": {"n_samples": 1, "n_embed": 16}, "shape_bias": {"n_pairs": 16}, "shortcut": {"n_images": 16}}
    monkeypatch.setattr(suite, "probe_params", lambda quick=False, n_images=None: {k: dict(v) for k, v in tiny.items()})
    run = tmp_path / "arm" / "seed-0"
    assert cli(["finetune", "--set", "model.backbone=densenet121", "--set", "data.image_size=32", "--set",
                "data.synthetic_n={train: 48, val: 24, test: 32}", "--set", "train.epochs=1", "--set",
                "train.batch_size=24", "--set", "train.num_threads=1", "--out", str(run), "-q"]) == 0
    res = suite.run_probes([tmp_path / "arm"], workers=1)
    rec = res["runs"][0]
    assert __import__("json").loads((run / "metrics.json").read_text())["run"]["backbone"] == "densenet121"
    for probe in ("translation", "adversarial", "corruptions", "explain", "shape_bias", "shortcut"):
        assert probe in rec and rec[probe], probe
    assert rec["explain"]["gradcam_layer"] == "last_conv"
