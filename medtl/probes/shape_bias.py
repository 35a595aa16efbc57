"""Shape vs texture bias of a fine-tuned X-ray model (Geirhos et al., ICLR 2019), on cue-conflict X-rays.

Construction (a frequency split, as in hybrid images, Oliva et al. 2006).  A cue-conflict image
takes its global shape and structure from one test image ``A`` and its local texture from a test
image ``B`` of another class::

    conflict = lowpass(A) + (B - lowpass(B)),   clamped to [0, 1]

``lowpass`` is a Gaussian blur (reflect padding) of σ = ``sigma`` x the image side (default 0.04:
1.1 px at 28 px, 9 px at 224 px): it keeps outlines, opacities and the anatomy's layout and
removes fine detail; the high-pass residual of ``B`` carries B's fine texture (grain, trabecular
and interstitial pattern, noise).  No network or downloaded weights are needed.  The stylized
training augmentation (``data.augment.stylize``) uses a different construction (Fourier
amplitude swap), so this probe does not merely test the training transform.

Shape bias (Geirhos's definition): among cue-conflict images whose two source images the model
classifies correctly, the fraction of decisions that follow the shape source's class among the
decisions that follow either source's class.  Pairs are balanced over ordered class pairs (for
binary runs: half shape-normal/texture-pneumonia, half the reverse), so a model that always says
one class scores 0.5 rather than 0 or 1; the per-direction fractions are reported too.
Decisions use the run's operating threshold (binary) or argmax, in fp32 (as every probe).

Also reported, as a check that both cues are usable at this σ: accuracy on the shape cue alone
(lowpass(A)) and on the texture cue alone (B - lowpass(B) + mean(B)).  The per-run CI is a Wilson
interval over the pairs (source images can recur across pairs, so it is optimistic); the robustness
report gives the CI over seeds.
"""
from __future__ import annotations

import time
from itertools import permutations
from pathlib import Path

import numpy as np
import torch

from ..figures import new_figure, write_png
from ..models.inference import predict_proba
from .corruptions import blur
from .runs import ProbeRun, cached_probe, check_positive, decide

DEFAULTS = {"n_pairs": 500, "sigma": 0.04, "seed": 0, "batch_size": 512}


def lowpass(x: torch.Tensor, sigma_frac: float) -> torch.Tensor:
    """Gaussian low-pass of (B,C,H,W) images, σ = ``sigma_frac`` x the shorter side (px)."""
    return blur(x, max(1e-3, sigma_frac * min(x.shape[-2:])))


def cue_conflict(shape_src: torch.Tensor, texture_src: torch.Tensor, sigma_frac: float) -> torch.Tensor:
    """``lowpass(shape_src) + highpass(texture_src)``, clamped to [0, 1] (module docstring)."""
    return (lowpass(shape_src, sigma_frac) + texture_src - lowpass(texture_src, sigma_frac)).clamp(0.0, 1.0)


def texture_only(x: torch.Tensor, sigma_frac: float) -> torch.Tensor:
    """The texture cue alone: the high-pass residual on the image's own mean intensity."""
    return (x - lowpass(x, sigma_frac) + x.mean(dim=(1, 2, 3), keepdim=True)).clamp(0.0, 1.0)


def _pairs(correct_by_class: dict[int, np.ndarray], n_pairs: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) rows (shape source index, texture source index), balanced over ordered class pairs."""
    classes = [c for c, idx in correct_by_class.items() if len(idx)]
    combos = list(permutations(classes, 2))
    if not combos:
        return np.zeros((0, 2), dtype=np.int64)
    rows = []
    for k in range(n_pairs):
        a, b = combos[k % len(combos)]
        rows.append((rng.choice(correct_by_class[a]), rng.choice(correct_by_class[b])))
    return np.asarray(rows, dtype=np.int64)


def _wilson(k: int, n: int) -> tuple[float | None, float | None]:
    from ..stats.subgroups import wilson_ci

    return wilson_ci(k, n) if n else (None, None)


def compute_shape_bias(run: ProbeRun, *, n_pairs: int = 500, sigma: float = 0.04, seed: int = 0,
                       batch_size: int = 512, plots: bool = True) -> dict:
    check_positive("n_pairs", n_pairs)
    if not 0 < sigma < 0.5:
        from ..errors import ConfigError

        raise ConfigError(f"sigma must be in (0, 0.5) of the image side (got {sigma})")
    t0 = time.time()
    y = run.labels
    u8 = torch.from_numpy(np.ascontiguousarray(run.images)).unsqueeze(1)  # scaled batch by batch
    pred = decide(predict_proba(run.model, u8, run.device, batch_size), run.task, run.threshold)
    correct = pred == y
    by_class = {int(c): np.flatnonzero(correct & (y == c)) for c in range(len(run.classes))}
    pairs = _pairs(by_class, n_pairs, np.random.default_rng(seed))
    out = {"n_test": int(len(y)), "n_correct_sources": {run.classes[c]: int(len(v)) for c, v in by_class.items()},
           "sigma_px": float(sigma * min(run.images.shape[-2:])), "n_pairs": int(len(pairs))}
    if not len(pairs):
        return out | {"shape_bias": None, "seconds": time.time() - t0,
                      "note": "fewer than two classes have a correctly classified test image"}
    a, b = pairs[:, 0], pairs[:, 1]
    xa, xb = run.x(a), run.x(b)
    conflict = cue_conflict(xa, xb, sigma)
    dec = decide(predict_proba(run.model, conflict, run.device, batch_size), run.task, run.threshold)
    shape_hit, texture_hit = dec == y[a], dec == y[b]
    k, n = int(shape_hit.sum()), int((shape_hit | texture_hit).sum())
    lo, hi = _wilson(k, n)
    out |= {"shape_bias": k / n if n else None, "ci_low": lo, "ci_high": hi, "n_decided": n,
            "n_other_class": int(len(pairs) - n),
            "directions": _directions(run, y[a], y[b], shape_hit, texture_hit),
            **_cue_only(run, np.unique(a), np.unique(b), sigma, batch_size), "seconds": time.time() - t0}
    if plots:
        out["plots"] = {"examples": _plot(run, xa[:6], xb[:6], pairs[:6], conflict[:6], dec[:6], sigma)}
    return out


def _directions(run: ProbeRun, ya: np.ndarray, yb: np.ndarray, shape_hit: np.ndarray,
                texture_hit: np.ndarray) -> dict:
    """The shape fraction per ordered (shape class, texture class) pair."""
    out = {}
    for ca, cb in dict.fromkeys(zip(ya.tolist(), yb.tolist())):
        m = (ya == ca) & (yb == cb)
        d = int((shape_hit | texture_hit)[m].sum())
        out[f"shape={run.classes[ca]},texture={run.classes[cb]}"] = {
            "n": int(m.sum()), "shape_fraction": float(shape_hit[m].sum() / d) if d else None}
    return out


def _cue_only(run: ProbeRun, ua: np.ndarray, ub: np.ndarray, sigma: float, batch_size: int) -> dict:
    """Accuracy on each cue alone (the shape sources low-passed, the texture sources high-passed)."""
    y = run.labels
    s = decide(predict_proba(run.model, lowpass(run.x(ua), sigma), run.device, batch_size), run.task, run.threshold)
    t = decide(predict_proba(run.model, texture_only(run.x(ub), sigma), run.device, batch_size), run.task,
               run.threshold)
    return {"shape_only_acc": float(np.mean(s == y[ua])), "texture_only_acc": float(np.mean(t == y[ub])),
            "n_unique_shape_sources": int(len(ua)), "n_unique_texture_sources": int(len(ub))}


def _plot(run: ProbeRun, xa: torch.Tensor, xb: torch.Tensor, pairs: np.ndarray, conflict: torch.Tensor,
          dec: np.ndarray, sigma: float) -> str:
    """Examples: shape source, texture source, cue-conflict image and the model's decision
    (images named by test index only)."""
    n = len(pairs)
    fig = new_figure(2.0 * n, 6.4)
    for j, (ia, ib) in enumerate(pairs):
        panels = [(xa[j, 0], f"shape: #{ia} {run.classes[run.labels[ia]]}"),
                  (xb[j, 0], f"texture: #{ib} {run.classes[run.labels[ib]]}"),
                  (conflict[j, 0], f"→ {run.classes[dec[j]]}")]
        for r, (img, title) in enumerate(panels):
            ax = fig.add_subplot(3, n, r * n + j + 1)
            ax.imshow(img.numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.suptitle(f"cue conflict = lowpass(shape, σ={sigma:g}·side) + highpass(texture)", fontsize=8)
    fig.tight_layout()
    write_png(run.probes_dir / "shape_bias_examples.png", fig)
    return "shape_bias_examples.png"


def shape_bias_probe(run_dir: str | Path, *, force: bool = False, plots: bool = True, **params) -> dict:
    """Cached shape-bias probe (RUN/probes/shape_bias.json)."""
    p = {**DEFAULTS, **{k: v for k, v in params.items() if v is not None}}
    return cached_probe(run_dir, "shape_bias", p, lambda run: compute_shape_bias(run, plots=plots, **p),
                        force=force)
