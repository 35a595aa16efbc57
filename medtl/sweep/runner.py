"""Run every (arm, seed) of a sweep; skip finished runs, resume interrupted ones.

Each run is an ordinary ``medtl finetune`` run in ``OUT/<arm>/seed-<k>/``.  A run that fails
writes ``failed.json`` (error type and message) there instead of ``metrics.json`` and the
sweep goes on.  The thread count of every run is part of the plan, so the local process
pool and Ray run the very same computation and give identical numbers.
"""
from __future__ import annotations

import json
import logging
import os
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..config import RunConfig, config_to_yaml
from ..errors import ConfigError, MedtlError
from ..io import write_json_atomic, write_text_atomic

log = logging.getLogger("medtl")

FAILED_FILE = "failed.json"


@dataclass
class RunSpec:
    arm: str
    seed: int
    out: str
    config: dict  # RunConfig as JSON-able dict (seed set)
    threads: int


@dataclass
class RunResult:
    arm: str
    seed: int
    status: str  # done | skipped | failed
    seconds: float
    test_auc: float | None = None
    error: str | None = None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def plan_runs(arms: dict[str, RunConfig], seeds: list[int], out: Path, threads: int) -> list[RunSpec]:
    specs = []
    # seed-major order: with a partial sweep every arm has the same seeds done (paired tests)
    for seed in seeds:
        for arm, cfg in arms.items():
            c = cfg.model_copy(update={"seed": seed})
            specs.append(RunSpec(arm, seed, str(out / arm / f"seed-{seed}"), c.model_dump(mode="json"), threads))
    return specs


def execute_run(spec: RunSpec | dict) -> dict:
    """Run one sweep run in this process (a worker); never raises for a failed run."""
    import torch

    from ..train import finetune

    if isinstance(spec, dict):
        spec = RunSpec(**spec)
    torch.set_num_threads(spec.threads)
    out = Path(spec.out)
    failed = out / FAILED_FILE
    t0 = time.time()
    if (out / "metrics.json").is_file():
        m = json.loads((out / "metrics.json").read_text())
        return asdict(RunResult(spec.arm, spec.seed, "skipped", 0.0, (m.get("test") or {}).get("auc")))
    if failed.is_file():
        failed.unlink()  # a re-run retries failed runs
    try:
        cfg = RunConfig.model_validate(spec.config)
        m = finetune(cfg, out, progress=False)
        return asdict(RunResult(spec.arm, spec.seed, "done", time.time() - t0, m["test"].get("auc")))
    except Exception as exc:  # noqa: BLE001 - record every failure, keep sweeping
        user = isinstance(exc, MedtlError)
        msg = " ".join(str(exc).split()) or type(exc).__name__
        rec = {"arm": spec.arm, "seed": spec.seed, "error_type": type(exc).__name__, "error": msg,
               "user_error": user}
        if not user:
            rec["traceback"] = traceback.format_exc()
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(failed, rec)
        return asdict(RunResult(spec.arm, spec.seed, "failed", time.time() - t0, None, msg))


def _warm_data_cache(arms: dict[str, RunConfig]) -> None:
    """Decode each distinct dataset once in the parent so workers only read the cache."""
    from ..data import load_dataset

    seen = set()
    for cfg in arms.values():
        key = json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        load_dataset(cfg.data, seed=cfg.data.split_seed)


def run_sweep(sweep_path: str | Path, out: str | Path, executor: str = "local", workers: int | None = None,
              arms: list[str] | None = None, seeds: list[int] | None = None, address: str | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Run a sweep; returns the summary also written to ``OUT/sweep.json``."""
    from .config import load_sweep
    from .executors import run_local, run_ray

    sweep, arm_cfgs, seed_list = load_sweep(sweep_path, arms, seeds)
    out = Path(out)
    cores = available_cores()
    if workers is None:
        workers = cores
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    # the same thread count under every executor: the runs, and so the numbers, are identical
    threads = max(1, cores // workers)
    for cfg in arm_cfgs.values():
        if cfg.train.num_threads:
            threads = cfg.train.num_threads
    specs = plan_runs(arm_cfgs, seed_list, out, threads)
    _warm_data_cache(arm_cfgs)  # bad data fails here, once, before any run starts
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "sweep_config.yaml", _sweep_yaml(sweep, arm_cfgs, seed_list, sweep_path))

    t0 = time.time()
    if executor == "local":
        results = run_local(specs, workers, progress)
    elif executor == "ray":
        results = run_ray(specs, address, workers, progress)
    else:
        raise ConfigError(f"--executor must be local or ray, got {executor!r}")
    wall = time.time() - t0
    results.sort(key=lambda r: (list(arm_cfgs).index(r["arm"]), r["seed"]))
    summary = {
        "name": sweep.name, "sweep_config": str(sweep_path), "arms": list(arm_cfgs), "seeds": seed_list,
        "executor": executor, "workers": workers, "threads_per_run": threads,
        "wall_time_s": round(wall, 2),
        "counts": {s: sum(r["status"] == s for r in results) for s in ("done", "skipped", "failed")},
        "runs": results,
    }
    write_json_atomic(out / "sweep.json", summary)
    return summary


def _sweep_yaml(sweep, arm_cfgs, seeds, path) -> str:
    import yaml

    doc = {"sweep": sweep.model_dump(mode="json"), "source": str(path), "seeds": seeds,
           "resolved_arms": {a: yaml.safe_load(config_to_yaml(c)) for a, c in arm_cfgs.items()}}
    return yaml.safe_dump(doc, sort_keys=False)
