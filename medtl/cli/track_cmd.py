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


def log_finished(path: Path, uri: str | None) -> None:
    """Used by `finetune --mlflow` and `sweep --mlflow`: log what finished, say where."""
    from ..tracking import log_tree, resolve_uri

    counts: dict[str, int] = {}
    log_tree(path, uri=mlflow_uri(uri), counts=counts)
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
        from ..tracking import log_tree, resolve_uri

        total = {"logged": 0, "existing": 0, "unfinished": 0}
        for p in paths:
            counts: dict[str, int] = {}
            log_tree(p, uri=mlflow_uri(uri), experiment=experiment, checkpoints=checkpoints, counts=counts)
            for k in total:
                total[k] += counts[k]
        typer.echo(f"{total['logged']} run(s) logged, {total['existing']} already logged, "
                   f"{total['unfinished']} unfinished skipped; tracking URI {resolve_uri(mlflow_uri(uri))}")
