"""`medtl finetune`: parse, resolve the config, call :func:`medtl.train.finetune`."""
from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .track_cmd import MLFLOW_HELP


def _setup_logging(quiet: bool) -> None:
    log = logging.getLogger("medtl")
    log.setLevel(logging.INFO)
    if not any(isinstance(h, logging.StreamHandler) and getattr(h, "_medtl", False) for h in log.handlers):
        h = logging.StreamHandler(sys.stderr)
        h._medtl = True  # type: ignore[attr-defined]
        h.setFormatter(logging.Formatter("medtl: %(message)s"))
        log.addHandler(h)
    for h in log.handlers:
        if getattr(h, "_medtl", False):
            h.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def default_out(name: str, seed: int) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
    return Path("runs") / safe / f"seed-{seed}"


def register(app: typer.Typer) -> None:
    @app.command()
    def finetune(
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML experiment config."),
        set_: List[str] = typer.Option([], "--set", "-s", help="Override a config key: --set train.lr=0.01"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default runs/NAME/seed-N)."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Seed for init, data order and augmentation."),
        restart: bool = typer.Option(False, "--restart", help="Discard an existing run in --out first."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, warnings only."),
        mlflow: Optional[str] = typer.Option(None, "--mlflow", metavar="URI",
                                             help=MLFLOW_HELP.format(what="the run", runs="it")),
    ) -> None:
        """Fine-tune a backbone on X-ray data; writes config.yaml, metrics.json, log.csv and
        checkpoint_best.pt into the run folder.  Re-running the same command resumes."""
        from ..config import load_config
        from ..train import finetune as run_finetune

        _setup_logging(quiet)
        overrides = list(set_)
        if seed is not None:
            overrides.append(f"seed={seed}")
        cfg = load_config(config, overrides)
        out_dir = out or default_out(cfg.name, cfg.seed)
        metrics = run_finetune(cfg, out_dir, progress=not quiet, restart=restart)
        t = metrics["test"]
        keys = [k for k in ("auc", "acc", "sensitivity", "specificity", "n") if k in t]
        summary = {k: t[k] for k in keys}
        tag = " [SYNTHETIC data]" if metrics["run"].get("synthetic") else ""
        typer.echo(f"test{tag}: " + json.dumps(summary))
        typer.echo(f"run folder: {out_dir}")
        if mlflow is not None:
            from .track_cmd import log_finished

            log_finished(out_dir, mlflow)
