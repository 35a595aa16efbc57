"""Confidence intervals that cover both sources of variance in a many-seed comparison:
training randomness (seeds) and the finite test set (test cases).

Every seed of an arm is scored on the same test set, so seeds and test cases are *crossed*.
One bootstrap replicate therefore resamples the seeds (with replacement) and, once, the test
cases (with replacement; the same cases for every seed and, for a difference, for both arms),
recomputes each selected seed's metric on those cases and averages over the selected seeds.
The percentile interval of the replicates is the CI; for a pair of arms the replicate is the
mean over shared seeds of (metric_a - metric_b), paired by seed and by test case.  Resampling
both factors of a crossed design counts the seed-by-case interaction twice, so the interval
errs on the wide side (tests/test_hierarchical.py measures its coverage by simulation).

Written here because no maintained library does a crossed two-factor bootstrap of AUC;
scipy.stats.bootstrap resamples one factor.  Metrics are recomputed from case weights (the
bootstrap counts), vectorised over replicates: AUC as the weighted Mann-Whitney statistic
(ties count one half, as scikit-learn's ``roc_auc_score``), accuracy, sensitivity, specificity
and balanced accuracy at each run's own operating threshold.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

METRICS = ("auc", "acc", "sensitivity", "specificity", "balanced_acc")
METHOD = "hierarchical bootstrap: seeds and test cases resampled (crossed), percentile"


@dataclass
class RunPredictions:
    """One run's test-set predictions: labels y (0/1), positive-class probabilities p, the
    run's operating threshold and the case ids (to check that runs share a test set)."""

    y: np.ndarray
    p: np.ndarray
    threshold: float = 0.5
    ids: np.ndarray | None = None


def _auc_weighted(y: np.ndarray, p: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """AUC of (y, p) under case weights ``counts`` (B, n); (B,) values, NaN without both classes."""
    order = np.argsort(p, kind="mergesort")
    ps, ys = p[order], y[order].astype(bool)
    c = counts[:, order].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])  # groups of tied scores
    pos = np.add.reduceat(c * ys, starts, axis=1)
    neg = np.add.reduceat(c * ~ys, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    n_pos, n_neg = pos.sum(1), neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * neg)).sum(1) / (n_pos * n_neg)


def weighted_metric(run: RunPredictions, metric: str, counts: np.ndarray) -> np.ndarray:
    """``metric`` of one run under each row of case weights ``counts`` (B, n)."""
    y = np.asarray(run.y).astype(int)
    p = np.asarray(run.p, dtype=np.float64)
    if metric == "auc":
        return _auc_weighted(y, p, counts)
    pred = (p >= run.threshold).astype(int)
    c = counts.astype(np.float64)
    tp, tn = (c * ((pred == 1) & (y == 1))).sum(1), (c * ((pred == 0) & (y == 0))).sum(1)
    pos, neg = (c * (y == 1)).sum(1), (c * (y == 0)).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "acc":
            return (tp + tn) / c.sum(1)
        if metric == "sensitivity":
            return tp / pos
        if metric == "specificity":
            return tn / neg
        if metric == "balanced_acc":
            return 0.5 * (tp / pos + tn / neg)
    raise ValueError(f"metric must be one of {', '.join(METRICS)} (got {metric!r})")


def same_cases(runs: Sequence[RunPredictions]) -> bool:
    """Do the runs score the same test cases in the same order (ids where known, else labels)?"""
    first = runs[0]
    for r in runs[1:]:
        if len(r.y) != len(first.y) or not np.array_equal(np.asarray(r.y), np.asarray(first.y)):
            return False
        if r.ids is not None and first.ids is not None and not np.array_equal(
                np.asarray(r.ids).astype(str), np.asarray(first.ids).astype(str)):
            return False
    return True


def _replicates(arms: Sequence[Sequence[RunPredictions]], metric: str, n_resamples: int, seed: int,
                chunk: int = 500) -> np.ndarray:
    """(B,) replicates of mean_over_selected_seeds(sum_k sign_k * metric(arm_k run of that seed)).

    ``arms`` holds one list per arm, aligned by seed (index j is the same seed in every arm);
    the first arm counts +1, a second one -1 (a paired difference)."""
    m, n = len(arms[0]), len(arms[0][0].y)
    rng = np.random.default_rng(seed)
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        sel = rng.integers(0, m, size=(b, m))                     # seeds, per replicate
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=b)  # cases, once per replicate
        mult = np.stack([(sel == j).sum(1) for j in range(m)], 1)  # (b, m) times seed j is drawn
        total = np.zeros(b)
        undefined = np.zeros(b, dtype=bool)  # a resample without both classes: that replicate is dropped
        for j in range(m):
            if not mult[:, j].any():
                continue
            value = weighted_metric(arms[0][j], metric, counts)
            if len(arms) == 2:
                value = value - weighted_metric(arms[1][j], metric, counts)
            undefined |= (mult[:, j] > 0) & ~np.isfinite(value)
            total += mult[:, j] * np.nan_to_num(value, nan=0.0)
        out[start:start + b] = np.where(undefined, np.nan, total / m)
    return out


def _interval(reps: np.ndarray, confidence: float) -> tuple[float, float]:
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return float("nan"), float("nan")
    a = (1 - confidence) / 2
    lo, hi = np.quantile(reps, [a, 1 - a])
    return float(lo), float(hi)


def _usable(runs: Sequence[RunPredictions]) -> str | None:
    if len(runs) < 2:
        return f"{len(runs)} run(s) with test predictions: fewer than 2 seeds"
    if not same_cases(runs):
        return "the runs do not share one test set"
    return None


def mean_ci(runs: Sequence[RunPredictions], metric: str, *, n_resamples: int = 2000, seed: int = 0,
            confidence: float = 0.95) -> dict:
    """CI of an arm's mean metric over seeds and test cases: ``{ci_low, ci_high, n_seeds, n_cases,
    method, note}`` (NaN bounds and a note where it cannot be computed)."""
    why = _usable(runs)
    base = {"n_seeds": len(runs), "n_cases": int(len(runs[0].y)) if runs else 0, "method": METHOD}
    if why:
        return base | {"ci_low": float("nan"), "ci_high": float("nan"), "note": why}
    lo, hi = _interval(_replicates([list(runs)], metric, n_resamples, seed), confidence)
    return base | {"ci_low": lo, "ci_high": hi, "note": None}


def diff_ci(runs_a: Sequence[RunPredictions], runs_b: Sequence[RunPredictions], metric: str, *,
            n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict:
    """CI of mean(metric_a - metric_b) over seed-paired runs (``runs_a[j]`` and ``runs_b[j]`` share
    seed j), resampling seeds and test cases, paired by seed and by case."""
    if len(runs_a) != len(runs_b):
        raise ValueError("runs_a and runs_b must be aligned by seed")
    why = _usable(list(runs_a) + list(runs_b))
    base = {"n_pairs": len(runs_a), "n_cases": int(len(runs_a[0].y)) if runs_a else 0, "method": METHOD}
    if why:
        return base | {"ci_low": float("nan"), "ci_high": float("nan"), "note": why}
    lo, hi = _interval(_replicates([list(runs_a), list(runs_b)], metric, n_resamples, seed), confidence)
    return base | {"ci_low": lo, "ci_high": hi, "note": None}
