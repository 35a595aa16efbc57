"""Subgroup metrics of a binary classifier: per group of a categorical column (sex, view, age
band, site, Kermany's pneumonia subtype), n, positives, AUC, sensitivity and specificity at the
run's own threshold, plus the worst-group gap.  AUCs get a percentile bootstrap CI over the
group's test cases; sensitivity and specificity, proportions, get the Wilson score interval
throughout: it is monotone in the count (k/n's lower bound rises with k at fixed n) and never of
zero width, where a case bootstrap collapses to a point when every case agrees and so gave, say,
241/242 a higher lower bound than 242/242.

Groups too small for an AUC (one class only, or fewer than ``MIN_N_AUC`` cases) keep their row,
with the reason in ``auc_status``; sensitivity and specificity are given wherever the group has
positives / negatives.  A group holding positives also gets ``auc_vs_all_negatives``: its
positives ranked against every negative of the evaluated set (the "background negative, subgroup
positive" AUC of Borkan et al. 2019), defined even for a group of positives only (Kermany's
bacterial and viral pneumonia).  ``flags`` marks a group whose AUC CI includes 0.5 (not shown to
be better than chance) and small groups.

The bootstrap reuses :func:`medtl.stats.hierarchical.weighted_metric` (multinomial case weights,
vectorised over replicates); nothing here reads or writes files.
"""
from __future__ import annotations

import numpy as np

from .hierarchical import RunPredictions, weighted_metric

MIN_N_AUC = 10
CHANCE = 0.5
METHOD = "percentile bootstrap over the group's test cases (multinomial case weights)"


def _ci(run: RunPredictions, metric: str, n_resamples: int, rng: np.random.Generator,
        confidence: float) -> tuple[float, float, float]:
    """(point, low, high) of ``metric`` for one set of cases."""
    n = len(run.y)
    point = float(weighted_metric(run, metric, np.ones((1, n)))[0])
    if n == 0 or not np.isfinite(point):
        return point, float("nan"), float("nan")
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples)
    reps = weighted_metric(run, metric, counts)
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return point, float("nan"), float("nan")
    a = (1 - confidence) / 2
    lo, hi = np.quantile(reps, [a, 1 - a])
    return point, float(lo), float(hi)


WILSON_NOTE = "Wilson score"


def wilson_ci(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (scipy.stats.binomtest), not degenerate at 0 or n."""
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def _proportion_counts(y: np.ndarray, p: np.ndarray, threshold: float, metric: str) -> tuple[int, int]:
    """(successes, trials) of sensitivity (positives called positive) or specificity."""
    called = p >= threshold
    if metric == "sensitivity":
        return int(np.sum(called & (y == 1))), int(np.sum(y == 1))
    return int(np.sum(~called & (y == 0))), int(np.sum(y == 0))


def group_key(value) -> str:
    """A group value as a key of metrics.json (dots would split compare's dotted metric paths)."""
    s = str(value).strip()
    return s.replace(".", "_") if s else "(blank)"


def _one_group(y: np.ndarray, p: np.ndarray, threshold: float, idx: np.ndarray, *, n_resamples: int,
               rng: np.random.Generator, confidence: float) -> dict:
    yg, pg = y[idx], p[idx]
    n, n_pos = int(len(yg)), int(yg.sum())
    rec: dict = {"n": n, "n_pos": n_pos, "n_neg": n - n_pos}
    run = RunPredictions(y=yg, p=pg, threshold=threshold)
    if n_pos == 0 or n_pos == n:
        rec["auc_status"] = "one class only: no AUC"
    elif n < MIN_N_AUC:
        rec["auc_status"] = f"n < {MIN_N_AUC}: too small for an AUC"
    else:
        rec["auc_status"] = "ok"
    nan = float("nan")
    if rec["auc_status"] == "ok":
        rec["auc"], rec["auc_ci_low"], rec["auc_ci_high"] = _ci(run, "auc", n_resamples, rng, confidence)
    else:
        rec["auc"] = rec["auc_ci_low"] = rec["auc_ci_high"] = nan
    for metric, defined in (("sensitivity", n_pos > 0), ("specificity", n_pos < n)):
        if defined:  # a proportion: Wilson for every count (monotone in k; see the module docstring)
            k, m = _proportion_counts(yg, pg, threshold, metric)
            rec[metric] = k / m
            rec[f"{metric}_ci_low"], rec[f"{metric}_ci_high"] = wilson_ci(k, m, confidence)
            rec[f"{metric}_ci_method"] = WILSON_NOTE
        else:
            rec[metric] = rec[f"{metric}_ci_low"] = rec[f"{metric}_ci_high"] = nan
    neg = np.flatnonzero(y == 0)
    pos = idx[y[idx] == 1]
    if len(pos) and len(neg):
        both = np.concatenate([pos, neg])
        bn = RunPredictions(y=y[both], p=p[both], threshold=threshold)
        rec["auc_vs_all_negatives"], rec["auc_vs_all_negatives_ci_low"], rec["auc_vs_all_negatives_ci_high"] = \
            _ci(bn, "auc", n_resamples, rng, confidence)
    else:
        rec["auc_vs_all_negatives"] = rec["auc_vs_all_negatives_ci_low"] = rec["auc_vs_all_negatives_ci_high"] = nan
    flags = []
    if np.isfinite(rec["auc_ci_low"]) and rec["auc_ci_low"] <= CHANCE:
        flags.append(f"AUC not shown above chance ({round(confidence * 100)}% CI includes {CHANCE})")
    if n < MIN_N_AUC:
        flags.append(f"small group (n = {n})")
    rec["flags"] = flags
    return rec


def worst_group_gaps(groups: dict) -> dict:
    """Per metric (auc, sensitivity, specificity): best and worst group, their values and the gap."""
    out = {}
    for metric in ("auc", "sensitivity", "specificity"):
        vals = {g: r[metric] for g, r in groups.items() if r.get(metric) is not None and np.isfinite(r[metric])}
        if len(vals) < 2:
            out[metric] = {"gap": float("nan"), "worst": None, "best": None, "n_groups": len(vals)}
            continue
        worst, best = min(vals, key=vals.get), max(vals, key=vals.get)
        out[metric] = {"gap": float(vals[best] - vals[worst]), "worst": worst, "worst_value": float(vals[worst]),
                       "best": best, "best_value": float(vals[best]), "n_groups": len(vals)}
    return out


def group_metrics(y, p, threshold: float, groups: dict, *, n_resamples: int = 2000, seed: int = 0,
                  confidence: float = 0.95) -> tuple[dict, dict]:
    """``(groups, gaps)``: ``groups[column][value]`` is a group's record (:func:`_one_group`),
    ``gaps[column]`` its worst-group gaps.  ``groups`` maps a column name to one value per case."""
    y = np.asarray(y).astype(int).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    out, gaps = {}, {}
    for col, values in groups.items():
        keys = np.array([group_key(v) for v in np.asarray(values, dtype=object)], dtype=object)
        if len(keys) != len(y):
            raise ValueError(f"group column {col!r} has {len(keys)} values for {len(y)} cases")
        rng = np.random.default_rng(seed)  # one stream per column: a column's CIs do not depend on the others
        recs = {}
        for k in sorted(set(keys.tolist())):
            recs[k] = _one_group(y, p, threshold, np.flatnonzero(keys == k), n_resamples=n_resamples, rng=rng,
                                 confidence=confidence)
        out[col] = recs
        gaps[col] = worst_group_gaps(recs)
    return out, gaps
