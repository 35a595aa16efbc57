"""``medtl finetune``: parse, resolve the config, call :func:`medtl.train.finetune`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import MLFLOW_HELP, check_mlflow_option, mlflow_hook, setup_logging, training_process


def finetune(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML experiment config."),
    set_: List[str] = typer.Option([], "--set", "-s", help="Override a config key: --set train.lr=0.01"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default runs/NAME/seed-N)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for init, data order and augmentation."),
    restart: bool = typer.Option(False, "--restart", help="Discard an existing run in --out first."),
    allow_device_change: bool = typer.Option(False, "--allow-device-change",
                                             help="Resume an interrupted run on another device or precision "
                                                  "(the result is then not bit-identical)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, warnings only."),
    mlflow: Optional[str] = typer.Option(None, "--mlflow", metavar="URI",
                                         help=MLFLOW_HELP.format(what="the run", runs="it")),
) -> None:
    """Fine-tune a backbone on X-ray data.

    Writes config.yaml, metrics.json, log.csv and checkpoint_best.pt into the run folder.
    Re-running the same command resumes an interrupted run.
    """
    from ..config import load_config
    from ..runs import default_run_dir
    from ..train import finetune as run_finetune

    setup_logging(quiet)
    check_mlflow_option(mlflow)
    overrides = list(set_) + ([f"seed={seed}"] if seed is not None else [])
    cfg = load_config(config, overrides)
    out_dir = out or default_run_dir(cfg.name, cfg.seed)
    main = training_process(cfg.train.num_threads, distributed=True)
    record = run_finetune(cfg, out_dir, progress=not quiet, restart=restart,
                          allow_runtime_change=allow_device_change)
    if not main:  # data-parallel: rank 0 reports
        return
    from ..stats.case_ci import summary_line

    tag = " [SYNTHETIC data]" if record.run.synthetic else ""
    typer.echo(f"test{tag}: " + summary_line(record.test) + f" (n={record.test.n})")
    typer.echo(f"run folder: {out_dir}")
    if mlflow is not None:
        mlflow_hook(out_dir, mlflow)
