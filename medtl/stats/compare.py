"""Many-seed comparison statistics: pure functions over arrays of per-seed metric values.

Intervals of a mean over seeds and of a paired difference are t intervals (a bootstrap of a mean
over 10 values behaves like a z interval and is about 18% too narrow against t_9; BCa and
percentile stay available for per-arm summaries on request).  The primary test of a pair is the
t test that matches its interval (paired t over shared seeds, else Welch), so an interval that
excludes 0 and a significant test never disagree; Wilcoxon / Mann-Whitney are reported beside it.

Every comparison ends in one of three words, by one rule (:func:`conclude`):

* **differs**: the Holm-adjusted p of the difference test is below alpha;
* **equivalent within +/-M**: otherwise, when a margin M is set and the Holm-adjusted TOST p
  (two one-sided t tests against -M and +M; Schuirmann 1987) is below alpha, i.e. the (1 - 2 alpha)
  interval lies inside +/-M;
* **inconclusive**: neither; a non-significant test alone is never read as "no difference".

Holm's step-down correction runs within a *family*: the declared primary endpoints form one
family, everything else is exploratory with its own correction.

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

CI_METHODS = ("t", "bca", "percentile")
# no interval below 3 values (a t interval from 2 has 1 df; a bootstrap one is their min and max)
MIN_N_CI = 3
WORDS = ("differs", "equivalent", "inconclusive")
FAMILIES = ("primary", "exploratory")

PAIRED_TESTS = ("wilcoxon", "ttest_rel")
UNPAIRED_TESTS = ("mannwhitneyu", "welch_t")
TEST_LABELS = {
    "wilcoxon": "Wilcoxon signed-rank",
    "ttest_rel": "paired t-test",
    "mannwhitneyu": "Mann-Whitney U",
    "welch_t": "Welch t-test",
    "crossed_t": "t test over seeds and cases",
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
    if method not in ("bca", "percentile"):
        raise ValueError(f"unknown bootstrap CI method {method!r}; use bca or percentile")
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


def t_interval(x: Sequence[float], confidence: float = 0.95) -> dict:
    """t interval of the mean of ``x``: ``{ci_low, ci_high, se, df}`` (NaN below 2 values; a zero
    interval when every value is equal)."""
    x = _clean(x)
    n = x.size
    if n < 2:
        return {"ci_low": float("nan"), "ci_high": float("nan"), "se": float("nan"), "df": float("nan")}
    se = float(np.std(x, ddof=1) / math.sqrt(n))
    lo, hi = _t_ci(float(np.mean(x)), se, float(n - 1), confidence)
    return {"ci_low": lo, "ci_high": hi, "se": se, "df": float(n - 1)}


def describe(values: Sequence[float], *, n_resamples: int = 10000, seed: int = 0, method: str = "t",
             confidence: float = 0.95) -> dict:
    """n, mean, sd (ddof=1), median, min, max and a CI of the mean (NaNs dropped): a t interval
    (default), or a bootstrap one (``bca``/``percentile``, opt-in)."""
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
    if method == "t":
        t = t_interval(x, confidence)
        ci = {"ci_low": t["ci_low"], "ci_high": t["ci_high"], "ci_method": "t" if n >= MIN_N_CI else None,
              "note": None if n >= MIN_N_CI else f"n = {n}: too few seeds for a CI"}
        if n < MIN_N_CI:
            ci.update(ci_low=float("nan"), ci_high=float("nan"))
    else:
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


def _welch(xa: np.ndarray, xb: np.ndarray) -> tuple[float, float]:
    """Welch's standard error and Satterthwaite df of mean(a) - mean(b)."""
    va, vb = np.var(xa, ddof=1) / xa.size, np.var(xb, ddof=1) / xb.size
    se = math.sqrt(va + vb)
    den = va ** 2 / (xa.size - 1) + vb ** 2 / (xb.size - 1)
    return se, (float((va + vb) ** 2 / den) if den > 0 else float(xa.size + xb.size - 2))


def _t_ci(diff: float, se: float, df: float, confidence: float) -> tuple[float, float]:
    if not (math.isfinite(se) and math.isfinite(df)):
        return float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    return diff - half, diff + half


def _split(a: Mapping[int, float], b: Mapping[int, float]) -> tuple[dict, dict, list, list, list]:
    a = {int(k): float(v) for k, v in a.items() if v is not None and math.isfinite(float(v))}
    b = {int(k): float(v) for k, v in b.items() if v is not None and math.isfinite(float(v))}
    shared = sorted(set(a) & set(b))
    return a, b, shared, sorted(set(a) - set(b)), sorted(set(b) - set(a))


def compare_pair(a: Mapping[int, float], b: Mapping[int, float], *, confidence: float = 0.95) -> dict:
    """Compare two arms given as ``{seed: value}`` (NaN values are dropped first), over seeds.

    At least 2 shared seeds: paired design on them -- paired t test (primary) with its t interval
    of mean(a - b), Wilcoxon signed-rank beside it, Cohen's d_z; seeds in one arm only are dropped
    and listed.  Otherwise unpaired -- Welch t test and interval (primary), Mann-Whitney U beside
    it, Cohen's d.  ``se`` and ``df`` feed the equivalence test; no multiplicity correction here
    (:func:`conclude`)."""
    a, b, shared, only_a, only_b = _split(a, b)
    paired = len(shared) >= 2
    notes = []
    if paired:
        if only_a or only_b:
            notes.append(f"paired on the {len(shared)} shared seeds; dropped seeds only in a: {only_a}, "
                         f"only in b: {only_b}")
        xa, xb = np.array([a[s] for s in shared]), np.array([b[s] for s in shared])
        t = paired_tests(xa, xb)
        primary, secondary = "ttest_rel", "wilcoxon"
        d = xa - xb
        diff, se, df = float(np.mean(d)), float(np.std(d, ddof=1) / math.sqrt(d.size)), float(d.size - 1)
        effect, effect_name = cohens_dz(xa, xb), "cohens_dz"
        extra = {"median_diff": float(np.median(d)), "cliffs_delta": None, "hodges_lehmann": None}
    else:
        xa, xb = np.array([a[s] for s in sorted(a)]), np.array([b[s] for s in sorted(b)])
        if (only_a or only_b) and a and b:
            notes.append(f"fewer than 2 shared seeds (only in a: {only_a}, only in b: {only_b}); unpaired tests used")
        t = unpaired_tests(xa, xb)
        primary, secondary = "welch_t", "mannwhitneyu"
        diff = float(np.mean(xa) - np.mean(xb)) if xa.size and xb.size else float("nan")
        se, df = _welch(xa, xb) if xa.size >= 2 and xb.size >= 2 else (float("nan"), float("nan"))
        effect, effect_name = cohens_d(xa, xb), "cohens_d"
        extra = {"median_diff": None, "cliffs_delta": cliffs_delta(xa, xb), "hodges_lehmann": hodges_lehmann(xa, xb)}
    if t["note"]:
        notes.append(t["note"])
    n_min = min(xa.size, xb.size)
    lo, hi = _t_ci(diff, se, df, confidence) if n_min >= MIN_N_CI else (float("nan"), float("nan"))
    if n_min < MIN_N_CI:
        notes.append(f"{n_min} seed(s): too few for an interval")
    return {
        "paired": paired, "seed_sets_differ": bool(only_a or only_b), "shared_seeds": shared if paired else [],
        "seeds_dropped": {"a": only_a, "b": only_b} if paired else {"a": [], "b": []},
        "n_a": int(xa.size), "n_b": int(xb.size), "n_pairs": int(xa.size) if paired else 0,
        "mean_a": float(np.mean(xa)) if xa.size else float("nan"),
        "mean_b": float(np.mean(xb)) if xb.size else float("nan"),
        "inference": "seeds", "test": primary, "statistic": t[primary]["statistic"], "p": t[primary]["p"],
        "secondary_test": secondary, "secondary_statistic": t[secondary]["statistic"],
        "secondary_p": t[secondary]["p"], "diff": diff, "se": se, "df": df,
        "diff_ci_low": lo, "diff_ci_high": hi, "diff_ci_method": "t",
        "diff_ci_seeds_low": lo, "diff_ci_seeds_high": hi, "p_seeds": t[primary]["p"],
        "effect_size": effect, "effect_size_name": effect_name, **extra, "note": "; ".join(notes) or None,
    }


def tost_p(diff: float, se: float, df: float, margin: float) -> float:
    """Schuirmann's two one-sided t tests of |true difference| < margin: the larger of the two
    one-sided p-values (NaN where the difference or its standard error is undefined)."""
    if not all(math.isfinite(x) for x in (diff, se, df, margin)) or margin <= 0:
        return float("nan")
    if se == 0:
        return 0.0 if abs(diff) < margin else 1.0
    p_low = float(stats.t.sf((diff + margin) / se, df))    # H0: diff <= -margin
    p_high = float(stats.t.cdf((diff - margin) / se, df))  # H0: diff >= +margin
    return max(p_low, p_high)


def margin_for(margin: float | Mapping[str, float] | None, metric: str) -> float | None:
    """The equivalence margin of ``metric``: one number for every metric, or a per-metric mapping."""
    if margin is None:
        return None
    if isinstance(margin, Mapping):
        v = margin.get(metric)
        if v is None:  # a per-label metric under a declared PREFIX.* margin
            v = next((m for k, m in margin.items() if "*" in k.split(".") and matches(metric, k)), None)
        return None if v is None else float(v)
    return float(margin)


def conclude(pairs: Sequence[dict], *, alpha: float = 0.05, margin: float | Mapping[str, float] | None = None,
             confidence: float = 0.95) -> None:
    """Holm within each family (``pair["family"]``, default exploratory) over the difference tests
    and, separately, over the TOST tests; then each pair's ``conclusion`` (one of :data:`WORDS`),
    ``significant``, ``equivalent``, the TOST fields and its ``sentence``.  Updates in place."""
    for p in pairs:
        p.setdefault("family", "exploratory")
        m = margin_for(margin, p["metric"])
        p["margin"] = m
        p["p_tost"] = tost_p(_f(p["diff"]), _f(p.get("se")), _f(p.get("df")), m) if m else float("nan")
        lo90, hi90 = _t_ci(_f(p["diff"]), _f(p.get("se")), _f(p.get("df")), 1 - 2 * alpha)
        p["diff_ci90_low"], p["diff_ci90_high"] = lo90, hi90
    for fam in dict.fromkeys(p["family"] for p in pairs):
        members = [p for p in pairs if p["family"] == fam]
        for key, src in (("p_holm", "p"), ("p_tost_holm", "p_tost"), ("secondary_p_holm", "secondary_p")):
            for p, h in zip(members, holm([_f(p.get(src)) for p in members])):
                p[key] = float(h)
        m_fam = sum(1 for p in members if math.isfinite(_f(p.get("p"))))
        for p in members:
            p["family_size"] = m_fam
    for p in pairs:
        ph, pt = _f(p["p_holm"]), _f(p["p_tost_holm"])
        p["significant"] = bool(math.isfinite(ph) and ph < alpha)
        p["equivalent"] = bool(math.isfinite(pt) and pt < alpha)
        p["conclusion"] = "differs" if p["significant"] else ("equivalent" if p["equivalent"] else "inconclusive")
        p["sentence"] = pair_sentence(p, alpha=alpha, confidence=confidence)


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


_INFERENCE = {"seeds": "over seeds", "seeds+cases": "over seeds and test cases",
              "seeds+subset": "over seeds and the probe's test subset"}


def _head(pair: Mapping, confidence: float) -> tuple[str, int]:
    a, b, metric = pair["a"], pair["b"], pair["metric"]
    diff, lo, hi = _f(pair["diff"]), _f(pair["diff_ci_low"]), _f(pair["diff_ci_high"])
    dec = _decimals(diff, lo, hi)
    what = "mean difference" if pair["paired"] else "difference in means"
    level = f"{round(confidence * 100):d}%"
    head = f"{a} vs {b} on {metric}: {what} {_fmt_signed(diff, dec)}"
    inf = pair.get("inference", "seeds")
    if math.isfinite(lo) and math.isfinite(hi):
        other = ("diff_ci_seeds", "over seeds only, on this test set,") if inf != "seeds" else \
            ("diff_ci_seeds_cases", "over seeds and test cases")
        label = _INFERENCE.get(inf, inf) + (", on this test set," if inf == "seeds" and
                                             pair.get("diff_ci_seeds_cases_low") is not None else "")
        head += f" ({level} CI {label} {_fmt_signed(lo, dec)} to {_fmt_signed(hi, dec)}"
        lo2, hi2 = _f(pair.get(f"{other[0]}_low")), _f(pair.get(f"{other[0]}_high"))
        if math.isfinite(lo2) and math.isfinite(hi2) and (lo2, hi2) != (lo, hi):
            head += f"; {other[1]} {_fmt_signed(lo2, dec)} to {_fmt_signed(hi2, dec)}"
        head += ")"
    return head, dec


_TEST_NAMES = {"ttest_rel": "paired t", "welch_t": "Welch t", "crossed_t": "t (seeds + cases)",
               "wilcoxon": "Wilcoxon", "mannwhitneyu": "Mann-Whitney"}


def pair_sentence(pair: Mapping, alpha: float = 0.05, confidence: float = 0.95) -> str:
    """One plain-English sentence for a concluded pair (:func:`conclude`): the difference, its
    interval, the test, the Holm family and the word."""
    a, b = pair["a"], pair["b"]
    head, dec = _head(pair, confidence)
    p, ph = _f(pair["p"]), _f(pair.get("p_holm"))
    design = f"paired over {pair['n_pairs']} seeds" if pair["paired"] else f"unpaired, n={pair['n_a']} vs {pair['n_b']}"
    dropped = pair.get("seeds_dropped") or {}
    if dropped.get("a") or dropped.get("b"):
        design += f"; seeds dropped: {', '.join(map(str, dropped.get('a', []) + dropped.get('b', [])))}"
    if not math.isfinite(p):
        return f"{head} \u2014 inconclusive: not tested ({pair.get('note') or 'too few seeds'})."
    fam = f"Holm over the {pair.get('family_size', '?')} {pair.get('family', 'exploratory')} tests"
    test = "t (seeds + subset)" if pair.get("inference") == "seeds+subset" else _TEST_NAMES.get(pair["test"], pair["test"])
    body = (f"{head}, {test} {format_p(p)}, {fam} {format_p(ph)} "
            f"({design})")
    m = pair.get("margin")
    diff = _f(pair["diff"])
    eq = (f"equivalent within \u00b1{m:g}: the {round((1 - 2 * alpha) * 100)}% CI "
          f"{_fmt_signed(_f(pair.get('diff_ci90_low')), dec)} to {_fmt_signed(_f(pair.get('diff_ci90_high')), dec)} "
          f"lies inside the margin (TOST, Holm {format_p(_f(pair.get('p_tost_holm')))})") if m else ""
    if pair["conclusion"] == "differs":
        side = f"{a} higher" if diff > 0 else f"{b} higher"
        within = f", by less than the margin \u00b1{m:g} ({eq})" if pair.get("equivalent") else ""
        return f"{body} \u2014 differs at \u03b1={alpha:g}: {side}{within}."
    if pair["conclusion"] == "equivalent":
        return f"{body} \u2014 {eq}."
    why = (f"equivalence within \u00b1{m:g} is not shown either (TOST, Holm {format_p(_f(pair.get('p_tost_holm')))})"
           if m else "no equivalence margin was set, so this is not evidence that the arms are equal")
    return f"{body} \u2014 inconclusive: no difference shown at \u03b1={alpha:g}, and {why}."


def design_note(pairs: Sequence[Mapping], alpha: float = 0.05) -> str | None:
    """A sentence when no pair has the 3 seeds an interval needs (the tests then say little)."""
    ns = [int(p.get("n_pairs") or min(p.get("n_a") or 0, p.get("n_b") or 0)) for p in pairs]
    if not ns or max(ns) >= MIN_N_CI:
        return None
    return (f"with at most {max(ns)} seeds per arm there is no interval and the t tests have "
            f"{max(max(ns) - 1, 0)} degree(s) of freedom: read the values descriptively, or run at least "
            f"{MIN_N_CI} (better 10) paired seeds per arm")


def families_for(metrics: Sequence[str], primary: Sequence[str] | None) -> dict[str, str]:
    """``{metric: "primary" | "exploratory"}``: the declared primary metrics form the primary
    family; with none declared, every metric is exploratory."""
    return {m: ("primary" if is_declared(m, primary) else "exploratory") for m in metrics}


Pair = tuple[str, str]


def _key(a: str, b: str) -> frozenset:
    return frozenset((a, b))


def parse_pair(text: str) -> Pair:
    """``"a vs b"`` -> ``("a", "b")``; ValueError naming the text otherwise."""
    parts = [t.strip() for t in str(text).split(" vs ")]
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise ValueError(f"a pair is written 'ARM_A vs ARM_B' with two different arms (got {text!r})")
    return parts[0], parts[1]


def select_pairs(arms: Sequence[str], pairs: Sequence[Pair] | None = None) -> list[Pair]:
    """The pairs of arms to test: every pair (in arm order) when ``pairs`` is None, else the
    declared pairs (as declared: ``a`` first) whose two arms are both present."""
    if pairs is None:
        return list(combinations(list(arms), 2))
    have = set(arms)
    seen: set = set()
    out = []
    for a, b in pairs:
        if a in have and b in have and a != b and _key(a, b) not in seen:
            seen.add(_key(a, b))
            out.append((a, b))
    return out


def matches(metric: str, pattern: str) -> bool:
    """``pattern`` names ``metric``: equal, or equal with one dotted part ``*`` standing for any one
    part (one metric per label: ``test.auc_per_class.*`` covers ``test.auc_per_class.Effusion``,
    ``test.operating_points_per_class.*.sens_at_spec95`` each label's sensitivity)."""
    if metric == pattern or "*" not in pattern.split("."):
        return metric == pattern
    m, p = metric.split("."), pattern.split(".")
    return len(m) == len(p) and all(b == "*" or a == b for a, b in zip(m, p))


def is_declared(metric: str, declared: Sequence[str] | None) -> bool:
    """``metric`` is one of ``declared``, or falls under a declared pattern (:func:`matches`)."""
    return any(matches(metric, d) for d in declared or ())


def pair_family(a: str, b: str, metric: str, primary: Sequence[str] | None,
                primary_pairs: Sequence[Pair] | None = None) -> str:
    """``primary`` when ``metric`` is a declared primary metric and (when primary pairs are
    declared) ``a`` vs ``b`` is one of them, in either order; else ``exploratory``."""
    if not is_declared(metric, primary):
        return "exploratory"
    if primary_pairs is None:
        return "primary"
    return "primary" if _key(a, b) in {_key(x, y) for x, y in primary_pairs} else "exploratory"


def compare_arms(arms_by_metric: Mapping[str, Mapping[str, Mapping[int, float]]], *, alpha: float = 0.05,
                 n_resamples: int = 10000, seed: int = 0, method: str = "t", confidence: float = 0.95,
                 margin: float | Mapping[str, float] | None = None, primary: Sequence[str] | None = None,
                 pairs: Sequence[Pair] | None = None, primary_pairs: Sequence[Pair] | None = None) -> dict:
    """Describe every arm and compare every pair of arms (or the declared ``pairs``), for every metric.

    ``arms_by_metric[metric][arm] = {seed: value}``.  Returns ``{"by_metric": {metric: {"arms":
    {arm: describe(...)}}}, "pairs": [...], "holm": ..., "design_note": ...}``; each pair carries
    ``a``, ``b``, ``metric``, ``family`` (:func:`pair_family`: a primary metric, and with
    ``primary_pairs`` declared, one of those pairs), the :func:`compare_pair` fields and what
    :func:`conclude` adds (Holm within its family, TOST against ``margin``, the word and the sentence)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be in (0, 1)")
    by_metric: dict = {}
    out: list[dict] = []
    for metric, arms in arms_by_metric.items():
        desc = {}
        for name, vals in arms.items():
            desc[name] = {**describe(list(vals.values()), n_resamples=n_resamples, seed=seed, method=method,
                                     confidence=confidence),
                          "seeds": sorted(int(s) for s, v in vals.items() if v is not None and math.isfinite(float(v)))}
        by_metric[metric] = {"arms": desc}
        for an, bn in select_pairs(list(arms), pairs):
            r = compare_pair(arms[an], arms[bn], confidence=confidence)
            out.append({"a": an, "b": bn, "metric": metric,
                        "family": pair_family(an, bn, metric, primary, primary_pairs), **r})
    conclude(out, alpha=alpha, margin=margin, confidence=confidence)
    return {"by_metric": by_metric, "pairs": out, "design_note": design_note(out, alpha),
            "holm": holm_summary(out)}


def holm_summary(pairs: Sequence[Mapping]) -> dict:
    """Family sizes: ``{"families": {family: m}, "m_primary": ..., "m_exploratory": ...}``."""
    fams = {}
    for p in pairs:
        if math.isfinite(_f(p.get("p"))):
            fams[p.get("family", "exploratory")] = fams.get(p.get("family", "exploratory"), 0) + 1
    return {"families": fams, "m_primary": fams.get("primary", 0), "m_exploratory": fams.get("exploratory", 0)}
