"""Statistics assembly for ``medtl compare``: metric values per arm and seed from finished run
folders (found by :func:`medtl.runs.discover_arms`), every statistic as one JSON-ready dict, and
the DeLong test between two runs' test predictions.  Rendering is :mod:`medtl.reports`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from ..runs import FAILED, METRICS, Arm, Run, read_predictions
from .compare import compare_arms, describe, holm, pair_sentence, paired_tests
from .delong import delong_test
from .hierarchical import METHOD as HIER_METHOD
from .hierarchical import METRICS as HIER_METRICS
from .hierarchical import RunPredictions, diff_ci, mean_ci

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


def external_name(metric: str) -> str | None:
    """The ``<name>`` of an ``external.<name>.<key>`` metric; None for any other metric."""
    parts = metric.split(".")
    return parts[1] if len(parts) >= 3 and parts[0] == "external" else None


def with_external(metrics: Mapping, run_dir: str | Path | None, name: str | None) -> Mapping:
    """A run's metrics with ``RUN/external/<name>/metrics.json``'s ``metrics`` section merged in
    as ``external.<name>`` (``medtl evaluate``); unchanged where the run was not evaluated there."""
    if name is None or run_dir is None:
        return metrics
    run = Run(run_dir)
    if not run.external_metrics_path(name).is_file():
        return metrics
    ext = run.external_metrics(name).get("metrics") or {}
    return {**metrics, "external": {**(metrics.get("external") or {}), name: ext}}


def _available(arms: Mapping[str, Arm]) -> list[str]:
    """The metric keys of the first finished run, its external evaluations included."""
    first = next(a for a in arms.values() if a.runs)
    seed = min(first.runs)
    m = first.runs[seed]
    for ext in Run(first.run_dirs[seed]).external_names():
        m = with_external(m, first.run_dirs[seed], ext)
    return available_metrics(m)


def collect_values(arms: Mapping[str, Arm], metric: str) -> dict[str, dict[int, float]]:
    """``{arm: {seed: value}}`` for one metric; null/missing values become NaN.  An
    ``external.<name>.<key>`` metric is read from each run's ``external/<name>/metrics.json``.

    Raises :class:`ConfigError` when no finished run has the metric, listing the keys that exist.
    """
    out: dict[str, dict[int, float]] = {}
    seen = False
    ext = external_name(metric)
    for name, arm in arms.items():
        vals: dict[int, float] = {}
        for seed, m in sorted(arm.runs.items()):
            m = with_external(m, arm.run_dirs.get(seed), ext)
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
        keys = _available(arms)
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
# the second source of variance: the finite test set

def _run_predictions(arm: Arm, external: str | None = None) -> dict[int, RunPredictions]:
    """Test predictions (or, with ``external``, the predictions on that external set) of the
    arm's finished binary runs, by seed (runs without a readable predictions file, or not
    binary, are left out)."""
    out = {}
    for seed, path in arm.run_dirs.items():
        m = arm.runs[seed]
        if m.get("task") != "binary":
            continue
        try:
            d = read_predictions(Run(path).external_predictions_path(external) if external else path)
            if external:  # the threshold on the evaluated positive class, as evaluate applied it
                m = {"threshold": {"value": (Run(path).external_metrics(external).get("run") or {}).get("threshold")}}
        except DataError:
            continue
        p = np.asarray(d["p"], dtype=np.float64).ravel()
        y = np.asarray(d["y"]).ravel()
        if p.size != y.size or not np.isfinite(p).all():
            continue
        thr = (m.get("threshold") or {}).get("value")
        out[seed] = RunPredictions(y=y.astype(int), p=p, threshold=0.5 if thr is None else float(thr),
                                   ids=d.get("ids"))
    return out


def add_seed_case_cis(res: dict, arms: Mapping[str, Arm], metrics: Sequence[str], *, n_resamples: int,
                      seed: int, confidence: float) -> list[str]:
    """Add CIs over seeds *and* test cases (:mod:`medtl.stats.hierarchical`) to every arm and pair
    of a test-set metric that can be recomputed from predictions (``test.auc``, ``test.acc``,
    ``test.sensitivity``, ``test.specificity``, ``test.balanced_acc``, and the same keys of an
    external set, ``external.<name>.auc``, from its ``predictions.npz``); returns notes."""
    cache: dict[str | None, dict] = {}
    notes = []
    for metric in metrics:
        ext = external_name(metric)
        section, _, name = metric.rpartition(".") if ext else metric.partition(".")
        if not ((section == "test" or section == f"external.{ext}") and name in HIER_METRICS):
            continue
        if ext not in cache:
            cache[ext] = {arm_name: _run_predictions(arm, ext) for arm_name, arm in arms.items()}
        preds = cache[ext]
        for arm_name, st in res["by_metric"][metric]["arms"].items():
            runs = [preds[arm_name][s] for s in st["seeds"] if s in preds[arm_name]]
            ci = mean_ci(runs, name, n_resamples=n_resamples, seed=seed, confidence=confidence) if runs else \
                {"ci_low": float("nan"), "ci_high": float("nan"), "note": "no test predictions"}
            st.update(ci_seeds_cases_low=ci["ci_low"], ci_seeds_cases_high=ci["ci_high"],
                      ci_seeds_cases_note=ci["note"])
            if ci["note"]:
                notes.append(f"{arm_name}, {metric}: no CI over seeds and test cases ({ci['note']})")
        for pair in res["pairs"]:
            if pair["metric"] != metric or not pair["paired"]:
                continue
            pa, pb = preds[pair["a"]], preds[pair["b"]]
            shared = [s for s in pair["shared_seeds"] if s in pa and s in pb]
            ci = diff_ci([pa[s] for s in shared], [pb[s] for s in shared], name, n_resamples=n_resamples,
                         seed=seed, confidence=confidence) if shared else {"ci_low": float("nan"),
                                                                           "ci_high": float("nan")}
            pair.update(diff_ci_seeds_cases_low=ci["ci_low"], diff_ci_seeds_cases_high=ci["ci_high"])
    return notes


def leak_warnings(arms: Mapping[str, Arm]) -> dict[str, str]:
    """``{arm: warning}`` for every arm with runs trained on a leaky split (``data.on_leak: warn``
    with test leaks), or whose runs predate the leak record (status unknown)."""
    out = {}
    for name, arm in arms.items():
        status = [((m.get("data") or {}).get("leaks") or {}).get("status", "unknown") for m in arm.runs.values()]
        leaky = sum(s == "leaky" for s in status)
        unknown = sum(s == "unknown" for s in status)
        if leaky:
            out[name] = (f"LEAKY SPLIT: {leaky} of {len(status)} runs of {name} were trained with test patients or "
                         f"images also in train/val (data.on_leak: warn); their test metrics are optimistic")
        elif unknown:
            out[name] = (f"{unknown} of {len(status)} runs of {name} predate medtl's leak record: whether their "
                         f"test split shares patients with train/val is not recorded")
    return out


# --------------------------------------------------------------------------------------------
# the comparison


def _run_summary(arms: Mapping[str, Arm]) -> dict:
    return {
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


def _notes(res: dict, runs: dict, metrics: Sequence[str]) -> list[str]:
    notes = [f"{name} has {st['n']} value(s) of {m}: no CI and no tests involving it"
             for m in metrics for name, st in res["by_metric"][m]["arms"].items() if st["n"] < 2]
    n_failed = sum(r["n_failed"] for r in runs.values())
    n_incomplete = sum(r["n_incomplete"] for r in runs.values())
    if n_failed:
        notes.append(f"{n_failed} failed run(s) skipped: " + ", ".join(
            f"{n} seed {s}" for n, r in runs.items() for s in r["failed_seeds"]))
    if n_incomplete:
        notes.append(f"{n_incomplete} unfinished run folder(s) (no {METRICS} or {FAILED}) skipped")
    unpaired = list(dict.fromkeys(f"{p['a']} vs {p['b']}" for p in res["pairs"] if not p["paired"]))
    if unpaired:
        notes.append("unpaired tests (fewer than 2 shared seeds) for: " + "; ".join(unpaired))
    dropped = list(dict.fromkeys(f"{p['a']} vs {p['b']} on {p['metric']} (dropped: {p['seeds_dropped']})"
                                 for p in res["pairs"] if p["paired"] and p["seed_sets_differ"]))
    if dropped:
        notes.append("paired on the shared seeds only: " + "; ".join(dropped))
    if res.get("design_note"):
        notes.append(res["design_note"])
    return notes


def _methods(res: dict, ci_method: str, n_resamples: int, seed: int, confidence: float) -> dict:
    level = f"{round(confidence * 100)}%"
    return {
        "paired": "Wilcoxon signed-rank (primary, two-sided, zero_method='wilcox') and paired t-test; "
                  "on the seeds both arms share (>= 2; seeds in one arm only are dropped and named)",
        "unpaired": "Mann-Whitney U (primary, two-sided) and Welch t-test; used with fewer than 2 shared seeds",
        "effect_size": "Cohen's d_z (paired) / Cohen's d with pooled sd (unpaired)",
        "multiplicity": f"Holm step-down over the primary p-values of all {res['holm']['m_primary']} "
                        f"pairs x metrics (secondary p-values corrected separately)",
        "ci": f"{level} bootstrap CI over seeds ({ci_method}, B={n_resamples}, numpy Generator seeded with {seed} "
              f"for each interval; BCa falls back to percentile when undefined): training randomness only",
        "ci_seeds_cases": f"{level} CI over seeds and test cases ({HIER_METHOD}, B={min(n_resamples, 2000)}, from "
                          f"each run's test predictions at its own threshold): training randomness and test-set "
                          f"sampling; use it for claims against an outside figure",
    }


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
    for m in metrics:
        for name, st in res["by_metric"][m]["arms"].items():
            st.update(n_failed=len(arms[name].failed), n_incomplete=len(arms[name].incomplete),
                      values=[values[m][name][s] for s in st["seeds"]])
    runs = _run_summary(arms)
    notes = _notes(res, runs, metrics)
    notes += add_seed_case_cis(res, arms, metrics, n_resamples=min(n_resamples, 2000), seed=seed,
                               confidence=confidence)
    for p in res["pairs"]:  # the sentences name both CIs where there are two
        p["sentence"] = pair_sentence(p, alpha=alpha, confidence=confidence)
    return {
        "kind": "medtl.compare", "version": 2, "metrics": metrics, "alpha": alpha, "ci_method": ci_method,
        "confidence": confidence, "bootstrap": int(n_resamples), "seed": int(seed),
        "tests": _methods(res, ci_method, n_resamples, seed, confidence),
        "leak_warnings": leak_warnings(arms),
        "arms": res["by_metric"][metrics[0]]["arms"],
        "by_metric": res["by_metric"],
        "pairs": res["pairs"],
        "holm": res["holm"],
        "runs": runs,
        "n_failed": sum(r["n_failed"] for r in runs.values()),
        "n_incomplete": sum(r["n_incomplete"] for r in runs.values()),
        "notes": notes,
    }


def _within_arm_tests(internal: Mapping[int, float], external: Mapping[int, float]) -> dict:
    """Paired Wilcoxon (and t) of internal vs external over the seeds that have both."""
    shared = sorted(s for s in internal if s in external and np.isfinite(internal[s]) and np.isfinite(external[s]))
    t = paired_tests(np.array([internal[s] for s in shared]), np.array([external[s] for s in shared]))
    return {"n_pairs": len(shared), "seeds": shared, "test": "wilcoxon", "p": t["wilcoxon"]["p"],
            "statistic": t["wilcoxon"]["statistic"], "secondary_test": "ttest_rel", "secondary_p": t["ttest_rel"]["p"],
            "note": t["note"]}


def internal_vs_external(arms: Mapping[str, Arm], name: str, *, metric: str = "auc", alpha: float = 0.05,
                         n_resamples: int = 10000, seed: int = 0, ci_method: str = "bca",
                         confidence: float = 0.95) -> dict:
    """Per arm: the internal (``test.<metric>``) and external (``external.<name>.<metric>``) means
    with CIs over seeds, and the paired drop (internal - external, per seed) with its CI and a
    Wilcoxon signed-rank test of no drop (Holm over the arms); for every pair of arms, whether
    their drops differ (``medtl compare``'s paired tests on the per-seed drops, Holm over the pairs)."""
    internal_key, external_key = f"test.{metric}", f"external.{name}.{metric}"
    internal = collect_values(arms, internal_key)
    external = collect_values(arms, external_key)
    drop_key = f"{internal_key} - {external_key}"
    drops = {a: {s: v - external[a].get(s, float("nan")) for s, v in internal[a].items()} for a in arms}
    res = compare_arms({drop_key: drops}, alpha=alpha, n_resamples=n_resamples, seed=seed, method=ci_method,
                       confidence=confidence)
    kw = dict(n_resamples=n_resamples, seed=seed, method=ci_method, confidence=confidence)
    rows = {}
    for a in arms:
        rows[a] = {"internal": describe(list(internal[a].values()), **kw),
                   "external": describe(list(external[a].values()), **kw),
                   "drop": res["by_metric"][drop_key]["arms"][a], "no_drop_test": _within_arm_tests(internal[a],
                                                                                                  external[a])}
    p_holm = holm([r["no_drop_test"]["p"] for r in rows.values()])
    for r, ph in zip(rows.values(), p_holm):
        r["no_drop_test"]["p_holm"] = float(ph)
        r["no_drop_test"]["significant"] = bool(np.isfinite(ph) and ph < alpha)
    return {"name": name, "metric": metric, "internal_metric": internal_key, "external_metric": external_key,
            "drop_metric": drop_key, "arms": rows, "pairs": res["pairs"], "holm": res["holm"],
            "n_missing_external": {a: sum(1 for s in internal[a] if not np.isfinite(external[a].get(s, float("nan"))))
                                   for a in arms}}


def anchor_statements(result: Mapping, value: float, metric: str | None = None) -> dict:
    """Each arm's mean against an outside figure (a published baseline), judged with the wider
    CI: over seeds and test cases where the runs' predictions allow it, else over seeds only
    (said so)."""
    metric = metric or result["metrics"][0]
    out = []
    for arm, st in result["by_metric"][metric]["arms"].items():
        lo, hi = st.get("ci_seeds_cases_low"), st.get("ci_seeds_cases_high")
        which = "over seeds and test cases"
        if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
            lo, hi, which = st["ci_low"], st["ci_high"], "over seeds only (test-set sampling not covered)"
        level = f"{round(result['confidence'] * 100)}%"
        if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
            verdict = "no CI, so no statement"
        elif lo > value:
            verdict = f"lies above {value:g}"
        elif hi < value:
            verdict = f"lies below {value:g}"
        else:
            verdict = f"includes {value:g}: no difference shown"
        ci = f"{lo:.4f} to {hi:.4f}" if lo is not None and hi is not None and np.isfinite(lo) else "n/a"
        out.append(f"{arm}: mean {metric} {st['mean']:.4f} (n={st['n']}); its {level} CI {which}, {ci}, {verdict}.")
    return {"value": float(value), "metric": metric, "statements": out}


def compare_runs(dirs: Sequence[str | Path], metrics: Sequence[str], *, alpha: float = 0.05,
                 n_resamples: int = 10000, seed: int = 0, ci_method: str = "bca",
                 named: Sequence[tuple[str, str | Path]] = (),
                 delong: tuple[str | Path, str | Path] | None = None, anchor: float | None = None,
                 internal_vs_external_name: str | None = None) -> dict:
    """Discover the arms in ``dirs`` (and ``named``), compute every statistic; the result
    (NaN still present) that :func:`medtl.reports.write_compare` renders.

    ``internal_vs_external_name``: also the internal-vs-external view of that external set
    (:func:`internal_vs_external`); ``test.auc`` and ``external.<name>.auc`` join the metrics."""
    from ..runs import discover_arms

    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must be between 0 and 1 (got {alpha})")
    if n_resamples < 100:
        raise ConfigError(f"bootstrap resamples must be at least 100 (got {n_resamples})")
    ci_method = ci_method.lower()
    if ci_method not in ("bca", "percentile"):
        raise ConfigError(f"CI method must be 'bca' or 'percentile' (got {ci_method!r})")
    arms = discover_arms(dirs, named)
    ive = internal_vs_external_name
    if ive is not None:
        metrics = list(dict.fromkeys(list(metrics) + ["test.auc", f"external.{ive}.auc"]))
    result = build_comparison(arms, metrics, alpha=alpha, n_resamples=n_resamples, seed=seed, ci_method=ci_method)
    if ive is not None:
        result["internal_vs_external"] = internal_vs_external(arms, ive, alpha=alpha, n_resamples=n_resamples,
                                                              seed=seed, ci_method=ci_method)
    result["inputs"] = [str(d) for d in dirs] + [f"{n}={d}" for n, d in named]
    if delong is not None:
        result["delong"] = delong_from_runs(delong[0], delong[1])
    if anchor is not None:
        result["anchor"] = anchor_statements(result, anchor)
    return result
