"""model.antialias (BlurPool ResNets) and data.augment.stylize (stylized X-rays)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medtl.cli import run as cli_run
from medtl.config import build_config
from medtl.data.stylize import amplitude_swap, stylize_batch, stylize_plan
from medtl.errors import MedtlError
from medtl.models import create_model
from medtl.models.blurpool import BinomialBlurPool
from medtl.train import finetune
from medtl.train import loop as loop_mod

TINY = ["data.path=builtin:synthetic", "data.image_size=32", "data.synthetic_n={train: 96, val: 48, test: 48}",
        "train.epochs=2", "train.batch_size=32", "train.lr=0.05", "train.warmup_epochs=1", "train.num_threads=1",
        "train.precision=fp32"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))


# ------------------------------------------------------------------------------ blurpool

@pytest.mark.parametrize("shape", [(2, 8, 13, 14), (1, 3, 2, 2), (3, 4, 28, 28), (2, 5, 7, 9)])
def test_binomial_blurpool_equals_timm_blurpool(shape):
    from medtl._compat import import_torchvision

    import_torchvision()
    from timm.layers import BlurPool2d

    x = torch.randn(*shape)
    ref = BlurPool2d(shape[1], filt_size=3, stride=2)(x)
    assert torch.allclose(BinomialBlurPool(shape[1])(x), ref, atol=1e-6)
    cl = x.contiguous(memory_format=torch.channels_last)
    assert torch.allclose(BinomialBlurPool(shape[1])(cl), ref, atol=1e-6)
    with pytest.raises(ValueError):
        BinomialBlurPool(4, filt_size=5)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_blurpool_model_keeps_the_output_and_loads_plain_weights(arch, tmp_path):
    torch.manual_seed(0)
    plain, _ = create_model(arch, 3)
    aa, _ = create_model(arch, 3, antialias="blurpool")
    assert aa.info["antialias"] == "blurpool" and plain.info["antialias"] == "none"
    assert any(isinstance(m, BinomialBlurPool) for m in aa.modules())
    assert not any(isinstance(m, BinomialBlurPool) for m in plain.modules())
    sd_p, sd_a = plain.state_dict(), aa.state_dict()
    assert sd_p.keys() == sd_a.keys() and all(sd_p[k].shape == sd_a[k].shape for k in sd_p)
    for side in (17, 28, 45):
        x = torch.rand(2, 1, side, side)
        assert aa.eval()(x).shape == plain.eval()(x).shape == (2, 3)
    # an ImageNet checkpoint of the plain arch (torchvision names) loads fully into the antialiased one
    backbone = {k[len("backbone."):]: v for k, v in sd_p.items() if k.startswith("backbone.")}
    torch.save(backbone, tmp_path / "plain.pth")
    loaded, report = create_model(arch, 3, weights=str(tmp_path / "plain.pth"), antialias="blurpool")
    assert report.missing == [] and report.mismatched == [] and report.unexpected == []
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in sd_p.items() if k.startswith("backbone."))
    x = torch.rand(2, 1, 32, 32)
    p_feat, a_feat = plain.eval().features(x), loaded.eval().features(x)
    assert not torch.allclose(p_feat, a_feat)  # the same weights, a different (blurred) network


def test_blurpool_features_are_more_shift_stable_with_the_same_weights():
    """The point of the low-pass: with identical weights, a 1-px shift moves the pooled features less."""
    torch.manual_seed(0)
    plain, _ = create_model("resnet18", 2, trim_convs=False)
    aa, _ = create_model("resnet18", 2, antialias="blurpool", trim_convs=False)
    aa.load_state_dict(plain.state_dict())
    g = torch.Generator().manual_seed(1)
    x = torch.nn.functional.avg_pool2d(torch.rand(16, 1, 68, 68, generator=g), 3, 1)  # some spatial correlation
    a, b = x[..., :64, :64], x[..., 1:65, 1:65]

    def rel_change(m):
        with torch.no_grad():
            fa, fb = m.eval().features(a), m.features(b)
        return float(((fa - fb).norm(dim=1) / fa.norm(dim=1)).mean())

    assert rel_change(aa) < 0.8 * rel_change(plain)


def test_blurpool_on_too_small_inputs_is_one_line_error(tmp_path, capsys):
    cfg = build_config({}, TINY + ["data.image_size=16", "model.antialias=blurpool"])
    with pytest.raises(MedtlError, match="at least 17 px"):
        finetune(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    code = cli_run(["finetune", "--out", str(tmp_path / "cli"), "--quiet"]
                   + [a for s in TINY + ["data.image_size=16", "model.antialias=blurpool"] for a in ("--set", s)])
    assert code == 2 and "at least 17 px" in capsys.readouterr().err
    with pytest.raises(MedtlError, match="antialias"):
        build_config({}, ["model.antialias=blur"])


def test_blurpool_run_trains_and_records_it(tmp_path):
    m = finetune(build_config({}, TINY + ["model.antialias=blurpool", "train.epochs=1"]), tmp_path / "run",
                 progress=False)
    assert m["run"]["antialias"] == "blurpool" and 0 <= m["test"]["auc"] <= 1
    from medtl.probes.runs import load_run

    run = load_run(tmp_path / "run")  # the probes rebuild the antialiased network from config.yaml
    assert any(isinstance(x, BinomialBlurPool) for x in run.model.modules())


# ------------------------------------------------------------------------------ stylize

def test_stylize_plan_is_a_function_of_seed_epoch_and_index():
    a1, p1 = stylize_plan(1000, 0.5, seed=3, epoch=2)
    a2, p2 = stylize_plan(1000, 0.5, seed=3, epoch=2)
    assert np.array_equal(a1, a2) and np.array_equal(p1, p2)
    a3, _ = stylize_plan(1000, 0.5, seed=3, epoch=3)
    a4, _ = stylize_plan(1000, 0.5, seed=4, epoch=2)
    assert not np.array_equal(a1, a3) and not np.array_equal(a1, a4)
    assert 0.44 < a1.mean() < 0.56 and (p1 != np.arange(1000)).all() and p1.min() >= 0 and p1.max() < 1000
    assert not stylize_plan(50, 0.0, 0, 0)[0].any() and stylize_plan(50, 1.0, 0, 0)[0].all()
    assert stylize_plan(1, 1.0, 0, 0)[0].sum() == 0  # a one-image set has no partner


def test_amplitude_swap_keeps_phase_and_mean_takes_the_partners_spectrum():
    g = torch.Generator().manual_seed(0)
    x = 0.5 + 0.05 * torch.randn(3, 1, 32, 32, generator=g)   # stays inside [0,1]: no clamping
    s = 0.4 + 0.05 * torch.randn(3, 1, 32, 32, generator=g)
    y = amplitude_swap(x, s)
    assert y.shape == x.shape and y.min() > 0 and y.max() < 1
    fx, fs, fy = torch.fft.rfft2(x), torch.fft.rfft2(s), torch.fft.rfft2(y)
    assert torch.allclose(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-5)  # DC kept
    amp_err = (fy.abs() - fs.abs())[..., 1:, :].abs().max()
    assert amp_err < 1e-3  # the partner's amplitude spectrum (off DC)
    big = fy.abs() > 1e-3
    phase_err = torch.remainder(torch.angle(fy) - torch.angle(fx) + torch.pi, 2 * torch.pi) - torch.pi
    assert phase_err[big].abs().max() < 1e-3  # the image's own phase
    assert torch.allclose(amplitude_swap(x, x), x, atol=1e-5)
    with pytest.raises(ValueError):
        amplitude_swap(x, s[:, :, :16])


def test_stylize_batch_follows_the_plan():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10, 1, 16, 16), generator=g, dtype=torch.uint8)
    idx = torch.tensor([4, 1, 7])
    x = images[idx].float() / 255
    none = np.zeros(10, bool)
    assert stylize_batch(x, idx, images, none, np.zeros(10, np.int64)) is x
    apply = np.zeros(10, bool)
    apply[[1, 7]] = True
    partner = np.arange(10)[::-1].copy()
    y = stylize_batch(x, idx, images, apply, partner)
    assert torch.equal(y[0], x[0])
    assert torch.allclose(y[1], amplitude_swap(x[1:2], images[[8]].float() / 255)[0])
    assert torch.allclose(y[2], amplitude_swap(x[2:3], images[[2]].float() / 255)[0])
    assert not torch.equal(x, y)


def test_stylized_training_is_reproducible_and_resumes_identically(tmp_path, monkeypatch):
    cfg = build_config({}, TINY + ["data.augment.stylize=0.5"])
    a = finetune(cfg, tmp_path / "a", progress=False)
    plain = finetune(build_config({}, TINY), tmp_path / "plain", progress=False)
    assert a["run"]["stylize"] == 0.5
    assert [h["train_loss"] for h in a["history"]] != [h["train_loss"] for h in plain["history"]]
    real = loop_mod._train_epoch

    def interrupted(*args, **kw):
        if args[2] == 1:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(loop_mod, "_train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg, tmp_path / "b", progress=False)
    monkeypatch.setattr(loop_mod, "_train_epoch", real)
    b = finetune(cfg, tmp_path / "b", progress=False)
    assert b["test"] == a["test"]
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
