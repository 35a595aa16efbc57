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
survives the removal of the lungs reads it from somewhere else (markers, borders, devices,
text): ``flagged`` when ``auc_full > 0.5`` and ``auc_lung_masked - 0.5 >= 0.75 (auc_full - 0.5)``;
``masked_retention`` = (auc_lung_masked - 0.5) / (auc_full - 0.5).  The lung masks are classical
(no learned model); where one is implausible the fixed anatomical prior is used and
``mask_fallback`` counts those images.

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

import numpy as np
import torch

from ..errors import DataError
from ..figures import new_figure, write_png
from ..models.inference import predict_proba
from .lungmask import VERSION as LUNG_MASK_VERSION, border_band, lung_masks
from .runs import ProbeRun, cached_probe, check_positive, sample_indices, scores

VARIANTS = ("full", "lung_masked", "lung_only", "border_only")
FLAG_RETENTION = 0.75     # flagged when the lung-masked AUC keeps this share of the AUC above chance
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


def verdict(res: dict) -> str:
    a = {v: res["variants"][v]["auc"] for v in VARIANTS}
    r = res["masked_retention"]
    if r is None:
        return f"No verdict: the model is not above chance on the full images (AUC {a['full']:.3f})."
    if res["flagged"]:
        return (f"Shortcut suspected: with the lung fields removed the AUC stays at {a['lung_masked']:.3f} "
                f"(full {a['full']:.3f}, {r:.0%} of the margin above chance kept; border band alone "
                f"{a['border_only']:.3f}), so the score is read largely outside the lungs.")
    return (f"No shortcut flagged: removing the lung fields drops the AUC from {a['full']:.3f} to "
            f"{a['lung_masked']:.3f} ({r:.0%} of the margin above chance kept; lungs alone {a['lung_only']:.3f}).")


def compute_shortcut(run: ProbeRun, *, n_images: int | None = None, band: float = 0.125, seed: int = 0,
                     batch_size: int = 256, plots: bool = True) -> dict:
    border_band(8, 8, band)  # validates band before any work
    idx = sample_indices(len(run.labels), n_images, seed, run.labels)
    images, y = run.images[idx], run.labels[idx]
    lm = lung_masks(images)
    vs = variants(images, lm.masks, band)
    res: dict = {"n_images": int(len(idx)), "band": band, "variants": {}}
    for name, imgs in vs.items():
        x = torch.from_numpy(np.ascontiguousarray(imgs)).unsqueeze(1).float().div_(255.0)
        res["variants"][name] = scores(run, y, predict_proba(run.model, x, run.device, batch_size))
    a_full, a_mask = res["variants"]["full"]["auc"], res["variants"]["lung_masked"]["auc"]
    res["masked_retention"] = retention(a_full, a_mask)
    res["flagged"] = bool(res["masked_retention"] is not None and res["masked_retention"] >= FLAG_RETENTION)
    res["flag_rule"] = f"auc_full > 0.5 and (auc_lung_masked - 0.5) >= {FLAG_RETENTION} * (auc_full - 0.5)"
    res["mask_fallback"] = lm.n_fallback
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


def shortcut_probe(run_dir: str | Path, *, n_images: int | None = None, band: float = 0.125, seed: int = 0,
                   force: bool = False, plots: bool = True) -> dict:
    """Cached lung-masking probe (RUN/probes/shortcut.json); see the module docstring."""
    if n_images is not None and n_images <= 0:
        n_images = None
    border_band(8, 8, band)
    p = {"n_images": n_images, "band": float(band), "seed": int(seed), "variants": list(VARIANTS),
         "flag_retention": FLAG_RETENTION, "lung_mask_version": LUNG_MASK_VERSION}  # a new mask recomputes
    return cached_probe(run_dir, "shortcut", p,
                        lambda run: compute_shortcut(run, n_images=n_images, band=band, seed=seed, plots=plots),
                        force=force)


# ------------------------------------------------------------------------------------ source

def other_images(run: ProbeRun, other: str) -> tuple[np.ndarray, str]:
    """Images (uint8 (N,H,W)) of dataset ``other`` loaded with the run's preprocessing (size,
    resize, SR): its test split when the data has its own, else all its images."""
    from ..data import load_dataset
    from ..data.types import SPLITS

    dc = run.cfg.data.model_copy(update={
        "path": str(other), "format": "auto", "on_leak": "warn", "path_column": None, "label_columns": None,
        "patient_column": None, "split_column": None, "group_columns": None})
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
    key includes the other dataset's path and a size+mtime fingerprint of its files."""
    # the path resolution and fingerprint of external validation, so that both agree on what a dataset is
    from ..evaluate import _data_path, _fingerprint

    check_positive("n_images", n_images, 2)
    check_positive("folds", folds, 2)
    from ..config import SYNTHETIC

    fp = str(other) if str(other) == SYNTHETIC else _fingerprint(_data_path(str(other)))  # builtin: no files
    p = {"other": str(other), "n_images": int(n_images), "seed": int(seed), "folds": int(folds)}
    return cached_probe(run_dir, "source", p,
                        lambda run: compute_source(run, str(other), n_images=n_images, seed=seed, folds=folds),
                        force=force, extra_key=fp)
