"""What the commands share: logging set-up, the process-wide settings of a training entry
point, the MLflow hook of ``--mlflow`` and its help text."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from ..errors import ConfigError

MLFLOW_HELP = ("After {what}, log {runs} to MLflow: 'default' ($MLFLOW_TRACKING_URI, else ./mlruns), "
               "a local path such as ./mlruns, or any tracking URI.")
URI_HELP = ("MLflow tracking URI or local path (./mlruns, sqlite:////abs/mlflow.db, http://host:5000); "
            "default: $MLFLOW_TRACKING_URI, else ./mlruns.")


class _StderrHandler(logging.StreamHandler):
    """A stream handler on whatever ``sys.stderr`` is when it writes: commands run in-process (tests,
    notebooks) may swap stderr between calls, and a handler bound to a closed one would fail."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; the property always reads sys.stderr
        pass


def setup_logging(quiet: bool) -> None:
    """medtl's log on stderr as ``medtl: message`` (INFO, or WARNING when quiet), once per process."""
    log = logging.getLogger("medtl")
    log.setLevel(logging.INFO)
    if not any(getattr(h, "_medtl", False) for h in log.handlers):
        h = _StderrHandler()
        h._medtl = True  # type: ignore[attr-defined]
        h.setFormatter(logging.Formatter("medtl: %(message)s"))
        log.addHandler(h)
    for h in log.handlers:
        if getattr(h, "_medtl", False):
            h.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def training_process(num_threads: int | None, distributed: bool = False) -> bool:
    """This process is about to train: set threads and malloc tuning and, for a command that
    trains data-parallel (``distributed``), join the process group when launched by torchrun (all
    process-wide, so here).  Returns whether this process speaks for the run (rank 0)."""
    from ..train.distributed import init_from_env
    from ..train.runtime import configure_process

    configure_process(num_threads)
    if not distributed:
        return True
    d = init_from_env()
    if not d.main:  # data-parallel: rank 0 speaks for the run
        logging.getLogger("medtl").setLevel(logging.WARNING)
    return d.main


def mlflow_uri(value: str | None) -> str | None:
    """A ``--mlflow``/``--uri`` value as a tracking URI for :mod:`medtl.tracking` ('default': the default store)."""
    if value and "://" not in value and Path(value).is_file() and Path(value).suffix.lower() not in (".db", ".sqlite",
                                                                                                     ".sqlite3"):
        raise ConfigError(f"{value}: is a file, not an MLflow store folder or .db file; give another --mlflow/--uri")
    return None if value in (None, "", "default") else value


def check_mlflow_option(value: str | None) -> None:
    """``--mlflow`` checked before training, not after it: a file that is no store, or a local
    store whose folder cannot be made (a file in the way), ends with one line now."""
    from ..tracking import local_store_problem

    if value is None:
        return
    problem = local_store_problem(mlflow_uri(value))
    if problem:
        raise ConfigError(f"{value}: {problem}; give another --mlflow")


def log_to_mlflow(paths: list[Path], uri: str | None, experiment: str | None = None,
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


def mlflow_hook(path: Path, uri: str | None) -> None:
    """``--mlflow`` of finetune and sweep: log what finished, say where."""
    from ..tracking import resolve_uri

    counts = log_to_mlflow([path], uri)
    typer.echo(f"mlflow: {counts['logged']} run(s) logged, {counts['existing']} already logged "
               f"in {resolve_uri(mlflow_uri(uri))}")
