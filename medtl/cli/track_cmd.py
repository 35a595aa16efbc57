"""`medtl track`: log finished run folders (or whole sweeps) to MLflow, after the fact."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

URI_HELP = ("MLflow tracking URI or local path (./mlruns, file:///data/mlruns, http://host:5000); "
            "default: $MLFLOW_TRACKING_URI, else ./mlruns.")


def mlflow_uri(value: str | None) -> str | None:
    """--mlflow/--uri value -> tracking URI for medtl.tracking ('default' -> the default store)."""
    return None if value in (None, "", "default") else value


MLFLOW_HELP = ("After {what}, log {runs} to MLflow: 'default' ($MLFLOW_TRACKING_URI, else ./mlruns), "
               "a local path such as ./mlruns, or any tracking URI.")


def _log_paths(paths: list[Path], uri: str | None, experiment: str | None = None,
               checkpoints: bool = False) -> dict[str, int]:
    """Log every finished run under ``paths``; returns summed counts (logged/existing/unfinished)."""
    from ..tracking import log_tree

    total = {"logged": 0, "existing": 0, "unfinished": 0}
    for p in paths:
        counts: dict[str, int] = {}
        log_tree(p, uri=mlflow_uri(uri), experiment=experiment, checkpoints=checkpoints, counts=counts)
        for k in total:
            total[k] += counts[k]
    return total


def log_finished(path: Path, uri: str | None) -> None:
    """Used by `finetune --mlflow` and `sweep --mlflow`: log what finished, say where."""
    from ..tracking import resolve_uri

    counts = _log_paths([path], uri)
    typer.echo(f"mlflow: {counts['logged']} run(s) logged, {counts['existing']} already logged "
               f"in {resolve_uri(mlflow_uri(uri))}")


def register(app: typer.Typer) -> None:
    @app.command()
    def track(
        paths: List[Path] = typer.Argument(..., help="Run folders or sweep folders."),
        uri: Optional[str] = typer.Option(None, "--uri", help=URI_HELP),
        experiment: Optional[str] = typer.Option(None, "--experiment", "-e",
                                                 help="MLflow experiment (default: the run's config name)."),
        checkpoints: bool = typer.Option(False, "--checkpoints", help="Also upload checkpoint_best.pt."),
    ) -> None:
        """Log finished runs to MLflow: config as params, val/test metrics, epoch history,
        run files as artifacts.  Already-logged runs are skipped; unfinished ones too."""
        from ..tracking import resolve_uri

        total = _log_paths(list(paths), uri, experiment, checkpoints)
        typer.echo(f"{total['logged']} run(s) logged, {total['existing']} already logged, "
                   f"{total['unfinished']} unfinished skipped; tracking URI {resolve_uri(mlflow_uri(uri))}")
