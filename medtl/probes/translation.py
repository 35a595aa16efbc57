"""Translation (and scale) sensitivity: does a 1-px shift change the decision?

Shifts of -k..k px along x, y and the diagonal, under three protocols:

* ``crop``: no new border.  The test image is reflect-padded by k px and a window of the
  original size is cropped at the shifted offset.  (medtl stores test images already resized,
  and the original larger source does not exist for every format, so reflect padding is the
  protocol that works everywhere; the content that enters at an edge is mirrored image, never
  a black band.)
* ``black``: the image is embedded in a black canvas of the same size: a black band of |d| px
  enters at one edge.
* ``circular``: ``torch.roll``-equivalent (circular padding), content wraps around.

All three are one gather from a padded tensor with per-sample offsets, so any mix of images
and shifts is one batched operation (no Python loop per image).

Metrics per protocol (decisions as in :mod:`medtl.probes.runs`; for a multi-label run a decision
is the 0/1 vector of its labels, and it *changes* when any label's does: every metric below is
then the "any label" one, and ``per_label`` gives each label's own P(change) at 1 px):

* ``p_change_1px``: fraction of (image, 1-px shift) pairs whose decision differs from the
  unshifted one (shifts (0,±1), (±1,0), (±1,±1));
* ``p_change_by_shift``: the same for each shift size s = 0..k (Chebyshev size; s=0 is 0);
* ``mean_abs_dp_per_px``: mean |p(c) shifted - p(c) unshifted| / ||shift||_2 over all non-zero
  path shifts, c the unshifted decision's class (multi-label: the mean over labels of |Δp(label)|);
* ``jaggedness``: decision flips between consecutive 1-px steps along each path (x, y, diag
  from -k to +k), divided by the 2k steps, averaged over images and paths;
* ``consistency`` (Zhang 2019): fraction of random pairs of shifts (uniform in [-k,k]^2,
  seeded) for which the two decisions agree.

Scale probe: rescale about the centre by ±1..±k_pct % (bilinear, reflection padding);
``scale.p_change`` per percent and ``scale.p_change_max`` at ±k_pct %.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..figures import new_figure, write_png
from .registry import Probe, register, scalar
from .runs import (ProbeRun, precision_check, cached_probe, check_positive, decide, decision_facts, sample_indices,
                   top_labels)
from .runs import changed as decision_changed

PROTOCOLS = ("crop", "black", "circular")
_PAD_MODE = {"crop": "reflect", "black": "constant", "circular": "circular"}
DEFAULTS = {"max_shift": 8, "n_images": 500, "n_pairs": 4, "scale_pct": 8, "seed": 0,
            "protocols": list(PROTOCOLS), "batch_size": 512, "precision": "fp32"}


def shift_images(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, protocol: str, pad: int) -> torch.Tensor:
    """Shift each image x[i] (B,C,H,W) by (dy[i], dx[i]) px (content moves down/right for
    positive values) under ``protocol``; |dy|, |dx| <= pad.  One batched gather."""
    if protocol not in _PAD_MODE:
        raise ConfigError(f"unknown translation protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    B, C, H, W = x.shape
    if pad >= min(H, W):
        raise ConfigError(f"max shift {pad} px must be smaller than the image ({H}x{W})")
    dy = torch.as_tensor(dy, dtype=torch.long).reshape(B)
    dx = torch.as_tensor(dx, dtype=torch.long).reshape(B)
    if pad == 0:
        return x.clone()
    xp = F.pad(x, (pad, pad, pad, pad), mode=_PAD_MODE[protocol], value=0.0) if protocol == "black" else \
        F.pad(x, (pad, pad, pad, pad), mode=_PAD_MODE[protocol])
    rows = (pad - dy)[:, None] + torch.arange(H)[None, :]          # (B,H)
    cols = (pad - dx)[:, None] + torch.arange(W)[None, :]          # (B,W)
    b = torch.arange(B)[:, None, None, None]
    c = torch.arange(C)[None, :, None, None]
    return xp[b, c, rows[:, None, :, None], cols[:, None, None, :]]


def scale_images(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Rescale each image about its centre by factors[i] (>1 zooms in), reflection padding."""
    B = x.shape[0]
    f = torch.as_tensor(factors, dtype=x.dtype).reshape(B)
    theta = torch.zeros(B, 2, 3, dtype=x.dtype)
    theta[:, 0, 0] = 1.0 / f
    theta[:, 1, 1] = 1.0 / f
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def path_shifts(k: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Unique shifts (S,2) [dy,dx] of the x, y and diagonal paths, and per path the index into
    them of steps -k..k."""
    ds = np.arange(-k, k + 1)
    paths = {"x": np.stack([np.zeros_like(ds), ds], 1), "y": np.stack([ds, np.zeros_like(ds)], 1),
             "diag": np.stack([ds, ds], 1)}
    uniq: dict[tuple[int, int], int] = {}
    for p in paths.values():
        for s in map(tuple, p):
            uniq.setdefault((int(s[0]), int(s[1])), len(uniq))
    shifts = np.array(list(uniq), dtype=np.int64).reshape(-1, 2)
    index = {name: np.array([uniq[(int(a), int(b))] for a, b in p]) for name, p in paths.items()}
    return shifts, index


def _predict_flat(run: ProbeRun, x: torch.Tensor, params: np.ndarray, apply, batch_size: int,
                  amp: torch.dtype | None = None) -> np.ndarray:
    """Probabilities for image ``j % N`` transformed by ``params[j]``, j = 0..len(params)-1,
    in chunks of ``batch_size`` (each chunk one batched transform + forward pass)."""
    N = len(x)
    outs = []
    for s0 in range(0, len(params), batch_size):
        j = np.arange(s0, min(s0 + batch_size, len(params)))
        xb = x[torch.from_numpy(j % N)]
        outs.append(run.proba(apply(xb, params[j]), batch_size, amp))
    return np.concatenate(outs) if outs else np.zeros((0, len(run.classes)))


def _forward_shifted(run: ProbeRun, x: torch.Tensor, shifts: np.ndarray, protocol: str, pad: int,
                     batch_size: int, amp: torch.dtype | None = None) -> np.ndarray:
    """Probabilities (S, N, C) of every image under every shift; batched over images x shifts."""
    flat = np.repeat(shifts, len(x), axis=0)                                 # shift-major
    apply = lambda xb, sh: shift_images(xb, torch.from_numpy(sh[:, 0]), torch.from_numpy(sh[:, 1]), protocol, pad)
    return _predict_flat(run, x, flat, apply, batch_size, amp).reshape(len(shifts), len(x), -1)


def _protocol_metrics(run: ProbeRun, x: torch.Tensor, protocol: str, k: int, n_pairs: int, seed: int,
                      batch_size: int, amp: torch.dtype | None = None) -> tuple[dict, np.ndarray, np.ndarray]:
    shifts, index = path_shifts(k)
    prob = _forward_shifted(run, x, shifts, protocol, k, batch_size, amp)   # (S,N,C)
    dec = decide(prob, run.task, run.threshold)                             # (S,N); multi-label (S,N,L)
    zero = int(np.flatnonzero((shifts == 0).all(1))[0])
    ref_dec = dec[zero]
    changed = decision_changed(dec, ref_dec[None, :], run.task)
    size = np.abs(shifts).max(1)
    by_size = [float(changed[size == s].mean()) if np.any(size == s) else float("nan") for s in range(k + 1)]
    if run.multilabel:
        dp = np.abs(prob - prob[zero][None]).mean(-1)                       # mean over labels
    else:
        c = ref_dec
        p_c = np.take_along_axis(prob, np.broadcast_to(c[None, :, None], prob.shape[:2] + (1,)), 2)[..., 0]
        dp = np.abs(p_c - p_c[zero][None, :])
    norm = np.sqrt((shifts.astype(float) ** 2).sum(1))
    nz = norm > 0
    mean_dp = float((dp[nz] / norm[nz, None]).mean()) if nz.any() else float("nan")
    flips = []
    for name, idx in index.items():
        d = dec[idx]                                                         # (2k+1, N)
        flips.append(decision_changed(d[1:], d[:-1], run.task).sum(0) / max(len(idx) - 1, 1))
    jag = float(np.mean(flips))
    # Zhang's consistency: random shift pairs, per-sample offsets in one batch
    g = np.random.default_rng(seed)
    N = len(x)
    pa = g.integers(-k, k + 1, size=(n_pairs, N, 2))
    pb = g.integers(-k, k + 1, size=(n_pairs, N, 2))
    allp = np.concatenate([pa.reshape(-1, 2), pb.reshape(-1, 2)])            # pair-major, then image
    apply = lambda xb, sh: shift_images(xb, torch.from_numpy(sh[:, 0]), torch.from_numpy(sh[:, 1]), protocol, k)
    pp = _predict_flat(run, x, allp, apply, batch_size, amp)
    dd = decide(pp, run.task, run.threshold)
    dd = dd.reshape((2, n_pairs, N) + dd.shape[1:])
    consistency = float((~decision_changed(dd[0], dd[1], run.task)).mean())
    m = {"p_change_1px": by_size[1] if k >= 1 else 0.0, "p_change_by_shift": by_size,
         "mean_abs_dp_per_px": mean_dp, "jaggedness": jag, "consistency": consistency}
    if run.multilabel:
        m["per_label"] = _per_label_change(run, dec != ref_dec[None], size, k)
        curve = prob[index["x"]][..., top_labels(run, 1)[0]]   # p(the most prevalent label)
    else:
        # curve for plotting: p(class 1) (binary) or p(clean decision class) along the x path
        curve = prob[index["x"]][..., 1] if run.task == "binary" else p_c[index["x"]]
    return m, curve, changed


def _per_label_change(run: ProbeRun, changed_lab: np.ndarray, size: np.ndarray, k: int) -> dict:
    """Per label of a multi-label run: P(its decision changes) under the 1-px shifts, from the
    (S, N, L) label-wise changes against the unshifted decisions."""
    one = changed_lab[size == 1] if k >= 1 else np.zeros((0,) + changed_lab.shape[1:], bool)
    return {c: {"p_change_1px": float(one[..., j].mean()) if one.size else 0.0} for j, c in enumerate(run.classes)}


def _scale_metrics(run: ProbeRun, x: torch.Tensor, k_pct: int, batch_size: int,
                   amp: torch.dtype | None = None) -> dict:
    N = len(x)
    pcts = [p for p in range(-k_pct, k_pct + 1) if p != 0]
    factors = np.repeat(np.array([1.0] + [1 + p / 100 for p in pcts]), N)

    def apply(xb, f):
        out = scale_images(xb, torch.from_numpy(f).float())
        same = torch.from_numpy(f == 1.0)
        out[same] = xb[same]  # the reference is the untouched image, exactly
        return out

    prob = _predict_flat(run, x, factors, apply, batch_size, amp).reshape(len(pcts) + 1, N, -1)
    dec = decide(prob, run.task, run.threshold)
    changed = decision_changed(dec[1:], dec[0][None], run.task).mean(1)
    by_pct = {str(p): float(c) for p, c in zip(pcts, changed)}
    mx = [by_pct[str(k_pct)], by_pct[str(-k_pct)]] if k_pct else [0.0]
    return {"p_change": by_pct, "p_change_max": float(np.mean(mx)),
            "p_change_mean": float(np.mean(changed)) if len(changed) else 0.0}


def compute_translation(run: ProbeRun, max_shift: int = 8, n_images: int | None = 500, n_pairs: int = 4,
                        scale_pct: int = 8, seed: int = 0, protocols=PROTOCOLS, batch_size: int = 512,
                        precision: str = "fp32", plots: bool = True) -> dict:
    """``precision``: the forward passes' precision ('fp32', or 'train': the run's training
    precision; the result records the agreement of the clean decisions with fp32)."""
    check_positive("max_shift", max_shift, 0)
    amp = run.amp_dtype(precision)
    check_positive("n_pairs", n_pairs, 1)
    for p in protocols:
        if p not in PROTOCOLS:
            raise ConfigError(f"unknown translation protocol {p!r}; use one of {', '.join(PROTOCOLS)}")
    t0 = time.time()
    idx = sample_indices(len(run.labels), n_images, seed, run.labels)
    x = run.x(idx)
    res: dict = {"n_images": int(len(idx)), "protocols": {}}
    curves = {}
    for p in protocols:
        m, curve, _ = _protocol_metrics(run, x, p, max_shift, n_pairs, seed, batch_size, amp)
        res["protocols"][p] = m
        curves[p] = curve
    main = "crop" if "crop" in protocols else protocols[0]
    res["main_protocol"] = main
    res["p_change_1px"] = res["protocols"][main]["p_change_1px"]
    res["consistency"] = res["protocols"][main]["consistency"]
    res["jaggedness"] = res["protocols"][main]["jaggedness"]
    res["mean_abs_dp_per_px"] = res["protocols"][main]["mean_abs_dp_per_px"]
    res["scale"] = _scale_metrics(run, x, scale_pct, batch_size, amp)
    res["precision"] = precision_check(run, x, amp, batch_size)
    if run.multilabel:
        res["per_label"] = res["protocols"][main]["per_label"]
        res |= decision_facts(run) | {"changes": "a decision vector changes when any label's decision does"}
    n_forward = len(idx) * (len(path_shifts(max_shift)[0]) + 2 * n_pairs) * len(protocols) + len(idx) * (2 * scale_pct + 1)
    res["seconds"] = time.time() - t0
    res["images_per_s"] = n_forward / max(res["seconds"], 1e-9)
    if plots:
        res["plots"] = _plots(run, res, curves, idx, max_shift)
    return res


def _plots(run: ProbeRun, res: dict, curves: dict, idx: np.ndarray, k: int) -> dict:
    out = run.probes_dir
    ds = np.arange(-k, k + 1)
    fig = new_figure(4.0 * len(curves), 3.4)
    pick = np.linspace(0, len(idx) - 1, min(4, len(idx))).astype(int)
    label = f"p({run.classes[1]})" if run.task == "binary" else "p(clean class)"
    if run.multilabel:
        label = f"p({run.classes[top_labels(run, 1)[0]]})"
    for j, (proto, curve) in enumerate(curves.items()):
        ax = fig.add_subplot(1, len(curves), j + 1)
        for i in pick:
            ax.plot(ds, curve[:, i], marker=".", label=f"test #{int(idx[i])}")
        if run.task == "binary":
            ax.axhline(run.threshold, color="gray", ls=":", lw=1)
        elif run.multilabel:
            ax.axhline(float(np.asarray(run.threshold)[top_labels(run, 1)[0]]), color="gray", ls=":", lw=1)
        ax.set_title(f"{proto}: x-shift")
        ax.set_xlabel("shift (px)")
        ax.set_ylabel(label)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if j == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    write_png(out / "translation_curves.png", fig)
    fig = new_figure(4.5, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    for proto, m in res["protocols"].items():
        ax.plot(range(k + 1), m["p_change_by_shift"], marker="o", label=proto)
    ax.set_xlabel("shift size (px, Chebyshev)")
    ax.set_ylabel("P(decision changes)")
    ax.set_title("P(change) vs shift")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_png(out / "translation_pchange.png", fig)
    return {"curves": "translation_curves.png", "p_change": "translation_pchange.png"}


def translation_probe(run_dir: str | Path, *, force: bool = False, plots: bool = True, **params) -> dict:
    """Cached translation probe of a run folder (RUN/probes/translation.json)."""
    p = {**DEFAULTS, **{k: v for k, v in params.items() if v is not None}}
    p["protocols"] = list(p["protocols"])
    return cached_probe(run_dir, "translation", p, lambda run: compute_translation(run, plots=plots, **p),
                        force=force)


# ------------------------------------------------------------------------------------ registration

def input_units(record, p_change_by_shift) -> dict:
    """How a run's probe figures relate to its native image: shifts are in network-input pixels,
    so for a run that upscales (``data.sr``) one native pixel is ``scale`` input pixels.

    ``p_change_1native_px`` is P(decision change) for a shift of one native pixel (read at
    ``scale`` input pixels; linearly interpolated for a non-integer scale; None when the probe's
    largest shift is smaller).  L∞ ε bounds each pixel's intensity change, the same in native and
    input pixels; the L2 budget ε·sqrt(H·W) equals the L2 norm of an ε-per-native-pixel
    perturbation upscaled to the input, so both budgets compare across input sizes (the attacker
    of an upscaled input also has sub-native-pixel detail to work with)."""
    native, inp = record.run.image_size, record.run.input_size
    scale = float(inp) / float(native) if native and inp else 1.0
    k = len(p_change_by_shift) - 1
    p1 = None
    if scale <= k:
        lo = int(np.floor(scale))
        hi = min(lo + 1, k)
        frac = scale - lo
        a, b = p_change_by_shift[lo], p_change_by_shift[hi]
        if a is not None and b is not None:
            p1 = float(a + frac * (b - a)) if frac else float(a)
    return {"image_size": native, "input_size": inp, "input_px_per_native_px": scale,
            "shift_unit": "input px", "p_change_1native_px": p1}


def _per_label(t: dict) -> dict:
    """A multi-label run's per-label P(change) at 1 px for its record (``{}`` for other runs)."""
    if "per_label" not in t:
        return {}
    return {"per_label": {c: v["p_change_1px"] for c, v in t["per_label"].items()}}


def _record(t: dict, run) -> dict:
    main = t["protocols"][t["main_protocol"]]
    return {"translation": {k: t[k] for k in ("p_change_1px", "consistency", "jaggedness", "mean_abs_dp_per_px")}
            | {"main_protocol": t["main_protocol"], "scale_p_change_max": t["scale"]["p_change_max"],
               "p_change_by_shift": main["p_change_by_shift"], "protocols": t["protocols"]} | _per_label(t),
            "units": input_units(run.record, main["p_change_by_shift"])}


def _scalars(rec) -> dict:
    tr = rec["translation"]
    out = {f"translation.{k}": scalar(tr[k])
           for k in ("p_change_1px", "consistency", "jaggedness", "mean_abs_dp_per_px", "scale_p_change_max")}
    for s, v in enumerate(tr["p_change_by_shift"]):
        out[f"translation.p_change@{s}px"] = scalar(v)
    units = rec.get("units") or {}
    if units.get("input_px_per_native_px", 1.0) != 1.0:
        out["translation.p_change_1native_px"] = scalar(units.get("p_change_1native_px"))
    for c, v in (tr.get("per_label") or {}).items():
        out[f"translation.per_label.{c}.p_change_1px"] = scalar(v)
    return out


def _headline(keys, records) -> list:
    """P(change) at one pixel (native pixels when any run upscales its input) and consistency."""
    upscaled = any((r.get("units") or {}).get("input_px_per_native_px", 1.0) != 1.0 for r in records)
    return ["translation.p_change_1native_px" if upscaled else "translation.p_change_1px", "translation.consistency"]


register(Probe(
    name="translation", order=10, run=translation_probe, defaults=DEFAULTS,
    summary="P(decision change) under 1..k px shifts (three protocols), jaggedness, consistency, scale",
    presets={"full": {"max_shift": 8, "n_images": 500, "n_pairs": 4, "scale_pct": 8, "precision": "train"},
             "quick": {"max_shift": 4, "n_images": 128, "n_pairs": 2, "scale_pct": 4, "precision": "train"}},
    record=_record, scalars=_scalars, headline=_headline))
