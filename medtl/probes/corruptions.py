"""Common corruptions of X-ray images, 5 severities each, all batched torch ops and seeded.

Severity parameters (images in [0,1]; blur and resampling in px at the stored image size):

=================  ==============================================  ==============================
corruption         operation                                        severity 1 .. 5
=================  ==============================================  ==============================
gaussian_noise     x + N(0, σ²)                                     σ = .02 .04 .06 .10 .15
poisson_noise      Poisson(x·λ)/λ (quantum noise, λ photons at 1)   λ = 400 200 100 50 25
blur               separable Gaussian blur, reflect padding         σ = .5 .75 1 1.5 2 px
contrast           (x - mean)·c + mean (per image)                  c = .8 .65 .5 .35 .2
gamma              x^γ                                              γ = 1.3 1.6 2 2.5 3
jpeg               baseline JPEG (8x8 DCT, IJG luminance table)     quality = 80 60 40 25 10
downup             area downsample by f, bilinear upsample          f = .8 .65 .5 .4 .3
=================  ==============================================  ==============================

Available but not in the default list (``EXTRA_SEVERITIES``; ask for them by name, e.g.
``medtl probe corruptions RUN --corruption bias_field``), so the recorded default reports and their
mean AUC drops stay reproducible:

=================  ==============================================  ==============================
corruption         operation                                        severity 1 .. 5
=================  ==============================================  ==============================
bias_field         x · exp(Σ c_ij P_i(row) P_j(col)), Legendre      a = .03 .06 .10 .15 .20
                   degree 3, c_ij ~ U(-a, a), one field per image   (field max/min, median at 64
                   (MONAI RandBiasField, seeded from the generator) px: 1.13 1.28 1.51 1.86 2.30)
=================  ==============================================  ==============================

Which of MONAI's intensity families medtl uses, and why (gamma and contrast stay medtl's; histogram
shift and Gibbs ringing are not used): :mod:`medtl.data.intensity`.

Multi-label runs: every AUC is the macro mean over labels (those with a defined AUC), each row
also holds ``auc_per_label``, and ``per_label`` gives each label's mean AUC drop.

Every output is clamped to [0, 1].  JPEG is computed in torch (grayscale baseline JPEG is
DCT, quantisation and rounding; the entropy coding is lossless), which keeps it batched; it
matches Pillow's encoder to within about one grey level on average.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..figures import new_figure, write_png
from .registry import Probe, register, scalar
from .runs import ProbeRun, cached_probe, decision_facts, precision_check, sample_indices, scores

SEVERITIES = {
    "gaussian_noise": [0.02, 0.04, 0.06, 0.10, 0.15],
    "poisson_noise": [400, 200, 100, 50, 25],
    "blur": [0.5, 0.75, 1.0, 1.5, 2.0],
    "contrast": [0.8, 0.65, 0.5, 0.35, 0.2],
    "gamma": [1.3, 1.6, 2.0, 2.5, 3.0],
    "jpeg": [80, 60, 40, 25, 10],
    "downup": [0.8, 0.65, 0.5, 0.4, 0.3],
}
# MONAI-backed corruptions (medtl.data.intensity): available by name, never in the defaults
EXTRA_SEVERITIES = {
    "bias_field": [0.03, 0.06, 0.10, 0.15, 0.20],
}
CORRUPTIONS = tuple(SEVERITIES)  # the default list (the recorded reports' 7)
EXTRA_CORRUPTIONS = tuple(EXTRA_SEVERITIES)
AVAILABLE = CORRUPTIONS + EXTRA_CORRUPTIONS
ALL_SEVERITIES = {**SEVERITIES, **EXTRA_SEVERITIES}
DEFAULTS = {"corruptions": list(CORRUPTIONS), "n_images": None, "seed": 0, "batch_size": 512, "precision": "fp32"}

_JPEG_LUMA = torch.tensor([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=torch.float64)


def _dct_matrix(n: int = 8) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)
    m = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Grayscale baseline JPEG round trip of x (B,1,H,W) in [0,1] at ``quality`` (1..100)."""
    q = int(quality)
    scale = 5000 / q if q < 50 else 200 - 2 * q
    table = torch.clamp(torch.floor((_JPEG_LUMA * scale + 50) / 100), 1, 255)
    B, C, H, W = x.shape
    Hp, Wp = -(-H // 8) * 8, -(-W // 8) * 8
    v = torch.round(x.double() * 255)
    v = F.pad(v, (0, Wp - W, 0, Hp - H), mode="replicate") - 128
    blocks = v.reshape(B, C, Hp // 8, 8, Wp // 8, 8).permute(0, 1, 2, 4, 3, 5)
    D = _dct_matrix()
    coef = D @ blocks @ D.T
    coef = torch.round(coef / table) * table
    rec = D.T @ coef @ D
    rec = rec.permute(0, 1, 2, 4, 3, 5).reshape(B, C, Hp, Wp)[..., :H, :W] + 128
    return (torch.clamp(torch.round(rec), 0, 255) / 255).to(x.dtype)


def _gauss_kernel(sigma: float) -> torch.Tensor:
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    k = _gauss_kernel(sigma).to(x.dtype)
    r = len(k) // 2
    C = x.shape[1]
    r = min(r, x.shape[-1] - 1, x.shape[-2] - 1)
    k = k[len(k) // 2 - r: len(k) // 2 + r + 1]
    k = k / k.sum()
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


def corrupt(x: torch.Tensor, name: str, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Corrupted copy of x (B,C,H,W) in [0,1]; ``severity`` 1..5; noise drawn from ``generator``."""
    if name not in ALL_SEVERITIES:
        raise ConfigError(f"unknown corruption {name!r}; use one of {', '.join(AVAILABLE)}")
    if not 1 <= int(severity) <= 5:
        raise ConfigError(f"corruption severity must be 1..5 (got {severity})")
    s = ALL_SEVERITIES[name][int(severity) - 1]
    if name == "bias_field":  # one generator draw seeds MONAI's RandBiasField for the batch
        from ..data.intensity import apply_bias_field

        y = apply_bias_field(x, s, generator)
    elif name == "gaussian_noise":
        y = x + s * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    elif name == "poisson_noise":
        y = torch.poisson(x.double() * s, generator=generator).to(x.dtype) / s
    elif name == "blur":
        y = blur(x, s)
    elif name == "contrast":
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        y = (x - m) * s + m
    elif name == "gamma":
        y = x.clamp(0, 1) ** s
    elif name == "jpeg":
        y = jpeg(x, s)
    else:  # downup
        H, W = x.shape[-2:]
        small = F.interpolate(x, size=(max(1, round(H * s)), max(1, round(W * s))), mode="area")
        y = F.interpolate(small, size=(H, W), mode="bilinear", align_corners=False)
    return y.clamp(0, 1)


def compute_corruptions(run: ProbeRun, *, corruptions=CORRUPTIONS, n_images: int | None = None, seed: int = 0,
                        batch_size: int = 512, precision: str = "fp32", plots: bool = True) -> dict:
    """``precision``: the forward passes' precision ('fp32', or 'train': the run's training
    precision, for clean and corrupted images alike; the agreement with fp32 is recorded)."""
    amp = run.amp_dtype(precision)
    for c in corruptions:
        if c not in ALL_SEVERITIES:
            raise ConfigError(f"unknown corruption {c!r}; use one of {', '.join(AVAILABLE)}")
    t0 = time.time()
    idx = sample_indices(len(run.labels), n_images, seed, run.labels)
    x = run.x(idx)
    y = run.labels[idx]
    clean = scores(run, y, run.proba(x, batch_size, amp))
    out: dict = {"n_images": int(len(idx)), "clean": clean, "corruptions": {}, "severity_params": {},
                 "precision": precision_check(run, x, amp, batch_size)}
    drops = []
    for ci, c in enumerate(corruptions):
        rows = []
        for sev in range(1, 6):
            g = torch.Generator().manual_seed(seed * 100_003 + ci * 101 + sev)
            probs = []
            for i in range(0, len(x), batch_size):  # noise drawn per chunk from one seeded stream
                probs.append(run.proba(corrupt(x[i:i + batch_size], c, sev, g), batch_size, amp))
            s = scores(run, y, np.concatenate(probs))
            rows.append({"severity": sev, "param": ALL_SEVERITIES[c][sev - 1], "auc": s["auc"], "acc": s["acc"]}
                        | ({"auc_per_label": s["auc_per_label"]} if run.multilabel else {}))
            drops.append(clean["auc"] - s["auc"])
        out["corruptions"][c] = rows
        out["severity_params"][c] = ALL_SEVERITIES[c]
    out["mean_auc"] = float(np.mean([r["auc"] for rows in out["corruptions"].values() for r in rows]))
    out["mean_auc_drop"] = float(np.mean(drops)) if drops else float("nan")
    if run.multilabel:
        out["per_label"] = per_label_drops(clean, out["corruptions"])
        out |= decision_facts(run)
    out["seconds"] = time.time() - t0
    out["images_per_s"] = len(idx) * 5 * len(corruptions) / max(out["seconds"], 1e-9)
    if plots:
        out["plots"] = {"auc_by_severity": _plot(run, out)}
    return out


def per_label_drops(clean: dict, corruptions: dict) -> dict:
    """Per label of a multi-label run: its mean AUC drop over every corruption and severity (rows
    where its AUC is undefined left out; None where none is defined)."""
    out = {}
    for c, base in clean["auc_per_label"].items():
        drops = [base - r["auc_per_label"][c] for rows in corruptions.values() for r in rows
                 if np.isfinite(base) and np.isfinite(r["auc_per_label"][c])]
        out[c] = {"mean_auc_drop": float(np.mean(drops)) if drops else None}
    return out


def _plot(run: ProbeRun, res: dict) -> str:
    names = list(res["corruptions"])
    fig = new_figure(max(5.0, 1.1 * len(names) + 1.5), 3.6)
    ax = fig.add_subplot(1, 1, 1)
    w = 0.8 / 5
    for sev in range(5):
        ax.bar(np.arange(len(names)) + (sev - 2) * w, [res["corruptions"][n][sev]["auc"] or 0 for n in names],
               width=w, label=f"sev {sev + 1}", color=str(0.15 + 0.15 * sev))
    ax.axhline(res["clean"]["auc"], color="tab:red", ls="--", lw=1, label="clean")
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("AUC")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    write_png(run.probes_dir / "corruptions_auc.png", fig)
    return "corruptions_auc.png"


def corruptions_probe(run_dir: str | Path, *, force: bool = False, plots: bool = True, **params) -> dict:
    """Cached corruption probe (RUN/probes/corruptions.json)."""
    p = {**DEFAULTS, **{k: v for k, v in params.items() if v is not None}}
    p["corruptions"] = list(p["corruptions"])
    # part of the cache key: changing a table recomputes.  The default tables exactly as before (so
    # existing caches stay valid); an extra (MONAI-backed) corruption adds its table and the MONAI
    # version, whose sampling defines its fields
    extra = [c for c in p["corruptions"] if c in EXTRA_SEVERITIES]
    p["severities"] = {**SEVERITIES, **{c: EXTRA_SEVERITIES[c] for c in extra}}
    if extra:
        from importlib.metadata import version

        p["monai"] = version("monai")
    q = {k: v for k, v in p.items() if k not in ("severities", "monai")}
    return cached_probe(run_dir, "corruptions", p, lambda run: compute_corruptions(run, plots=plots, **q),
                        force=force)


# ------------------------------------------------------------------------------------ registration

def _scalars(rec) -> dict:
    out = {f"corruptions.{name}.mean_auc": float(np.nanmean([scalar(r["auc"]) for r in rows]))
           for name, rows in rec["corruptions"].items()}
    out |= {f"corruptions.per_label.{c}.mean_auc_drop": scalar(v)
            for c, v in (rec.get("corruptions_per_label") or {}).items()}
    return out | {"corruptions.mean_auc_drop": scalar(rec["corruptions_mean_auc_drop"])}


def _record(c: dict, run) -> dict:
    """The rows (severity, macro AUC; multi-label: also ``auc_per_label``) and the mean AUC drop;
    a multi-label run's per-label mean drops as ``corruptions_per_label``."""
    rec = {"corruptions": {name: [{"severity": r["severity"], "auc": r["auc"]}
                                  | ({"auc_per_label": r["auc_per_label"]} if "auc_per_label" in r else {})
                                  for r in rows] for name, rows in c["corruptions"].items()},
           "corruptions_mean_auc_drop": c["mean_auc_drop"]}
    if "per_label" in c:
        rec["corruptions_per_label"] = {k: v["mean_auc_drop"] for k, v in c["per_label"].items()}
    return rec


register(Probe(
    name="corruptions", order=30, run=corruptions_probe, defaults=DEFAULTS,
    summary="AUC under noise, blur, contrast, gamma, JPEG and down-up sampling at 5 severities",
    presets={"full": {"n_images": None, "precision": "train"}, "quick": {"n_images": 256, "precision": "train"}},
    record=_record,
    scalars=_scalars, headline=lambda keys, records: ["corruptions.mean_auc_drop"]))
