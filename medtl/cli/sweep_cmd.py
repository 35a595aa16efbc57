"""``medtl sweep``: many seeds x many arms."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import ConfigError
from .common import MLFLOW_HELP, check_mlflow_option, mlflow_hook, setup_logging


def sweep(
    config: Path = typer.Option(..., "--config", "-c", help="Sweep YAML (base config, arms, seeds)."),
    out: Path = typer.Option(..., "--out", "-o", help="Sweep folder: OUT/<arm>/seed-<k>/."),
    executor: str = typer.Option("local", "--executor", help="local (process pool) or ray."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", help="Parallel runs (default: one per core)."),
    arms: List[str] = typer.Option([], "--arm", help="Run only these arms (repeatable)."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Override the number of seeds (0..N-1)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray address: auto or HOST:PORT."),
    gpus_per_run: float = typer.Option(0.0, "--gpus-per-run", help="Ray: the GPU share of each run (0.25: four "
                                       "runs per GPU); such runs train on the device Ray assigns."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    mlflow: Optional[str] = typer.Option(None, "--mlflow", metavar="URI",
                                         help=MLFLOW_HELP.format(what="the sweep", runs="its finished runs")),
) -> None:
    """Run every (arm, seed) of a sweep.

    Re-running skips finished runs and resumes interrupted ones.  Failed runs are recorded in
    failed.json and do not stop the sweep.
    """
    from ..runs import seed_dirname
    from ..sweep import run_sweep

    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds must be >= 1 (got {seeds})")
    blocked = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocked is not None:  # refused before any run, not a traceback at mkdir
        raise ConfigError(f"{out}: cannot be the sweep folder: {blocked} is a file; choose another --out folder")
    check_mlflow_option(mlflow)
    setup_logging(True)
    summary = run_sweep(config, out, executor=executor, workers=workers, arms=list(arms) or None,
                        seeds=list(range(seeds)) if seeds else None, address=address, progress=not quiet,
                        gpus_per_run=gpus_per_run)
    c = summary["counts"]
    typer.echo(f"sweep {summary['name']}: {c['done']} run, {c['skipped']} already finished, "
               f"{c['failed']} failed, {summary['wall_time_s']:.0f} s wall; results in {out}")
    for r in summary["runs"]:
        if r["status"] == "failed":
            typer.echo(f"  failed: {r['arm']}/{seed_dirname(r['seed'])}: {r['error']}", err=True)
    typer.echo(f"compare with: medtl compare {out} --metric test.auc --out {out}/compare")
    if mlflow is not None:
        mlflow_hook(out, mlflow)
