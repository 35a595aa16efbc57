"""Shape vs texture preference of a fine-tuned X-ray model on cue-conflict X-rays (after Geirhos
et al., ICLR 2019), reported only where both cues are usable.

Construction (a frequency split, as in hybrid images, Oliva et al. 2006).  A cue-conflict image
takes its coarse layout from a test image ``A`` (the shape source) and its fine detail from a test
image ``B`` of another class (the texture source)::

    conflict     = lowpass(A) + (B - lowpass(B)),          clamped to [0, 1]
    shape-only   = lowpass(A)
    texture-only = B - lowpass(B) + mean(B),               clamped to [0, 1]

``lowpass`` is a Gaussian blur (reflect padding) of σ = ``sigma`` x the image side (default 0.04:
1.1 px at 28 px, 9 px at 224 px).  No network or downloaded weights are needed.  The stylized
training augmentation (``data.augment.stylize``) comes from another transform family (pixels
permuted within small windows and a histogram match to another image: neither a linear filter nor
a spectral manipulation), so this probe does not merely test the training transform.  Decisions use the run's
operating threshold (binary) or argmax, in fp32 (as every probe).

What is computed, in order:

1. **Each cue alone**, on every test image: the decisions on its shape-only and on its
   texture-only image.  ``shape_only`` / ``texture_only`` give the balanced accuracy (the mean
   over classes of the per-class accuracy) with a 95% CI: each class's Wilson interval, combined
   for the mean of the classes by MOVER (Zou & Donner 2008).
2. **Pairs**: ``n_pairs`` (shape source, texture source) pairs of test images of different
   classes, drawn with replacement (seeded), balanced over the ordered class pairs ("directions";
   binary: half shape=class 0/texture=class 1, half the reverse).  A pair *qualifies* when the
   model classifies its two single-cue images correctly: shape-only(A) as A's class and
   texture-only(B) as B's class (Geirhos conditioned on correctly classified sources; here the
   sources are the cues themselves, so a decision that follows a cue is known to be that cue's).
3. **Per direction**, over its qualifying pairs: ``shape_fraction`` = decisions that follow the
   shape source's class / decisions that follow either source's class (binary: every decision
   follows one of them), with its Wilson interval.
4. **Shape bias**, two classes: the mean of the two per-direction fractions (balanced: a model
   that always answers one class scores 0.5), 95% CI by MOVER from the per-direction Wilson
   intervals.  More classes (K > 2; K(K-1) directions, most with a pair or two): Geirhos et al.'s
   own pooled score, the shape decisions over all decisions that follow either source, with its
   Wilson interval (``score_method`` says which).  Sources recur across pairs, so the interval is
   somewhat optimistic (``n_unique_*_sources`` says how many).

**Interpretable** only when both cues alone are recognised clearly above chance (the lower CI bound
of each balanced accuracy above 1/K for K classes), at least ``min_pairs`` pairs qualify, and (two
classes) each direction has at least ``ceil(min_pairs / 2)``, or (K > 2) at least ``min_pairs``
qualified decisions follow one of the two sources.  Otherwise ``interpretable`` is false,
``shape_bias`` (and its CI) is null and ``reason`` says why: a cue the model cannot use alone makes
every cue-conflict decision follow the other one, and the "bias" is then that cue's accuracy.
"""
from __future__ import annotations

import math
import time
from itertools import permutations
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from ..figures import new_figure, write_png
from .corruptions import blur
from .registry import Probe, register, scalar
from .runs import ProbeRun, cached_probe, check_positive, decide, require_single_label

DEFAULTS = {"n_pairs": 500, "sigma": 0.04, "seed": 0, "batch_size": 512, "min_pairs": 30}
#: the result layout; part of the cache key, so results of an older layout are recomputed
LAYOUT = 3  # 3: K > 2 classes scored pooled over directions
CUE_CI_METHOD = "per-class Wilson 95% intervals combined for the mean over classes (MOVER, Zou & Donner 2008)"
SCORE_CI_METHOD = ("per-direction Wilson 95% intervals combined for the mean over directions (MOVER); "
                   "source images recur across pairs, so it is somewhat optimistic")
POOLED_CI_METHOD = ("Wilson 95% interval of the pooled shape fraction; source images recur across pairs, so it "
                    "is somewhat optimistic")


def lowpass(x: torch.Tensor, sigma_frac: float) -> torch.Tensor:
    """Gaussian low-pass of (B,C,H,W) images, σ = ``sigma_frac`` x the shorter side (px)."""
    return blur(x, max(1e-3, sigma_frac * min(x.shape[-2:])))


def cue_conflict(shape_src: torch.Tensor, texture_src: torch.Tensor, sigma_frac: float) -> torch.Tensor:
    """``lowpass(shape_src) + highpass(texture_src)``, clamped to [0, 1] (module docstring)."""
    return (lowpass(shape_src, sigma_frac) + texture_src - lowpass(texture_src, sigma_frac)).clamp(0.0, 1.0)


def texture_only(x: torch.Tensor, sigma_frac: float) -> torch.Tensor:
    """The texture cue alone: the high-pass residual on the image's own mean intensity."""
    return (x - lowpass(x, sigma_frac) + x.mean(dim=(1, 2, 3), keepdim=True)).clamp(0.0, 1.0)


# ------------------------------------------------------------------------------------ statistics

def wilson(k: int, n: int) -> tuple[float | None, float | None]:
    """Wilson 95% interval of k/n; (None, None) when n = 0."""
    from ..stats.subgroups import wilson_ci

    return wilson_ci(k, n) if n else (None, None)


def mover_mean(points, lows, highs) -> tuple[float, float]:
    """95% CI of the mean of independent proportions from their own intervals (MOVER)."""
    p, lo, hi = (np.asarray(v, float) for v in (points, lows, highs))
    w = 1.0 / len(p)
    m = float(p.mean())
    return (max(0.0, m - math.sqrt(float(np.sum((w * (p - lo)) ** 2)))),
            min(1.0, m + math.sqrt(float(np.sum((w * (hi - p)) ** 2)))))


def balanced_accuracy(y: np.ndarray, pred: np.ndarray, classes: list[str]) -> dict:
    """Balanced accuracy of ``pred`` (mean over the classes present of the per-class accuracy)
    with its 95% CI (:data:`CUE_CI_METHOD`) and the per-class counts."""
    per, pts, los, his = {}, [], [], []
    for c, name in enumerate(classes):
        m = y == c
        n, k = int(m.sum()), int((pred[m] == c).sum())
        per[name] = {"n": n, "correct": k, "acc": k / n if n else None}
        if n:
            lo, hi = wilson(k, n)
            pts.append(k / n)
            los.append(lo)
            his.append(hi)
    if not pts:
        return {"balanced_acc": None, "ci_low": None, "ci_high": None, "per_class": per}
    lo, hi = mover_mean(pts, los, his)
    return {"balanced_acc": float(np.mean(pts)), "ci_low": lo, "ci_high": hi, "per_class": per}


def draw_pairs(y: np.ndarray, n_classes: int, n_pairs: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) rows (shape source, texture source): test images of different classes, drawn with
    replacement, balanced over the ordered class pairs of the classes present."""
    by_class = {c: np.flatnonzero(y == c) for c in range(n_classes)}
    combos = list(permutations([c for c, idx in by_class.items() if len(idx)], 2))
    if not combos:
        return np.zeros((0, 2), dtype=np.int64)
    rows = [(rng.choice(by_class[combos[k % len(combos)][0]]), rng.choice(by_class[combos[k % len(combos)][1]]))
            for k in range(n_pairs)]
    return np.asarray(rows, dtype=np.int64)


def direction_scores(ya: np.ndarray, yb: np.ndarray, dec: np.ndarray, qualified: np.ndarray,
                     classes: list[str]) -> dict:
    """Per ordered (shape class, texture class): pairs drawn, pairs qualified, and over the
    qualified ones the decisions that follow the shape / texture source, the shape fraction and
    its Wilson interval."""
    out = {}
    for ca, cb in sorted(dict.fromkeys(zip(ya.tolist(), yb.tolist()))):
        m = (ya == ca) & (yb == cb)
        q = m & qualified
        n_shape, n_texture = int((dec[q] == ca).sum()), int((dec[q] == cb).sum())
        d = n_shape + n_texture
        lo, hi = wilson(n_shape, d)
        out[f"shape={classes[ca]},texture={classes[cb]}"] = {
            "shape_class": classes[ca], "texture_class": classes[cb], "n_drawn": int(m.sum()),
            "n_qualified": int(q.sum()), "n_shape": n_shape, "n_texture": n_texture, "n_decided": d,
            "shape_fraction": n_shape / d if d else None, "ci_low": lo, "ci_high": hi}
    return out


def balanced_score(directions: dict) -> dict:
    """Shape bias = the mean over directions of the shape fraction, with its MOVER 95% CI; all
    None when a direction has no decision."""
    ds = list(directions.values())
    if not ds or any(d["shape_fraction"] is None for d in ds):
        return {"shape_bias": None, "ci_low": None, "ci_high": None}
    pts = [d["shape_fraction"] for d in ds]
    lo, hi = mover_mean(pts, [d["ci_low"] for d in ds], [d["ci_high"] for d in ds])
    return {"shape_bias": float(np.mean(pts)), "ci_low": lo, "ci_high": hi}


def pooled_score(directions: dict) -> dict:
    """K > 2 classes: shape decisions / decisions following either source, pooled over the
    directions, with its Wilson 95% interval."""
    n_shape = sum(d["n_shape"] for d in directions.values())
    n = n_shape + sum(d["n_texture"] for d in directions.values())
    lo, hi = wilson(n_shape, n)
    return {"shape_bias": n_shape / n if n else None, "ci_low": lo, "ci_high": hi}


def _cue_reason(name: str, r: dict, chance: float) -> str | None:
    if r["ci_low"] is not None and r["ci_low"] > chance:
        return None
    if r["balanced_acc"] is None:
        return f"the {name} cue alone could not be scored (no test images)"
    return (f"the {name} cue alone is recognised at balanced accuracy {r['balanced_acc']:.2f} "
            f"(95% CI {r['ci_low']:.2f}–{r['ci_high']:.2f}), not clearly above chance ({chance:.2f})")


def gate(shape_only: dict, texture_only: dict, chance: float, directions: dict, min_pairs: int) -> list[str]:
    """Why the shape bias is not interpretable (empty when it is): a cue not recognised alone
    clearly above chance, too few qualifying pairs in all or in a direction."""
    reasons = [r for r in (_cue_reason("shape", shape_only, chance), _cue_reason("texture", texture_only, chance))
               if r]
    if not directions:
        return reasons + ["fewer than two classes have test images"]
    n_q = sum(d["n_qualified"] for d in directions.values())
    if n_q < min_pairs:
        reasons.append(f"only {n_q} cue-conflict pairs qualified (both single-cue images classified correctly; "
                       f"at least {min_pairs} needed)")
    if len(directions) > 2:  # K > 2: pooled (pooled_score); enough decisions that follow a source
        n_dec = sum(d["n_decided"] for d in directions.values())
        if n_dec < min_pairs and n_q >= min_pairs:
            reasons.append(f"only {n_dec} of the qualified pairs' decisions follow either source (at least "
                           f"{min_pairs} needed)")
        return reasons
    per = max(1, math.ceil(min_pairs / len(directions)))
    for name, d in directions.items():
        if d["n_qualified"] < per:
            reasons.append(f"only {d['n_qualified']} pairs qualified for {name} (at least {per} needed per direction)")
    return reasons


# ------------------------------------------------------------------------------------ the probe

def _decisions(run: ProbeRun, idx: np.ndarray, make, batch_size: int) -> np.ndarray:
    """Decisions on ``make(images[idx])``, built chunk by chunk (never the whole set as floats)."""
    out = [decide(run.proba(make(run.x(idx[i:i + batch_size])), batch_size), run.task, run.threshold)
           for i in range(0, len(idx), batch_size)]
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def _conflict_decisions(run: ProbeRun, pairs: np.ndarray, sigma: float, batch_size: int) -> np.ndarray:
    out = [decide(run.proba(cue_conflict(run.x(pairs[i:i + batch_size, 0]), run.x(pairs[i:i + batch_size, 1]),
                                         sigma), batch_size), run.task, run.threshold)
           for i in range(0, len(pairs), batch_size)]
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def _check(n_pairs: int, sigma: float, min_pairs: int) -> None:
    check_positive("n_pairs", n_pairs)
    check_positive("min_pairs", min_pairs)
    if not 0 < sigma < 0.5:
        from ..errors import ConfigError

        raise ConfigError(f"sigma must be in (0, 0.5) of the image side (got {sigma})")


def compute_shape_bias(run: ProbeRun, *, n_pairs: int = 500, sigma: float = 0.04, seed: int = 0,
                       batch_size: int = 512, min_pairs: int = 30, plots: bool = True) -> dict:
    """The shape-bias result of one run (what each key holds: the module docstring)."""
    _check(n_pairs, sigma, min_pairs)
    t0 = time.time()
    y, k = run.labels, len(run.classes)
    every = np.arange(len(y))
    shape_dec = _decisions(run, every, lambda x: lowpass(x, sigma), batch_size)
    tex_dec = _decisions(run, every, lambda x: texture_only(x, sigma), batch_size)
    shape_cue, tex_cue = balanced_accuracy(y, shape_dec, run.classes), balanced_accuracy(y, tex_dec, run.classes)
    pairs = draw_pairs(y, k, n_pairs, np.random.default_rng(seed))
    a, b = pairs[:, 0], pairs[:, 1]
    qualified = (shape_dec[a] == y[a]) & (tex_dec[b] == y[b])
    dec = np.full(len(pairs), -1, np.int64)
    dec[qualified] = _conflict_decisions(run, pairs[qualified], sigma, batch_size)
    directions = direction_scores(y[a], y[b], dec, qualified, run.classes)
    reasons = gate(shape_cue, tex_cue, 1.0 / max(k, 1), directions, min_pairs)
    pooled = len(directions) > 2
    score = (pooled_score(directions) if pooled else balanced_score(directions)) if not reasons else \
        {"shape_bias": None, "ci_low": None, "ci_high": None}
    out = {"layout": LAYOUT, "n_test": int(len(y)), "chance": 1.0 / max(k, 1),
           "sigma_px": float(sigma * min(run.images.shape[-2:])),
           "shape_only": shape_cue, "texture_only": tex_cue, "cue_ci_method": CUE_CI_METHOD,
           "n_pairs": int(len(pairs)), "n_qualified": int(qualified.sum()), "min_pairs": int(min_pairs),
           "n_unique_shape_sources": int(len(np.unique(a[qualified]))),
           "n_unique_texture_sources": int(len(np.unique(b[qualified]))),
           "directions": directions, "interpretable": not reasons,
           "reason": ("not interpretable at this setting: " + "; ".join(reasons)) if reasons else None,
           **score, "score_method": "pooled over directions (K > 2)" if pooled else "mean of the two directions",
           "ci_method": POOLED_CI_METHOD if pooled else SCORE_CI_METHOD, "seconds": time.time() - t0}
    if plots and len(pairs):
        out["plots"] = {"examples": _plot(run, pairs[qualified][:6] if qualified.any() else pairs[:6], sigma)}
    return out


def _plot(run: ProbeRun, pairs: np.ndarray, sigma: float) -> str:
    """Examples (qualifying pairs where there are any): shape source, texture source, cue-conflict
    image and the model's decision (images named by test index only)."""
    xa, xb = run.x(pairs[:, 0]), run.x(pairs[:, 1])
    conflict = cue_conflict(xa, xb, sigma)
    dec = decide(run.proba(conflict), run.task, run.threshold)
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


#: why a multi-label run has no shape bias (the refusal, and the suite's note on the page)
SINGLE_LABEL_ONLY = "shape bias needs single-label decisions (a cue-conflict decision follows one class)"


def shape_bias_probe(run_dir: str | Path, *, force: bool = False, plots: bool = True, **params) -> dict:
    """Cached shape-bias probe (RUN/probes/shape_bias.json); refuses multi-label runs (one line)."""
    require_single_label(run_dir, SINGLE_LABEL_ONLY)
    p = {**DEFAULTS, **{k: v for k, v in params.items() if v is not None}}
    key = p | {"layout": LAYOUT}  # a new result layout recomputes
    return cached_probe(run_dir, "shape_bias", key, lambda run: compute_shape_bias(run, plots=plots, **p),
                        force=force)


# ------------------------------------------------------------------------------------ registration

def shape_bias_record(probes_dir: Path, r: Mapping) -> dict:
    """The shape-bias figures of one run for robustness.json: the score where interpretable (else
    None, with the reason), the two cue-only balanced accuracies with their CIs, the directions."""
    cue = {f"{name}_bacc{suffix}": (r.get(name) or {}).get(key) for name in ("shape_only", "texture_only")
           for suffix, key in (("", "balanced_acc"), ("_ci_low", "ci_low"), ("_ci_high", "ci_high"))}
    dirs = {name: {k: d.get(k) for k in ("n_qualified", "n_decided", "shape_fraction", "ci_low", "ci_high")}
            for name, d in (r.get("directions") or {}).items()}
    return {k: r.get(k) for k in ("interpretable", "reason", "shape_bias", "ci_low", "ci_high", "n_pairs",
                                  "n_qualified", "sigma_px")} | cue | {"directions": dirs} | {
        "examples": str(probes_dir / r["plots"]["examples"]) if r.get("plots") else None}


def _scalars(rec) -> dict:
    """Shape bias only where the run's result is interpretable (so a seed whose cues are not usable
    is left out of the arm's mean and of the tests); the cue-only balanced accuracies always."""
    sb = rec.get("shape_bias") or {}
    out = {}
    if sb.get("interpretable") and sb.get("shape_bias") is not None:
        out["shape_bias.shape_bias"] = float(sb["shape_bias"])
    for k in ("shape_only_bacc", "texture_only_bacc"):
        if k in sb:
            out[f"shape_bias.{k}"] = scalar(sb[k])
    return out


register(Probe(
    name="shape_bias", order=50, run=shape_bias_probe, defaults=DEFAULTS, sample_param=None,
    summary="shape vs texture on cue-conflict X-rays (low-pass shape of one image, high-pass texture of another)",
    presets={"full": {"n_pairs": 500}, "quick": {"n_pairs": 256}},
    record=lambda r, run: {"shape_bias": shape_bias_record(run.probes_dir, r)}, scalars=_scalars,
    single_label_only=SINGLE_LABEL_ONLY,
    headline=lambda keys, records: ["shape_bias.shape_bias"]))
