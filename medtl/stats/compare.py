"""Many-seed comparison statistics: pure functions over arrays of per-seed metric values.

The tests themselves come from scipy (Wilcoxon signed-rank, paired t, Mann-Whitney U, Welch t)
and the confidence intervals from :func:`scipy.stats.bootstrap`; this module only decides which
to use, handles the degenerate cases (n < 2, all-equal values) explicitly, and applies Holm's
step-down correction across the family of comparisons.

Conventions: every function returns plain Python floats (NaN where a quantity is undefined,
with a human-readable ``note``); nothing here reads or writes files.
"""
from __future__ import annotations

import math
import warnings
from itertools import combinations
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

CI_METHODS = ("bca", "percentile")
# a bootstrap CI from 2 values is just their min and max: no interval below 3 values
MIN_N_CI = 3

PAIRED_TESTS = ("wilcoxon", "ttest_rel")
UNPAIRED_TESTS = ("mannwhitneyu", "welch_t")
TEST_LABELS = {
    "wilcoxon": "Wilcoxon signed-rank",
    "ttest_rel": "paired t-test",
    "mannwhitneyu": "Mann-Whitney U",
    "welch_t": "Welch t-test",
}
_SHORT_LABELS = {"wilcoxon": "Wilcoxon", "ttest_rel": "paired t", "mannwhitneyu": "Mann-Whitney", "welch_t": "Welch t"}


def _f(x) -> float:
    return float("nan") if x is None else float(x)


def _clean(x: Sequence[float]) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    return a[np.isfinite(a)]


# --------------------------------------------------------------------------------------------
# multiple comparisons


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values, same order as the input.

    Sort ascending; the i-th smallest (0-based) is multiplied by (m - i); a running maximum keeps
    the adjusted values monotone in the sorted order, and they are capped at 1.  NaN p-values
    (untestable comparisons) stay NaN and do not count towards m.  (statsmodels'
    ``multipletests(method="holm")`` computes the same; it is not a dependency here.)
    """
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out


# --------------------------------------------------------------------------------------------
# bootstrap confidence intervals


def _bootstrap(data: tuple, statistic, *, n_resamples: int, seed: int, method: str, confidence: float):
    """One scipy bootstrap CI; returns (low, high, method_used, note).

    A fresh ``np.random.default_rng(seed)`` per call makes every CI reproducible on its own,
    independent of which other arms or pairs are in the report.  BCa is undefined when the
    jackknife has no spread (e.g. all values equal): scipy then warns and returns NaN, and we
    fall back to the percentile interval and record that.
    """
    method = method.lower()
    if method not in CI_METHODS:
        raise ValueError(f"unknown CI method {method!r}; use one of {CI_METHODS}")
    note = None
    tried = ["bca", "percentile"] if method == "bca" else ["percentile"]
    for m in tried:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                res = stats.bootstrap(
                    data, statistic, n_resamples=int(n_resamples), vectorized=True, axis=-1,
                    confidence_level=confidence, method="BCa" if m == "bca" else "percentile",
                    rng=np.random.default_rng(seed),
                )
                lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
            except (ValueError, FloatingPointError, ZeroDivisionError):
                lo = hi = float("nan")
        if math.isfinite(lo) and math.isfinite(hi):
            if m != method:
                note = "BCa undefined (no spread in the jackknife), percentile interval used"
            return lo, hi, m, note
    return float("nan"), float("nan"), None, "bootstrap CI undefined"


def _mean_stat(x, axis=-1):
    return np.mean(x, axis=axis)


def _diff_stat(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def bootstrap_mean_ci(values: Sequence[float], *, n_resamples: int = 10000, seed: int = 0,
                      method: str = "bca", confidence: float = 0.95) -> dict:
    """Bootstrap CI of the mean: ``{"ci_low", "ci_high", "ci_method", "note"}``.

    Fewer than 2 finite values: NaN bounds, ``ci_method`` None and a note.
    """
    x = _clean(values)
    if x.size < MIN_N_CI:
        return {"ci_low": float("nan"), "ci_high": float("nan"), "ci_method": None,
                "note": f"n = {x.size}: too few seeds for a CI"}
    lo, hi, used, note = _bootstrap((x,), _mean_stat, n_resamples=n_resamples, seed=seed,
                                    method=method, confidence=confidence)
    return {"ci_low": lo, "ci_high": hi, "ci_method": used, "note": note}


def bootstrap_diff_ci(a: Sequence[float], b: Sequence[float], *, paired: bool, n_resamples: int = 10000,
                      seed: int = 0, method: str = "bca", confidence: float = 0.95) -> dict:
    """Bootstrap CI of mean(a - b) (paired: resample seeds, i.e. the differences) or of
    mean(a) - mean(b) (unpaired: resample each arm independently)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if paired:
        if a.shape != b.shape:
            raise ValueError("paired samples must have the same length")
        if a.size < MIN_N_CI:
            return {"ci_low": float("nan"), "ci_high": float("nan"), "ci_method": None,
                    "note": f"{a.size} pairs: too few seeds for a CI"}
        data, stat = (a - b,), _mean_stat
    else:
        if a.size < MIN_N_CI or b.size < MIN_N_CI:
            return {"ci_low": float("nan"), "ci_high": float("nan"), "ci_method": None,
                    "note": f"an arm has fewer than {MIN_N_CI} values: too few seeds for a CI"}
        data, stat = (a, b), _diff_stat
    lo, hi, used, note = _bootstrap(data, stat, n_resamples=n_resamples, seed=seed, method=method,
                                    confidence=confidence)
    return {"ci_low": lo, "ci_high": hi, "ci_method": used, "note": note}


# --------------------------------------------------------------------------------------------
# descriptive statistics


def describe(values: Sequence[float], *, n_resamples: int = 10000, seed: int = 0, method: str = "bca",
             confidence: float = 0.95) -> dict:
    """n, mean, sd (ddof=1), median, min, max and a bootstrap CI of the mean (NaNs dropped)."""
    raw = np.asarray(values, dtype=np.float64).ravel()
    x = raw[np.isfinite(raw)]
    n = int(x.size)
    out = {
        "n": n,
        "n_missing": int(raw.size - n),
        "mean": float(np.mean(x)) if n else float("nan"),
        "sd": float(np.std(x, ddof=1)) if n >= 2 else float("nan"),
        "median": float(np.median(x)) if n else float("nan"),
        "min": float(np.min(x)) if n else float("nan"),
        "max": float(np.max(x)) if n else float("nan"),
    }
    ci = bootstrap_mean_ci(x, n_resamples=n_resamples, seed=seed, method=method, confidence=confidence)
    out.update(ci_low=ci["ci_low"], ci_high=ci["ci_high"], ci_method=ci["ci_method"])
    notes = []
    if ci["note"]:
        notes.append(ci["note"])
    if out["n_missing"]:
        notes.append(f"{out['n_missing']} run(s) without a value for this metric")
    out["note"] = "; ".join(notes) or None
    return out


# --------------------------------------------------------------------------------------------
# effect sizes


def cohens_dz(a: Sequence[float], b: Sequence[float]) -> float:
    """Paired effect size: mean(a - b) / sd(a - b, ddof=1); 0 when all differences are 0."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size < 2:
        return float("nan")
    sd = float(np.std(d, ddof=1))
    if sd == 0.0:
        return 0.0 if float(np.mean(d)) == 0.0 else float("nan")
    return float(np.mean(d) / sd)


def cohens_d(a: Sequence[float], b: Sequence[float]) -> float:
    """Unpaired effect size with the pooled sd: (mean a - mean b) / s_pooled."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na, nb = a.size, b.size
    if na < 2 or nb < 2:
        return float("nan")
    s2 = ((na - 1) * np.var(a, ddof=1) + (nb - 1) * np.var(b, ddof=1)) / (na + nb - 2)
    diff = float(np.mean(a) - np.mean(b))
    if s2 == 0.0:
        return 0.0 if diff == 0.0 else float("nan")
    return float(diff / math.sqrt(s2))


def cliffs_delta(a: Sequence[float], b: Sequence[float]) -> float:
    """Cliff's delta = P(a > b) - P(a < b) over all cross pairs, in [-1, 1]."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return float("nan")
    s = np.sign(a[:, None] - b[None, :])
    return float(s.mean())


def hodges_lehmann(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sample Hodges-Lehmann shift estimate: median of all differences a_i - b_j."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return float("nan")
    return float(np.median(a[:, None] - b[None, :]))


# --------------------------------------------------------------------------------------------
# hypothesis tests


def paired_tests(a: Sequence[float], b: Sequence[float]) -> dict:
    """Wilcoxon signed-rank (two-sided, zero_method='wilcox') and paired t-test on a - b.

    All differences zero: both p-values are 1 (statistics 0) instead of scipy's warning/NaN.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    nan = float("nan")
    res = {"wilcoxon": {"statistic": nan, "p": nan}, "ttest_rel": {"statistic": nan, "p": nan}, "note": None}
    if a.size < 2:
        res["note"] = "fewer than 2 paired seeds: no test"
        return res
    d = a - b
    if np.all(d == 0):
        res["wilcoxon"] = {"statistic": 0.0, "p": 1.0}
        res["ttest_rel"] = {"statistic": 0.0, "p": 1.0}
        res["note"] = "all paired differences are zero"
        return res
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        w = stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
        t = stats.ttest_rel(a, b, alternative="two-sided")
    res["wilcoxon"] = {"statistic": float(w.statistic), "p": float(w.pvalue)}
    res["ttest_rel"] = {"statistic": float(t.statistic), "p": float(t.pvalue)}
    return res


def unpaired_tests(a: Sequence[float], b: Sequence[float]) -> dict:
    """Mann-Whitney U (two-sided) and Welch's t-test (``ttest_ind(equal_var=False)``).

    Both arms constant and equal: Welch's p is 1 (statistic 0) instead of NaN.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    nan = float("nan")
    res = {"mannwhitneyu": {"statistic": nan, "p": nan}, "welch_t": {"statistic": nan, "p": nan}, "note": None}
    if a.size < 2 or b.size < 2:
        res["note"] = "an arm has fewer than 2 seeds: no test"
        return res
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        u = stats.mannwhitneyu(a, b, alternative="two-sided")
        t = stats.ttest_ind(a, b, equal_var=False, alternative="two-sided")
    res["mannwhitneyu"] = {"statistic": float(u.statistic), "p": float(u.pvalue)}
    if np.all(a == a[0]) and np.all(b == a[0]):
        res["welch_t"] = {"statistic": 0.0, "p": 1.0}
        res["note"] = "all values are equal"
    else:
        res["welch_t"] = {"statistic": float(t.statistic), "p": float(t.pvalue)}
    return res


# --------------------------------------------------------------------------------------------
# one pair, many pairs


def compare_pair(a: Mapping[int, float], b: Mapping[int, float], *, n_resamples: int = 10000, seed: int = 0,
                 method: str = "bca", confidence: float = 0.95) -> dict:
    """Compare two arms given as ``{seed: value}`` (NaN values are dropped first).

    At least 2 seeds in common: paired design on the shared seeds -- Wilcoxon (primary) and
    paired t, effect size Cohen's d_z, diff = mean(a - b); seeds present in one arm only (a
    failed or missing run, a NaN value) are dropped and listed in ``seeds_dropped``.  Otherwise
    unpaired -- Mann-Whitney U (primary) and Welch t, effect size Cohen's d (pooled sd),
    diff = mean(a) - mean(b).  No multiplicity correction here: see :func:`compare_arms`.
    """
    a = {int(k): float(v) for k, v in a.items() if v is not None and math.isfinite(float(v))}
    b = {int(k): float(v) for k, v in b.items() if v is not None and math.isfinite(float(v))}
    sa, sb = sorted(a), sorted(b)
    shared = sorted(set(sa) & set(sb))
    only_a, only_b = sorted(set(sa) - set(sb)), sorted(set(sb) - set(sa))
    seed_sets_differ = bool(only_a or only_b)
    paired = len(shared) >= 2
    notes = []
    dropped = {"a": only_a, "b": only_b} if paired and seed_sets_differ else {"a": [], "b": []}
    if paired:
        if seed_sets_differ:
            notes.append(f"paired on the {len(shared)} shared seeds; dropped seeds only in a: {only_a}, "
                         f"only in b: {only_b}")
        xa = np.array([a[s] for s in shared])
        xb = np.array([b[s] for s in shared])
        t = paired_tests(xa, xb)
        primary, secondary = PAIRED_TESTS
        diff = float(np.mean(xa - xb))
        effect, effect_name = cohens_dz(xa, xb), "cohens_dz"
        extra = {"median_diff": float(np.median(xa - xb)), "cliffs_delta": None, "hodges_lehmann": None}
    else:
        xa = np.array([a[s] for s in sa])
        xb = np.array([b[s] for s in sb])
        if seed_sets_differ and sa and sb:
            notes.append(f"fewer than 2 shared seeds (only in a: {only_a}, only in b: {only_b}); unpaired tests used")
        t = unpaired_tests(xa, xb)
        primary, secondary = UNPAIRED_TESTS
        diff = float(np.mean(xa) - np.mean(xb)) if xa.size and xb.size else float("nan")
        effect, effect_name = cohens_d(xa, xb), "cohens_d"
        extra = {"median_diff": None, "cliffs_delta": cliffs_delta(xa, xb), "hodges_lehmann": hodges_lehmann(xa, xb)}
    if t["note"]:
        notes.append(t["note"])
    ci = bootstrap_diff_ci(xa, xb, paired=paired, n_resamples=n_resamples, seed=seed, method=method,
                           confidence=confidence)
    if ci["note"]:
        notes.append(ci["note"])
    out = {
        "paired": paired,
        "seed_sets_differ": seed_sets_differ,
        "shared_seeds": shared if paired else [],
        "seeds_dropped": dropped,
        "n_a": int(xa.size),
        "n_b": int(xb.size),
        "n_pairs": int(xa.size) if paired else 0,
        "mean_a": float(np.mean(xa)) if xa.size else float("nan"),
        "mean_b": float(np.mean(xb)) if xb.size else float("nan"),
        "test": primary,
        "statistic": t[primary]["statistic"],
        "p": t[primary]["p"],
        "secondary_test": secondary,
        "secondary_statistic": t[secondary]["statistic"],
        "secondary_p": t[secondary]["p"],
        "diff": diff,
        "diff_ci_low": ci["ci_low"],
        "diff_ci_high": ci["ci_high"],
        "diff_ci_method": ci["ci_method"],
        "effect_size": effect,
        "effect_size_name": effect_name,
        **extra,
        "note": "; ".join(notes) or None,
    }
    return out


def _fmt_signed(x: float, decimals: int) -> str:
    if not math.isfinite(x):
        return "n/a"
    s = f"{x:+.{decimals}f}"
    if float(s) == 0.0:
        return f"{0.0:.{decimals}f}"  # no "-0.000" / "+0.000"
    return s.replace("-", "\u2212")


def _decimals(*xs: float) -> int:
    scale = max((abs(x) for x in xs if math.isfinite(x)), default=0.0)
    if scale == 0.0:
        return 3
    return int(min(8, max(3, 1 - math.floor(math.log10(scale)))))


def format_p(p: float) -> str:
    """'p=0.21', 'p=0.004', 'p<0.001', 'p=n/a'."""
    if p is None or not math.isfinite(p):
        return "p=n/a"
    if p < 0.001:
        return "p<0.001"
    if p < 0.01:
        return f"p={p:.3f}"
    if abs(p - 0.05) < 0.005:  # near the usual alpha two decimals would read "p=0.05" on either side
        return f"p={p:.4f}"
    return f"p={p:.2f}"


def pair_sentence(pair: Mapping, alpha: float = 0.05, confidence: float = 0.95) -> str:
    """One plain-English sentence for a pair dict from :func:`compare_pair` plus ``a``, ``b``,
    ``metric`` and ``p_holm``."""
    a, b, metric = pair["a"], pair["b"], pair["metric"]
    diff, lo, hi = _f(pair["diff"]), _f(pair["diff_ci_low"]), _f(pair["diff_ci_high"])
    dec = _decimals(diff, lo, hi)
    what = "mean difference" if pair["paired"] else "difference in means"
    level = f"{round(confidence * 100):d}%"
    head = f"{a} vs {b} on {metric}: {what} {_fmt_signed(diff, dec)}"
    lo2, hi2 = _f(pair.get("diff_ci_seeds_cases_low")), _f(pair.get("diff_ci_seeds_cases_high"))
    if math.isfinite(lo) and math.isfinite(hi) and math.isfinite(lo2) and math.isfinite(hi2):
        head += (f" ({level} CI over seeds {_fmt_signed(lo, dec)} to {_fmt_signed(hi, dec)}; over seeds and "
                 f"test cases {_fmt_signed(lo2, dec)} to {_fmt_signed(hi2, dec)})")
    elif math.isfinite(lo) and math.isfinite(hi):
        head += f" ({level} CI over seeds {_fmt_signed(lo, dec)} to {_fmt_signed(hi, dec)})"
    p, ph = _f(pair["p"]), _f(pair.get("p_holm"))
    design = f"paired over {pair['n_pairs']} seeds" if pair["paired"] else f"unpaired, n={pair['n_a']} vs {pair['n_b']}"
    dropped = pair.get("seeds_dropped") or {}
    if dropped.get("a") or dropped.get("b"):
        design += f"; seeds dropped: {', '.join(map(str, dropped.get('a', []) + dropped.get('b', [])))}"
    if not math.isfinite(p):
        return f"{head} \u2014 not tested ({pair.get('note') or 'too few seeds'})."
    label = _SHORT_LABELS[pair["test"]]
    body = f"{head}, {label} {format_p(p)}, Holm-adjusted {format_p(ph)} ({design})"
    if math.isfinite(ph) and ph < alpha:
        direction = f"{a} higher" if diff > 0 else (f"{b} higher" if diff < 0 else "no mean difference")
        return f"{body} \u2014 a significant difference at \u03b1={alpha:g} after Holm correction ({direction})."
    return f"{body} \u2014 no significant difference at \u03b1={alpha:g} after correction."


def min_attainable_p(pair: Mapping) -> float:
    """The smallest two-sided p-value the pair's primary test can give at its sample sizes, with
    no ties: Wilcoxon signed-rank over n pairs 2 / 2**n (every difference of one sign), Mann-Whitney
    U 2 / C(n_a + n_b, n_a) (complete separation).  Exact-distribution values; scipy uses them at
    these sizes (and normal approximations only for larger n, where the floor is far below any
    alpha)."""
    if pair.get("paired"):
        n = int(pair.get("n_pairs") or 0)
        return min(1.0, 2.0 / 2.0 ** n) if n else float("nan")
    na, nb = int(pair.get("n_a") or 0), int(pair.get("n_b") or 0)
    return min(1.0, 2.0 / math.comb(na + nb, na)) if na and nb else float("nan")


def design_note(pairs: Sequence[Mapping], alpha: float = 0.05) -> str | None:
    """A sentence when the design cannot reach significance: if even the smallest attainable p,
    multiplied by the number of tests (Holm's factor for the smallest p), is not below alpha, no
    pair can be significant whatever the data; None otherwise."""
    m = sum(1 for p in pairs if math.isfinite(_f(p.get("p"))))
    floors = [min_attainable_p(p) for p in pairs if math.isfinite(_f(p.get("p")))]
    if not m or not floors or min(floors) * m < alpha:
        return None
    paired = [p for p in pairs if p.get("paired")]
    need = next(n for n in range(2, 64) if 2.0 / 2.0 ** n * m < alpha)
    size = (f"{min(int(p['n_pairs']) for p in paired)} paired seeds" if paired else "these group sizes")
    return (f"with {size} the smallest two-sided p the test can give is {min(floors):.3g}, and Holm over {m} "
            f"tests multiplies it by {m}: no difference can be significant at \u03b1={alpha:g}, whatever the "
            f"data; read the CIs (descriptively), or run at least {need} paired seeds per arm")


def compare_arms(arms_by_metric: Mapping[str, Mapping[str, Mapping[int, float]]], *, alpha: float = 0.05,
                 n_resamples: int = 10000, seed: int = 0, method: str = "bca", confidence: float = 0.95) -> dict:
    """Describe every arm and compare every pair of arms, for every metric.

    ``arms_by_metric[metric][arm] = {seed: value}``.  Returns ``{"by_metric": {metric: {"arms":
    {arm: describe(...)}}}, "pairs": [...]}`` where each pair carries ``a``, ``b``, ``metric``,
    the :func:`compare_pair` fields, ``p_holm`` (Holm over the primary p-values of all pairs x
    metrics), ``secondary_p_holm`` (Holm over the secondary p-values, separately),
    ``significant`` and ``sentence``.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be in (0, 1)")
    by_metric: dict = {}
    pairs: list[dict] = []
    for metric, arms in arms_by_metric.items():
        desc = {}
        for name, vals in arms.items():
            desc[name] = {**describe(list(vals.values()), n_resamples=n_resamples, seed=seed, method=method,
                                     confidence=confidence),
                          "seeds": sorted(int(s) for s, v in vals.items() if v is not None and math.isfinite(float(v)))}
        by_metric[metric] = {"arms": desc}
        for an, bn in combinations(list(arms), 2):
            r = compare_pair(arms[an], arms[bn], n_resamples=n_resamples, seed=seed, method=method,
                             confidence=confidence)
            pairs.append({"a": an, "b": bn, "metric": metric, **r})
    ph = holm([p["p"] for p in pairs])
    sph = holm([p["secondary_p"] for p in pairs])
    for p, h, sh in zip(pairs, ph, sph):
        p["p_holm"] = float(h)
        p["secondary_p_holm"] = float(sh)
        p["significant"] = bool(math.isfinite(h) and h < alpha)
        p["sentence"] = pair_sentence(p, alpha=alpha, confidence=confidence)
        p["min_attainable_p"] = min_attainable_p(p)
    return {"by_metric": by_metric, "pairs": pairs, "design_note": design_note(pairs, alpha),
            "holm": {"m_primary": int(np.isfinite(ph).sum()), "m_secondary": int(np.isfinite(sph).sum())}}
