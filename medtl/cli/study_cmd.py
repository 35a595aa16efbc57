"""``medtl study``: parse, then :func:`medtl.study.run_study`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def study(
    config: Path = typer.Argument(..., help="Study YAML: a sweep (file or inline), compare metrics, probes, "
                                            "external data."),
    out: Path = typer.Option(..., "--out", "-o", help="Study folder: runs/, compare/, robustness/, study.html."),
    executor: str = typer.Option("local", "--executor", help="local (process pool) or ray."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", help="Parallel runs (default: one per core)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray address: auto or HOST:PORT."),
    gpus_per_run: float = typer.Option(0.0, "--gpus-per-run", help="Ray: the GPU share of each run and of each "
                                       "run's probes (0.25: four per GPU)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run a whole study: train every (arm, seed), compare, probe, evaluate on external data, and
    write one page (study.html).  Re-running resumes; nothing finished is recomputed."""
    from ..study import run_study
    from .common import setup_logging

    setup_logging(True)
    rec = run_study(config, out, executor=executor, workers=workers, address=address, gpus_per_run=gpus_per_run,
                    progress=not quiet)
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in rec["stage_seconds"].items())
    c = rec["train"]["counts"]
    typer.echo(f"study {rec['name']}: {c['done']} runs trained, {c['skipped']} already finished, {c['failed']} "
               f"failed; {stages}")
    typer.echo(f"wrote {out / 'study.html'}, study.md, study.json")
