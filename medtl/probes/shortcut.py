"""Where does the model look for its score?  Lung-field masking and "name the source".

``shortcut`` (RUN/probes/shortcut.json): on a seeded, stratified sample of the run's test set,
AUC and ACC (at the run's threshold) of four versions of every image:

* ``full``: the image as stored;
* ``lung_masked``: the lung field (:mod:`medtl.probes.lungmask`) replaced;
* ``lung_only``: everything outside the lung field replaced;
* ``border_only``: only the border band (``band`` x side along the four edges) kept.

Replaced pixels get the median intensity of the pixels that are *kept* in that image, so no
information from the removed region leaks in (not even its mean brightness) and the fill is a
plausible grey of that image, not a black hole the model has never seen.  A model whose score
survives the removal of the lungs reads it from somewhere else (markers, borders, devices, text).

``masked_retention`` = (auc_lung_masked - 0.5) / (auc_full - 0.5), the share of the full AUC's
margin above chance that survives, with a 95% CI (``retention_ci_low``/``retention_ci_high``): a
seeded bootstrap over the sampled test images, resampled with replacement within each class;
both AUCs are recomputed on the same resample (paired, vectorised as a weighted Mann-Whitney
statistic; macro one-vs-rest for multi-class) and the percentile interval of their ratio taken.
A replicate whose full AUC is <= 0.5 has no defined ratio: it is counted (``n_undefined``) and
sits below every value for the lower bound and above every value for the upper one, so with more
than 2.5% of them the interval is unbounded (None).  ``flag_state`` compares the whole interval
with the cut (0.75): ``flagged`` when its low end is above it, ``not flagged`` when its high end
is below it, ``undetermined`` when it straddles the cut, is unbounded, or the model is not above
chance on the full images; ``flagged`` (bool) is ``flag_state == "flagged"``.

The lung masks are classical (no learned model); where one is implausible the fixed anatomical
prior is used: ``mask_fallback`` counts those images, and when they are most of the sample
(``masks_mostly_prior``) ``mask_warning`` says that lung-masked AUC then removes an average lung
region, not each image's lungs.

``source`` (RUN/probes/source.json), "name the source" (Torralba & Efros 2011): the frozen
model's penultimate features of equal-sized seeded samples of the run's test set and of another
dataset (its test split when it has its own, else all of its images), standardised, and a
logistic regression with stratified k-fold cross-validated predictions: the AUC of telling the
two sources apart, with DeLong's 95 % CI.  A high source AUC means that a label whose prevalence
differs between the datasets could be learned from the source alone.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from ..errors import DataError
from ..figures import new_figure, write_png
from ..models.inference import predict_proba
from .lungmask import VERSION as LUNG_MASK_VERSION, border_band, lung_masks
from .registry import Probe, register, scalar
from .runs import ProbeRun, cached_probe, check_positive, require_single_label, sample_indices, scores

VARIANTS = ("full", "lung_masked", "lung_only", "border_only")
FLAG_RETENTION = 0.75     # flagged when the lung-masked AUC keeps this share of the AUC above chance
N_BOOT = 1000             # bootstrap replicates of the retention CI
LAYOUT = 2                # the result layout; part of the cache key, so older results are recomputed
STATES = ("flagged", "not flagged", "undetermined")
RETENTION_CI_METHOD = ("seeded bootstrap over test images, stratified by class, both AUCs on the same resample "
                       "(paired); percentile 95% interval of the ratio; replicates with a full AUC <= 0.5 count "
                       "as below every value for the low end and above every value for the high end")
PRIOR_WARNING = ("the lung masks are mostly the fixed prior at this size: lung-masked AUC removes an average "
                 "lung region, not this image's lungs")
SOURCE_WARN_AUC = 0.9     # a source this separable can stand in for a label
FIGURE = "shortcut_masks"


# ------------------------------------------------------------------------------------ shortcut

def fill_outside(images: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Copy of uint8 ``images`` (N,H,W) where pixels outside ``keep`` ((N,H,W) or (H,W) bool)
    get the median of that image's kept pixels (mid-grey where nothing is kept)."""
    keep = np.broadcast_to(keep, images.shape)
    out = images.copy()
    for i in range(len(images)):
        kept = images[i][keep[i]]
        out[i][~keep[i]] = np.uint8(np.median(kept)) if kept.size else np.uint8(128)
    return out


def variants(images: np.ndarray, lungs: np.ndarray, band: float) -> dict[str, np.ndarray]:
    """The four versions (uint8) of ``images`` given their lung masks."""
    h, w = images.shape[1:]
    return {"full": images, "lung_masked": fill_outside(images, ~lungs), "lung_only": fill_outside(images, lungs),
            "border_only": fill_outside(images, border_band(h, w, band))}


def retention(auc_full: float, auc_masked: float) -> float | None:
    if not (auc_full > 0.5) or not math.isfinite(auc_masked):
        return None
    return (auc_masked - 0.5) / (auc_full - 0.5)


def stratified_counts(y: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) bootstrap counts: each row resamples every class's images with replacement,
    keeping the class sizes."""
    counts = np.zeros((n_boot, len(y)), np.int64)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        counts[:, idx] = rng.multinomial(len(idx), np.full(len(idx), 1.0 / len(idx)), size=n_boot)
    return counts


def weighted_auc(y: np.ndarray, prob: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """AUC of every row of case weights ``counts`` (B, n): binary from column 1 (or a 1-D score),
    multi-class the macro one-vs-rest mean (as :func:`medtl.stats.metrics.auc`)."""
    from ..stats.hierarchical import _auc_weighted

    prob = np.asarray(prob, np.float64)
    if prob.ndim == 1 or prob.shape[1] == 2:
        return _auc_weighted(y, prob if prob.ndim == 1 else prob[:, 1], counts)
    return np.mean([_auc_weighted((y == c).astype(int), prob[:, c], counts) for c in range(prob.shape[1])], axis=0)


def _percentile_with_undefined(r: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    """Percentile interval of replicates ``r`` where NaN (undefined) counts as -inf for the low end
    and +inf for the high end; an infinite end is None."""
    alpha = (1.0 - confidence) / 2
    lo = np.quantile(np.where(np.isnan(r), -np.inf, r), alpha, method="inverted_cdf")
    hi = np.quantile(np.where(np.isnan(r), np.inf, r), 1.0 - alpha, method="inverted_cdf")
    return (float(lo) if np.isfinite(lo) else None), (float(hi) if np.isfinite(hi) else None)


def retention_ci(y: np.ndarray, p_full: np.ndarray, p_masked: np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0,
                 confidence: float = 0.95, chunk: int = 250) -> dict:
    """The paired, stratified bootstrap CI of ``masked_retention`` (module docstring)."""
    y = np.asarray(y).astype(int)
    rng = np.random.default_rng(seed)
    reps = []
    for start in range(0, n_boot, chunk):
        counts = stratified_counts(y, min(chunk, n_boot - start), rng)
        a_full, a_mask = weighted_auc(y, p_full, counts), weighted_auc(y, p_masked, counts)
        with np.errstate(invalid="ignore", divide="ignore"):
            reps.append(np.where(a_full > 0.5, (a_mask - 0.5) / (a_full - 0.5), np.nan))
    r = np.concatenate(reps) if reps else np.zeros(0)
    lo, hi = _percentile_with_undefined(r, confidence) if len(r) else (None, None)
    return {"ci_low": lo, "ci_high": hi, "n_boot": int(n_boot), "n_undefined": int(np.isnan(r).sum()),
            "seed": int(seed), "confidence": confidence, "method": RETENTION_CI_METHOD}


def flag_state(r: float | None, lo: float | None, hi: float | None, cut: float = FLAG_RETENTION) -> str:
    """'flagged' when the whole CI lies above ``cut``, 'not flagged' when it lies below, else
    'undetermined' (straddling, unbounded, or no retention)."""
    if r is None:
        return "undetermined"
    if lo is not None and lo > cut:
        return "flagged"
    if hi is not None and hi < cut:
        return "not flagged"
    return "undetermined"


def _ci_text(res: dict) -> str:
    lo, hi = res["retention_ci_low"], res["retention_ci_high"]
    return f"95% CI {'-∞' if lo is None else f'{lo:.2f}'}–{'∞' if hi is None else f'{hi:.2f}'}"


def verdict(res: dict) -> str:
    a = {v: res["variants"][v]["auc"] for v in VARIANTS}
    r, cut = res["masked_retention"], res.get("flag_cut", FLAG_RETENTION)
    warn = f" Caution: {res['mask_warning']}." if res.get("mask_warning") else ""
    if r is None:
        return f"Undetermined: the model is not above chance on the full images (AUC {a['full']:.3f}).{warn}"
    kept = f"retention {r:.2f} ({_ci_text(res)}) of the margin above chance kept"
    if res["flag_state"] == "flagged":
        return (f"Shortcut suspected (flagged): with the lung fields removed the AUC stays at {a['lung_masked']:.3f} "
                f"(full {a['full']:.3f}; {kept}, the whole interval above {cut:g}; border band alone "
                f"{a['border_only']:.3f}), so the score is read largely outside the lungs.{warn}")
    if res["flag_state"] == "not flagged":
        return (f"No shortcut (not flagged): removing the lung fields drops the AUC from {a['full']:.3f} to "
                f"{a['lung_masked']:.3f} ({kept}, the whole interval below {cut:g}; lungs alone "
                f"{a['lung_only']:.3f}).{warn}")
    return (f"Undetermined: with the lung fields removed the AUC is {a['lung_masked']:.3f} (full {a['full']:.3f}; "
            f"{kept}); the interval contains the {cut:g} cut, so this sample cannot say whether the score is "
            f"read outside the lungs.{warn}")


def _flag(res: dict, y: np.ndarray, probs: dict, n_boot: int, seed: int) -> dict:
    """The retention, its CI and the flag state of a result with AUCs."""
    r = retention(res["variants"]["full"]["auc"], res["variants"]["lung_masked"]["auc"])
    ci = retention_ci(y, probs["full"], probs["lung_masked"], n_boot=n_boot, seed=seed) if r is not None else {
        "ci_low": None, "ci_high": None, "n_boot": int(n_boot), "n_undefined": None, "seed": int(seed),
        "method": RETENTION_CI_METHOD}
    state = flag_state(r, ci["ci_low"], ci["ci_high"])
    return {"masked_retention": r, "retention_ci_low": ci["ci_low"], "retention_ci_high": ci["ci_high"],
            "retention_ci": ci, "flag_state": state, "flagged": state == "flagged", "flag_cut": FLAG_RETENTION,
            "flag_rule": f"flagged when the 95% CI of (auc_lung_masked - 0.5) / (auc_full - 0.5) lies above "
                         f"{FLAG_RETENTION}; not flagged when it lies below; undetermined otherwise"}


def compute_shortcut(run: ProbeRun, *, n_images: int | None = None, band: float = 0.125, seed: int = 0,
                     batch_size: int = 256, n_boot: int = N_BOOT, plots: bool = True) -> dict:
    border_band(8, 8, band)  # validates band before any work
    idx = sample_indices(len(run.labels), n_images, seed, run.labels)
    images, y = run.images[idx], run.labels[idx]
    lm = lung_masks(images)
    vs = variants(images, lm.masks, band)
    res: dict = {"layout": LAYOUT, "n_images": int(len(idx)), "band": band, "variants": {}}
    probs = {}
    for name, imgs in vs.items():
        x = torch.from_numpy(np.ascontiguousarray(imgs)).unsqueeze(1).float().div_(255.0)
        probs[name] = predict_proba(run.model, x, run.device, batch_size)
        res["variants"][name] = scores(run, y, probs[name])
    mostly_prior = bool(len(idx) and lm.n_fallback > len(idx) / 2)
    res |= {"mask_fallback": int(lm.n_fallback), "mask_fallback_fraction": lm.n_fallback / len(idx) if len(idx)
            else None, "masks_mostly_prior": mostly_prior, "mask_warning": PRIOR_WARNING if mostly_prior else None}
    res |= _flag(res, y, probs, n_boot, seed)
    res["lung_area_fraction"] = float(lm.area_fraction.mean()) if len(idx) else float("nan")
    res["fill"] = "median of the kept pixels of each image"
    res["verdict"] = verdict(res)
    if plots:
        res["plots"] = {"masks": _plot(run, idx, images, lm.masks, lm.fallback, vs)}
    return res


def _plot(run: ProbeRun, idx: np.ndarray, images: np.ndarray, masks: np.ndarray, fallback: np.ndarray,
          vs: dict[str, np.ndarray], n_show: int = 4) -> str:
    """A few sample images (named by test index only): mask outline, then the four variants."""
    from scipy import ndimage as ndi

    pick = np.linspace(0, len(idx) - 1, min(n_show, len(idx))).astype(int) if len(idx) else []
    fig = new_figure(2.0 * (1 + len(VARIANTS)), 2.1 * max(1, len(pick)))
    for r, i in enumerate(pick):
        ax = fig.add_subplot(len(pick), 1 + len(VARIANTS), r * (1 + len(VARIANTS)) + 1)
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
        edge = masks[i] & ~ndi.binary_erosion(masks[i])
        ax.imshow(np.ma.masked_where(~edge, edge), cmap="autumn", alpha=0.9)
        ax.set_title(f"test #{int(idx[i])}" + (" (prior)" if fallback[i] else ""), fontsize=8)
        ax.axis("off")
        for j, name in enumerate(VARIANTS):
            ax = fig.add_subplot(len(pick), 1 + len(VARIANTS), r * (1 + len(VARIANTS)) + 2 + j)
            ax.imshow(vs[name][i], cmap="gray", vmin=0, vmax=255)
            ax.set_title(name, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    name = f"{FIGURE}.png"
    write_png(run.probes_dir / name, fig)
    return name


#: why a multi-label run has no shortcut result (the refusal, and the suite's note on the page)
SINGLE_LABEL_ONLY = ("the shortcut probe needs single-label scores (its retention and bootstrap CI compare one "
                     "class's AUC across masked images)")


def shortcut_probe(run_dir: str | Path, *, n_images: int | None = None, band: float = 0.125, seed: int = 0,
                   n_boot: int = N_BOOT, force: bool = False, plots: bool = True) -> dict:
    """Cached lung-masking probe (RUN/probes/shortcut.json); see the module docstring.  Refuses
    multi-label runs (one line)."""
    if n_images is not None and n_images <= 0:
        n_images = None
    border_band(8, 8, band)
    check_positive("n_boot", n_boot, 100)
    require_single_label(run_dir, SINGLE_LABEL_ONLY)
    p = {"n_images": n_images, "band": float(band), "seed": int(seed), "variants": list(VARIANTS),
         "flag_retention": FLAG_RETENTION, "n_boot": int(n_boot), "layout": LAYOUT,
         "lung_mask_version": LUNG_MASK_VERSION}  # a new mask or result layout recomputes
    return cached_probe(run_dir, "shortcut", p,
                        lambda run: compute_shortcut(run, n_images=n_images, band=band, seed=seed, n_boot=n_boot,
                                                     plots=plots), force=force)


# ------------------------------------------------------------------------------------ source

def other_images(run: ProbeRun, other: str) -> tuple[np.ndarray, str]:
    """Images (uint8 (N,H,W)) of dataset ``other`` loaded with the run's preprocessing (size,
    resize, SR): its test split when the data has its own, else all its images."""
    from ..data import load_dataset
    from ..data.types import SPLITS

    dc = run.cfg.data.model_copy(update={
        "path": str(other), "format": "auto", "on_leak": "warn", "path_column": None, "label_columns": None,
        "patient_column": None, "split_column": None, "group_columns": None,
        "plant": type(run.cfg.data.plant)()})  # a cue planted for validation is the run's, not the other data's
    bundle = load_dataset(dc)
    # load_dataset always returns a test split; one it had to carve out is marked in its notes
    made = any(str(n).startswith("test split made") for n in bundle.notes)
    if made:
        parts = [bundle.splits[s].images for s in SPLITS if s in bundle.splits and len(bundle.splits[s])]
        return (np.concatenate(parts) if parts else np.zeros((0,) + run.images.shape[1:], np.uint8)), "all"
    return bundle.splits["test"].images, "test"


@torch.no_grad()
def _features(run: ProbeRun, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Penultimate features of uint8 images, fp32, eval mode, batched."""
    run.model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).unsqueeze(1).float().div_(255.0)
        with torch.autocast(device_type=run.device.type, enabled=False):
            out.append(run.model.features(xb.to(run.device)).float().cpu())
    return torch.cat(out).numpy().reshape(len(images), -1) if out else np.zeros((0, 0))


def source_auc(feats: np.ndarray, y: np.ndarray, folds: int, seed: int) -> tuple[np.ndarray, dict]:
    """Cross-validated P(source = other) from standardised features by logistic regression,
    and the AUC with DeLong's 95 % CI."""
    from scipy import stats
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ..stats.delong import delong_covariance

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    p = cross_val_predict(clf, feats, y, cv=cv, method="predict_proba")[:, 1]
    aucs, cov = delong_covariance(y, p)
    a, se = float(aucs[0]), math.sqrt(max(float(cov[0, 0]), 0.0))
    q = float(stats.norm.ppf(0.975))
    return p, {"auc": a, "ci_low": max(0.0, a - q * se), "ci_high": min(1.0, a + q * se), "se": se,
               "ci_method": "DeLong, 95 %"}


def compute_source(run: ProbeRun, other: str, *, n_images: int = 500, seed: int = 0, folds: int = 5) -> dict:
    theirs, split = other_images(run, other)
    n = min(n_images, len(run.labels), len(theirs))
    if n < max(folds, 2):
        raise DataError(f"{other}: too few images to name the source ({n} per source; need at least "
                        f"{max(folds, 2)})")
    mine = run.images[sample_indices(len(run.labels), n, seed)]
    theirs = theirs[sample_indices(len(theirs), n, seed + 1)]
    feats = _features(run, np.concatenate([mine, theirs]))
    y = np.r_[np.zeros(n, np.int64), np.ones(n, np.int64)]
    _, res = source_auc(feats, y, folds, seed)
    res.update({"n_per_source": int(n), "other": str(other), "other_split": split, "folds": folds,
                "features": int(feats.shape[1])})
    res["warn"] = bool(res["auc"] >= SOURCE_WARN_AUC)
    res["verdict"] = (
        f"The frozen features tell the run's test images from {Path(str(other)).name}'s with AUC {res['auc']:.3f} "
        f"(95 % CI {res['ci_low']:.3f}-{res['ci_high']:.3f}): " +
        ("a label whose prevalence differs between the datasets could be learned from the source alone."
         if res["warn"] else f"below {SOURCE_WARN_AUC}, the source is not trivially recognisable."))
    return res


def source_probe(run_dir: str | Path, other: str, *, n_images: int = 500, seed: int = 0, folds: int = 5,
                 force: bool = False) -> dict:
    """Cached "name the source" probe (RUN/probes/source.json) against dataset ``other``; the
    key includes the other dataset's name or path and a content fingerprint of its files."""
    from ..data.registry import data_fingerprint

    check_positive("n_images", n_images, 2)
    check_positive("folds", folds, 2)
    fp = data_fingerprint(str(other))
    p = {"other": str(other), "n_images": int(n_images), "seed": int(seed), "folds": int(folds)}
    return cached_probe(run_dir, "source", p,
                        lambda run: compute_source(run, str(other), n_images=n_images, seed=seed, folds=folds),
                        force=force, extra_key=fp)


# ------------------------------------------------------------------------------------ registration

def shortcut_record(probes_dir: Path, r: Mapping) -> dict:
    """The lung-masking figures of one run for robustness.json."""
    return {f"auc_{v}": (r["variants"].get(v) or {}).get("auc") for v in r["variants"]} | {
        k: r.get(k) for k in ("masked_retention", "retention_ci_low", "retention_ci_high", "flag_state", "flagged",
                              "mask_fallback", "masks_mostly_prior", "mask_warning", "n_images", "verdict")} | {
        "n_undefined": (r.get("retention_ci") or {}).get("n_undefined"),
        "masks": str(probes_dir / r["plots"]["masks"]) if r.get("plots") else None}


def _scalars(rec) -> dict:
    """The lung-masking AUCs, the retention and the flag (1 only for a CI wholly above the cut)."""
    sc = rec.get("shortcut") or {}
    out = {f"shortcut.{k}": scalar(sc[k])
           for k in ("auc_full", "auc_lung_masked", "auc_lung_only", "auc_border_only", "masked_retention") if k in sc}
    if "flagged" in sc:
        out["shortcut.flagged"] = float(bool(sc["flagged"]))
    return out


register(Probe(
    name="shortcut", order=60, run=shortcut_probe, defaults={"n_images": None, "band": 0.125, "seed": 0, "n_boot": N_BOOT},
    summary="where the score is read: AUC with the lung fields masked, lungs only, border only",
    presets={"full": {"n_images": None}, "quick": {"n_images": 256}},
    record=lambda r, run: {"shortcut": shortcut_record(run.probes_dir, r)}, scalars=_scalars,
    single_label_only=SINGLE_LABEL_ONLY))
