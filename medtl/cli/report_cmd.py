"""``medtl robustness-report``: parse, then :func:`medtl.probes.suite.run_probes` and
:func:`medtl.reports.write_robustness`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import ConfigError


def robustness_report(
    run_dirs: List[Path] = typer.Argument(..., help="Run, arm (seed-K/) or sweep (ARM/seed-K/) folders."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for report.html, report.md, robustness.json."),
    quick: bool = typer.Option(False, "--quick", help="Smaller probes (fewer images, shifts, PGD steps)."),
    n_images: int = typer.Option(0, "--n-images", help="Override the images per probe (0: the preset's)."),
    source: Optional[Path] = typer.Option(None, "--source", help="Also black-box transfer from this run."),
    force: bool = typer.Option(False, "--force", help="Recompute cached probes."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", help="Runs probed in parallel processes "
                                          "(default: one per core), each with cores/workers threads."),
) -> None:
    """Run (or reuse cached) probes for every run; per-arm mean and 95% CI over seeds."""
    from ..probes.suite import run_probes
    from ..reports import write_robustness
    from .common import setup_logging

    setup_logging(False)
    blocked = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocked is not None:  # refused now, not after the probes ran
        raise ConfigError(f"{out}: cannot be the report folder: {blocked} is a file; choose another --out folder")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1 (got {workers})")
    result = run_probes(run_dirs, quick=quick, n_images=n_images or None, source=source, force=force,
                        progress=typer.echo, workers=workers)
    write_robustness(result, out)
    typer.echo(f"wrote {Path(out) / 'report.html'}, report.md, robustness.json "
               f"({len(result['runs'])} runs, {len(result['arms'])} arms)")
