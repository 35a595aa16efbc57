"""Per-arm statistics of probe results: each run's record flattened to scalar metrics, then
mean and t CI over seeds (:func:`medtl.stats.compare.describe`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from .compare import describe


def _f(v) -> float:
    return float("nan") if v is None else float(v)


@dataclass(frozen=True)
class ProbeMetrics:
    """How a per-run probe record becomes flat metrics: ``scalars(rec) -> {metric: float}`` and
    ``headline(records) -> [metric]`` (the metrics the arms are tested on).  The probes package
    supplies it from its registry (:func:`medtl.probes.registry.probe_metrics`); statistics stay
    independent of which probes exist."""

    scalars: Callable[[Mapping], dict[str, float]]
    headline: Callable[[Sequence[Mapping]], list[str]]


CALIBRATION_KEYS = ("ece", "ece_equal_mass", "brier", "nll", "ece_after_temperature")


def calibration_scalars(rec: Mapping) -> dict[str, float]:
    """``calibration.<key>`` of a per-run record (the run's own test calibration, not a probe)."""
    cal = rec.get("calibration") or {}
    return {f"calibration.{k}": _f(cal[k]) for k in CALIBRATION_KEYS if cal.get(k) is not None}


def mean_reliability(recs: Sequence[Mapping], n_resamples: int = 2000) -> dict | None:
    """An arm's mean reliability diagram: per equal-width bin, the mean over seeds of the mean
    predicted probability and of the observed frequency (seeds with an empty bin left out of that
    bin), with a t CI of the observed mean over seeds; None when no run has the data or
    the runs' bins differ."""
    rels = [(r.get("calibration") or {}).get("reliability") for r in recs]
    rels = [x for x in rels if x and x.get("count")]
    if not rels or len({tuple(x["bin_lower"]) for x in rels}) != 1:
        return None
    pred = np.array([[np.nan if v is None else v for v in x["mean_predicted"]] for x in rels], float)
    obs = np.array([[np.nan if v is None else v for v in x["observed"]] for x in rels], float)
    cis = [describe(obs[:, j], n_resamples=n_resamples) for j in range(obs.shape[1])]
    ok = np.isfinite(pred)
    mean_pred = np.where(ok.any(0), np.where(ok, pred, 0.0).sum(0) / np.maximum(ok.sum(0), 1), np.nan)
    return {"bin_lower": rels[0]["bin_lower"], "bin_upper": rels[0]["bin_upper"], "n_runs": len(rels),
            "mean_predicted": mean_pred.tolist(), "observed": [c["mean"] for c in cis],
            "ci_low": [c["ci_low"] for c in cis], "ci_high": [c["ci_high"] for c in cis],
            "n_seeds_per_bin": [c["n"] for c in cis]}


HEADLINE_ATTACKS = ("pgd_linf", "pgd_l2", "fgsm_linf", "fgsm_l2")


def headline_attack(names: Sequence[str]) -> str | None:
    """The one attack whose largest-ε AUC is a headline metric: white-box PGD L∞ where it ran
    (the strongest standard attack), else the first of :data:`HEADLINE_ATTACKS`, else the first."""
    names = list(dict.fromkeys(names))
    return next((a for a in HEADLINE_ATTACKS if a in names), names[0] if names else None)


def robustness_pairs(runs: Sequence[Mapping], metrics: ProbeMetrics, *, alpha: float = 0.05,
                     n_resamples: int = 2000, seed: int = 0, margin=None, primary: Sequence[str] | None = None,
                     pairs=None, primary_pairs=None) -> dict:
    """Every pair of arms on every headline metric, as ``medtl compare`` tests them (paired t over
    shared seeds; an attack AUC measured on a test subset also counts that subset's sampling error,
    with the finite-population correction), Holm within each family (``primary``: the headline
    metrics declared primary; the rest exploratory; ``pairs``/``primary_pairs`` as in
    :func:`medtl.stats.compare.compare_arms`); ``descriptive_only`` when an arm has < 3 seeds."""
    from .compare import MIN_N_CI, compare_arms, conclude, holm_summary

    heads = metrics.headline(runs)
    values: dict[str, dict[str, dict[int, float]]] = {m: {} for m in heads}
    for r in runs:
        flat = metrics.scalars(r)
        for m in heads:
            values[m].setdefault(r["arm"], {})[int(r["seed"])] = flat.get(m, float("nan"))
    empty = {"pairs": [], "design_note": None}
    res = compare_arms(values, alpha=alpha, n_resamples=n_resamples, seed=seed, margin=margin,
                       primary=primary, pairs=pairs, primary_pairs=primary_pairs
                       ) if len(values.get("clean.auc", {})) >= 2 else empty
    for p in res["pairs"]:
        if p["metric"].startswith("adversarial.") and p["paired"]:
            _subset_pair(p, runs)
        elif p["metric"] == "clean.auc" and p["paired"]:
            _clean_pair(p, runs)
    conclude(res["pairs"], alpha=alpha, margin=margin)
    n_by_arm = {}
    for r in runs:
        n_by_arm[r["arm"]] = n_by_arm.get(r["arm"], 0) + 1
    return {"pairs": res["pairs"], "holm": holm_summary(res["pairs"]), "headline": heads,
            "design_note": res.get("design_note"), "descriptive_only": any(n < MIN_N_CI for n in n_by_arm.values())}


def attack_predictions(rec: Mapping, key: str):
    """``(RunPredictions, fraction)`` of an ``adversarial.<attack>.auc@<eps>/255`` metric of one run:
    the per-image probabilities on the attacked sample and the finite-population factor 1 - n/N of
    that sample in the N-image test set; None where the record has no per-image probabilities."""
    from .hierarchical import RunPredictions

    sample = rec.get("adversarial_sample") or {}
    _, attack, rest = key.split(".", 2)
    eps = float(rest.split("@")[1].split("/")[0]) / 255
    row = next((r for r in rec["adversarial"].get(attack, []) if abs(r["eps"] - eps) < 1e-9), None)
    if row is None or row.get("p") is None or sample.get("y") is None or not sample.get("n_test"):
        return None
    y = np.asarray(sample["y"], int)
    return RunPredictions(y, np.asarray(row["p"], float), ids=np.asarray(sample["index"])), \
        max(0.0, 1.0 - len(y) / float(sample["n_test"]))


def _subset_pair(pair: dict, runs: Sequence[Mapping]) -> None:
    """A paired attack-AUC comparison over seeds *and* the attacked subset's cases (counted once,
    with the finite-population correction): the pair's test and interval."""
    from .hierarchical import diff_ci

    by = {(r["arm"], int(r["seed"])): r for r in runs}
    got = [(attack_predictions(by[(pair["a"], s)], pair["metric"]), attack_predictions(by[(pair["b"], s)],
                                                                                      pair["metric"]))
           for s in pair["shared_seeds"] if (pair["a"], s) in by and (pair["b"], s) in by]
    got = [(a, b) for a, b in got if a is not None and b is not None]
    if len(got) < 2 or len(got) != len(pair["shared_seeds"]):
        return
    frac = got[0][0][1]
    r = diff_ci([a[0] for a, _ in got], [b[0] for _, b in got], "auc", fraction=frac)
    if np.isfinite(r["ci_low"]):
        pair.update(inference="seeds+subset", test="crossed_t", diff=r["estimate"], se=r["se"], df=r["df"],
                    p=r["p"], diff_ci_low=r["ci_low"], diff_ci_high=r["ci_high"], subset_fraction_fpc=frac)


def _run_preds(rec: Mapping):
    from ..errors import DataError
    from ..runs import read_predictions
    from .hierarchical import RunPredictions

    try:
        d = read_predictions(rec["run_dir"]) if rec.get("run_dir") else None
    except (DataError, OSError):
        return None
    if d is None or np.asarray(d["p"]).ndim != 1:
        return None
    return RunPredictions(np.asarray(d["y"]).astype(int), np.asarray(d["p"], float), ids=d.get("ids"))


def _clean_pair(pair: dict, runs: Sequence[Mapping]) -> None:
    """The clean (test) AUC pair as ``medtl compare`` tests test.auc: over seeds and test cases,
    from the runs' test predictions (unchanged where a run folder has none)."""
    from .hierarchical import diff_ci

    by = {(r["arm"], int(r["seed"])): r for r in runs}
    got = [(_run_preds(by[(pair["a"], s)]), _run_preds(by[(pair["b"], s)])) for s in pair["shared_seeds"]
           if (pair["a"], s) in by and (pair["b"], s) in by]
    if len(got) < 2 or len(got) != len(pair["shared_seeds"]) or any(a is None or b is None for a, b in got):
        return
    r = diff_ci([a for a, _ in got], [b for _, b in got], "auc")
    if np.isfinite(r["ci_low"]):
        pair.update(inference="seeds+cases", test="crossed_t", diff=r["estimate"], se=r["se"], df=r["df"], p=r["p"],
                    diff_ci_low=r["ci_low"], diff_ci_high=r["ci_high"], diff_ci_seeds_cases_low=r["ci_low"],
                    diff_ci_seeds_cases_high=r["ci_high"])


def with_subset_ci(d: dict, preds: Sequence) -> dict:
    """Add ``ci_low_subset``/``ci_high_subset`` to an arm's summary ``d`` of an attack AUC measured on
    a seeded subset of the test set: the t interval over seeds and the subset's cases, the subset's
    case variance counted once (seed-averaged) with the finite-population correction 1 - n/N, so
    the interval is for the AUC on the whole test set."""
    from .hierarchical import mean_ci

    if len(preds) < 2 or any(p is None for p in preds):
        return d
    r = mean_ci([p[0] for p in preds], "auc", fraction=preds[0][1])
    if not np.isfinite(r["ci_low"]):
        return d
    return d | {"ci_low_subset": r["ci_low"], "ci_high_subset": r["ci_high"], "subset_fpc": preds[0][1]}


def clean_seed_case_ci(recs: Sequence[Mapping]) -> dict:
    """The clean (test) AUC's interval over seeds and test cases, from the runs' test predictions
    (``ci_seeds_cases_low/high``; empty where a run folder has none, e.g. a report from JSON)."""
    from .hierarchical import mean_ci

    preds = [_run_preds(r) for r in recs]
    if not preds or any(p is None for p in preds):
        return {}
    res = mean_ci(preds, "auc")
    if not np.isfinite(res["ci_low"]):
        return {}
    return {"ci_seeds_cases_low": res["ci_low"], "ci_seeds_cases_high": res["ci_high"]}


def aggregate(runs: Sequence[Mapping], metrics: ProbeMetrics, n_resamples: int = 2000) -> dict:
    """``{arm: {"seeds": [...], "metrics": {key: describe(...) + values}}}`` over the runs' records
    (adversarial AUCs measured on a test subset also get :func:`with_subset_ci`)."""
    by_arm: dict[str, list[Mapping]] = {}
    for r in runs:
        by_arm.setdefault(r["arm"], []).append(r)
    arms = {}
    for arm, recs in by_arm.items():
        flat = [metrics.scalars(r) for r in recs]
        keys = list(dict.fromkeys(k for f in flat for k in f))
        by_key = {}
        for k in keys:
            d = describe([f.get(k, float("nan")) for f in flat], n_resamples=n_resamples) | {
                "values": [f.get(k) for f in flat]}
            sub = [attack_predictions(r, k) for r in recs] if k.startswith("adversarial.") else []
            by_key[k] = with_subset_ci(d, sub) if sub and all(x is not None and x[1] > 0 for x in sub) else d
        if "clean.auc" in by_key:
            by_key["clean.auc"] |= clean_seed_case_ci(recs)
        arms[arm] = {"seeds": [r["seed"] for r in recs], "metrics": by_key,
                     "reliability": mean_reliability(recs, n_resamples)}
    return arms
