"""``medtl study``: every stage of a study in one folder, each resumable.

Stages, in order (``DIR`` is the study folder; names in :mod:`medtl.runs`):

1. **train**: the sweep, ``DIR/runs/<arm>/seed-<k>/`` (finished runs are skipped, interrupted ones
   resume: :func:`medtl.sweep.run_sweep`);
2. **compare**: ``DIR/compare/`` (:func:`medtl.stats.comparison.compare_runs`; cheap, recomputed);
3. **robustness**: ``DIR/robustness/`` (:func:`medtl.probes.suite.run_probes`; every probe is cached
   per run and parameters, so a re-run recomputes only what is missing);
4. **evaluate**: per external dataset, ``RUN/external/<name>/`` (cached per run) and
   ``DIR/evaluate/<name>/`` with the internal-vs-external comparison;
5. **page**: ``DIR/study.html`` (self-contained), ``study.md`` and ``study.json``.

Killing the command and running it again recomputes nothing that finished.  The local executor
and Ray run the same per-run units (a training run, a run's probes).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..io import write_text_atomic
from ..reports.render import prepare_out
from ..runs import STUDY_COMPARE, STUDY_CONFIG, STUDY_EVALUATE, STUDY_ROBUSTNESS, STUDY_RUNS, STUDY_SWEEP
from .config import StudyConfig, load_study, resolve, sweep_yaml


class _Stages:
    """Stage bookkeeping: wall time per stage and one progress bar (with ETA) per stage."""

    def __init__(self, progress: bool):
        self.progress = progress
        self.seconds: dict[str, float] = {}

    def bar(self, name: str, total: int):
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=name, unit="run", dynamic_ncols=True)

    def timed(self, name: str, fn, *args, **kw):
        t = time.time()
        try:
            return fn(*args, **kw)
        finally:
            self.seconds[name] = round(time.time() - t, 2)


def _train(out: Path, st: _Stages, executor: str, workers, address, gpus_per_run) -> dict:
    from ..sweep import run_sweep

    return run_sweep(out / STUDY_SWEEP, out / STUDY_RUNS, executor=executor, workers=workers, address=address,
                     progress=st.progress, gpus_per_run=gpus_per_run)


def _compare(cfg: StudyConfig, out: Path) -> dict:
    from ..stats.comparison import compare_runs

    c = cfg.compare
    return compare_runs([out / STUDY_RUNS], c.metrics, alpha=c.alpha, n_resamples=c.bootstrap, anchor=c.anchor,
                        margin=cfg.margin, primary=[m for m in cfg.primary if m in c.metrics], scope=cfg.scope,
                        pairs=cfg.pair_list(), primary_pairs=cfg.primary_pair_list())


def _robustness(cfg: StudyConfig, folder: Path, out: Path, st: _Stages, executor: str, workers, address,
                gpus_per_run) -> dict | None:
    from ..probes.suite import run_probes
    from ..runs import discover_arms

    p = cfg.probes
    if p.preset == "none":
        return None
    dirs = [out / STUDY_RUNS / a for a in p.arms] if p.arms else [out / STUDY_RUNS]
    n = sum(len(a.run_dirs) for a in discover_arms(dirs).values())
    bar = st.bar("probes", n)
    try:
        result = run_probes(dirs, quick=p.preset == "quick", n_images=p.n_images,
                            source=resolve(folder, p.source) if p.source else None, workers=workers,
                            progress=(lambda _msg: bar.update(1)) if bar is not None else None,
                            executor=executor, address=address, gpus_per_run=gpus_per_run, margin=cfg.margin,
                            primary=[m for m in cfg.primary if m not in cfg.compare.metrics],
                            pairs=cfg.pair_list(), primary_pairs=cfg.primary_pair_list())
    finally:
        if bar is not None:
            bar.close()
    return result


def _evaluate(cfg: StudyConfig, out: Path) -> list[dict]:
    from ..evaluate import default_name, evaluate_runs
    from ..reports import write_compare
    from ..stats.comparison import compare_runs

    done = []
    for spec in cfg.evaluate:
        name = spec.name or default_name(spec.data)
        res = evaluate_runs([out / STUDY_RUNS], spec.data, name=name, label_map=spec.label_map,
                            positive=spec.positive, split=spec.split, data_options=spec.options)
        ive = compare_runs([out / STUDY_RUNS], ["test.auc"], alpha=cfg.compare.alpha,
                           n_resamples=cfg.compare.bootstrap, internal_vs_external_name=name, margin=cfg.margin)
        write_compare(ive, out / STUDY_EVALUATE / name, plots=False)
        done.append({"name": name, "data": spec.data, "evaluate": res, "compare": ive})
    return done


def study_families(cfg: StudyConfig, compare: dict, robustness: dict | None) -> dict:
    """One Holm family for the declared primary endpoints across the whole study (compare and
    robustness pairs), one for everything else (exploratory); every pair re-concluded with the
    study's margin.  Returns the family record for the page and the JSON."""
    from ..stats.comparison import conclusion_lines
    from ..stats.compare import conclude, holm_summary, pair_family

    if robustness is not None and "test.auc" in cfg.compare.metrics:  # the same test as compare's test.auc
        robustness["pairs"] = [p for p in robustness["pairs"] if p["metric"] != "clean.auc"]
        robustness["notes_study"] = ["clean.auc is tested once, as test.auc in the comparison section"]
    pairs = list(compare["pairs"]) + list((robustness or {}).get("pairs") or [])
    for p in pairs:
        p["family"] = pair_family(p["a"], p["b"], p["metric"], cfg.primary, cfg.primary_pair_list())
    conclude(pairs, alpha=cfg.compare.alpha, margin=cfg.margin)
    summary = holm_summary(pairs)
    compare["holm"] = summary
    compare["conclusions"] = conclusion_lines(compare["pairs"])
    if robustness is not None:
        robustness["holm"] = summary
    on = f" on {len(cfg.primary_pairs)} declared pairs" if cfg.primary_pairs is not None else ""
    text = (f"Holm families span the whole study: primary ({summary['m_primary']} tests: "
            f"{', '.join(cfg.primary) or 'none declared'}{on}) and exploratory ({summary['m_exploratory']} tests, "
            f"corrected on their own)")
    compare.setdefault("tests", {})["multiplicity"] = text
    return {"primary": list(cfg.primary), "pairs": cfg.pairs, "primary_pairs": cfg.primary_pairs, "margin": cfg.margin, "alpha": cfg.compare.alpha, **summary,
            "text": text, "primary_conclusions": [c for c in conclusion_lines(pairs) if c["family"] == "primary"]}


def _write_stage_pages(compare: dict, robustness: dict | None, out: Path) -> None:
    from ..reports import write_compare, write_robustness

    write_compare(compare, out / STUDY_COMPARE)
    if robustness is not None:
        write_robustness(robustness, out / STUDY_ROBUSTNESS)


def _plan(cfg: StudyConfig, folder: Path, out: Path, seeds: int, families: dict) -> dict:
    """Seeds needed for the primary endpoints (or the first compare metric), from the pilot folder
    or, without one, from the study's own runs (then a check of the design, not a plan)."""
    from ..stats.pilot import plan_runs

    p = cfg.plan
    metrics = [m for m in cfg.primary if m in cfg.compare.metrics] or cfg.compare.metrics[:1]
    src = resolve(folder, p.pilot) if p.pilot else out / STUDY_RUNS
    margin = cfg.margin if not isinstance(cfg.margin, dict) else None
    source = "pilot runs" if p.pilot else "the study's own runs (a check of the design, not a plan)"
    try:
        res = plan_runs([src], metrics, difference=p.difference, margin=margin, theta=p.theta,
                        alpha=cfg.compare.alpha, power=p.power, family_size=max(families["m_primary"], 1),
                        planned_seeds=seeds, scope=cfg.scope)
    except ConfigError as exc:  # a pilot too small for a plan: the page says so, the study goes on
        return {"source": source, "pairs": [{"sentences": [f"No plan: {exc}."]}], "error": str(exc)}
    res["source"] = source
    return res


def run_study(path: str | Path, out: str | Path, *, executor: str = "local", workers: int | None = None,
              address: str | None = None, gpus_per_run: float = 0.0, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) every stage of the study at ``path`` into ``out``; returns the study record
    also written to ``OUT/study.json``."""
    from ..reports.study import write_study

    cfg, folder = load_study(path)
    if gpus_per_run < 0 or (gpus_per_run > 0 and executor != "ray"):
        raise ConfigError(f"gpus per run must be >= 0 and needs the ray executor (got {gpus_per_run} with "
                          f"{executor})")
    sweep_text = sweep_yaml(cfg, folder)
    cfg.check_arms(list((yaml.safe_load(sweep_text) or {}).get("arms") or {}), str(path))  # before any write
    out = prepare_out(out)
    write_text_atomic(out / STUDY_CONFIG, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    write_text_atomic(out / STUDY_SWEEP, sweep_text)
    st = _Stages(progress)
    t0 = time.time()
    sweep = st.timed("train", _train, out, st, executor, workers, address, gpus_per_run)
    compare = st.timed("compare", _compare, cfg, out)
    robustness = st.timed("robustness", _robustness, cfg, folder, out, st, executor, workers, address, gpus_per_run)
    families = study_families(cfg, compare, robustness)
    _write_stage_pages(compare, robustness, out)
    external = st.timed("evaluate", _evaluate, cfg, out) if cfg.evaluate else []
    plan = st.timed("plan", _plan, cfg, folder, out, len(sweep["seeds"]), families) if cfg.plan else None
    record = {"name": cfg.name, "config": cfg.model_dump(mode="json"), "study_file": str(Path(path)),
              "executor": executor, "workers": workers, "gpus_per_run": gpus_per_run,
              "train": {k: sweep[k] for k in ("arms", "seeds", "counts", "wall_time_s", "threads_per_run")},
              "families": families, "plan": plan, "stage_seconds": st.seconds}
    record["seconds"] = round(time.time() - t0, 2)
    write_study(record, compare, robustness, external, out)
    return record
