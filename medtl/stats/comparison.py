"""Statistics assembly for ``medtl compare``: metric values per arm and seed from finished run
folders (found by :func:`medtl.runs.discover_arms`), every statistic as one JSON-ready dict, and
the DeLong test between two runs' test predictions.  Rendering is :mod:`medtl.reports`.
"""
from __future__ import annotations

from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from ..record import MISSING, Leaks, RunRecord, number_keys
from ..runs import FAILED, METRICS, Arm, Run, read_predictions
from .compare import compare_arms, conclude, describe, holm, holm_summary, paired_tests
from .delong import delong_test
from .hierarchical import METHOD as HIER_METHOD
from .hierarchical import is_metric as is_hier_metric
from .hierarchical import CaseSet, RunPredictions, crossed, diff_ci, mean_ci, two_set_diff_ci

# --------------------------------------------------------------------------------------------
# metric lookup


def external_name(metric: str) -> str | None:
    """The ``<name>`` of an ``external.<name>.<key>`` metric; None for any other metric."""
    parts = metric.split(".")
    return parts[1] if len(parts) >= 3 and parts[0] == "external" else None


def metric_value(record: RunRecord, run_dir: str | Path | None, metric: str) -> Any:
    """The value of a dotted metric for one run (:data:`~medtl.record.MISSING` when absent):
    ``external.<name>.<key>`` from the run's ``external/<name>/`` evaluation, else from its record."""
    ext = external_name(metric)
    if ext is None:
        v = record.at(metric)
    elif run_dir is None or not Run(run_dir).external_metrics_path(ext).is_file():
        return MISSING
    else:
        v = Run(run_dir).external_record(ext).metrics.at(metric.split(".", 2)[2])
    if v is MISSING and record.task == "binary":  # a run older than the operating points
        return derived_operating_value(run_dir, metric)
    if v is MISSING and record.task == "multiclass" and run_dir is not None:  # older than per-class AUC
        return derived_per_class_auc(record, run_dir, metric)
    return v


def derived_per_class_auc(record: RunRecord, run_dir: str | Path, metric: str) -> Any:
    """``test.auc_per_class[.<class>]`` of a multi-class run whose metrics.json predates it, from
    its saved test predictions (one class against the rest); MISSING where they cannot be read."""
    from .metrics import multiclass_metrics

    head = "test.auc_per_class"
    if metric != head and not metric.startswith(head + "."):
        return MISSING
    try:
        d = read_predictions(run_dir)
    except DataError:
        return MISSING
    y, p = np.asarray(d["y"]).astype(int).ravel(), np.asarray(d["p"], dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(record.classes):
        return MISSING
    per = multiclass_metrics(y, p, list(record.classes))["auc_per_class"]
    return per if metric == head else per.get(metric[len(head) + 1:], MISSING)


def _available(arms: Mapping[str, Arm]) -> list[str]:
    """The metric keys of the first finished run, its external evaluations included."""
    first = next(a for a in arms.values() if a.runs)
    seed = min(first.runs)
    run = Run(first.run_dirs[seed])
    keys = first.runs[seed].metric_keys()
    for ext in run.external_names():
        keys += [f"external.{ext}.{k}" for k in number_keys(run.external_record(ext).metrics.as_dict())]
    return keys


def expand_metrics(arms: Mapping[str, Arm], metrics: Sequence[str]) -> list[str]:
    """Every ``PREFIX.*`` metric replaced by one metric per key under ``PREFIX`` in the first
    finished run (in the run's order: ``test.auc_per_class.*`` -> one per label, so a multi-label
    or multi-class study compares every label, each tested on its own and Holm-corrected within
    the family the pattern is declared in).  One-line :class:`ConfigError` when nothing is there."""
    out: list[str] = []
    for m in metrics:
        parts = m.split(".")
        if "*" not in parts:
            out.append(m)
            continue
        i = parts.index("*")
        head, tail = ".".join(parts[:i]), ".".join(parts[i + 1:])
        first = next((a for a in arms.values() if a.runs), None)
        seed = min(first.runs) if first else None
        v = metric_value(first.runs[seed], first.run_dirs.get(seed), head) if first else MISSING
        if not isinstance(v, Mapping) or not v:
            raise ConfigError(f"metric {m!r}: {head!r} is not a set of per-label values in the runs' {METRICS} "
                              f"(e.g. test.auc_per_class.* of a multi-label or multi-class run)")
        out += [f"{head}.{k}" + (f".{tail}" if tail else "") for k, x in v.items()
                if isinstance(x, Mapping) == bool(tail)]
    return list(dict.fromkeys(out))


def collect_values(arms: Mapping[str, Arm], metric: str) -> dict[str, dict[int, float]]:
    """``{arm: {seed: value}}`` for one metric; null/missing values become NaN.  An
    ``external.<name>.<key>`` metric is read from each run's ``external/<name>/metrics.json``.

    Raises :class:`ConfigError` when no finished run has the metric, listing the keys that exist.
    """
    out: dict[str, dict[int, float]] = {}
    seen = False
    for name, arm in arms.items():
        vals: dict[int, float] = {}
        for seed, m in sorted(arm.runs.items()):
            v = metric_value(m, arm.run_dirs.get(seed), metric)
            if v is MISSING:
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
                                  f"available: {', '.join(_available(arms))}")
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

def _label_column(rec: RunRecord, y: np.ndarray, p: np.ndarray, label: str):
    """One label of a multi-label run, or one class against the rest of a multi-class run, as a
    binary (y, p); None where the run has no such label."""
    if label not in rec.classes or p.ndim != 2:
        return None
    k = list(rec.classes).index(label)
    if rec.task == "multilabel":
        return np.asarray(y)[:, k], p[:, k]
    return (np.asarray(y).ravel() == k).astype(int), p[:, k]


def run_predictions(arm: Arm, external: str | None = None, label: str | None = None) -> dict[int, RunPredictions]:
    """Test predictions (or, with ``external``, the predictions on that external set) of the
    arm's finished binary runs, by seed (runs without a readable predictions file, or not
    binary, are left out).  With ``label``: that label of multi-label runs (or that class against
    the rest of multi-class runs), read as a binary task at threshold 0.5."""
    out = {}
    for seed, path in arm.run_dirs.items():
        rec = arm.runs[seed]
        if label is not None:
            if rec.task not in ("multilabel", "multiclass"):
                continue
            try:
                d = read_predictions(Run(path).external_predictions_path(external) if external else path)
            except DataError:
                continue
            col = _label_column(rec, np.asarray(d["y"]), np.asarray(d["p"], dtype=np.float64), label)
            if col is None or not np.isfinite(col[1]).all():
                continue
            out[seed] = RunPredictions(y=col[0].astype(int), p=col[1], threshold=0.5, ids=d.get("ids"),
                                       op_source=partial(val_op_thresholds, path, rec, label))
            continue
        if rec.task != "binary":
            continue
        thr = rec.threshold.value
        try:
            d = read_predictions(Run(path).external_predictions_path(external) if external else path)
            if external:  # the threshold on the evaluated positive class, as evaluate applied it
                thr = Run(path).external_record(external).run.threshold
        except DataError:
            continue
        p = np.asarray(d["p"], dtype=np.float64).ravel()
        y = np.asarray(d["y"]).ravel()
        if p.size != y.size or not np.isfinite(p).all():
            continue
        out[seed] = RunPredictions(y=y.astype(int), p=p, threshold=0.5 if thr is None else float(thr),
                                   ids=d.get("ids"), op_source=partial(val_op_thresholds, path))
    return out


def val_op_thresholds(run_dir: str | Path, record: RunRecord | None = None, label: str | None = None) -> dict | None:
    """The operating-point thresholds a binary run fixes on its val predictions
    (:func:`medtl.stats.operating.op_thresholds`), or with ``label`` those of that label's column
    of a multi-label / multi-class run; None without readable val predictions."""
    from .operating import op_thresholds

    try:
        v = read_predictions(Run(run_dir).val_predictions_path)
    except DataError:
        return None
    y, p = np.asarray(v["y"]), np.asarray(v["p"], dtype=np.float64)
    if label is None:
        return op_thresholds(y.ravel(), p.ravel())
    col = _label_column(record, y, p, label)
    return None if col is None else op_thresholds(col[0].astype(int), col[1])


def derived_operating_value(run_dir: str | Path | None, metric: str):
    """An operating-point metric (``test.sens_at_spec95``, ``test.net_benefit_10``, ...) recomputed
    from a binary run's saved val and test predictions, for runs whose metrics.json predates it;
    :data:`MISSING` where it cannot be."""
    from .operating import op_names

    section, _, name = metric.partition(".")
    if run_dir is None or name not in op_names() or section != "test":  # external: evaluate records them
        return MISSING
    run = Run(run_dir)
    try:  # keyed by the files' times: each run's predictions are read once for all its metrics
        stamp = (run.val_predictions_path.stat().st_mtime_ns, run.predictions_path.stat().st_mtime_ns)
    except OSError:
        return MISSING
    res = _saved_operating_points(str(run.path), stamp)
    return MISSING if res is None else res[name]


@lru_cache(maxsize=512)
def _saved_operating_points(run_dir: str, stamp: tuple[int, int]) -> dict | None:
    from .operating import operating_points

    run = Run(run_dir)
    try:
        v = read_predictions(run.val_predictions_path)
        t = read_predictions(run.path)
    except DataError:
        return None
    if np.asarray(v["p"]).ndim != 1 or np.asarray(t["p"]).ndim != 1:
        return None
    return operating_points(v["y"], v["p"], t["y"], t["p"])


def _seed_case_arms(res: dict, metric: str, name: str, preds: Mapping[str, dict], confidence: float,
                    arms: Mapping[str, Arm]) -> list[str]:
    notes = []
    for arm_name, st in res["by_metric"][metric]["arms"].items():
        runs = [preds[arm_name][s] for s in st["seeds"] if s in preds[arm_name]]
        task = next((r.task for r in arms[arm_name].runs.values()), "binary")
        none = "no test predictions" if task == "binary" else \
            "a multi-label or multi-class macro metric; per-label intervals: test.auc_per_class.*"
        ci = mean_ci(runs, name, confidence=confidence) if runs else \
            {"ci_low": float("nan"), "ci_high": float("nan"), "note": none}
        st.update(ci_seeds_cases_low=ci["ci_low"], ci_seeds_cases_high=ci["ci_high"],
                  ci_seeds_cases_note=ci["note"])
        if ci["note"]:
            notes.append(f"{arm_name}, {metric}: no CI over seeds and test cases ({ci['note']})")
    return notes


def _seed_case_pair(pair: dict, name: str, preds: Mapping[str, dict], confidence: float, scope: str) -> None:
    """Add the seeds + cases interval of the pair; in the ``patients`` scope it also becomes the
    pair's primary test and interval (the seeds-only ones stay as ``diff_ci_seeds_*`` / ``p_seeds``)."""
    pa, pb = preds[pair["a"]], preds[pair["b"]]
    shared = [s for s in pair["shared_seeds"] if s in pa and s in pb]
    if len(shared) < 2:
        return
    r = diff_ci([pa[s] for s in shared], [pb[s] for s in shared], name, confidence=confidence)
    if not np.isfinite(r["ci_low"]):
        return
    pair.update(diff_ci_seeds_cases_low=r["ci_low"], diff_ci_seeds_cases_high=r["ci_high"], p_seeds_cases=r["p"])
    if scope != "patients":
        return
    pair.update(inference="seeds+cases", test="crossed_t", diff=r["estimate"], se=r["se"], df=r["df"], p=r["p"],
                statistic=r["estimate"] / r["se"] if r["se"] else float("nan"), diff_ci_low=r["ci_low"],
                diff_ci_high=r["ci_high"], diff_ci_method="t, seeds + cases", n_pairs_seeds_cases=len(shared),
                variance={"seed_term": r["var_seed_term"], "case_term": r["var_case_term"],
                          "interaction": r["var_interaction"]})


SCOPES = ("patients", "test_set")

DC_GRID = tuple(round(0.02 * k, 2) for k in range(1, 31))  # threshold probabilities 0.02 .. 0.60


def decision_curves(arms: Mapping[str, Arm], *, confidence: float = 0.95) -> dict | None:
    """Per arm, the seed-mean net benefit over :data:`DC_GRID` with its interval over seeds and
    test cases (:mod:`medtl.stats.hierarchical`), beside treat-all and treat-none (0); None when
    no arm has binary test predictions.  The decision curve of Vickers & Elkin (2006)."""
    from .operating import treat_all

    preds = {a: run_predictions(arm) for a, arm in arms.items()}
    preds = {a: p for a, p in preds.items() if p}
    if not preds:
        return None
    out: dict = {"pt": list(DC_GRID), "arms": {}, "confidence": confidence}
    y0 = None
    for a, by_seed in preds.items():
        runs = [by_seed[s] for s in sorted(by_seed)]
        y0 = runs[0].y if y0 is None else y0
        rows = [mean_ci(runs, f"net_benefit_{int(round(pt * 100)):02d}", confidence=confidence) for pt in DC_GRID]
        out["arms"][a] = {"n": len(runs), "mean": [r.get("estimate", float("nan")) for r in rows],
                          "ci_low": [r["ci_low"] for r in rows], "ci_high": [r["ci_high"] for r in rows]}
    out["treat_all"] = [treat_all(y0, pt) for pt in DC_GRID]
    out["treat_none"] = 0.0
    out["prevalence"] = float(np.mean(y0))
    out["note"] = ("net benefit of treating the cases whose predicted probability is at least the threshold "
                   "probability pt, from each run's own (uncalibrated) probabilities; band: "
                   f"{round(confidence * 100)}% CI over seeds and test cases; treat-all from the test prevalence "
                   f"({out['prevalence']:.3f}), treat-none = 0")
    return out


def add_seed_case_cis(res: dict, arms: Mapping[str, Arm], metrics: Sequence[str], *, confidence: float,
                      scope: str = "patients") -> list[str]:
    """Add intervals over seeds *and* test cases (:mod:`medtl.stats.hierarchical`) to every arm and
    pair of a test-set metric that can be recomputed from predictions (``test.auc``, ``test.acc``,
    ``test.sensitivity``, ``test.specificity``, ``test.balanced_acc``, and the same keys of an
    external set, ``external.<name>.auc``, from its ``predictions.npz``).  In the ``patients`` scope
    (default) the paired comparison's test and interval of those metrics become the seeds + cases
    ones: a claim about patients like these, not about this one test set.  In the ``test_set``
    scope (a fixed benchmark: the claim is about this test set) the seeds-only test decides and the
    seeds + cases interval is shown beside it.  Returns notes."""
    cache: dict[tuple, dict] = {}
    notes = []
    for metric in metrics:
        ext = external_name(metric)
        label = None
        head = f"external.{ext}." if ext else "test."
        per, ops = f"{head}auc_per_class.", f"{head}operating_points_per_class."
        if metric.startswith(per) and "." not in metric[len(per):]:  # one label: its AUC by DeLong
            section, name, label = head[:-1], "auc", metric[len(per):]
        elif metric.startswith(ops) and "." in metric[len(ops):]:  # one label at a val-fixed point
            section, (label, _, name) = head[:-1], metric[len(ops):].rpartition(".")
        else:
            section, _, name = metric.rpartition(".") if ext else metric.partition(".")
        if not ((section == "test" or section == f"external.{ext}") and is_hier_metric(name)):
            continue
        if (ext, label) not in cache:
            cache[(ext, label)] = {arm_name: run_predictions(arm, ext, label) for arm_name, arm in arms.items()}
        notes += _seed_case_arms(res, metric, name, cache[(ext, label)], confidence, arms)
        for pair in res["pairs"]:
            if pair["metric"] == metric and pair["paired"]:
                _seed_case_pair(pair, name, cache[(ext, label)], confidence, scope)
    return notes


def leak_warnings(arms: Mapping[str, Arm]) -> dict[str, str]:
    """``{arm: warning}`` for every arm with runs trained on a leaky split (``data.on_leak: warn``
    with test leaks), on data that names no patient for some or all images (status ``unchecked``:
    patient overlap not counted), on a dataset with a known overlap it cannot count
    (``known_overlap``), or whose runs predate the leak record (status unknown).  Several
    findings for one arm are joined into one warning."""
    out = {}
    for name, arm in arms.items():
        runs = list(arm.runs.values())
        leaks = [r.data.leaks for r in runs]
        status = [lk.status for lk in leaks]
        msgs = []
        leaky = sum(s == "leaky" for s in status)
        if leaky:
            msgs.append(f"LEAKY SPLIT: {leaky} of {len(status)} runs of {name} were trained with test patients or "
                        f"images also in train/val (data.on_leak: warn); their test metrics are optimistic.")
        msgs += _unchecked_warning(name, runs, leaks)
        overlap = list(dict.fromkeys(lk.known_overlap for lk in leaks if lk.known_overlap))
        if overlap:
            n = sum(bool(lk.known_overlap) for lk in leaks)
            msgs.append(f"KNOWN OVERLAP: {n} of {len(status)} runs of {name}: " + "; ".join(overlap) + ".")
        unknown = sum(s == "unknown" for s in status)
        if unknown:
            msgs.append(f"{unknown} of {len(status)} runs of {name} predate medtl's leak record: whether their "
                        f"test split shares patients with train/val is not recorded.")
        if msgs:
            out[name] = " ".join(msgs).rstrip(".")
    return out


def _unchecked_warning(name: str, runs: Sequence[RunRecord], leaks: Sequence[Leaks]) -> list[str]:
    """The UNCHECKED sentence of :func:`leak_warnings` (runs whose data name no patient for some
    or all images), or nothing."""
    hit, partial = 0, False
    for rec, lk in zip(runs, leaks):
        missing = sum(lk.n_without_patient.values())
        if lk.status != "unchecked" and not missing:
            continue
        hit += 1
        total = sum(rec.data.n.values())
        partial = partial or (total > 0 and missing < total)
    if not hit:
        return []
    what = "name no patient for some of their images" if partial else "name no patients"
    return [f"UNCHECKED: the data of {hit} of {len(leaks)} runs of {name} {what}, so patient overlap between "
            f"test and train/val could not be counted (only byte-identical images were)."]


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


def _methods(res: dict, ci_method: str, n_resamples: int, seed: int, confidence: float, alpha: float,
             margin) -> dict:
    level = f"{round(confidence * 100)}%"
    fams = ", ".join(f"{k} ({v} tests)" for k, v in res["holm"]["families"].items()) or "none"
    seed_ci = ("t interval (mean +/- t_(n-1) sd / sqrt n)" if ci_method == "t" else
               f"bootstrap {ci_method} (B={n_resamples}, numpy Generator seeded with {seed}), on request")
    return {
        "paired": "paired t test (primary) with its t interval of the mean difference, on the seeds both arms "
                  "share (>= 2; seeds in one arm only are dropped and named); Wilcoxon signed-rank beside it. "
                  "For test-set metrics that predictions allow, the primary test and interval are over seeds "
                  "and test cases (below)",
        "unpaired": "Welch t test and interval (primary), Mann-Whitney U beside it; used with fewer than 2 shared "
                    "seeds",
        "effect_size": "Cohen's d_z (paired) / Cohen's d with pooled sd (unpaired)",
        "multiplicity": f"Holm step-down within each family: {fams}. The declared primary metrics form the "
                        f"primary family; everything else is exploratory, corrected on its own",
        "conclusion": f"differs: Holm-adjusted p < {alpha:g}; equivalent within +/-M: otherwise, when a margin M is "
                      f"set and the Holm-adjusted TOST p < {alpha:g} (the {round((1 - 2 * alpha) * 100)}% interval "
                      f"lies inside +/-M); inconclusive: neither" + (f"; margin {margin}" if margin else
                                                                     "; no margin set"),
        "ci": f"{level} CI over seeds: {seed_ci}; training randomness on this test set only",
        "ci_seeds_cases": f"{level} CI over seeds and test cases ({HIER_METHOD}; from each run's test predictions at "
                          f"its own threshold): training randomness and test-set sampling; use it for claims about "
                          f"patients and against an outside figure",
    }


def build_comparison(arms: Mapping[str, Arm], metrics: Sequence[str], *, alpha: float = 0.05,
                     n_resamples: int = 10000, seed: int = 0, ci_method: str = "t",
                     confidence: float = 0.95, margin=None, primary: Sequence[str] | None = None,
                     scope: str = "patients", pairs=None, primary_pairs=None) -> dict:
    """All statistics as one JSON-ready dict (NaN still present: see :func:`write_report`).
    ``margin``: an equivalence margin (one number, or ``{metric: margin}``); ``primary``: the
    metrics of the primary Holm family (the rest are exploratory); ``pairs``: the ``(a, b)`` arm
    pairs to test (default: all); ``primary_pairs``: of those, the ones in the primary family
    (default: all, for a primary metric)."""
    if not metrics:
        raise ConfigError("metrics: give at least one metric, e.g. test.auc")
    metrics = list(dict.fromkeys(metrics))
    unknown = [m for m in (primary or ()) if m not in metrics]
    if unknown:
        raise ConfigError(f"primary metric(s) {', '.join(unknown)} are not among the compared metrics "
                          f"({', '.join(metrics)})")
    metrics = expand_metrics(arms, metrics)
    values = {m: collect_values(arms, m) for m in metrics}
    res = compare_arms(values, alpha=alpha, n_resamples=n_resamples, seed=seed, method=ci_method,
                       confidence=confidence, margin=margin, primary=primary, pairs=pairs,
                       primary_pairs=primary_pairs)
    for m in metrics:
        for name, st in res["by_metric"][m]["arms"].items():
            st.update(n_failed=len(arms[name].failed), n_incomplete=len(arms[name].incomplete),
                      values=[values[m][name][s] for s in st["seeds"]])
    runs = _run_summary(arms)
    notes = _notes(res, runs, metrics)
    if scope not in SCOPES:
        raise ConfigError(f"scope must be one of {', '.join(SCOPES)} (got {scope!r})")
    notes += add_seed_case_cis(res, arms, metrics, confidence=confidence, scope=scope)
    conclude(res["pairs"], alpha=alpha, margin=margin, confidence=confidence)  # on the final tests
    return {
        "kind": "medtl.compare", "version": 3, "metrics": metrics, "alpha": alpha, "ci_method": ci_method,
        "confidence": confidence, "bootstrap": int(n_resamples), "seed": int(seed),
        "margin": margin, "primary": list(primary or []), "scope": scope,
        "tests": _methods(res, ci_method, n_resamples, seed, confidence, alpha, margin) | {"scope": SCOPE_TEXT[scope]},
        "leak_warnings": leak_warnings(arms),
        "arms": res["by_metric"][metrics[0]]["arms"],
        "by_metric": res["by_metric"],
        "pairs": res["pairs"],
        "holm": holm_summary(res["pairs"]),
        "conclusions": conclusion_lines(res["pairs"]),
        "runs": runs,
        "n_failed": sum(r["n_failed"] for r in runs.values()),
        "n_incomplete": sum(r["n_incomplete"] for r in runs.values()),
        "notes": notes,
    }


SCOPE_TEXT = {
    "patients": "conclusions about patients like these: test-set metrics are tested over seeds and test cases",
    "test_set": "conclusions about this test set (a fixed benchmark): every metric is tested over seeds only; the "
                "interval over seeds and test cases is shown beside it",
}


def conclusion_lines(pairs: Sequence[Mapping]) -> list[dict]:
    """One short record per pair: ``{a, b, metric, family, conclusion}`` (what a report may say)."""
    return [{"a": p["a"], "b": p["b"], "metric": p["metric"], "family": p.get("family"),
             "conclusion": p.get("conclusion")} for p in pairs]


def _ive_drop(pi: Mapping[int, RunPredictions], pe: Mapping[int, RunPredictions], seeds: Sequence[int],
              metric: str, internal: Mapping[int, float], external: Mapping[int, float], confidence: float) -> dict:
    """One arm's drop (internal - external) with the test of no drop that matches its interval:
    over seeds and both test sets' cases where the predictions allow, else a paired t over seeds."""
    shared = [s for s in seeds if s in pi and s in pe]
    if len(shared) >= 2:
        r = two_set_diff_ci([pi[s] for s in shared], [pe[s] for s in shared], metric, confidence=confidence)
        if np.isfinite(r["ci_low"]):
            return {"n_pairs": len(shared), "seeds": shared, "inference": "seeds+cases", "test": "crossed_t",
                    "estimate": r["estimate"], "ci_low": r["ci_low"], "ci_high": r["ci_high"], "se": r["se"],
                    "df": r["df"], "p": r["p"], "note": None}
    ok = sorted(s for s in internal if np.isfinite(internal[s]) and np.isfinite(external.get(s, float("nan"))))
    d = np.array([internal[s] - external[s] for s in ok])
    t = paired_tests(np.array([internal[s] for s in ok]), np.array([external[s] for s in ok]))
    ci = describe(d, confidence=confidence)
    return {"n_pairs": len(ok), "seeds": ok, "inference": "seeds", "test": "ttest_rel",
            "estimate": float(np.mean(d)) if d.size else float("nan"), "ci_low": ci["ci_low"],
            "ci_high": ci["ci_high"], "p": t["ttest_rel"]["p"], "secondary_test": "wilcoxon",
            "secondary_p": t["wilcoxon"]["p"],
            "note": (t["note"] or "") + ("; " if t["note"] else "") + "test-set sampling not covered (no predictions)"}


def _ive_pair(pair: dict, metric: str, pi: Mapping[str, dict], pe: Mapping[str, dict], confidence: float) -> None:
    """Whether two arms' drops differ, over seeds and both test sets' cases (where predictions allow)."""
    a, b = pair["a"], pair["b"]
    shared = [s for s in pair["shared_seeds"] if all(s in d for d in (pi[a], pi[b], pe[a], pe[b]))]
    if len(shared) < 2:
        return
    take = lambda d: [d[s] for s in shared]  # noqa: E731
    r = crossed([CaseSet([(1.0, take(pi[a])), (-1.0, take(pi[b]))]),
                 CaseSet([(-1.0, take(pe[a])), (1.0, take(pe[b]))])], metric, confidence)
    if np.isfinite(r["ci_low"]):
        pair.update(inference="seeds+cases", test="crossed_t", diff=r["estimate"], se=r["se"], df=r["df"], p=r["p"],
                    diff_ci_low=r["ci_low"], diff_ci_high=r["ci_high"], diff_ci_seeds_cases_low=r["ci_low"],
                    diff_ci_seeds_cases_high=r["ci_high"])


def internal_vs_external(arms: Mapping[str, Arm], name: str, *, metric: str = "auc", alpha: float = 0.05,
                         n_resamples: int = 10000, seed: int = 0, ci_method: str = "t",
                         confidence: float = 0.95, margin=None) -> dict:
    """Per arm: the internal (``test.<metric>``) and external (``external.<name>.<metric>``) means
    with CIs over seeds, and the paired drop (internal - external, per seed) with its interval over
    seeds and both test sets' cases and the t test of no drop that matches it (Holm over the arms);
    for every pair of arms, whether their drops differ (same inference, Holm over the pairs)."""
    internal_key, external_key = f"test.{metric}", f"external.{name}.{metric}"
    internal = collect_values(arms, internal_key)
    external = collect_values(arms, external_key)
    drop_key = f"{internal_key} - {external_key}"
    drops = {a: {s: v - external[a].get(s, float("nan")) for s, v in internal[a].items()} for a in arms}
    res = compare_arms({drop_key: drops}, alpha=alpha, n_resamples=n_resamples, seed=seed, method=ci_method,
                       confidence=confidence, margin=margin)
    pi = {a: run_predictions(arm) for a, arm in arms.items()}
    pe = {a: run_predictions(arm, name) for a, arm in arms.items()}
    if is_hier_metric(metric):
        for pair in res["pairs"]:
            if pair["paired"]:
                _ive_pair(pair, metric, pi, pe, confidence)
        conclude(res["pairs"], alpha=alpha, margin=margin, confidence=confidence)
    kw = dict(n_resamples=n_resamples, seed=seed, method=ci_method, confidence=confidence)
    rows = {}
    for a in arms:
        seeds = sorted(internal[a])
        test = _ive_drop(pi[a], pe[a], seeds, metric, internal[a], external[a], confidence) \
            if is_hier_metric(metric) else _ive_drop({}, {}, seeds, metric, internal[a], external[a], confidence)
        rows[a] = {"internal": describe(list(internal[a].values()), **kw),
                   "external": describe(list(external[a].values()), **kw),
                   "drop": res["by_metric"][drop_key]["arms"][a], "no_drop_test": test}
    p_holm = holm([r["no_drop_test"]["p"] for r in rows.values()])
    for r, ph in zip(rows.values(), p_holm):
        r["no_drop_test"]["p_holm"] = float(ph)
        r["no_drop_test"]["significant"] = bool(np.isfinite(ph) and ph < alpha)
    return {"name": name, "metric": metric, "internal_metric": internal_key, "external_metric": external_key,
            "drop_metric": drop_key, "arms": rows, "pairs": res["pairs"], "holm": holm_summary(res["pairs"]),
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
                 n_resamples: int = 10000, seed: int = 0, ci_method: str = "t",
                 named: Sequence[tuple[str, str | Path]] = (),
                 delong: tuple[str | Path, str | Path] | None = None, anchor: float | None = None,
                 internal_vs_external_name: str | None = None, margin=None,
                 primary: Sequence[str] | None = None, scope: str = "patients", pairs=None,
                 primary_pairs=None) -> dict:
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
    if ci_method not in ("t", "bca", "percentile"):
        raise ConfigError(f"CI method must be 't', 'bca' or 'percentile' (got {ci_method!r})")
    _check_margin(margin)
    arms = discover_arms(dirs, named)
    ive = internal_vs_external_name
    if ive is not None:
        metrics = list(dict.fromkeys(list(metrics) + ["test.auc", f"external.{ive}.auc"]))
    result = build_comparison(arms, metrics, alpha=alpha, n_resamples=n_resamples, seed=seed, ci_method=ci_method,
                              margin=margin, primary=primary, scope=scope, pairs=pairs,
                              primary_pairs=primary_pairs)
    if any(external_name(m) is None and m.partition(".")[2].startswith("net_benefit") for m in metrics):
        result["decision_curves"] = decision_curves(arms)
    if ive is not None:
        result["internal_vs_external"] = internal_vs_external(arms, ive, alpha=alpha, n_resamples=n_resamples,
                                                              seed=seed, ci_method=ci_method, margin=margin)
    result["inputs"] = [str(d) for d in dirs] + [f"{n}={d}" for n, d in named]
    if delong is not None:
        result["delong"] = delong_from_runs(delong[0], delong[1])
    if anchor is not None:
        result["anchor"] = anchor_statements(result, anchor)
    return result


def _check_margin(margin) -> None:
    vals = list(margin.values()) if isinstance(margin, Mapping) else ([] if margin is None else [margin])
    for v in vals:
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and np.isfinite(v)):
            raise ConfigError(f"margin must be a positive number (got {v!r})")
