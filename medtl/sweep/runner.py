"""Run every (arm, seed) of a sweep; skip finished runs, resume interrupted ones.

Each run is an ordinary ``medtl finetune`` run in ``OUT/<arm>/seed-<k>/``.  A run that fails
writes ``failed.json`` (error type and message) there instead of ``metrics.json`` and the
sweep goes on.  The thread count of every run is part of the plan, so the local process
pool and Ray run the very same computation and give identical numbers.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from ..config import RunConfig, config_to_yaml
from ..errors import ConfigError
from ..io import write_json_atomic, write_text_atomic
from ..runs import SWEEP_CONFIG, SWEEP_SUMMARY, sweep_run_dir
from .executors import run_local, run_ray
from .worker import RunSpec, available_cores

log = logging.getLogger("medtl")

def plan_runs(arms: dict[str, RunConfig], seeds: list[int] | dict[str, list[int]], out: Path, threads: int,
              device: str | None = None) -> list[RunSpec]:
    """One spec per (arm, seed) (``seeds``: one list for every arm, or ``{arm: seeds}``); ``device``
    (e.g. 'cuda' for runs given a GPU share) overrides
    ``train.device`` in every run's config, so the setting travels with the run to its worker."""
    specs = []
    per_arm = seeds if isinstance(seeds, dict) else {a: list(seeds) for a in arms}
    every = list(dict.fromkeys(s for a in arms for s in per_arm[a]))
    # seed-major order: with a partial sweep every arm has the same seeds done (paired tests)
    for seed in every:
        for arm, cfg in arms.items():
            if seed not in per_arm[arm]:
                continue
            c = cfg.model_copy(update={"seed": seed})
            if device is not None:
                c = c.model_copy(update={"train": c.train.model_copy(update={"device": device})})
            specs.append(RunSpec(arm, seed, str(sweep_run_dir(out, arm, seed)), c.model_dump(mode="json"), threads))
    return specs


def _warm_data_cache(arms: dict[str, RunConfig]) -> None:
    """Decode each distinct dataset once in the parent so workers only read the cache."""
    from ..data import load_dataset

    seen = set()
    for cfg in arms.values():
        key = json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        load_dataset(cfg.data)


def run_sweep(sweep_path: str | Path, out: str | Path, executor: str = "local", workers: int | None = None,
              arms: list[str] | None = None, seeds: list[int] | None = None, address: str | None = None,
              progress: bool = True, gpus_per_run: float = 0.0) -> dict[str, Any]:
    """Run a sweep; returns the summary also written to ``OUT/sweep.json``.

    ``gpus_per_run`` (Ray only): the GPU share each run asks for (0.25: four runs per GPU); such
    runs train with ``train.device: cuda`` on the device Ray assigns them."""
    from .config import load_sweep

    sweep, arm_cfgs, seed_list = load_sweep(sweep_path, arms, seeds)
    out = Path(out)
    cores = available_cores()
    if workers is None:
        workers = cores
    if workers < 1:
        raise ConfigError(f"workers must be >= 1 (got {workers})")
    if gpus_per_run < 0 or (gpus_per_run > 0 and executor != "ray"):
        raise ConfigError(f"a GPU share per run needs the ray executor and must be >= 0 (got {gpus_per_run} "
                          f"with the {executor} executor)")
    # the same thread count under every executor: the runs, and so the numbers, are identical
    threads = max(1, cores // workers)
    for cfg in arm_cfgs.values():
        if cfg.train.num_threads:
            threads = cfg.train.num_threads
    arm_seeds = {a: sweep.arm_seeds(a, seeds) for a in arm_cfgs}
    seed_list = list(dict.fromkeys(s for a in arm_cfgs for s in arm_seeds[a]))
    specs = plan_runs(arm_cfgs, arm_seeds, out, threads, device="cuda" if gpus_per_run > 0 else None)
    _warm_data_cache(arm_cfgs)  # bad data fails here, once, before any run starts
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / SWEEP_CONFIG, _sweep_yaml(sweep, arm_cfgs, seed_list, sweep_path))

    t0 = time.time()
    if executor == "local":
        results = run_local(specs, workers, progress)
    elif executor == "ray":
        results = run_ray(specs, address, workers, progress, gpus_per_run)
    else:
        raise ConfigError(f"executor must be local or ray (got {executor!r})")
    wall = time.time() - t0
    results.sort(key=lambda r: (list(arm_cfgs).index(r["arm"]), r["seed"]))
    summary = {
        "name": sweep.name, "sweep_config": str(sweep_path), "arms": list(arm_cfgs), "seeds": seed_list,
        "arm_seeds": {a: s for a, s in arm_seeds.items() if s != seed_list},
        "executor": executor, "workers": workers, "threads_per_run": threads, "gpus_per_run": gpus_per_run,
        "wall_time_s": round(wall, 2),
        "counts": {s: sum(r["status"] == s for r in results) for s in ("done", "skipped", "failed")},
        "runs": results,
    }
    write_json_atomic(out / SWEEP_SUMMARY, summary)
    return summary


def _sweep_yaml(sweep, arm_cfgs, seeds, path) -> str:
    import yaml

    doc = {"sweep": sweep.model_dump(mode="json"), "source": str(path), "seeds": seeds,
           "resolved_arms": {a: yaml.safe_load(config_to_yaml(c)) for a, c in arm_cfgs.items()}}
    return yaml.safe_dump(doc, sort_keys=False)
