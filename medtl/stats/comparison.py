"""Statistics assembly for ``medtl compare``: metric values per arm and seed from finished run
folders (found by :func:`medtl.runs.discover_arms`), every statistic as one JSON-ready dict, and
the DeLong test between two runs' test predictions.  Rendering is :mod:`medtl.reports`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from ..runs import FAILED, METRICS, Arm, read_predictions
from .compare import compare_arms
from .delong import delong_test

# --------------------------------------------------------------------------------------------
# metric lookup

_MISSING = object()


def lookup_metric(metrics: Mapping, path: str) -> Any:
    """Value at a dotted path such as ``test.auc`` (``_MISSING`` sentinel when absent)."""
    cur: Any = metrics
    for part in path.split("."):
        if isinstance(cur, Mapping) and part in cur:
            cur = cur[part]
        else:
            return _MISSING
    return cur


def available_metrics(metrics: Mapping, prefix: str = "") -> list[str]:
    """Dotted paths of every numeric leaf (``history`` and ``run`` are skipped)."""
    out: list[str] = []
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if not prefix and k in ("history", "run"):
            continue
        if isinstance(v, Mapping):
            out.extend(available_metrics(v, key + "."))
        elif v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)):
            out.append(key)
    return out


def collect_values(arms: Mapping[str, Arm], metric: str) -> dict[str, dict[int, float]]:
    """``{arm: {seed: value}}`` for one metric; null/missing values become NaN.

    Raises :class:`ConfigError` when no finished run has the metric, listing the keys that exist.
    """
    out: dict[str, dict[int, float]] = {}
    seen = False
    for name, arm in arms.items():
        vals: dict[int, float] = {}
        for seed, m in sorted(arm.runs.items()):
            v = lookup_metric(m, metric)
            if v is _MISSING:
                vals[seed] = float("nan")
                continue
            seen = True
            if v is None:
                vals[seed] = float("nan")
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                vals[seed] = float(v)
            else:
                kind = "an object" if isinstance(v, Mapping) else type(v).__name__
                path = arm.run_dirs[seed] / METRICS
                raise ConfigError(f"metric {metric!r} is not a number in {path} (it is {kind}); "
                                  f"available: {', '.join(available_metrics(m))}")
        out[name] = vals
    if not seen:
        first = next(a for a in arms.values() if a.runs)
        seed = min(first.runs)
        keys = available_metrics(first.runs[seed])
        raise ConfigError(f"unknown metric {metric!r} (not in any {METRICS}); available: {', '.join(keys)}")
    return out


# --------------------------------------------------------------------------------------------
# DeLong from two run folders


def load_predictions(run: str | Path) -> dict[str, Any]:
    """Binary ``y``, ``p`` (and ``ids``) of a run's test predictions, checked for a DeLong test."""
    data = read_predictions(run)
    path = data["path"]
    y, p = np.asarray(data["y"]).ravel(), np.asarray(data["p"]).ravel().astype(np.float64)
    if y.size != p.size:
        raise DataError(f"{path}: 'y' has {y.size} entries but 'p' has {p.size}")
    if not np.isin(y, (0, 1)).all():
        raise DataError(f"{path}: 'y' must be binary 0/1 labels for DeLong")
    if not np.isfinite(p).all():
        raise DataError(f"{path}: 'p' contains NaN or inf")
    out = {"y": y.astype(int), "p": p, "path": path}
    if "ids" in data:
        out["ids"] = data["ids"]
    return out


def delong_from_runs(run_a: str | Path, run_b: str | Path, confidence: float = 0.95) -> dict:
    """DeLong test between the test-set predictions of two runs (same cases, same labels)."""
    a, b = load_predictions(run_a), load_predictions(run_b)
    if a["y"].size != b["y"].size:
        raise DataError(f"{a['path']} and {b['path']} hold different numbers of cases ({a['y'].size} vs {b['y'].size})")
    if "ids" in a and "ids" in b:
        if not np.array_equal(a["ids"].astype(str), b["ids"].astype(str)):
            raise DataError(f"{a['path']} and {b['path']} have different 'ids' (not the same test cases in the same order)")
    if not np.array_equal(a["y"], b["y"]):
        raise DataError(f"{a['path']} and {b['path']} have different labels 'y'")
    try:
        res = delong_test(a["y"], a["p"], b["p"], confidence=confidence)
    except ValueError as exc:
        raise DataError(f"{a['path']}: {exc}") from None
    return {"run_a": str(run_a), "run_b": str(run_b), "ids_checked": bool("ids" in a and "ids" in b), **res}


# --------------------------------------------------------------------------------------------
# the comparison


def build_comparison(arms: Mapping[str, Arm], metrics: Sequence[str], *, alpha: float = 0.05,
                     n_resamples: int = 10000, seed: int = 0, ci_method: str = "bca",
                     confidence: float = 0.95) -> dict:
    """All statistics as one JSON-ready dict (NaN still present: see :func:`write_report`)."""
    if not metrics:
        raise ConfigError("metrics: give at least one metric, e.g. test.auc")
    metrics = list(dict.fromkeys(metrics))
    values = {m: collect_values(arms, m) for m in metrics}
    res = compare_arms(values, alpha=alpha, n_resamples=n_resamples, seed=seed, method=ci_method,
                       confidence=confidence)
    notes: list[str] = []
    for m in metrics:
        for name, st in res["by_metric"][m]["arms"].items():
            arm = arms[name]
            st["n_failed"] = len(arm.failed)
            st["n_incomplete"] = len(arm.incomplete)
            st["values"] = [values[m][name][s] for s in st["seeds"]]
            if st["n"] < 2:
                notes.append(f"{name} has {st['n']} value(s) of {m}: no CI and no tests involving it")
    runs = {
        name: {
            "source": str(arm.source),
            "n_finished": len(arm.runs),
            "n_failed": len(arm.failed),
            "failed_seeds": sorted(arm.failed),
            "n_incomplete": len(arm.incomplete),
            "incomplete": [str(p) for p in arm.incomplete],
            "seeds": sorted(arm.runs),
            "dirs": {str(s): str(p) for s, p in sorted(arm.run_dirs.items())},
        }
        for name, arm in arms.items()
    }
    n_failed = sum(r["n_failed"] for r in runs.values())
    n_incomplete = sum(r["n_incomplete"] for r in runs.values())
    if n_failed:
        notes.append(f"{n_failed} failed run(s) skipped: " + ", ".join(
            f"{n} seed {s}" for n, r in runs.items() for s in r["failed_seeds"]))
    if n_incomplete:
        notes.append(f"{n_incomplete} unfinished run folder(s) (no {METRICS} or {FAILED}) skipped")
    unpaired = list(dict.fromkeys(f"{p['a']} vs {p['b']}" for p in res["pairs"] if p["seed_sets_differ"]))
    if unpaired:
        notes.append("unpaired tests (seed sets differ) for: " + "; ".join(unpaired))
    return {
        "kind": "medtl.compare",
        "version": 1,
        "metrics": metrics,
        "alpha": alpha,
        "ci_method": ci_method,
        "confidence": confidence,
        "bootstrap": int(n_resamples),
        "seed": int(seed),
        "tests": {
            "paired": "Wilcoxon signed-rank (primary, two-sided, zero_method='wilcox') and paired t-test; "
                      "used when both arms have exactly the same seeds (>= 2)",
            "unpaired": "Mann-Whitney U (primary, two-sided) and Welch t-test; used otherwise",
            "effect_size": "Cohen's d_z (paired) / Cohen's d with pooled sd (unpaired)",
            "multiplicity": f"Holm step-down over the primary p-values of all {res['holm']['m_primary']} "
                            f"pairs x metrics (secondary p-values corrected separately)",
            "ci": f"{round(confidence * 100)}% bootstrap CI ({ci_method}, B={n_resamples}, "
                  f"numpy Generator seeded with {seed} for each interval; BCa falls back to percentile "
                  f"when undefined)",
        },
        "arms": res["by_metric"][metrics[0]]["arms"],
        "by_metric": res["by_metric"],
        "pairs": res["pairs"],
        "holm": res["holm"],
        "runs": runs,
        "n_failed": n_failed,
        "n_incomplete": n_incomplete,
        "notes": notes,
    }




def compare_runs(dirs: Sequence[str | Path], metrics: Sequence[str], *, alpha: float = 0.05,
                 n_resamples: int = 10000, seed: int = 0, ci_method: str = "bca",
                 named: Sequence[tuple[str, str | Path]] = (),
                 delong: tuple[str | Path, str | Path] | None = None) -> dict:
    """Discover the arms in ``dirs`` (and ``named``), compute every statistic; the result
    (NaN still present) that :func:`medtl.reports.write_compare` renders."""
    from ..runs import discover_arms

    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must be between 0 and 1 (got {alpha})")
    if n_resamples < 100:
        raise ConfigError(f"bootstrap resamples must be at least 100 (got {n_resamples})")
    ci_method = ci_method.lower()
    if ci_method not in ("bca", "percentile"):
        raise ConfigError(f"CI method must be 'bca' or 'percentile' (got {ci_method!r})")
    arms = discover_arms(dirs, named)
    result = build_comparison(arms, metrics, alpha=alpha, n_resamples=n_resamples, seed=seed, ci_method=ci_method)
    result["inputs"] = [str(d) for d in dirs] + [f"{n}={d}" for n, d in named]
    if delong is not None:
        result["delong"] = delong_from_runs(delong[0], delong[1])
    return result
