"""One sweep run in a worker process (local pool or Ray task): the unit every executor runs.

A run that fails writes ``failed.json`` (error type and message) in its run folder instead of
``metrics.json``, and the worker returns normally so the sweep goes on.
"""
from __future__ import annotations

import os
import time
import traceback
from dataclasses import asdict, dataclass

from ..config import RunConfig
from ..errors import MedtlError
from ..io import write_json_atomic
from ..runs import Run


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


def execute_run(spec: RunSpec | dict) -> dict:
    """Run one sweep run in this process (a worker); never raises for a failed run."""
    from ..train import configure_process, finetune

    if isinstance(spec, dict):
        spec = RunSpec(**spec)
    configure_process(spec.threads)  # this process is a worker: its entry point sets threads and malloc
    run = Run(spec.out)
    out = run.path
    failed = run.failed_path
    t0 = time.time()
    if run.finished():
        return asdict(RunResult(spec.arm, spec.seed, "skipped", 0.0, run.record.test.auc))
    if failed.is_file():
        failed.unlink()  # a re-run retries failed runs
    try:
        cfg = RunConfig.model_validate(spec.config)
        m = finetune(cfg, out, progress=False)
        return asdict(RunResult(spec.arm, spec.seed, "done", time.time() - t0, m.test.auc))
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


