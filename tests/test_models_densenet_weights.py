"""DenseNet-121 weight files in their published layouts, strict loading, and one tiny DenseNet run.

Checkpoints are made here with random values in the structure each source publishes:
torchvision's ``densenet121-a639ec97.pth`` (a state dict whose dense-layer keys use the legacy
``norm.1``/``conv.2`` names), timm's ``densenet121_ra-50efcf5c.pth`` (a state dict with
torchvision's names) and torchxrayvision's ``*-densenet121-d121-...-best.pt`` (``torch.save`` of
the whole module, legacy pre-1.6 stream, 1-channel ``conv0``, 18 outputs), the last one saved
from a stand-in ``torchxrayvision`` package that is gone again when medtl reads the file.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from medtl.errors import WeightsError
from medtl.io import sha256_file
from medtl.models import build_architecture, create_model, fetch_weights, get_weights, load_state_dict_file
from medtl.models import weights as W
from medtl.paths import weights_dir

XRV_SOURCE = '''
from collections import OrderedDict

import torch
from torch import nn


class _DenseLayer(nn.Sequential):
    def __init__(self, cin, growth, bn_size):
        super().__init__()
        self.add_module("norm1", nn.BatchNorm2d(cin))
        self.add_module("relu1", nn.ReLU(inplace=True))
        self.add_module("conv1", nn.Conv2d(cin, bn_size * growth, 1, bias=False))
        self.add_module("norm2", nn.BatchNorm2d(bn_size * growth))
        self.add_module("relu2", nn.ReLU(inplace=True))
        self.add_module("conv2", nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False))

    def forward(self, x):
        return torch.cat([x, super().forward(x)], 1)


class _DenseBlock(nn.Sequential):
    def __init__(self, n, cin, growth, bn_size):
        super().__init__()
        for i in range(n):
            self.add_module("denselayer%d" % (i + 1), _DenseLayer(cin + i * growth, growth, bn_size))


class _Transition(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(cin))
        self.add_module("relu", nn.ReLU(inplace=True))
        self.add_module("conv", nn.Conv2d(cin, cout, 1, bias=False))
        self.add_module("pool", nn.AvgPool2d(2, 2))


class DenseNet(nn.Module):
    """torchxrayvision's layout: torchvision's DenseNet with in_channels=1 and 18 outputs."""

    def __init__(self, growth=32, blocks=(6, 12, 24, 16), init=64, bn_size=4, num_classes=18, in_channels=1):
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(in_channels, init, 7, 2, 3, bias=False)), ("norm0", nn.BatchNorm2d(init)),
            ("relu0", nn.ReLU(inplace=True)), ("pool0", nn.MaxPool2d(3, 2, 1))]))
        c = init
        for i, n in enumerate(blocks):
            self.features.add_module("denseblock%d" % (i + 1), _DenseBlock(n, c, growth, bn_size))
            c += n * growth
            if i != len(blocks) - 1:
                self.features.add_module("transition%d" % (i + 1), _Transition(c, c // 2))
                c //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(c))
        self.classifier = nn.Linear(c, num_classes)
        self.op_threshs = None
'''

LEGACY = re.compile(r"(denselayer\d+\.)(norm|relu|conv)([12])\.")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("MEDTL_OFFLINE", raising=False)


def _random_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = build_architecture("densenet121")
    with torch.no_grad():
        for buf in net.buffers():
            if buf.is_floating_point():
                buf.uniform_(0.5, 1.5)
    return net.state_dict()


def _save_xrv_module(d: Path, state: dict[str, torch.Tensor]):
    """``torch.save(model)`` of a torchxrayvision-layout DenseNet, legacy stream as torch <= 1.5
    wrote it; the package exists only while saving."""
    pkg = d / "fakexrv" / "torchxrayvision"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import models\n")
    (pkg / "models.py").write_text(textwrap.dedent(XRV_SOURCE))
    sys.path.insert(0, str(pkg.parent))
    try:
        import torchxrayvision as xrv

        torch.manual_seed(3)
        module = xrv.models.DenseNet()
        ours = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        ours["features.conv0.weight"] = torch.randn(64, 1, 7, 7) * 0.1
        with torch.no_grad():
            for b in module.buffers():
                if b.is_floating_point():
                    b.uniform_(0.5, 1.5)
        module.load_state_dict(ours, strict=False)
        module.eval()
        torch.save(module, d / "xrv_legacy.pt", _use_new_zipfile_serialization=False)
        torch.save(module, d / "xrv_zip.pt")
    finally:
        sys.path.remove(str(pkg.parent))
        for name in [m for m in sys.modules if m.split(".")[0] == "torchxrayvision"]:
            del sys.modules[name]
    return module


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("densenet")
    state = _random_state(21)
    # as published in 2017: legacy dense-layer names, no num_batches_tracked (torch < 0.4.1)
    torch.save({LEGACY.sub(r"\1\2.\3.", k): v for k, v in state.items() if not k.endswith("num_batches_tracked")},
               d / "tv.pth")
    timm_state = _random_state(22)
    torch.save(timm_state, d / "ra.pth")
    xrv_module = _save_xrv_module(d, state)
    return {"dir": d, "state": state, "timm_state": timm_state, "xrv": xrv_module,
            "xrv_state": xrv_module.state_dict()}


def pretend_registered(monkeypatch, name: str, path: Path):
    """Make the registry entry ``name`` describe the test file (same code path otherwise)."""
    sha = sha256_file(path)
    src = get_weights(name)
    new = replace(src, sha256_prefix=sha[:8] if src.sha256_prefix else "")
    monkeypatch.setitem(W._REGISTRY, name, new)
    return new


def assert_backbone_equals(model, state, skip=("classifier.",)):
    got = model.backbone.state_dict()
    for k, v in state.items():
        if not k.startswith(skip):
            assert torch.equal(got[k], v), k


def test_densenet121_registry_entries():
    tv, ra = get_weights("densenet121.tv_in1k"), get_weights("densenet121.ra_in1k")
    assert tv.url == "https://download.pytorch.org/models/densenet121-a639ec97.pth"
    assert ra.url == ("https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/"
                      "densenet121_ra-50efcf5c.pth")
    assert (tv.sha256_prefix, ra.sha256_prefix) == ("a639ec97", "50efcf5c") and tv.sha256 is ra.sha256 is None
    assert (tv.format, ra.format, tv.family, ra.family) == ("torchvision", "timm", "IN", "tricks")
    xrv = [n for n in W.list_weights("densenet121") if ".xrv_" in n]
    assert xrv == [f"densenet121.xrv_{t}" for t in ("all", "nih", "pc", "chex", "rsna", "mimic_nb", "mimic_ch")]
    for name in xrv:
        s = get_weights(name)
        assert s.url == "https://github.com/mlmed/torchxrayvision/releases/download/v1/" + s.filename
        assert s.filename.endswith("-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt")
        assert (s.format, s.family, s.sha256, s.sha256_prefix, s.top1) == ("xrv", "CXR", None, "", None)
        assert s.mean == (0.5,) * 3 and s.std == (1 / 2048,) * 3 and s.input_size == (1, 224, 224)
    assert get_weights("densenet121.xrv_all").filename.startswith("nih-pc-chex-mimic_ch-google-openi-kaggle-")
    assert get_weights("densenet121.xrv_rsna").filename.startswith("kaggle-")


def test_torchvision_and_timm_densenet121_name_the_same_tensors():
    from medtl._compat import import_torchvision

    with torch.device("meta"):  # names and shapes only
        tv = import_torchvision().models.densenet121(weights=None).state_dict()
        timm_sd = build_architecture("densenet121").state_dict()
    assert list(tv) == list(timm_sd) and all(tv[k].shape == timm_sd[k].shape for k in tv)


def test_torchvision_file_with_legacy_keys_loads_and_pins(ckpts, monkeypatch):
    path = ckpts["dir"] / "tv.pth"
    assert any(".norm.1." in k for k in torch.load(path, weights_only=True))
    pretend_registered(monkeypatch, "densenet121.tv_in1k", path)
    fetch_weights("densenet121.tv_in1k", from_path=path)
    model, report = create_model("densenet121", 2, weights="densenet121.tv_in1k")
    assert_backbone_equals(model, {k: v for k, v in ckpts["state"].items() if not k.endswith("num_batches_tracked")})
    assert sorted(report.skipped_head) == ["classifier.bias", "classifier.weight"]
    assert report.missing == report.unexpected == report.mismatched == report.adapted == []
    assert model.info["format"] == "torchvision" and model.info["family"] == "IN"
    assert json.loads((weights_dir() / "pins.json").read_text())["densenet121.tv_in1k"]["sha256"] == \
        sha256_file(path)
    # the same file given by path: the hub tag identifies it
    model, _ = create_model("densenet121", 2, weights=str(path))
    assert model.info["weights"] == "densenet121.tv_in1k"


def test_timm_ra_file_loads(ckpts, monkeypatch):
    pretend_registered(monkeypatch, "densenet121.ra_in1k", ckpts["dir"] / "ra.pth")
    fetch_weights("densenet121.ra_in1k", from_path=ckpts["dir"] / "ra.pth")
    model, report = create_model("densenet121", 3, weights="densenet121.ra_in1k")
    assert_backbone_equals(model, ckpts["timm_state"])
    assert report.loaded == len(ckpts["timm_state"]) - 2 and model.head.out_features == 3


def test_xrv_module_file_loads_its_tensors_only(ckpts, monkeypatch):
    assert "torchxrayvision" not in sys.modules
    path = ckpts["dir"] / "xrv_legacy.pt"
    with pytest.raises(WeightsError, match=r"refused: the checkpoint pickles objects that are not plain tensors "
                                           r"\(.*torchxrayvision\.models\.DenseNet.*registry name \(densenet121\.xrv_\*\)"):
        create_model("densenet121", 2, weights=str(path))  # given as a plain file: refused
    fetch_weights("densenet121.xrv_all", from_path=path)  # no published hash: pinned
    pins = json.loads((weights_dir() / "pins.json").read_text())
    assert pins["densenet121.xrv_all"]["sha256"] == sha256_file(path)
    model, report = create_model("densenet121", 2, weights="densenet121.xrv_all")
    xrv = ckpts["xrv_state"]
    conv0 = xrv["features.conv0.weight"]
    assert torch.equal(model.backbone.state_dict()["features.conv0.weight"], conv0.repeat(1, 3, 1, 1) / 3)
    assert_backbone_equals(model, {k: v for k, v in xrv.items() if k != "features.conv0.weight"})
    assert report.adapted == ["features.conv0.weight: 1 input channel repeated over 3 (divided by 3)"]
    assert sorted(report.skipped_head) == ["classifier.bias", "classifier.weight"]  # 18 outputs: dropped
    assert report.missing == report.unexpected == report.mismatched == []
    assert model.info["family"] == "CXR" and model.info["std"] == [1 / 2048] * 3
    # on grayscale input the network computes torchxrayvision's features on its [-1024, 1024] scale
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        ref = F.adaptive_avg_pool2d(F.relu(ckpts["xrv"].features((2 * x - 1) * 1024)), 1).flatten(1)
        ours = model.eval().features(x)
    assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-3 * ref.abs().max().item())
    # torch's newer zip layout of the same module reads to the same tensors
    zipped = load_state_dict_file(ckpts["dir"] / "xrv_zip.pt", "xrv", "densenet121")
    assert list(zipped) == list(xrv) and all(torch.equal(zipped[k], xrv[k]) for k in xrv)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_xrv_reader_runs_nothing_and_refuses_other_objects(tmp_path):
    marker = tmp_path / "pwned"
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))
    net.extra = _Evil(str(marker))
    for legacy in (True, False):
        path = tmp_path / f"evil{legacy}.pt"
        torch.save(net, path, _use_new_zipfile_serialization=not legacy)
        with pytest.raises(WeightsError, match=r"evil\w+\.pt: refused: the checkpoint pickles objects that are "
                                               r"neither tensors nor modules \(.*mkdir"):
            load_state_dict_file(path, "xrv", "densenet121")
    assert not marker.exists()
    garbage = tmp_path / "bad.pt"
    garbage.write_bytes(b"not a checkpoint" * 8)
    with pytest.raises(WeightsError, match=r"bad\.pt: not a readable checkpoint"):
        fetch_weights("densenet121.xrv_nih", from_path=garbage)
    assert not (weights_dir() / "pins.json").exists()


def test_strict_loading_counts_what_does_not_fit(tmp_path, caplog):
    torch.manual_seed(0)
    state = build_architecture("resnet18").state_dict()
    convs = [k for k, v in state.items() if v.dim() == 4]
    bad = {k: (v[:1].clone() if k in convs else v) for k, v in state.items()}  # every conv mis-shaped, BN fits
    torch.save(bad, tmp_path / "bad.pth")
    core = len([k for k in state if not k.startswith("fc.") and not k.endswith("num_batches_tracked")])
    with pytest.raises(WeightsError) as err:
        create_model("resnet18", 2, weights=str(tmp_path / "bad.pth"))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(
        f"{tmp_path / 'bad.pth'}: checkpoint does not fit the architecture resnet18: {len(convs)} of {core} "
        f"backbone tensors did not fit (0 missing, {len(convs)} of another shape; e.g. conv1.weight (1, 3, 7, 7)≠"
        "(64, 3, 7, 7)")
    assert msg.endswith("set model.weights_strict: false to train those from random init")
    with caplog.at_level(logging.WARNING, logger="medtl"):
        model, report = create_model("resnet18", 2, weights=str(tmp_path / "bad.pth"), strict=False)
    assert len(report.mismatched) == len(convs) and f"{len(convs)} backbone tensors not loaded" in caplog.text
    # a head of another shape is not part of the backbone: strict loading takes the file
    state["fc.weight"], state["fc.bias"] = torch.zeros(10, 512), torch.zeros(10)
    torch.save(state, tmp_path / "head10.pth")
    model, report = create_model("resnet18", 2, weights=str(tmp_path / "head10.pth"))
    assert sorted(report.skipped_head) == ["fc.bias", "fc.weight"] and report.mismatched == []


def test_densenet_finetune_from_xrv_weights_then_probe(ckpts, tmp_path):
    """`medtl finetune` with a DenseNet-121 from X-ray weights (tiny), then a probe on the run."""
    from medtl.cli import run as cli
    from medtl.probes.translation import translation_probe
    from medtl.runs import Run

    fetch_weights("densenet121.xrv_all", from_path=ckpts["dir"] / "xrv_legacy.pt")
    out = tmp_path / "run"
    assert cli(["finetune", "--quiet", "--out", str(out),
                "--set", "data.path=builtin:synthetic", "--set", "data.image_size=32",
                "--set", "data.synthetic_n={train: 64, val: 32, test: 32}",
                "--set", "model.backbone=densenet121", "--set", "model.weights=densenet121.xrv_all",
                "--set", "train.epochs=1", "--set", "train.batch_size=32", "--set", "train.warmup_epochs=0",
                "--set", "train.num_threads=1", "--set", "train.trainable=last:2",
                "--set", "train.bn_gamma={'features.denseblock4.*.norm2': 0.0}"]) == 0
    record = Run(out).record
    assert record.test.auc is not None and 0 <= record.test.auc <= 1
    log = (out / "train.log").read_text()
    assert "features.conv0.weight: 1 input channel repeated over 3" in log
    assert "bn_gamma applied to 16 layers" in log and "backbone.features.denseblock4" in log
    probe = translation_probe(out, plots=False, max_shift=2, n_images=16, n_pairs=1, scale_pct=1,
                              protocols=["crop"])
    assert probe["n_images"] == 16 and 0 <= probe["p_change_1px"] <= 1
    # 28 px is below DenseNet-121's smallest input: one line, exit 2, no run folder
    small = tmp_path / "small"
    assert cli(["finetune", "--quiet", "--out", str(small), "--set", "data.path=builtin:synthetic",
                "--set", "data.image_size=28", "--set", "model.backbone=densenet121"]) == 2
    assert not small.exists()
