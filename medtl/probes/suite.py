"""The robustness suite: every probe of every run of a set of arms (cached per run), grouped
by arm and aggregated over seeds.  :func:`run_probes` returns the result that
:func:`medtl.reports.write_robustness` renders.

Runs are found by :func:`medtl.runs.discover_arms` (sweep, arm or run folders; the arm of a
``seed-<k>`` folder is its parent).  Probe results are cached per run in ``RUN/probes/``, keyed
by the probe parameters, so a second report is fast and a change of parameters recomputes.
Images are identified only by their test-set index.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..errors import ConfigError
from ..io import json_safe
from ..runs import Run, discover_arms, seed_dirname
from ..stats.comparison import leak_warnings
from ..stats.robustness import aggregate, robustness_pairs
from . import registry

# Measured cost decisions (scripts/bench_report.py, reports/probe_speed.md): the attacks run on a
# seeded, stratified test subset (its DeLong sampling error joins the attack CIs; attack strength
# unchanged: steps, step size, random start), in batches of 512; translation and corruption
# forwards run at the training precision (each run records its clean-decision agreement with fp32).
# Each probe's presets live with its registration (medtl.probes.registry).


def probe_params(quick: bool = False, n_images: int | None = None) -> dict:
    """``{probe: parameters}`` of every registered probe for the suite: its preset (``quick`` or
    full) and, where it samples images, ``n_images``."""
    preset = "quick" if quick else "full"
    return {p.name: dict(p.presets.get(preset, {})) | ({p.sample_param: n_images} if n_images and p.sample_param
                                                      else {})
            for p in registry.probes()}


def calibration_record(run: Run) -> dict | None:
    """The test calibration of a run for the report: from metrics.json where the run has it (with
    the temperature-scaled ECE), else computed from its predictions_test.npz (binary runs written
    before calibration existed; no temperature then); None for runs that have neither."""
    from ..errors import DataError
    from ..record import MISSING
    from ..runs import METRICS, PREDICTIONS, read_predictions
    from ..stats.calibration import calibration_metrics

    keys = ("ece", "ece_equal_mass", "mce", "brier", "nll", "reliability")
    record = run.record
    test = record.test
    if test.ece is not None:
        ts = test.temp_scaled
        found = {k: (v if (v := test.at(k)) is not MISSING else None) for k in keys}
        return found | {"ece_after_temperature": ts.ece if ts else None, "temperature": ts.temperature if ts else None,
                        "source": METRICS}
    if record.task != "binary":
        return None
    try:
        d = read_predictions(run.predictions_path)
    except DataError:
        return None
    src = calibration_metrics(d["y"], d["p"])
    return {k: src.get(k) for k in keys} | {"ece_after_temperature": None, "temperature": None,
                                           "source": PREDICTIONS}


def probe_run(run_dir: Path, params: Mapping, *, source: Path | None = None, force: bool = False) -> dict:
    """All registered probes of one run (cached); the per-run record of robustness.json: the run's
    clean test metrics, each probe's record entries, the run's test calibration, and each probe's
    forward precision and seconds."""
    run = Run(run_dir)
    test = run.record.test
    rec: dict = {"clean": {"auc": test.auc, "acc": test.acc, "n_test": test.n}}
    multilabel = run.record.task == "multilabel"
    if multilabel:  # the macro AUC above, and each label's
        per = test.at("auc_per_class")
        rec["clean"]["auc_per_label"] = per if isinstance(per, dict) else None
        rec["task"] = "multilabel"
    results = {}
    for p in registry.probes():
        if multilabel and p.single_label_only:  # skipped, saying why (the page shows it)
            rec.setdefault("skipped", {})[p.name] = p.single_label_only
            continue
        kw = dict(params.get(p.name, {}))
        results[p.name] = r = p.run(run_dir, force=force, **kw)
        transfer = None
        if p.transfer and source is not None and Path(source).resolve() != Path(run_dir).resolve():
            transfer = p.run(run_dir, source=source, force=force, **kw)
        for k, v in p.record_of(r, run, transfer).items():
            rec[k] = rec[k] | v if isinstance(rec.get(k), dict) and isinstance(v, dict) else v
    rec["calibration"] = calibration_record(run)
    rec["precision"] = {name: r["precision"] for name, r in results.items() if "precision" in r}
    rec["seconds"] = {name: r.get("seconds") for name, r in results.items()}
    return rec


METHODS = [
    "Decisions: p(positive) ≥ the run's operating threshold (chosen on val) for binary runs, argmax otherwise; "
    "the model in eval mode. Attacks, shape bias and shortcuts run in fp32; translation and corruption forwards "
    "run at the run's training precision where the preset says so (each run records how often its clean "
    "decisions agree with fp32's: 'Forward precision' above).",
    "Translation: shifts of ±1..k px along x, y and the diagonal; main protocol 'crop' = reflect-pad by k and crop "
    "(no black border); also 'black' (black canvas) and 'circular' (torch.roll). Consistency = agreement of "
    "decisions under random shift pairs (Zhang 2019); jaggedness = decision flips per 1-px step along a path.",
    "Adversarial: torchattacks FGSM / PGD (step 2.5ε/steps, random start), L∞ ε in pixel units of [0,1] images, "
    "on a seeded, stratified sample of the test set (n in the summary); where that sample is a subset of the N test "
    "images, the attack AUCs also get an interval for the whole test set: over seeds and the subset's cases (the "
    "DeLong case variance of the predictions averaged over seeds, counted once, times the finite-population correction 1 - n/N), and the "
    "pair tests of attack AUCs use that variance; "
    "L2 budget ε·sqrt(H·W); success rate = fraction of clean-correct images made wrong; transfer attacks "
    "(prefix transfer_) are crafted on the source run (``source``) and applied to each run.",
    "Corruptions: Gaussian and Poisson noise, Gaussian blur, contrast, gamma, JPEG, down-up sampling; 5 severities "
    "each; mean AUC drop = clean AUC − mean AUC over corruptions and severities (same image sample).",
    "Explanations: Grad-CAM (captum, deepest ResNet stage with ≥4 px maps), |gradient| saliency, occlusion; "
    "PCA of penultimate features. Images are named only by their test-set index.",
    "Shape bias (after Geirhos et al. 2019) on cue-conflict X-rays lowpass(A) + highpass(B) of test images of "
    "different classes (Gaussian σ = 0.04 x side; pairs balanced over ordered class pairs). Each cue alone is "
    "scored on every test image (shape-only = lowpass(A), texture-only = highpass(B) on B's mean): balanced "
    "accuracy with a 95% CI (per-class Wilson intervals combined by MOVER). Only pairs whose two single-cue "
    "images the model classifies correctly count; per direction, the fraction of their decisions that follow "
    "the shape source; shape bias = the mean of the directions (a constant model scores 0.5), CI by MOVER from "
    "the per-direction Wilson intervals. Interpretable only when both cues alone are recognised clearly above "
    "chance (CI low end above 1/K) and enough pairs qualify; otherwise no score, and the seed is left out of "
    "the arm's mean and of the tests. medtl.probes.shape_bias documents the construction.",
    "Shortcuts: AUC on the full image, with the lung fields replaced, on the lung fields alone and on the border "
    "band (12.5% of the side) alone; replaced pixels take the median of the kept pixels of that image. Lung fields: "
    "a classical mask (Otsu inside the body, dark regions not touching the border, two lungs), or a fixed "
    "anatomical prior where it is implausible (counted; where most masks are the prior, lung masking removes an "
    "average lung region, not each image's lungs). Retention = (lung-masked AUC - 0.5) / (full AUC - 0.5) with a "
    "95% CI from a paired bootstrap over test images stratified by class (1000 replicates, percentile). Flagged "
    "when the whole CI lies above 0.75, not flagged when it lies below, undetermined when it straddles 0.75. "
    "medtl.probes.lungmask documents the mask.",
    "Per-arm statistics: mean over seeds and the t 95% CI over seeds (medtl.stats.compare.describe): every "
    "interval on this page is for this test set (training randomness; attack AUCs on a subset also its sampling, "
    "above); with fewer than 3 seeds no CI is given and the comparison is descriptive only.",
    "Arm vs arm: for every pair of arms and every headline metric (clean AUC, P(change) at 1 px, consistency, the "
    "AUC of one attack (PGD L∞ where it ran) at its largest ε, mean corruption AUC drop, shape bias) the difference "
    "with its t interval and the paired t test over the shared seeds (Welch when fewer than 2 seeds are shared; "
    "Wilcoxon beside it), Holm-corrected within its family (declared primary metrics, else exploratory) and "
    "worded by medtl compare's rule: differs, equivalent within a margin, or inconclusive.",
    "Calibration (test set, positive class): ECE over 10 equal-width bins (and equal-mass bins), Brier score, "
    "NLL, and ECE after temperature scaling fitted on val NLL, from each run's metrics.json (runs written before "
    "calibration existed: computed from predictions_test.npz, without a temperature); per arm the mean and "
    "t 95% CI over seeds, and the mean reliability diagram (per bin, mean over seeds of the observed "
    "frequency, band = 95% CI over seeds). Not among the tested headline metrics.",
    "Units: shifts are in network-input pixels. Where a run upscales its input (data.sr), P(change) is also read at "
    "one native pixel (input_px_per_native_px input pixels) and the headline uses that, so arms at different input "
    "sizes compare fairly. L∞ ε bounds each pixel's intensity change (the same in native and input pixels); the L2 "
    "budget ε·sqrt(H·W) equals an ε-per-native-pixel perturbation upscaled to the input.",
]


#: the methods sentence of a page with multi-label runs
MULTILABEL_METHODS = (
    "Multi-label runs (sigmoid outputs): each decision is a 0/1 vector, p ≥ 0.5 per label (metrics.json records no "
    "per-label operating threshold); AUCs are per label and their macro mean over the labels whose AUC is defined; "
    "translation metrics count a change when any label's decision changes (per-label P(change) at 1 px beside); "
    "attacks maximise binary cross-entropy with logits on the multi-hot target (medtl's FGSM / PGD, the steps of "
    "torchattacks'), with the flip rate = fraction of images whose decision vector changes; explanations are of "
    "the most prevalent labels' logits. Shape bias and shortcuts need single-label decisions and skip such runs.")


def _probe_task(task: Mapping) -> dict:
    """One run's probes in a worker process (local pool or Ray task): the unit every executor runs."""
    import logging

    from ..train import configure_process

    configure_process(task["threads"])  # a worker: its entry point sets threads and malloc
    logging.getLogger("medtl").setLevel(logging.WARNING)
    import os

    import torch

    # where the worker ran: under Ray with a GPU share, CUDA_VISIBLE_DEVICES names the assigned device
    where = {"cuda_available": torch.cuda.is_available(),
             "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    return _probe_one(task) | {"worker": where}


def _probe_one(task: Mapping) -> dict:
    src = task.get("source")
    t = time.time()
    rec = probe_run(Path(task["run_dir"]), task["params"], source=Path(src) if src else None, force=task["force"])
    return {"arm": task["arm"], "seed": task["seed"], "run_dir": task["run_dir"]} | rec | {
        "probe_wall_s": time.time() - t}


def _note(progress: Callable[[str], None] | None, rec: Mapping) -> None:
    if progress:
        progress(f"{rec['arm']}/{seed_dirname(rec['seed'])}: probed in {rec['probe_wall_s']:.1f}s")


def probe_tasks(arms: Mapping, params: Mapping, source, force: bool, threads: int) -> list[dict]:
    """Every run of every arm as a JSON-able task for :func:`_probe_task`, seed-major."""
    tasks = [{"arm": a, "seed": seed, "run_dir": str(d), "params": dict(params), "force": force,
              "source": str(source) if source else None, "threads": threads}
             for a, arm in arms.items() for seed, d in sorted(arm.run_dirs.items())]
    return sorted(tasks, key=lambda t: (t["seed"], list(arms).index(t["arm"])))


def _run_tasks_local(tasks: list[dict], workers: int, progress: Callable[[str], None] | None) -> list[dict]:
    """Run the probe tasks in ``workers`` spawned processes (in this process when 1)."""
    import concurrent.futures as cf
    import multiprocessing as mp

    out = []
    if workers == 1:
        for t in tasks:
            out.append(_probe_one(t))  # in this process: its thread settings are the caller's
            _note(progress, out[-1])
        return out
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_probe_task, t) for t in tasks]
        try:
            for fut in cf.as_completed(futures):
                out.append(fut.result())
                _note(progress, out[-1])
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return out


def _drop_per_image(runs: Sequence[dict]) -> None:
    """The per-image attack probabilities served the intervals and tests; the report keeps their
    results and the sample's size, not the arrays (they stay in each run's probes/ cache)."""
    for rec in runs:
        for rows in rec["adversarial"].values():
            for r in rows:
                r.pop("p", None)
        sample = rec.get("adversarial_sample") or {}
        if sample.get("index") is not None:
            rec["adversarial_sample"] = {"n": len(sample["index"]), "n_test": sample.get("n_test")}


def run_probes(dirs: Sequence[str | Path], *, quick: bool = False, n_images: int | None = None,
               source: str | Path | None = None, force: bool = False,
               progress: Callable[[str], None] | None = None, params: Mapping | None = None,
               workers: int | None = 1, executor: str = "local", address: str | None = None,
               gpus_per_run: float = 0.0, margin=None, primary: Sequence[str] | None = None,
               pairs=None, primary_pairs=None) -> dict:
    """Probe every finished run found in ``dirs`` (cached), aggregate per arm; JSON-ready result.
    ``pairs``/``primary_pairs``: the arm pairs to test and which are primary (default: all;
    :func:`medtl.stats.compare.compare_arms`).

    ``workers``: runs probed in parallel processes, each with ``cores // workers`` threads (as
    the sweep trains them; None: one per core, at most one per run).  Every run's probes are
    seeded and cached in its own folder, so the result does not depend on the worker count
    beyond float rounding across thread counts.  ``executor="ray"`` runs the same per-run units as
    Ray tasks (``address``; ``gpus_per_run``: the GPU share of each, whose device the run's model
    then uses)."""
    from ..sweep.worker import available_cores

    if n_images is not None and n_images < 0:
        raise ConfigError(f"n_images must be >= 0 (got {n_images})")
    arms = discover_arms(list(dirs))
    params = dict(params) if params is not None else probe_params(quick, n_images)
    cores = available_cores()
    n_runs = sum(len(a.run_dirs) for a in arms.values())
    workers = max(1, min(cores if workers is None else workers, max(n_runs, 1)))
    if source is not None:
        from .runs import load_run

        load_run(source)  # a bad --source fails once, here, before any run is probed
    t0 = time.time()
    tasks = probe_tasks(arms, params, source, force, max(1, cores // workers))
    if executor == "local":
        runs = _run_tasks_local(tasks, workers, progress)
    elif executor == "ray":
        from ..sweep.executors import ray_map

        runs = ray_map(_probe_task, tasks, address=address, cpus_per_task=tasks[0]["threads"] if tasks else 1,
                       gpus_per_task=gpus_per_run, max_cpus=workers * max(1, cores // workers),
                       on_result=lambda rec: _note(progress, rec))
    else:
        raise ConfigError(f"executor must be local or ray (got {executor!r})")
    runs.sort(key=lambda r: (list(arms).index(r["arm"]), r["seed"]))
    metrics = registry.probe_metrics()
    pairs = robustness_pairs(runs, metrics, margin=margin, primary=primary, pairs=pairs,
                             primary_pairs=primary_pairs)
    arms_summary = aggregate(runs, metrics)
    _drop_per_image(runs)
    result = {"runs": runs, "arms": arms_summary, "pairs": pairs["pairs"], "holm": pairs["holm"],
              "headline": pairs["headline"], "descriptive_only": pairs["descriptive_only"],
              "design_note": pairs["design_note"],
              "leak_warnings": leak_warnings(arms), "params": params, "methods": METHODS + [p.methods for p in registry.probes()
                                                              if p.methods and p.name not in registry.BUILTIN]
              + ([MULTILABEL_METHODS] if any(r.get("task") == "multilabel" for r in runs) else []),
              "n_failed": sum(len(a.failed) for a in arms.values()),
              "n_incomplete": sum(len(a.incomplete) for a in arms.values()),
              "workers": workers, "seconds": time.time() - t0}
    return json_safe(result)
