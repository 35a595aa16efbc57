"""Optional MLflow tracking: log finished run folders to an MLflow store.

Design: logging is *post hoc*, from the run folder.  Training never talks to MLflow; a run
folder (``config.yaml``, ``metrics.json``, ``log.csv``, ...) already holds everything worth
tracking, so this module only reads it.  That keeps the training loop free of tracking code,
keeps runs resumable and bit-identical with or without MLflow, lets a sweep's worker
processes (or Ray tasks) run without any tracking set-up, and lets old runs be logged later
(``medtl track runs/``).

- Store: ``uri`` if given, else ``$MLFLOW_TRACKING_URI``, else ``./mlruns`` under the current
  directory; no server is needed.  A plain path is a local SQLite store: a folder (``./mlruns``)
  holds ``mlflow.db`` and, for the experiments medtl creates, ``mlflow-artifacts/``; a path
  ending in ``.db``/``.sqlite`` is the database itself (artifacts in ``<name>-artifacts/``
  beside it).  MLflow 3 refuses its old file store (``file:`` URIs, a ``./mlruns`` written by
  medtl before MLflow 3): such a folder is reported with the ``mlflow migrate-filestore``
  command that converts it.  ``mlflow ui --backend-store-uri sqlite:///<folder>/mlflow.db``
  shows the store.
- One MLflow run per run folder.  Params: the resolved config as dotted keys
  (``train.lr``; list and dict values as JSON).  Metrics: every number in ``metrics.json``'s
  ``val`` and ``test`` sections (``test.auc``, ``test.auc_per_class.<class>``), the epoch
  history as step metrics (step = epoch) and ``run.wall_time_s``.  Artifacts: the run
  folder's files, the checkpoint only on request.
- Idempotent: a run folder whose ``metrics.json`` (by sha256) is already logged in the
  experiment is not logged again.  Unfinished folders (no ``metrics.json``) are skipped.
- mlflow is imported lazily: ``medtl`` works without it (``pip install 'medtl[track]'``).
"""
from __future__ import annotations

import json
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .errors import ConfigError
from .io import sha256_file
from .runs import ARTIFACTS, CHECKPOINT, CONFIG, METRICS, Run, find_run_folders, sweep_arm

HISTORY_KEYS = ("train_loss", "val_loss", "val_auc", "val_acc", "lr")
MAX_PARAM_LEN = 6000  # MLflow's param value limit (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH)
_BAD_NAME = re.compile(r"[^/\w.\- ]")  # characters MLflow refuses in param and metric names


def _mlflow():
    try:
        with warnings.catch_warnings():  # keep import-time deprecation noise out of medtl's output
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            import mlflow
    except ImportError as exc:
        raise ConfigError("MLflow tracking needs mlflow: pip install 'medtl[track]'") from exc
    return mlflow


DB_NAME = "mlflow.db"  # the SQLite database inside a store folder
_DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def _is_file_store(folder: Path) -> bool:
    """An MLflow file store (pre-MLflow-3 layout): experiment folders holding meta.yaml."""
    return (folder / "0" / "meta.yaml").is_file() or any(
        d.name.isdigit() and (d / "meta.yaml").is_file() for d in folder.iterdir() if d.is_dir())


def resolve_uri(uri: str | None = None) -> str:
    """The tracking URI: ``uri``, else ``$MLFLOW_TRACKING_URI``, else ``./mlruns``.

    A plain path is a local SQLite store: a folder (``./mlruns``, ``/data/mlruns``) becomes
    ``sqlite:///<folder>/mlflow.db``; a path ending in .db/.sqlite/.sqlite3 is the database.
    A folder that is an old MLflow file store (and holds no mlflow.db) raises ConfigError with
    the command that migrates it.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or "mlruns"
    if uri == "databricks" or len(urlparse(uri).scheme) > 1:  # a URI; a one-letter scheme is a drive
        return uri
    path = Path(uri).expanduser().resolve()
    if path.suffix.lower() in _DB_SUFFIXES:
        return "sqlite:///" + path.as_posix()  # an absolute path: sqlite:////abs/x.db
    db = path / DB_NAME
    if path.is_dir() and not db.exists() and _is_file_store(path):
        raise ConfigError(f"uri: {path} is an MLflow file store, which MLflow 3 no longer opens; convert it with "
                          f"mlflow migrate-filestore --source {path} --target sqlite:///{db.as_posix()}")
    return "sqlite:///" + db.as_posix()


def _local_db(uri: str) -> Path | None:
    """The database file of a local ``sqlite:///`` URI, else None."""
    rest = uri[len("sqlite:///"):].split("?", 1)[0]
    if not uri.startswith("sqlite:///") or rest in ("", ":memory:"):
        return None
    return Path(rest).resolve()  # sqlite:////abs/x.db is absolute, sqlite:///x.db relative


def local_store_problem(uri: str | None) -> str | None:
    """Why a local SQLite store at ``uri`` could not be opened (a file where its folder must be),
    or None; remote URIs are not contacted."""
    db = _local_db(resolve_uri(uri))
    if db is None:
        return None
    if db.exists() and not db.is_file():
        return f"{db} is not a file"
    for parent in db.parents:
        if parent.exists():
            return None if parent.is_dir() else f"{parent} is a file, so the store {db} cannot be made"
    return None


def _client(uri: str | None):
    resolved = resolve_uri(uri)
    db = _local_db(resolved)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    mlflow = _mlflow()
    try:
        client = mlflow.MlflowClient(tracking_uri=resolved)
        client.search_experiments(max_results=1)  # opens (or creates) the store now, not mid-run
    except mlflow.exceptions.MlflowException as exc:
        if "filesystem tracking backend" not in str(exc):
            raise
        src = Path(urlparse(resolved).path) if resolved.startswith("file:") else Path("DIR")
        raise ConfigError(f"uri: {resolved} is an MLflow file store, which MLflow 3 no longer opens; convert it "
                          f"with mlflow migrate-filestore --source {src} --target sqlite:///{(src / DB_NAME).as_posix()} "
                          "(or set MLFLOW_ALLOW_FILE_STORE=true)") from None
    return client


def _artifact_location(uri: str, name: str) -> str | None:
    """Where a new experiment's artifacts go: for a local SQLite store, a folder beside the
    database (MLflow's own default, ./mlruns, depends on the current directory); else MLflow's."""
    db = _local_db(uri)
    if db is None:
        return None
    root = db.parent / ("mlflow-artifacts" if db.name == DB_NAME else f"{db.stem}-artifacts")
    base = re.sub(r"[^\w.\-]+", "_", name).strip("._") or "experiment"
    folder, k = root / base, 1
    while folder.exists():
        k += 1
        folder = root / f"{base}-{k}"
    return folder.as_uri()


# ---------------------------------------------------------------- reading a run folder

def _config_sections() -> set[str]:
    from .config import valid_keys

    return {k.rsplit(".", n)[0] for k in valid_keys() for n in range(1, k.count(".") + 1)}


def config_params(config: dict) -> dict[str, str]:
    """The config as flat ``{dotted.key: str}``; only config sections are flattened, so a
    dict-valued key such as ``train.bn_gamma`` stays one param (as JSON)."""
    sections, out = _config_sections(), {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            key = prefix + str(k)
            if isinstance(v, dict) and key in sections:
                walk(v, key + ".")
            else:
                out[key] = (v if isinstance(v, str) else json.dumps(v, sort_keys=True))[:MAX_PARAM_LEN]

    walk(config, "")
    return out


def _numbers(d: Any, prefix: str) -> dict[str, float]:
    """Every numeric scalar under ``d`` as ``{prefix.key[.sub]: value}`` (None, bools, lists skipped)."""
    out: dict[str, float] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_numbers(v, f"{prefix}.{_BAD_NAME.sub('_', str(k))}"))
    elif isinstance(d, (int, float)) and not isinstance(d, bool):
        out[prefix] = float(d)
    return out


# ---------------------------------------------------------------- logging

def _find_logged(client, experiment_id: str, run_dir: str, sha: str) -> str | None:
    runs = client.search_runs([experiment_id], filter_string=f"tags.`medtl.metrics_sha256` = '{sha}'")
    for r in runs:
        if r.data.tags.get("medtl.run_dir") == run_dir and r.info.status == "FINISHED":
            return r.info.run_id
    return None


def _log_run(run_dir, uri, experiment, checkpoints) -> tuple[str | None, bool]:
    """Log one run folder; returns (run id or None if unfinished, whether it was new)."""
    _mlflow()  # fail early, with the install hint, where mlflow is missing
    from mlflow.entities import Metric, Param

    run = Run(Path(run_dir).resolve())
    run_dir, metrics_file = run.path, run.metrics_path
    if not run.finished():
        return None, False
    if not run.is_run():
        raise ConfigError(f"{run_dir}: has {METRICS} but no {CONFIG}; not a medtl run folder")
    config = run.raw_config()
    record = run.record
    sha = sha256_file(metrics_file)

    client = _client(uri)
    name = experiment or config.get("name") or record.run.name or "medtl"
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(
        name, artifact_location=_artifact_location(resolve_uri(uri), name))
    found = _find_logged(client, exp_id, str(run_dir), sha)
    if found:
        return found, False

    tags = {"medtl.run_dir": str(run_dir), "medtl.metrics_sha256": sha,
            "medtl.seed": str(config.get("seed", record.run.seed)),
            "medtl.dataset": str(record.run.dataset),
            "medtl.synthetic": str(bool(record.run.synthetic))}
    arm = sweep_arm(run_dir)
    if arm:
        tags["medtl.arm"] = arm
    run = client.create_run(exp_id, tags=tags, run_name=f"{run_dir.parent.name}/{run_dir.name}")
    rid = run.info.run_id
    try:
        now = int(time.time() * 1000)
        params = [Param(k, v) for k, v in config_params(config).items()]
        values = _numbers(record.val.as_dict(), "val") | _numbers(record.test.as_dict(), "test")
        if record.run.wall_time_s is not None:
            values["run.wall_time_s"] = float(record.run.wall_time_s)
        points = [Metric(k, v, now, 0) for k, v in values.items()]
        for i, row in enumerate(record.history, start=1):
            for k in HISTORY_KEYS:
                v = row.get(k)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    points.append(Metric(k, float(v), now, int(row.get("epoch", i))))
        for i in range(0, len(params), 100):  # MLflow's batch limits: 100 params, 1000 metrics
            client.log_batch(rid, params=params[i:i + 100])
        for i in range(0, len(points), 1000):
            client.log_batch(rid, metrics=points[i:i + 1000])
        files = ARTIFACTS + ((CHECKPOINT,) if checkpoints else ())
        for f in files:
            if (run_dir / f).is_file():
                client.log_artifact(rid, str(run_dir / f))
    except BaseException:
        client.set_terminated(rid, "FAILED")  # a failed run is not "logged": the next call retries
        raise
    client.set_terminated(rid, "FINISHED")
    return rid, True


def log_run(run_dir: str | Path, uri: str | None = None, experiment: str | None = None,
            checkpoints: bool = False) -> str | None:
    """Log one finished run folder to MLflow; returns the MLflow run id.

    Returns None (and logs nothing) for an unfinished folder.  Logging a folder already
    logged with the same ``metrics.json`` returns the existing run's id.
    ``experiment`` defaults to the config's ``name``.
    """
    return _log_run(run_dir, uri, experiment, checkpoints)[0]


def log_tree(path: str | Path, uri: str | None = None, experiment: str | None = None,
             checkpoints: bool = False, counts: dict[str, int] | None = None) -> list[str]:
    """Log every finished run folder at or under ``path`` (a run folder or a sweep folder).

    Returns the MLflow run ids (new and already logged).  If ``counts`` is given it is
    filled with ``logged`` (new), ``existing`` (already logged) and ``unfinished``.
    """
    ids: list[str] = []
    c = {"logged": 0, "existing": 0, "unfinished": 0}
    for run_dir in find_run_folders(path):
        rid, new = _log_run(run_dir, uri, experiment, checkpoints)
        if rid is None:
            c["unfinished"] += 1
            continue
        ids.append(rid)
        c["logged" if new else "existing"] += 1
    if counts is not None:
        counts.update(c)
    return ids
