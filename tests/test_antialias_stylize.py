"""model.antialias (BlurPool ResNets) and data.augment.stylize (stylized X-rays)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from medtl.cli import run as cli_run
from medtl.config import build_config
from medtl.data.stylize import (match_histograms, stylize_batch, stylize_images, stylize_plan, window_ids,
                                 window_px, window_scramble)
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
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # train.num_threads is the entry point's job; tiny runs are fastest on one
    yield
    torch.set_num_threads(threads)


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
    assert m.run.antialias == "blurpool" and 0 <= m.test.auc <= 1
    from medtl.probes.runs import load_run

    run = load_run(tmp_path / "run")  # the probes rebuild the antialiased network from config.yaml
    assert any(isinstance(x, BinomialBlurPool) for x in run.model.modules())


# ------------------------------------------------------------------------------ stylize

def test_stylize_plan_is_a_function_of_seed_epoch_and_index():
    a, b = stylize_plan(1000, 0.5, seed=3, epoch=2), stylize_plan(1000, 0.5, seed=3, epoch=2)
    assert np.array_equal(a.apply, b.apply) and np.array_equal(a.partner, b.partner)
    assert np.array_equal(a.offset, b.offset)
    assert not np.array_equal(a.apply, stylize_plan(1000, 0.5, seed=3, epoch=3).apply)
    assert not np.array_equal(a.apply, stylize_plan(1000, 0.5, seed=4, epoch=2).apply)
    assert 0.44 < a.apply.mean() < 0.56 and (a.partner != np.arange(1000)).all()
    assert a.partner.min() >= 0 and a.partner.max() < 1000 and ((a.offset >= 0) & (a.offset < 1)).all()
    assert not stylize_plan(50, 0.0, 0, 0).apply.any() and stylize_plan(50, 1.0, 0, 0).apply.all()
    assert stylize_plan(1, 1.0, 0, 0).apply.sum() == 0  # a one-image set has no partner


@pytest.mark.parametrize("side,win,offset", [(16, 3, (0, 0)), (16, 3, (2, 1)), (28, 4, (3, 0)), (13, 2, (1, 1))])
def test_window_scramble_only_permutes_pixels_within_windows(side, win, offset):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, side, side, generator=g)
    off = torch.tensor([offset, offset[::-1]])
    keys = torch.rand(2, side * side, generator=g, dtype=torch.float64)
    y = window_scramble(x, win, off, keys)
    ids = window_ids(side, side, win, off)
    for b in range(2):
        xf, yf = x[b].flatten(), y[b].flatten()
        assert not torch.equal(xf, yf)  # pixels did move
        for w in torch.unique(ids[b]):  # the multiset of every window is kept (before the histogram map)
            inside = ids[b] == w
            assert torch.equal(torch.sort(xf[inside]).values, torch.sort(yf[inside]).values)
        # the grid is shifted by the offset: the first window is offset-sized
        assert int((ids[b].view(side, side)[:, 0] == ids[b][0]).sum()) == win - int(off[b, 0])
    # keys that follow raster order leave the image as it was
    assert torch.equal(window_scramble(x, win, off, torch.linspace(0, 0.99, side * side).expand(2, -1)), x)


def test_histogram_matching_is_a_monotone_map_onto_the_partners_intensities():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (3, 1, 20, 20), generator=g).float() / 255
    style = torch.randint(40, 200, (3, 1, 20, 20), generator=g).float() / 255
    y = match_histograms(x, style)
    for b in range(3):
        xf, yf = x[b].flatten(), y[b].flatten()
        order = torch.argsort(xf)
        assert (yf[order].diff() >= 0).all()                       # monotone in the input intensity
        same = xf[:, None] == xf[None, :]
        assert (yf[:, None] == yf[None, :])[same].all()            # pointwise: equal levels, equal outputs
        assert set(yf.tolist()) <= set(style[b].flatten().tolist())   # the partner's intensities
        assert abs(float(yf.mean()) - float(style[b].mean())) < 0.03
    # every level distinct: the output's intensity distribution is exactly the partner's
    perm = torch.randperm(256, generator=g).float().view(1, 1, 16, 16) / 255
    ref = torch.randint(0, 256, (1, 1, 16, 16), generator=g).float() / 255
    assert torch.equal(torch.sort(match_histograms(perm, ref).flatten()).values, torch.sort(ref.flatten()).values)
    assert torch.equal(match_histograms(perm, perm), perm)


def test_stylize_batch_follows_the_plan_and_not_the_batch():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10, 1, 16, 16), generator=g, dtype=torch.uint8)
    plan = stylize_plan(10, 0.6, seed=2, epoch=1)
    assert plan.apply.any() and not plan.apply.all()
    full = stylize_batch(images.float() / 255, torch.arange(10), images, plan, 0.2)
    for order in (torch.tensor([4, 1, 7]), torch.tensor([9, 3, 0, 8, 2, 6, 5, 1, 4, 7])):
        assert torch.equal(stylize_batch(images[order].float() / 255, order, images, plan, 0.2), full[order])
    keep = ~torch.from_numpy(plan.apply)
    assert torch.equal(full[keep], images[keep].float() / 255)
    i = int(np.flatnonzero(plan.apply)[0])
    one = stylize_images(images[[i]].float() / 255, images[[int(plan.partner[i])]].float() / 255, np.array([i]),
                         plan, 0.2)
    assert torch.equal(full[i], one[0])
    assert window_px(16, 0.2) == 3 and window_px(8, 0.1) == 2
    none = stylize_plan(10, 0.0, 0, 0)
    x = images.float() / 255
    assert stylize_batch(x, torch.arange(10), images, none, 0.1) is x


def test_old_amplitude_swap_runs_are_not_resumed_as_the_new_method(tmp_path):
    from medtl.config import config_to_yaml
    from medtl.runs import Run, write_marker

    cfg = build_config({}, TINY + ["data.augment.stylize=0.5", "train.epochs=1"])
    old = Run(tmp_path / "old")  # a run folder as medtl wrote it before the method changed
    old.path.mkdir()
    write_marker(old.path)
    raw = yaml.safe_load(config_to_yaml(cfg))
    del raw["data"]["augment"]["stylize_window"]
    old.config_path.write_text(yaml.safe_dump(raw))
    with pytest.raises(MedtlError, match="amplitude swap"):
        finetune(cfg, old.path, progress=False)
    raw["data"]["augment"]["stylize"] = 0.0  # stylize off: the run is the same as before
    old.config_path.write_text(yaml.safe_dump(raw))
    assert loop_mod.check_existing(old, build_config({}, TINY + ["train.epochs=1"])) == "new"
    assert loop_mod.method_changes({"data": {"augment": {"stylize": 0.0}}}) == []  # stylize off: nothing changed


def test_stylized_training_is_reproducible_and_resumes_identically(tmp_path, stop_at_epoch):
    cfg = build_config({}, TINY + ["data.augment.stylize=0.5"])
    a = finetune(cfg, tmp_path / "a", progress=False)
    plain = finetune(build_config({}, TINY), tmp_path / "plain", progress=False)
    assert a.run.stylize == 0.5
    assert [h["train_loss"] for h in a.history] != [h["train_loss"] for h in plain.history]
    stop_at_epoch(1)
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg, tmp_path / "b", progress=False)
    stop_at_epoch(None)
    b = finetune(cfg, tmp_path / "b", progress=False)
    assert b.test == a.test
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]


def test_fill_stylize_keeps_the_support_and_replaces_the_point_pattern():
    """stylize_method fill: a closing over the window finds the support; inside it a random point
    texture per (seed, epoch, index) replaces the image's own points; outside it stays empty."""
    from medtl.data import fractaldb
    from medtl.data.stylize import closing, fill_textures

    x_np, _ = fractaldb.generate(3, {"train": 4}, 32, seed=1)["train"]
    images = torch.from_numpy(x_np).unsqueeze(1)
    x = images.float() / 255
    plan = stylize_plan(len(images), 1.0, seed=3, epoch=0)
    out = stylize_batch(x, torch.arange(len(images)), images, plan, 0.1, "fill")
    support = closing(x, window_px(32, 0.1)) > 0
    assert (closing(x, 3) >= x).all()                                             # a closing only adds
    assert (out[~support] == out[~support].min()).all()                           # nothing outside the support
    same = (out > 0.5) == (x > 0.5)
    assert float(same[support].float().mean()) < 0.8                             # the points inside are new
    t1 = fill_textures(3, 0, np.arange(4), 32, 32)
    assert torch.equal(t1, fill_textures(3, 0, np.arange(4), 32, 32))            # deterministic
    assert not torch.equal(t1, fill_textures(3, 1, np.arange(4), 32, 32))        # another epoch, other points
    order = torch.tensor([2, 0])
    assert torch.equal(stylize_batch(x[order], order, images, plan, 0.1, "fill"), out[order])
    with pytest.raises(ValueError, match="scramble or fill"):
        stylize_images(x[:1], x[1:2], np.array([0]), plan, 0.1, "swirl")
