"""Intervals and tests that cover both sources of variance in a many-seed comparison:
training randomness (seeds) and the finite test set (test cases).

Every seed of an arm is scored on the same test set, so seeds and cases are *crossed*.  A
seed-averaged metric ``M = mean_j A_j(T)`` then varies, over new seeds and a new test set, as

    Var(M) = sigma2_case + sigma2_seed / m + sigma2_inter / m

(``sigma2_inter``: the seed-by-case interaction, each seed's own per-case errors).  On the one
test set at hand the three are estimated from quantities that are cheap and exact:

* ``s2``, the sample variance of the m per-seed values, estimates ``sigma2_seed + sigma2_inter``;
* ``V_avg``, the case variance of the *seed-averaged* per-case influence values (DeLong's
  structural components for AUC, the 0/1 hits for proportions) estimates
  ``sigma2_case + sigma2_inter / m``;
* ``V_bar``, the mean over seeds of each run's own case variance, estimates
  ``sigma2_case + sigma2_inter``; so ``sigma2_inter = (V_bar - V_avg) m / (m - 1)``.

Hence ``Var(M) = s2 / m + f * (V_avg - sigma2_inter / m)``, each term counted once, where ``f``
says what the estimate is *for*: 1 for the population of patients the test set was drawn from
("seeds + cases"), ``1 - n/N`` for the full N-case test set when only a seeded n-case subset was
scored (the finite-population correction), 0 for this test set ("seeds only", the plain t
interval).  For a paired difference the per-seed values and the per-case influences are those of
``A - B`` (paired by seed and by case); for internal vs external, two independent test sets each
add their own case term.  The interval is ``estimate +/- t_df * se`` with Welch-Satterthwaite
degrees of freedom (``m - 1`` for the seed term, ``n - 1`` for the case term), and the test of
zero is the same t statistic, so a test and its interval never disagree.

Written here because no maintained library estimates crossed seed x case variance components of
AUC; the DeLong components follow DeLong, DeLong & Clarke-Pearson (1988) and Sun & Xu (2014).
Coverage at 5, 10 and 30 seeds is measured by ``scripts/coverage_sim.py`` (reports/coverage.md).

``weighted_metric`` (metrics under bootstrap case weights) stays for the case bootstraps of the
subgroup and shortcut probes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats

METRICS = ("auc", "acc", "sensitivity", "specificity", "balanced_acc",
           # operating points fixed on val (medtl.stats.operating) and net benefit at pt = XX%
           "sens_at_spec90", "sens_at_spec95", "spec_at_sens90", "spec_at_sens95",
           "achieved_spec_spec90", "achieved_spec_spec95", "achieved_sens_sens90", "achieved_sens_sens95",
           "net_benefit_05", "net_benefit_10", "net_benefit_20", "net_benefit_30", "net_benefit_50")


def is_metric(name: str) -> bool:
    """A metric with per-case influences: :data:`METRICS`, or net benefit at any pt (``net_benefit_XX``)."""
    return name in METRICS or (name.startswith("net_benefit_") and name[12:].isdigit() and 0 < int(name[12:]) < 100)
METHOD = ("crossed seeds x cases variance components (seed variance + DeLong / binomial case variance of the "
          "predictions averaged over seeds, seed-by-case interaction counted once), t interval with "
          "Welch-Satterthwaite df")


@dataclass
class RunPredictions:
    """One run's test-set predictions: labels y (0/1), positive-class probabilities p, the
    run's operating threshold, the case ids (to check that runs share a test set) and the
    thresholds of the operating points fixed on val (``{"spec95": t, ...}``)."""

    y: np.ndarray
    p: np.ndarray
    threshold: float = 0.5
    ids: np.ndarray | None = None
    op_thresholds: dict | None = None
    #: computes ``op_thresholds`` on first use (reading val predictions only for a metric that needs them)
    op_source: Callable[[], dict | None] | None = None

    def operating_thresholds(self) -> dict:
        if self.op_thresholds is None and self.op_source is not None:
            self.op_thresholds = self.op_source() or {}
            self.op_source = None
        return self.op_thresholds or {}


# ------------------------------------------------------------------------ per-case influences

def _placements(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components: for each positive the fraction of negatives it outranks
    (ties count one half), for each negative the fraction of positives that outrank it."""
    pos, neg = np.sort(p[y == 1]), np.sort(p[y == 0])
    v10 = (np.searchsorted(neg, p[y == 1], "left") + np.searchsorted(neg, p[y == 1], "right")) / (2.0 * len(neg))
    below = np.searchsorted(pos, p[y == 0], "left") + np.searchsorted(pos, p[y == 0], "right")
    v01 = 1.0 - below / (2.0 * len(pos))
    return v10, v01


def influences(run: RunPredictions, metric: str) -> tuple[float, list[np.ndarray]]:
    """``(value, groups)``: the run's metric and its per-case influence values by case group
    (positives, negatives or all), such that the metric's case variance is
    ``sum_g var(groups[g], ddof=1) / len(groups[g])``.  NaN value where the metric is undefined."""
    y = np.asarray(run.y).astype(int).ravel()
    p = np.asarray(run.p, dtype=np.float64).ravel()
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if metric == "auc":
        if not n_pos or not n_neg:
            return float("nan"), [np.full(n_pos, np.nan), np.full(n_neg, np.nan)]
        v10, v01 = _placements(y, p)
        return float(v10.mean()), [v10, v01]
    if not is_metric(metric):
        raise ValueError(f"metric must be one of {', '.join(METRICS)} (got {metric!r})")
    if metric.startswith("net_benefit_"):
        from .operating import net_benefit_terms

        terms = net_benefit_terms(y, p, int(metric[12:]) / 100)
        return (float(terms.mean()) if terms.size else float("nan")), [terms]
    threshold = run.threshold
    if metric[:12] in ("sens_at_spec", "spec_at_sens") or metric.startswith("achieved_"):
        # a fixed-on-val operating point: a proportion at the rule's threshold
        if metric.startswith("achieved_"):  # achieved_spec_spec95: specificity at rule spec95
            rate, key = metric[9:13], metric[14:]
        else:
            rate, key = metric[:4], ("spec" if metric.startswith("sens_at") else "sens") + metric[12:]
        threshold = float(run.operating_thresholds().get(key, float("nan")))
        if not math.isfinite(threshold):
            return float("nan"), [np.full(max(n_pos, 2), np.nan)]
        metric = "sensitivity" if rate == "sens" else "specificity"
    hit = ((p >= threshold).astype(int) == y).astype(np.float64)
    hp, hn = hit[y == 1], hit[y == 0]
    if metric == "acc":
        return (float(hit.mean()) if hit.size else float("nan")), [hit]
    if metric == "sensitivity":
        return (float(hp.mean()) if n_pos else float("nan")), [hp]
    if metric == "specificity":
        return (float(hn.mean()) if n_neg else float("nan")), [hn]
    value = 0.5 * (hp.mean() + hn.mean()) if n_pos and n_neg else float("nan")
    return float(value), [0.5 * hp, 0.5 * hn]


def _case_var(groups: Sequence[np.ndarray]) -> float:
    if any(len(g) < 2 for g in groups):
        return float("nan")
    return float(sum(np.var(g, ddof=1) / len(g) for g in groups))


# ------------------------------------------------------------------------ the crossed estimate

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


@dataclass
class CaseSet:
    """The runs scored on one test set, as signed terms aligned by seed: ``[(+1, runs_a),
    (-1, runs_b)]`` is the paired difference a - b.  ``fraction`` is what the case term counts
    (1: patients at large; 1 - n/N: a seeded subset of an N-case test set; 0: this test set)."""

    terms: list[tuple[float, Sequence[RunPredictions]]]
    fraction: float = 1.0


def _set_components(cs: CaseSet, metric: str, m: int) -> tuple[np.ndarray, float, float, int]:
    """Per-seed values, V_avg, sigma2_inter and the smallest case group of one test set."""
    values = np.zeros(m)
    combined: list[list[np.ndarray]] = []
    for j in range(m):
        groups = None
        for sign, runs in cs.terms:
            v, g = influences(runs[j], metric)
            values[j] += sign * v
            groups = [sign * x for x in g] if groups is None else [a + sign * x for a, x in zip(groups, g)]
        combined.append(groups)
    per_run = np.array([_case_var(g) for g in combined])
    avg = [np.mean([combined[j][k] for j in range(m)], axis=0) for k in range(len(combined[0]))]
    v_avg = _case_var(avg)
    inter = max(float(np.mean(per_run)) - v_avg, 0.0) * m / (m - 1) if m > 1 else 0.0
    return values, v_avg, inter, min(len(g) for g in avg)


def crossed(sets: Sequence[CaseSet], metric: str, confidence: float = 0.95) -> dict:
    """The seed-averaged (signed) metric over one or more test sets with its standard error,
    Satterthwaite df, t interval, the t test of zero and the variance components (module
    docstring).  Every term's run list must be aligned by seed (index j = the same seed)."""
    m = len(sets[0].terms[0][1])
    total_values = np.zeros(m)
    case_term, inter_total, n_min = 0.0, 0.0, math.inf
    for cs in sets:
        values, v_avg, inter, n_g = _set_components(cs, metric, m)
        total_values += values
        case_term += cs.fraction * max(v_avg - inter / m, 0.0)
        inter_total += inter
        n_min = min(n_min, n_g)
    est = float(np.mean(total_values))
    s2 = float(np.var(total_values, ddof=1)) if m > 1 else 0.0
    seed_term = s2 / m
    var = seed_term + case_term
    out = {"estimate": est, "n_seeds": m, "var_seed_term": seed_term, "var_case_term": case_term,
           "var_interaction": inter_total, "se": float("nan"), "df": float("nan"), "ci_low": float("nan"),
           "ci_high": float("nan"), "p": float("nan")}
    if not (math.isfinite(var) and math.isfinite(est)):
        return out
    if var <= 0.0:
        return out | {"se": 0.0, "ci_low": est, "ci_high": est, "p": 1.0 if est == 0 else 0.0}
    den = (seed_term ** 2 / (m - 1) if m > 1 else 0.0) + (case_term ** 2 / (n_min - 1) if n_min > 1 else 0.0)
    df = var ** 2 / den if den > 0 else float(max(m - 1, 1))
    se = math.sqrt(var)
    q = float(stats.t.ppf(0.5 + confidence / 2, df))
    p = float(2 * stats.t.sf(abs(est) / se, df))
    return out | {"se": se, "df": float(df), "ci_low": est - q * se, "ci_high": est + q * se, "p": p}


def _usable(runs: Sequence[RunPredictions], min_seeds: int = 2) -> str | None:
    if len(runs) < min_seeds:
        return f"{len(runs)} run(s) with test predictions: fewer than {min_seeds} seeds"
    if not same_cases(runs):
        return "the runs do not share one test set"
    return None


def _nan_result(base: dict, note: str) -> dict:
    return base | {"ci_low": float("nan"), "ci_high": float("nan"), "se": float("nan"), "df": float("nan"),
                   "p": float("nan"), "note": note}


def mean_ci(runs: Sequence[RunPredictions], metric: str, *, confidence: float = 0.95, fraction: float = 1.0) -> dict:
    """Interval of an arm's mean metric over seeds and test cases: ``{estimate, ci_low, ci_high, se,
    df, n_seeds, n_cases, method, note, var_*}`` (NaN bounds and a note where it cannot be computed).
    One run: its case interval alone."""
    base = {"n_seeds": len(runs), "n_cases": int(len(runs[0].y)) if runs else 0, "method": METHOD}
    why = _usable(runs, 1)
    if why:
        return _nan_result(base, why)
    res = crossed([CaseSet([(1.0, list(runs))], fraction)], metric, confidence)
    note = None if math.isfinite(res["ci_low"]) else "undefined on these cases (one class only, or too few cases)"
    return base | res | {"note": note}


def diff_ci(runs_a: Sequence[RunPredictions], runs_b: Sequence[RunPredictions], metric: str, *,
            confidence: float = 0.95, fraction: float = 1.0) -> dict:
    """Interval and t test of mean(metric_a - metric_b) over seed-paired runs (``runs_a[j]`` and
    ``runs_b[j]`` share seed j) scored on the same test set, paired by seed and by case."""
    if len(runs_a) != len(runs_b):
        raise ValueError("runs_a and runs_b must be aligned by seed")
    base = {"n_pairs": len(runs_a), "n_cases": int(len(runs_a[0].y)) if runs_a else 0, "method": METHOD}
    why = _usable(list(runs_a) + list(runs_b), 2)
    if why:
        return _nan_result(base, why)
    res = crossed([CaseSet([(1.0, list(runs_a)), (-1.0, list(runs_b))], fraction)], metric, confidence)
    return base | res | {"note": None}


def two_set_diff_ci(runs_int: Sequence[RunPredictions], runs_ext: Sequence[RunPredictions], metric: str, *,
                    confidence: float = 0.95) -> dict:
    """Interval and t test of mean(internal - external) over seeds, where each seed's run is scored
    on two independent test sets (internal test split, external data): each set's cases add their
    own variance."""
    if len(runs_int) != len(runs_ext):
        raise ValueError("internal and external runs must be aligned by seed")
    base = {"n_pairs": len(runs_int), "method": METHOD}
    why = _usable(runs_int, 2) or _usable(runs_ext, 2)
    if why:
        return _nan_result(base, why)
    res = crossed([CaseSet([(1.0, list(runs_int))]), CaseSet([(-1.0, list(runs_ext))])], metric, confidence)
    return base | res | {"n_cases_internal": len(runs_int[0].y), "n_cases_external": len(runs_ext[0].y),
                         "note": None}


# ------------------------------------------------------------------------ case-weighted metrics

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
