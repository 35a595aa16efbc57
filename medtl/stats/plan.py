"""Seeds needed, before the study: power of medtl's own conclusion rule from pilot runs.

From pilot runs (at least 3 paired seeds per arm) the variance of a paired difference is split
as in :mod:`medtl.stats.hierarchical`: a *seed* part ``s2`` (seed-to-seed variance of the per-seed
difference on this test set, interaction included) that shrinks as ``1/m``, and a *case* part
``c2`` (the test set's own sampling error of the seed-averaged difference) that does not shrink
with seeds.  With ``m`` seeds per arm the standard error is ``sqrt(s2/m + c2)`` with
Welch-Satterthwaite df, exactly as ``medtl compare`` will compute it.

* **difference**: power of the two-sided t test at ``alpha / k`` (Holm's first step over a
  family of ``k`` tests: a lower bound on Holm's power) to detect a true difference ``delta``,
  from the noncentral t distribution;
* **equivalence**: power of TOST at ``alpha / k`` to show ``|difference| < margin`` when the true
  difference is ``theta`` (default 0), from the two one-sided noncentral t tails.

A pilot of a few seeds estimates the seed variance poorly (from 5 seeds, the 95% range of s/sigma
is 0.35-1.67), and a plan on the point estimate falls short as often as not.  So the plan uses the
one-sided upper confidence limit of the pilot's seed variance (Browne 1995), ``s2 (n-1) /
chi2_{1-gamma}(n-1)`` at ``gamma = 0.8`` by default, and also reports the count from the point
estimate.

The seeds needed are the smallest ``m`` whose power reaches the target (default 0.8).  Where the
case part alone keeps the power below the target at any number of seeds, no number of seeds
reaches the conclusion on this test set; the plan says so and how much larger a test set would
need to be (case variance scales as 1/n).  Pure functions; nothing here reads files.
"""
from __future__ import annotations

import math

from scipy import stats

MAX_SEEDS = 500


def ucl_variance(s2: float, n: int, confidence: float | None) -> float:
    """One-sided upper ``confidence`` limit of a variance estimated from ``n`` values (the point
    estimate where ``confidence`` is None or n < 2)."""
    if confidence is None or n < 2:
        return s2
    return s2 * (n - 1) / float(stats.chi2.ppf(1 - confidence, n - 1))


def se_at(m: int, s2: float, c2: float, n_cases: int) -> tuple[float, float]:
    """Standard error and Satterthwaite df of a seed-averaged paired difference at ``m`` seeds."""
    a, b = s2 / m, c2
    var = a + b
    den = (a * a / (m - 1) if m > 1 else 0.0) + (b * b / (n_cases - 1) if n_cases > 1 else 0.0)
    return math.sqrt(var), (var * var / den if den > 0 else float(max(m - 1, 1)))


def power_difference(delta: float, se: float, df: float, alpha: float) -> float:
    """Power of the two-sided t test at ``alpha`` against a true difference ``delta``."""
    if se <= 0:
        return 1.0 if delta != 0 else alpha
    tc = float(stats.t.ppf(1 - alpha / 2, df))
    ncp = abs(delta) / se
    return float(stats.nct.sf(tc, df, ncp) + stats.nct.cdf(-tc, df, ncp))


def power_equivalence(margin: float, theta: float, se: float, df: float, alpha: float) -> float:
    """Power of TOST at ``alpha`` to show ``|diff| < margin`` when the true difference is ``theta``."""
    if se <= 0:
        return 1.0 if abs(theta) < margin else 0.0
    tc = float(stats.t.ppf(1 - alpha, df))
    # both one-sided tests must reject: P(T_low > tc) + P(T_high < -tc) - 1, from their noncentral tails
    p_low = float(stats.nct.sf(tc, df, (theta + margin) / se))
    p_high = float(stats.nct.cdf(-tc, df, (theta - margin) / se))
    return max(0.0, p_low + p_high - 1.0)


def seeds_needed(s2: float, c2: float, n_cases: int, *, goal: str, effect: float, theta: float = 0.0,
                 alpha: float = 0.05, k: int = 1, power: float = 0.8, max_seeds: int = MAX_SEEDS) -> dict:
    """The smallest seed count per arm whose power reaches ``power`` (``goal``: "difference" with
    ``effect`` = the true difference to detect, or "equivalence" with ``effect`` = the margin and
    ``theta`` the assumed true difference), the power curve at a few counts, and, where no count
    suffices, why and the test-set size factor that would."""
    if goal not in ("difference", "equivalence"):
        raise ValueError("goal must be 'difference' or 'equivalence'")
    a = alpha / max(k, 1)

    def pw(m: int) -> float:
        se, df = se_at(m, s2, c2, n_cases)
        return power_difference(effect, se, df, a) if goal == "difference" else \
            power_equivalence(effect, theta, se, df, a)

    curve = {m: pw(m) for m in (3, 5, 10, 20, 30, 50, 100) if m <= max_seeds}
    need = next((m for m in range(2, max_seeds + 1) if pw(m) >= power), None)
    out = {"goal": goal, "effect": effect, "theta": theta if goal == "equivalence" else None, "alpha": alpha,
           "family_size": k, "alpha_per_test": a, "power_target": power, "seeds_needed": need,
           "power_curve": curve, "seed_var": s2, "case_var": c2, "n_cases": n_cases,
           "se_floor": math.sqrt(c2), "reachable": need is not None}
    if need is None:
        out["why"] = _unreachable(s2, c2, n_cases, goal, effect, theta, a, power, max_seeds)
    return out


def _unreachable(s2: float, c2: float, n_cases: int, goal: str, effect: float, theta: float, a: float,
                 power: float, max_seeds: int) -> str:
    """Why no seed count reaches the target, and the test-set size factor (case variance ~ 1/n)
    that would at ``max_seeds`` (None when even that does not)."""
    factor = None
    for f in (1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32):
        se, df = se_at(max_seeds, s2, c2 / f, int(n_cases * f))
        ok = power_difference(effect, se, df, a) if goal == "difference" else \
            power_equivalence(effect, theta, se, df, a)
        if ok >= power:
            factor = f
            break
    head = (f"even {max_seeds} seeds per arm do not reach power {power:g}: the test set's own sampling error "
            f"(se {math.sqrt(c2):.4g} of the difference, which more seeds do not shrink) is too large for "
            f"{'a difference of' if goal == 'difference' else 'a margin of'} {effect:g}")
    return head + (f"; a test set about {factor:g}x larger ({int(round(n_cases * factor))} cases) would be needed"
                   if factor else "; no test set up to 32x larger suffices")
