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
    for name, rows in rec["adversarial"].items():
        for r in rows:
            out[f"adversarial.{name}.auc@{r['eps'] * 255:g}/255"] = _f(r["auc"])
    for name, rows in rec["corruptions"].items():
        out[f"corruptions.{name}.mean_auc"] = float(np.nanmean([_f(r["auc"]) for r in rows]))
    out["corruptions.mean_auc_drop"] = _f(rec["corruptions_mean_auc_drop"])
    return out


def aggregate(runs: Sequence[Mapping], n_resamples: int = 2000) -> dict:
    """``{arm: {"seeds": [...], "metrics": {key: describe(...) + values}}}`` over the runs' records."""
    by_arm: dict[str, list[Mapping]] = {}
    for r in runs:
        by_arm.setdefault(r["arm"], []).append(r)
    arms = {}
    for arm, recs in by_arm.items():
        flat = [scalar_metrics(r) for r in recs]
        keys = list(dict.fromkeys(k for f in flat for k in f))
        arms[arm] = {"seeds": [r["seed"] for r in recs],
                     "metrics": {k: describe([f.get(k, float("nan")) for f in flat], n_resamples=n_resamples)
                                 | {"values": [f.get(k) for f in flat]} for k in keys}}
    return arms
