"""Per-arm statistics of probe results: each run's record flattened to scalar metrics, then
mean and bootstrap CI over seeds (:func:`medtl.stats.compare.describe`)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .compare import describe


def _f(v) -> float:
    return float("nan") if v is None else float(v)


def scalar_metrics(rec: Mapping) -> dict[str, float]:
    """Flat scalar metrics of one run's probe record (as :func:`medtl.probes.suite.probe_run` makes it)."""
    out = {"clean.auc": _f(rec["clean"]["auc"])}
    for k in ("p_change_1px", "consistency", "jaggedness", "mean_abs_dp_per_px", "scale_p_change_max"):
        out[f"translation.{k}"] = _f(rec["translation"][k])
    for s, v in enumerate(rec["translation"]["p_change_by_shift"]):
        out[f"translation.p_change@{s}px"] = _f(v)
    units = rec.get("units") or {}
    if units.get("input_px_per_native_px", 1.0) != 1.0:
        out["translation.p_change_1native_px"] = _f(units.get("p_change_1native_px"))
    for name, rows in rec["adversarial"].items():
        for r in rows:
            out[f"adversarial.{name}.auc@{r['eps'] * 255:g}/255"] = _f(r["auc"])
    for name, rows in rec["corruptions"].items():
        out[f"corruptions.{name}.mean_auc"] = float(np.nanmean([_f(r["auc"]) for r in rows]))
    out["corruptions.mean_auc_drop"] = _f(rec["corruptions_mean_auc_drop"])
    sb = rec.get("shape_bias") or {}
    for k in ("shape_bias", "shape_only_acc", "texture_only_acc"):
        if k in sb:
            out[f"shape_bias.{k}"] = _f(sb[k])
    sc = rec.get("shortcut") or {}
    for k in ("auc_full", "auc_lung_masked", "auc_lung_only", "auc_border_only", "masked_retention"):
        if k in sc:
            out[f"shortcut.{k}"] = _f(sc[k])
    if "flagged" in sc:
        out["shortcut.flagged"] = float(bool(sc["flagged"]))
    cal = rec.get("calibration") or {}
    for k in CALIBRATION_KEYS:
        if cal.get(k) is not None:
            out[f"calibration.{k}"] = _f(cal[k])
    return out


CALIBRATION_KEYS = ("ece", "ece_equal_mass", "brier", "nll", "ece_after_temperature")


def mean_reliability(recs: Sequence[Mapping], n_resamples: int = 2000) -> dict | None:
    """An arm's mean reliability diagram: per equal-width bin, the mean over seeds of the mean
    predicted probability and of the observed frequency (seeds with an empty bin left out of that
    bin), with a bootstrap CI of the observed mean over seeds; None when no run has the data or
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


def headline_metrics(runs: Sequence[Mapping]) -> list[str]:
    """The metrics the arms are tested on: clean AUC, P(change) at one pixel (native pixels when
    any run upscales its input), consistency, AUC at each attack's largest ε, mean corruption
    AUC drop, shape bias."""
    flat = [scalar_metrics(r) for r in runs]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    upscaled = any((r.get("units") or {}).get("input_px_per_native_px", 1.0) != 1.0 for r in runs)
    out = ["clean.auc", "translation.p_change_1native_px" if upscaled else "translation.p_change_1px",
           "translation.consistency"]
    for attack in dict.fromkeys(a for r in runs for a in r["adversarial"]):
        eps = [k for k in keys if k.startswith(f"adversarial.{attack}.auc@")]
        if eps:
            out.append(max(eps, key=lambda k: float(k.split("@")[1].split("/")[0])))
    out += ["corruptions.mean_auc_drop", "shape_bias.shape_bias"]
    return [k for k in out if k in keys]


def robustness_pairs(runs: Sequence[Mapping], *, alpha: float = 0.05, n_resamples: int = 2000,
                     seed: int = 0) -> dict:
    """Every pair of arms on every headline metric, as ``medtl compare`` tests them (paired over
    shared seeds, Holm over the whole family); ``descriptive_only`` when an arm has < 3 seeds."""
    from .compare import MIN_N_CI, compare_arms

    heads = headline_metrics(runs)
    values: dict[str, dict[str, dict[int, float]]] = {m: {} for m in heads}
    for r in runs:
        flat = scalar_metrics(r)
        for m in heads:
            values[m].setdefault(r["arm"], {})[int(r["seed"])] = flat.get(m, float("nan"))
    res = compare_arms(values, alpha=alpha, n_resamples=n_resamples, seed=seed) if len(values.get(
        "clean.auc", {})) >= 2 else {"pairs": [], "holm": {"m_primary": 0, "m_secondary": 0}, "design_note": None}
    n_by_arm = {}
    for r in runs:
        n_by_arm[r["arm"]] = n_by_arm.get(r["arm"], 0) + 1
    return {"pairs": res["pairs"], "holm": res["holm"], "headline": heads, "design_note": res.get("design_note"),
            "descriptive_only": any(n < MIN_N_CI for n in n_by_arm.values())}


def subset_errors(rec: Mapping) -> dict[str, float]:
    """Per adversarial AUC metric of one run: the DeLong standard error of that AUC on the attacked
    images, where the attacks ran on a subset of the test set (empty when they ran on all of it)."""
    n_sub, n_test = rec["clean"].get("n_probe_sample"), rec["clean"].get("n_test")
    if not n_sub or not n_test or n_sub >= n_test:
        return {}
    return {f"adversarial.{name}.auc@{r['eps'] * 255:g}/255": float(r["auc_se"])
            for name, rows in rec["adversarial"].items() for r in rows if r.get("auc_se") is not None}


def with_subset_error(d: dict, se: Sequence[float], z: float = 1.959964) -> dict:
    """Add ``ci_low_subset``/``ci_high_subset`` to a per-arm summary ``d``: the normal-approximation
    interval of the arm mean with the between-seed variance and the test-subset sampling variance
    (mean DeLong variance, counted in full: every seed is attacked on the same subset, so that
    error does not average out over seeds)."""
    vals = np.asarray([v for v in d.get("values") or [] if v is not None], float)
    vals = vals[np.isfinite(vals)]
    if len(vals) < 2 or not se:
        return d
    var = float(np.var(vals, ddof=1)) / len(vals) + float(np.mean(np.square(se)))
    half = z * np.sqrt(var)
    return d | {"ci_low_subset": float(d["mean"] - half), "ci_high_subset": float(d["mean"] + half)}


def aggregate(runs: Sequence[Mapping], n_resamples: int = 2000) -> dict:
    """``{arm: {"seeds": [...], "metrics": {key: describe(...) + values}}}`` over the runs' records
    (adversarial AUCs measured on a test subset also get :func:`with_subset_error`)."""
    by_arm: dict[str, list[Mapping]] = {}
    for r in runs:
        by_arm.setdefault(r["arm"], []).append(r)
    arms = {}
    for arm, recs in by_arm.items():
        flat = [scalar_metrics(r) for r in recs]
        keys = list(dict.fromkeys(k for f in flat for k in f))
        errs = [subset_errors(r) for r in recs]
        metrics = {}
        for k in keys:
            d = describe([f.get(k, float("nan")) for f in flat], n_resamples=n_resamples) | {
                "values": [f.get(k) for f in flat]}
            se = [e[k] for e in errs if k in e]
            metrics[k] = with_subset_error(d, se) if len(se) == len(recs) else d
        arms[arm] = {"seeds": [r["seed"] for r in recs], "metrics": metrics,
                     "reliability": mean_reliability(recs, n_resamples)}
    return arms
