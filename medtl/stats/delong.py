"""DeLong's test for two correlated ROC AUCs measured on the same test set.

Implemented by hand because neither scipy nor scikit-learn provides it.  This is the fast
O(n log n) algorithm of Sun & Xu (2014, IEEE Signal Processing Letters 21:1389), which computes
DeLong, DeLong & Clarke-Pearson's (1988) structural components from midranks instead of the
O(n_pos * n_neg) pairwise kernel; ties count 1/2, so the AUCs equal ``roc_auc_score``.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats


def _structural_components(y: np.ndarray, scores: np.ndarray):
    """AUCs and the structural components V10 (one per positive) and V01 (one per negative).

    ``scores`` has shape (k, n).  Midranks via ``scipy.stats.rankdata(method="average")``.
    """
    pos = y == 1
    x, z = scores[:, pos], scores[:, ~pos]  # positives, negatives
    m, n = x.shape[1], z.shape[1]
    tx = stats.rankdata(x, axis=1)                 # midranks within positives
    tz = stats.rankdata(z, axis=1)                 # midranks within negatives
    t = stats.rankdata(np.concatenate([x, z], axis=1), axis=1)  # midranks in the pooled sample
    tpx, tpz = t[:, :m], t[:, m:]
    auc = (tpx.sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v10 = (tpx - tx) / n          # fraction of negatives below each positive (ties 1/2)
    v01 = 1.0 - (tpz - tz) / m    # fraction of positives above each negative (ties 1/2)
    return auc, v10, v01


def delong_covariance(y, *scores) -> tuple[np.ndarray, np.ndarray]:
    """``(aucs, cov)``: the AUC of each score vector and DeLong's covariance matrix of the AUCs."""
    y = np.asarray(y).ravel()
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    s = np.vstack([np.asarray(p, dtype=np.float64).ravel() for p in scores])
    if s.shape[1] != y.size:
        raise ValueError("labels and scores have different lengths")
    m, n = int((y == 1).sum()), int((y == 0).sum())
    if m < 2 or n < 2:
        raise ValueError(f"DeLong needs at least 2 positives and 2 negatives (got {m} and {n})")
    auc, v10, v01 = _structural_components(y, s)
    s10 = np.atleast_2d(np.cov(v10))   # ddof=1, as in DeLong et al.
    s01 = np.atleast_2d(np.cov(v01))
    return auc, s10 / m + s01 / n


def delong_test(y, p_a, p_b, confidence: float = 0.95) -> dict:
    """Two-sided DeLong test of H0: AUC(a) == AUC(b) on the same cases.

    Returns ``auc_a, auc_b, diff (a - b), var_a, var_b, cov, var_diff, se_diff, z, p,
    diff_ci_low, diff_ci_high, n, n_pos, n_neg``.  Identical predictions (zero variance of the
    difference and zero difference) give z = 0, p = 1.
    """
    y = np.asarray(y).ravel()
    auc, cov = delong_covariance(y, p_a, p_b)
    diff = float(auc[0] - auc[1])
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    var = max(var, 0.0)  # rounding can give -1e-18 for identical models
    se = math.sqrt(var)
    if se == 0.0 or se < 1e-15 * max(1.0, abs(diff)):
        z, p = (0.0, 1.0) if abs(diff) < 1e-15 else (math.copysign(math.inf, diff), 0.0)
    else:
        z = diff / se
        p = float(2.0 * stats.norm.sf(abs(z)))
    q = float(stats.norm.ppf(0.5 + confidence / 2.0))
    return {
        "auc_a": float(auc[0]),
        "auc_b": float(auc[1]),
        "diff": diff,
        "var_a": float(cov[0, 0]),
        "var_b": float(cov[1, 1]),
        "cov": float(cov[0, 1]),
        "var_diff": var,
        "se_diff": se,
        "z": float(z),
        "p": float(p),
        "diff_ci_low": diff - q * se,
        "diff_ci_high": diff + q * se,
        "confidence": confidence,
        "n": int(y.size),
        "n_pos": int((y == 1).sum()),
        "n_neg": int((y == 0).sum()),
    }
