"""MONAI's medical intensity families against medtl's (decisions in medtl/data/intensity.py).

Bias field: added from MONAI (corruption, opt-in, and augmentation, off by default).  Gamma and
contrast: medtl's kept (measured equal where the families coincide, and why medtl's gamma is the
right one for X-rays).  Histogram shift and Gibbs ringing: not used (the measured reasons).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medtl.config import AugmentConfig
from medtl.data import augment_batch
from medtl.data.intensity import BIAS_DEGREE, apply_bias_field, bias_fields
from medtl.errors import ConfigError
from medtl.probes import corruptions as corr
from medtl.probes.corruptions import (AVAILABLE, CORRUPTIONS, DEFAULTS, EXTRA_SEVERITIES, SEVERITIES, corrupt,
                                      corruptions_probe)



@pytest.fixture(scope="module")
def monai_t():
    return pytest.importorskip("monai.transforms")


def _t(a) -> torch.Tensor:
    """MONAI output (MetaTensor / tensor / array) as a plain tensor."""
    return torch.as_tensor(np.asarray(a))


def _img(n=4, side=32, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    smooth = F.avg_pool2d(torch.rand(n, 1, side * 2, side * 2, generator=g), 2)
    return smooth.clamp(0, 1)


# ---------------------------------------------------------------------------------------------
# augmentation: the stream and output of existing configs are unchanged


def _augment_batch_before_intensity(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """augment_batch as it was before the bias field and gamma options (the reference)."""
    def uni(n, lo, hi):
        return torch.rand(n, generator=generator, dtype=torch.float32) * (hi - lo) + lo

    n = x.shape[0]
    angle = uni(n, -cfg.rotate, cfg.rotate) * (math.pi / 180.0)
    zoom = uni(n, 1.0 - cfg.scale, 1.0 + cfg.scale)
    tx = uni(n, -cfg.translate, cfg.translate) * 2.0
    ty = uni(n, -cfg.translate, cfg.translate) * 2.0
    flip = torch.rand(n, generator=generator) < 0.5
    bright = uni(n, -cfg.brightness, cfg.brightness)
    contrast = uni(n, 1.0 - cfg.contrast, 1.0 + cfg.contrast)
    if not cfg.hflip:
        flip = torch.zeros_like(flip)
    out = x
    if cfg.rotate > 0 or cfg.scale > 0 or cfg.translate > 0 or cfg.hflip:
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        sx = torch.where(flip, -1.0, 1.0)
        theta = torch.stack([torch.stack([cos * sx, -sin, tx], dim=1),
                             torch.stack([sin * sx, cos, ty], dim=1)], dim=1).to(device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if cfg.brightness > 0 or cfg.contrast > 0:
        c = contrast.to(device=x.device, dtype=x.dtype).view(n, 1, 1, 1)
        b = bright.to(device=x.device, dtype=x.dtype).view(n, 1, 1, 1)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * c + mean + b
    return out.clamp(0.0, 1.0)


OLD_CONFIGS = [
    {},  # the defaults
    {"translate": 0.07, "scale": 0.1, "rotate": 5},  # configs/pneumoniamnist28.yaml
    {"rotate": 15, "scale": 0.2, "translate": 0.1, "hflip": True, "brightness": 0.2, "contrast": 0.2},
    {"translate": 0, "scale": 0, "rotate": 0, "brightness": 0, "contrast": 0},
]


@pytest.mark.parametrize("kw", OLD_CONFIGS)
def test_existing_configs_bit_identical(kw):
    cfg = AugmentConfig(**kw)
    assert cfg.bias_field == 0 and cfg.gamma == 0  # new keys default off
    x = _img(6, 24)
    g_new, g_old = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    new = augment_batch(x, cfg, g_new)
    old = _augment_batch_before_intensity(x, cfg, g_old)
    assert torch.equal(new, old)
    assert torch.equal(g_new.get_state(), g_old.get_state())  # the stream after it (mixup) is unchanged


def test_augment_bias_field_and_gamma_order_and_reproducibility(monai_t):
    x = _img(5, 24)
    cfg = AugmentConfig(bias_field=0.1, gamma=0.4, hflip=True)
    g = torch.Generator().manual_seed(3)
    got = augment_batch(x, cfg, g)
    # reference: the old ops and their draws first, then one draw seeding the bias fields, then ln γ
    r = torch.Generator().manual_seed(3)
    base = _augment_batch_before_intensity(x, cfg, r)
    field = bias_fields(5, 24, 24, 0.1, r)
    lg = torch.rand(5, generator=r, dtype=torch.float32) * 0.8 - 0.4
    want = (base.double() * field).float().clamp(0, 1) ** torch.exp(lg).view(5, 1, 1, 1)
    assert torch.equal(got, want)
    assert torch.equal(g.get_state(), r.get_state())
    assert got.min() >= 0 and got.max() <= 1
    assert torch.equal(got, augment_batch(x, cfg, torch.Generator().manual_seed(3)))
    assert not torch.equal(got, augment_batch(x, cfg, torch.Generator().manual_seed(4)))
    assert float((got - base).abs().mean()) > 0.01  # the new ops do something
    with pytest.raises(ValueError):
        AugmentConfig(bias_field=-0.1)
    with pytest.raises(ValueError):
        AugmentConfig(gamma=2.0)


# ---------------------------------------------------------------------------------------------
# bias field: MONAI's, with its defining properties


def test_corruption_defaults_unchanged_and_bias_field_available():
    assert DEFAULTS["corruptions"] == ["gaussian_noise", "poisson_noise", "blur", "contrast", "gamma", "jpeg", "downup"]
    assert list(CORRUPTIONS) == DEFAULTS["corruptions"] and list(SEVERITIES) == DEFAULTS["corruptions"]
    assert "bias_field" in AVAILABLE and "bias_field" not in CORRUPTIONS
    assert len(EXTRA_SEVERITIES["bias_field"]) == 5
    assert list(EXTRA_SEVERITIES["bias_field"]) == sorted(EXTRA_SEVERITIES["bias_field"])
    with pytest.raises(ConfigError):
        corrupt(_img(1, 8), "gibbs", 1)


def test_bias_field_is_monai_randbiasfield_seeded_from_generator(monai_t):
    x = _img(3, 20)
    g = torch.Generator().manual_seed(5)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=torch.Generator().manual_seed(5)))
    got = corrupt(x, "bias_field", 3, g)
    t = monai_t.RandBiasField(degree=3, coeff_range=(-0.1, 0.1), prob=1.0, dtype=None)
    t.set_random_state(seed=seed)
    want = torch.stack([_t(t(xi)) for xi in x]).clamp(0, 1)
    assert torch.equal(got, want)
    # exactly one draw from the generator per call
    r = torch.Generator().manual_seed(5)
    torch.randint(0, 2**31 - 1, (1,), generator=r)
    assert torch.equal(g.get_state(), r.get_state())
    # reproducible from the generator state, different for another state
    assert torch.equal(got, corrupt(x, "bias_field", 3, torch.Generator().manual_seed(5)))
    assert not torch.equal(got, corrupt(x, "bias_field", 3, torch.Generator().manual_seed(6)))


def _legendre_basis(h, w, pairs):
    r = np.linspace(-1, 1, h, dtype=np.float32).astype(np.float64)
    c = np.linspace(-1, 1, w, dtype=np.float32).astype(np.float64)
    cols = []
    for i, j in pairs:
        pi = np.polynomial.legendre.legval(r, [0] * i + [1])
        pj = np.polynomial.legendre.legval(c, [0] * j + [1])
        cols.append(np.outer(pi, pj).ravel())
    return np.stack(cols, 1)


def test_bias_field_smooth_multiplicative_and_monotone(monai_t):
    h, w = 24, 20
    fields = bias_fields(6, h, w, 0.2, torch.Generator().manual_seed(1))
    assert fields.shape == (6, 1, h, w) and fields.dtype == torch.float64 and bool((fields > 0).all())
    logf = fields.log().reshape(6, -1).numpy()
    # smooth: log field is a Legendre polynomial of degree <= 3 in the (row, col) basis MONAI uses (j <= i)
    pairs = [(i, j) for i in range(BIAS_DEGREE + 1) for j in range(i + 1)]
    A = _legendre_basis(h, w, pairs)
    coef, *_ = np.linalg.lstsq(A, logf.T, rcond=None)
    assert np.abs(A @ coef - logf.T).max() < 1e-6
    assert np.abs(logf).max() > 0.05  # not the trivial field
    # MONAI's 2D basis has no net left-right gradient: column-averaged profile flat, row-averaged not
    f2 = fields.log()[:, 0]
    var_cols = f2.mean(dim=1).var(dim=1).mean()  # profile across columns
    var_rows = f2.mean(dim=2).var(dim=1).mean()  # profile across rows
    assert var_cols < 1e-2 * var_rows
    # multiplicative: y / x is the field wherever y was not clamped
    x = 0.05 + 0.2 * _img(6, h)[..., :w]
    y = apply_bias_field(x, 0.2, torch.Generator().manual_seed(1))
    assert torch.allclose(y.double() / x.double(), fields, rtol=1e-6)
    # severity monotone in field amplitude: with one generator state, log field scales with a exactly
    grey = torch.full((4, 1, h, w), 0.3)
    prev, base = 0.0, None
    for s, a in enumerate(EXTRA_SEVERITIES["bias_field"], 1):
        lf = bias_fields(4, h, w, a, torch.Generator().manual_seed(2)).log()
        base = lf / a if base is None else base
        assert torch.allclose(lf / a, base, atol=1e-9)
        d = float((corrupt(grey, "bias_field", s, torch.Generator().manual_seed(2)) - grey).abs().mean())
        assert d > prev, s
        prev = d


# ---------------------------------------------------------------------------------------------
# gamma and contrast: medtl's kept


def test_gamma_fixed_range_vs_monai_adjustcontrast(monai_t):
    x = _img(1, 32)
    x[..., 0, 0], x[..., 0, 1] = 0.0, 1.0  # spans [0, 1]: MONAI's min/max rescaling is the identity
    for s, gam in enumerate(SEVERITIES["gamma"], 1):
        m = _t(monai_t.AdjustContrast(gam)(x[0])).clamp(0, 1)
        assert float((corrupt(x, "gamma", s)[0] - m).abs().max()) < 1e-5, gam
    # a burned-in marker pixel: medtl's gamma is pointwise, MONAI's changes every other pixel
    y = 0.8 * _img(1, 32, seed=1)
    ym = y.clone()
    ym[..., 0, 0] = 1.0
    rest = torch.ones_like(y, dtype=torch.bool)
    rest[..., 0, 0] = False
    assert torch.equal(corrupt(y, "gamma", 3)[rest], corrupt(ym, "gamma", 3)[rest])
    a, b = _t(monai_t.AdjustContrast(2.0)(y[0])), _t(monai_t.AdjustContrast(2.0)(ym[0]))
    assert float((a - b)[rest[0]].abs().mean()) > 0.02


def test_contrast_equals_monai_scaleintensityfixedmean(monai_t):
    x = _img(4, 32)
    for s, c in enumerate(SEVERITIES["contrast"], 1):
        m = torch.stack([_t(monai_t.ScaleIntensityFixedMean(factor=c - 1, dtype=None)(xi)) for xi in x]).clamp(0, 1)
        assert float((corrupt(x, "contrast", s) - m).abs().max()) <= 1e-6, c


# ---------------------------------------------------------------------------------------------
# histogram shift and Gibbs ringing: not used, for these measured reasons


def test_histogram_shift_depends_on_extremes_and_has_no_strength(monai_t):
    y = 0.8 * _img(1, 32, seed=2)[0]
    ym = y.clone()
    ym[0, 0, 0] = 1.0
    t = monai_t.RandHistogramShift(num_control_points=10, prob=1.0)
    t.set_random_state(seed=0)
    a = _t(t(y))
    t.set_random_state(seed=0)
    b = _t(t(ym))
    assert float((a - b).flatten()[1:].abs().mean()) > 0.005  # one marker pixel moves all others
    # the only knob, the number of control points, shrinks the change as it grows
    ramp = torch.linspace(0, 1, 256).view(1, 1, 256)
    dev = {}
    for k in (4, 16):
        t = monai_t.RandHistogramShift(num_control_points=k, prob=1.0)
        t.set_random_state(seed=0)
        dev[k] = np.mean([float((_t(t(ramp)) - ramp).abs().mean()) for _ in range(20)])
    assert dev[4] > 2 * dev[16]


def test_gibbs_ringing_lands_on_the_frame(monai_t):
    ramp = torch.linspace(0, 1, 64).expand(1, 64, 64).clone()  # smooth content, no edge inside
    err = (_t(monai_t.GibbsNoise(alpha=0.5)(ramp)) - ramp).abs()
    border = float(err[..., [0, -1]].mean())
    centre = float(err[..., 16:48].mean())
    assert border > 0.05 and border > 10 * centre  # periodic-FFT wrap-around at the image frame


# ---------------------------------------------------------------------------------------------
# the probe's cache key: default params exactly as before, MONAI version only for extras


def test_probe_cache_key(monkeypatch, monai_t):
    seen = []

    def fake_cached(run_dir, probe, params, compute, *, force=False):
        seen.append(dict(params))
        return compute("RUN")

    calls = []
    monkeypatch.setattr(corr, "cached_probe", fake_cached)
    monkeypatch.setattr(corr, "compute_corruptions", lambda run, **kw: calls.append(kw) or {})
    corruptions_probe("unused")
    assert seen[-1]["severities"] == SEVERITIES and "monai" not in seen[-1]
    assert set(calls[-1]) == {"corruptions", "n_images", "seed", "batch_size", "precision", "plots"}
    corruptions_probe("unused", corruptions=["blur", "bias_field"])
    assert seen[-1]["severities"] == {**SEVERITIES, "bias_field": EXTRA_SEVERITIES["bias_field"]}
    assert seen[-1]["monai"]
    assert calls[-1]["corruptions"] == ["blur", "bias_field"] and "monai" not in calls[-1]
