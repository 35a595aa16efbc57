"""Case CIs of one run's metrics: how far its test (or val, or external) figures could move
with another sample of cases from the same population.  Every single run carries them, in
``ci`` beside the metrics (``test.ci.auc``, ``test.ci.acc``, ...):

* binary AUC: DeLong's 95% CI, ``AUC ± z·SE`` with DeLong's variance
  (:func:`medtl.stats.delong.delong_covariance`), clipped to [0, 1];
* proportions (``acc``, ``sensitivity``, ``specificity``): Wilson score intervals
  (:func:`medtl.stats.subgroups.wilson_ci`), monotone in the count and never of zero width;
* multi-class and multi-label runs: DeLong per class (one-vs-rest for multi-class) in
  ``auc_per_class``, and the macro AUC by a seeded percentile case bootstrap (DeLong's variance
  is per labelling: it does not give the covariance of AUCs of different classes), which
  ``method`` says.

Each interval is ``{"low", "high", "method", "n"}`` (``n``: the cases behind it: all cases for
AUC and accuracy, the positives for sensitivity, the negatives for specificity); where it is
undefined (one class only, fewer than 2 of a class, no cases) ``low``/``high`` are NaN and
``note`` says why.  :func:`format_estimate` prints a value with its CI, rounded to what the CI
supports.  Nothing here reads or writes files.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

from .delong import delong_covariance
from .hierarchical import RunPredictions, weighted_metric
from .subgroups import wilson_ci

CONFIDENCE = 0.95
N_BOOTSTRAP = 1000
SEED = 0
PROPORTIONS = ("acc", "sensitivity", "specificity")


def _undefined(method: str, n: int, note: str) -> dict:
    return {"low": float("nan"), "high": float("nan"), "method": method, "n": int(n), "note": note}


def delong_ci(y, score, confidence: float = CONFIDENCE) -> dict:
    """DeLong's CI of the AUC of a 1-D ``score`` against 0/1 labels ``y``."""
    y = np.asarray(y).astype(int).ravel()
    try:
        auc, cov = delong_covariance(y, np.asarray(score, dtype=np.float64).ravel())
    except ValueError as exc:
        return _undefined("DeLong", len(y), str(exc))
    se = math.sqrt(max(float(cov[0, 0]), 0.0))
    q = float(stats.norm.ppf(0.5 + confidence / 2.0))
    a = float(auc[0])
    return {"low": max(0.0, a - q * se), "high": min(1.0, a + q * se), "method": "DeLong", "n": int(len(y))}


def proportion_ci(k: int, n: int, confidence: float = CONFIDENCE) -> dict:
    """Wilson score CI of ``k`` successes in ``n`` trials."""
    if n <= 0:
        return _undefined("Wilson", 0, "no cases")
    low, high = wilson_ci(int(k), int(n), confidence)
    return {"low": low, "high": high, "method": "Wilson", "n": int(n)}


def binary_cis(y, p, threshold: float, confidence: float = CONFIDENCE) -> dict:
    """``{"auc", "acc", "sensitivity", "specificity"}`` CIs of a binary run at its threshold."""
    y = np.asarray(y).astype(int).ravel()
    called = np.asarray(p, dtype=np.float64).ravel() >= threshold
    tp, tn = int(np.sum(called & (y == 1))), int(np.sum(~called & (y == 0)))
    pos, neg = int(np.sum(y == 1)), int(np.sum(y == 0))
    return {"auc": delong_ci(y, p, confidence),
            "acc": proportion_ci(tp + tn, pos + neg, confidence),
            "sensitivity": proportion_ci(tp, pos, confidence),
            "specificity": proportion_ci(tn, neg, confidence)}


def _macro_bootstrap(Y: np.ndarray, P: np.ndarray, valid: Sequence[int], what: str, n_resamples: int, seed: int,
                     confidence: float, chunk: int = 200) -> dict:
    """Percentile case bootstrap of the mean AUC over the ``valid`` columns of (Y, P)."""
    n = len(Y)
    method = (f"percentile case bootstrap of the {what} over {len(valid)} classes (B={n_resamples}, "
              f"numpy Generator seed {seed})")
    if n == 0 or not valid:
        return _undefined(method, n, "no class with both labels")
    rng = np.random.default_rng(seed)
    reps = []
    for start in range(0, n_resamples, chunk):
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=min(chunk, n_resamples - start))
        per = np.stack([weighted_metric(RunPredictions(y=Y[:, j], p=P[:, j]), "auc", counts) for j in valid], 1)
        with np.errstate(invalid="ignore"):
            reps.append(np.nanmean(np.where(np.isfinite(per), per, np.nan), 1))
    r = np.concatenate(reps)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return _undefined(method, n, "no resample with both labels")
    a = (1 - confidence) / 2
    low, high = np.quantile(r, [a, 1 - a])
    return {"low": float(low), "high": float(high), "method": method, "n": int(n)}


def multiclass_cis(y, prob, classes: Sequence[str], multilabel: bool, *, n_resamples: int = N_BOOTSTRAP,
                   seed: int = SEED, confidence: float = CONFIDENCE) -> dict:
    """Per-class DeLong CIs (``auc_per_class``; one-vs-rest for multi-class), the macro AUC's
    bootstrap CI (``auc``, and ``auc_macro`` for multi-label) and, for multi-class, accuracy's
    Wilson CI."""
    prob = np.asarray(prob, dtype=np.float64)
    y = np.asarray(y)
    Y = y.astype(int) if multilabel else (y.astype(int)[:, None] == np.arange(prob.shape[1])[None, :]).astype(int)
    per = {str(c): delong_ci(Y[:, j], prob[:, j], confidence) for j, c in enumerate(classes)}
    both = [j for j in range(Y.shape[1]) if 0 < Y[:, j].sum() < len(Y)]
    if not multilabel and len(both) < Y.shape[1]:  # scikit-learn's macro OvR AUC is then undefined
        macro = _undefined("percentile case bootstrap of the macro one-vs-rest AUC", len(Y),
                           "a class has no case: the macro AUC is undefined")
    else:
        what = "macro AUC" if multilabel else "macro one-vs-rest AUC"
        macro = _macro_bootstrap(Y, prob, both, what, n_resamples, seed, confidence)
    out = {"auc": macro, "auc_per_class": per}
    if multilabel:
        out["auc_macro"] = dict(macro)
    else:
        correct = int(np.sum(prob.argmax(1) == y.astype(int))) if len(y) else 0
        out["acc"] = proportion_ci(correct, len(y), confidence)
    return out


def case_cis(kind: str, y, prob, threshold: float = 0.5, classes: Sequence[str] = (), **kw) -> dict:
    """The ``ci`` sub-dict of a run's metrics; ``kind`` is ``binary`` (``prob``: the positive
    class's probability, 1-D, or (n, 2)), ``multiclass`` or ``multilabel`` (``prob`` (n, C))."""
    if kind == "binary":
        p = np.asarray(prob, dtype=np.float64)
        return binary_cis(y, p[:, 1] if p.ndim == 2 else p, threshold, kw.get("confidence", CONFIDENCE))
    return multiclass_cis(y, prob, classes, kind == "multilabel", **kw)


# ------------------------------------------------------------------------------ printing

def ci_decimals(low: float, high: float) -> int:
    """Decimals a value with CI (low, high) supports: ``clip(1 - floor(log10(half-width)), 2, 4)``."""
    half = (float(high) - float(low)) / 2.0
    if not math.isfinite(half):
        return 2
    if half <= 0:  # a zero-width CI (DeLong at AUC 1): as many decimals as allowed
        return 4
    return int(min(4, max(2, 1 - math.floor(math.log10(half)))))


def format_estimate(name: str, value, ci: Mapping | None, confidence: float = CONFIDENCE) -> str:
    """``auc 0.68 (95% CI 0.49-0.88, DeLong, n=31)``: the value and its CI rounded to the CI's
    precision; without a finite CI, 4 decimals and why (or ``n/a`` for a missing value)."""
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        return f"{name} n/a"
    low, high = (ci or {}).get("low"), (ci or {}).get("high")
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        why = (ci or {}).get("note") or "no CI"
        return f"{name} {float(value):.4f} ({why})"
    d = ci_decimals(low, high)
    method = str(ci.get("method", ""))
    method = "case bootstrap" if "bootstrap" in method else method
    n = f", n={ci['n']}" if ci.get("n") is not None else ""
    return (f"{name} {float(value):.{d}f} ({round(confidence * 100)}% CI {float(low):.{d}f}-{float(high):.{d}f}, "
            f"{method}{n})")


def summary_line(metrics, keys: Sequence[str] = ("auc", "acc", "sensitivity", "specificity")) -> str:
    """The metrics of one section (a :class:`medtl.record.Metrics`: ``test``, an external set's;
    or the mapping a run is about to write) with their CIs, ``; ``-separated."""
    from ..record import MISSING, Metrics

    if not isinstance(metrics, Metrics):
        metrics = Metrics.model_validate(dict(metrics))
    parts = [format_estimate(k, v, metrics.ci.get(k)) for k in keys if (v := metrics.at(k)) is not MISSING]
    return "; ".join(parts)
