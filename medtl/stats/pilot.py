"""``medtl plan``: seeds needed per arm, from pilot run folders (:mod:`medtl.stats.plan` does the
power arithmetic; this module reads the pilot's variance components the way ``medtl compare``
will compute them)."""
from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import ConfigError
from .compare import MIN_N_CI
from .comparison import run_predictions, collect_values, external_name
from .hierarchical import METRICS as CASE_METRICS
from .hierarchical import CaseSet, crossed
from .plan import power_difference, power_equivalence, se_at, seeds_needed, ucl_variance


def _case_metric(metric: str) -> str | None:
    """The predictions-level name (``auc``...) of a test-set metric whose case variance medtl can
    compute, else None."""
    ext = external_name(metric)
    section, _, name = metric.rpartition(".") if ext else metric.partition(".")
    return name if (section == "test" or section == f"external.{ext}") and name in CASE_METRICS else None


def pilot_components(arms: Mapping, a: str, b: str, metric: str, seeds: Sequence[int] | None = None,
                     scope: str = "patients") -> dict:
    """Seed and case variance of the paired difference a - b over the pilot's shared seeds (only
    ``seeds`` where given)."""
    values = collect_values({a: arms[a], b: arms[b]}, metric)
    shared = sorted(s for s in values[a] if s in values[b] and math.isfinite(values[a][s])
                    and math.isfinite(values[b][s]) and (seeds is None or s in seeds))
    if len(shared) < MIN_N_CI:
        raise ConfigError(f"{a} and {b} share {len(shared)} finished seed(s) with {metric}: a pilot needs at least "
                          f"{MIN_N_CI} paired seeds per arm")
    d = np.array([values[a][s] - values[b][s] for s in shared])
    out = {"a": a, "b": b, "metric": metric, "pilot_seeds": shared, "pilot_diff": float(d.mean()),
           "seed_var": float(np.var(d, ddof=1)), "case_var": 0.0, "n_cases": 10**6, "cases_covered": False}
    name = _case_metric(metric)
    if scope == "test_set":
        return out | {"note": "scope test_set: conclusions about this test set, its sampling does not count"}
    if name is None:
        return out | {"note": "a metric without per-case predictions: test-set sampling is not covered"}
    ext = external_name(metric)
    pa, pb = run_predictions(arms[a], ext), run_predictions(arms[b], ext)
    both = [s for s in shared if s in pa and s in pb]
    if len(both) < MIN_N_CI:
        return out | {"note": "too few runs with predictions: test-set sampling is not covered"}
    r = crossed([CaseSet([(1.0, [pa[s] for s in both]), (-1.0, [pb[s] for s in both])])], name)
    return out | {"seed_var": r["var_seed_term"] * len(both), "case_var": r["var_case_term"],
                  "n_cases": int(len(pa[both[0]].y)), "cases_covered": True, "note": None}


def plan_runs(dirs: Sequence[str | Path], metrics: Sequence[str], *, difference: float | None = None,
              margin: float | None = None, theta: float = 0.0, alpha: float = 0.05, power: float = 0.8,
              family_size: int | None = None, planned_seeds: int | None = None,
              seeds: Sequence[int] | None = None, scope: str = "patients",
              confidence: float | None = 0.8) -> dict:
    """For every pair of arms in the pilot folders and every metric: the variance components and
    the seeds needed per arm to detect ``difference`` and/or to show equivalence within
    ``margin`` (``theta``: the true difference assumed for equivalence), at ``alpha`` over a Holm
    family of ``family_size`` tests (default: every pair x metric planned here); ``seeds``: use only
    these seeds of the pilot folders; ``scope``: as ``medtl compare`` will conclude (``patients``:
    the test set's sampling counts; ``test_set``: it does not); ``confidence``: plan on that upper
    confidence limit of the pilot's seed variance (None: on the point estimate; the count from the
    point estimate is reported as ``seeds_needed_point`` either way)."""
    from ..runs import discover_arms

    if difference is None and margin is None:
        raise ConfigError("plan: give the difference to detect, or an equivalence margin, or both")
    for label, v in (("difference", difference), ("margin", margin)):
        if v is not None and not v > 0:
            raise ConfigError(f"plan: the {label} must be positive (got {v})")
    if not 0 < power < 1 or not 0 < alpha < 1:
        raise ConfigError(f"plan: power and alpha must lie between 0 and 1 (got {power}, {alpha})")
    arms = discover_arms(dirs)
    if len(arms) < 2:
        raise ConfigError(f"plan: the pilot folders hold {len(arms)} arm(s); a plan compares at least two")
    pairs = [(a, b, m) for m in metrics for a, b in combinations(list(arms), 2)]
    k = family_size or len(pairs)
    rows = []
    for a, b, m in pairs:
        comp = pilot_components(arms, a, b, m, seeds, scope)
        comp["seed_var_plan"] = ucl_variance(comp["seed_var"], len(comp["pilot_seeds"]), confidence)
        comp["confidence"] = confidence
        goals = {}
        specs = ([("difference", difference, 0.0)] if difference is not None else []) + \
            ([("equivalence", margin, theta)] if margin is not None else [])
        for goal, effect, th in specs:
            kw = dict(goal=goal, effect=effect, theta=th, alpha=alpha, k=k, power=power)
            goals[goal] = seeds_needed(comp["seed_var_plan"], comp["case_var"], comp["n_cases"], **kw)
            goals[goal]["seeds_needed_point"] = seeds_needed(comp["seed_var"], comp["case_var"], comp["n_cases"],
                                                             **kw)["seeds_needed"]
        rows.append(comp | {"plans": goals, "sentences": [plan_sentence(comp, g, planned_seeds)
                                                          for g in goals.values()]})
    return {"kind": "medtl.plan", "inputs": [str(d) for d in dirs], "metrics": list(metrics), "alpha": alpha,
            "scope": scope, "confidence": confidence,
            "power": power, "family_size": k, "difference": difference, "margin": margin, "theta": theta,
            "planned_seeds": planned_seeds, "pairs": rows}


def plan_sentence(comp: Mapping, g: Mapping, planned: int | None = None) -> str:
    what = (f"detect a difference of {g['effect']:g}" if g["goal"] == "difference" else
            f"show equivalence within \u00b1{g['effect']:g} (true difference {g['theta']:g})")
    head = (f"{comp['a']} vs {comp['b']} on {comp['metric']}: to {what} with power {g['power_target']:g} at "
            f"\u03b1={g['alpha']:g} (Holm over {g['family_size']} tests, planned at \u03b1/{g['family_size']})")
    src = (f"from {len(comp['pilot_seeds'])} pilot seeds (seed sd of the difference {math.sqrt(comp['seed_var']):.4g}"
           + (f", test-set se {math.sqrt(comp['case_var']):.4g} on {comp['n_cases']} cases)" if comp["cases_covered"]
              else f"; {comp.get('note') or 'test-set sampling not covered'})"))
    conf = comp.get("confidence")
    basis = (f"planned on the {conf:.0%} upper confidence limit of the pilot's seed variance; "
             f"{g.get('seeds_needed_point') or 'no count'} on its point estimate") if conf else \
        "planned on the pilot's point estimate of the seed variance"
    if g["seeds_needed"] is None:
        body = f"{head}, {src}: {g['why']} ({basis})."
    else:
        body = f"{head} needs {g['seeds_needed']} paired seeds per arm ({basis}), {src}."
    if planned:
        se, df = se_at(planned, comp.get("seed_var_plan", comp["seed_var"]), comp["case_var"], comp["n_cases"])
        pw = power_difference(g["effect"], se, df, g["alpha_per_test"]) if g["goal"] == "difference" else \
            power_equivalence(g["effect"], g["theta"], se, df, g["alpha_per_test"])
        verdict = "can" if pw >= g["power_target"] else "is unlikely to"
        body += f" As configured ({planned} seeds per arm) the study {verdict} reach that conclusion (power {pw:.2f})."
    return body
