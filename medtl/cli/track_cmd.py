"""``medtl track``: log finished run folders (or whole sweeps) to MLflow, after the fact."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import URI_HELP, log_to_mlflow, mlflow_uri


def track(
    paths: List[Path] = typer.Argument(..., help="Run folders or sweep folders."),
    uri: Optional[str] = typer.Option(None, "--uri", help=URI_HELP),
    experiment: Optional[str] = typer.Option(None, "--experiment", "-e",
                                             help="MLflow experiment (default: the run's config name)."),
    checkpoints: bool = typer.Option(False, "--checkpoints", help="Also upload checkpoint_best.pt."),
) -> None:
    """Log finished runs to MLflow.

    The config becomes params, val/test metrics and the epoch history metrics, run files
    artifacts.  Already-logged runs are skipped; unfinished ones too.
    """
    from ..tracking import resolve_uri

    total = log_to_mlflow(list(paths), uri, experiment, checkpoints)
    typer.echo(f"{total['logged']} run(s) logged, {total['existing']} already logged, "
               f"{total['unfinished']} unfinished skipped; tracking URI {resolve_uri(mlflow_uri(uri))}")
