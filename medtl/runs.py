"""The run-folder contract: what a run folder holds, how seed folders are named, how runs,
arms and sweeps are found.  Every module that writes or reads run folders goes through here,
so no other module spells a run file name.

A **run folder** (written by ``medtl finetune``, one per seed)::

    .medtl-run.json        the marker: medtl version and run id (written with config.yaml);
                           medtl removes nothing from a folder without it
    config.yaml            the resolved config (written first)
    state/last.pt          resume point (removed when the run finishes)
    checkpoint_best.pt     best epoch's weights (torch.load(..., weights_only=True))
    log.csv, train.log     per-epoch log; what was loaded
    predictions_test.npz   per-image test predictions (y, p, ids; logit for newer runs)
    predictions_val.npz    per-image val predictions (y, p, logit, ids): post-hoc temperature fitting
    reliability.png        the test set's reliability diagram (calibration)
    external/<name>/       ``medtl evaluate`` on another dataset: metrics.json, predictions.npz,
                           reliability.png
    metrics.json           written last: its presence marks a finished run
    failed.json            instead of metrics.json when a sweep run failed
    probes/<probe>.json    cached probe results (and their PNGs)

A **sweep folder** holds ``<arm>/seed-<k>/`` run folders plus ``sweep.json`` and
``sweep_config.yaml``; an **arm folder** holds ``seed-<k>/`` run folders.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .errors import ConfigError, DataError
from .record import ExternalRecord, RecordError, RunRecord, layout_of, parse_external, parse_record

CONFIG = "config.yaml"
METRICS = "metrics.json"
CHECKPOINT = "checkpoint_best.pt"
PREDICTIONS = "predictions_test.npz"
LOG_CSV = "log.csv"
TRAIN_LOG = "train.log"
STATE_DIR = "state"
STATE = f"{STATE_DIR}/last.pt"
FAILED = "failed.json"
PROBES_DIR = "probes"
SWEEP_SUMMARY = "sweep.json"
SWEEP_CONFIG = "sweep_config.yaml"
# a study folder (medtl study): its resolved config, the sweep it ran, one folder per stage, the page
STUDY_CONFIG = "study_config.yaml"
STUDY_SWEEP = "study_sweep.yaml"
STUDY_RUNS, STUDY_COMPARE, STUDY_ROBUSTNESS, STUDY_EVALUATE = "runs", "compare", "robustness", "evaluate"
STUDY_PAGE = "study"  # study.html, study.md, study.json
# the files worth keeping with a finished run (tracking uploads these; the checkpoint on request)
ARTIFACTS = (CONFIG, METRICS, LOG_CSV, TRAIN_LOG, PREDICTIONS)
MARKER = ".medtl-run.json"
PREDICTIONS_VAL = "predictions_val.npz"
RELIABILITY_PNG = "reliability.png"
EXTERNAL_DIR = "external"
EXTERNAL_PREDICTIONS = "predictions.npz"
# what one RUN/external/<name>/ folder holds (its metrics.json is written last)
EXTERNAL_FILES = (METRICS, EXTERNAL_PREDICTIONS, RELIABILITY_PNG)
# every name medtl writes directly inside a run folder: a restart removes these and nothing else
RUN_FILES = (MARKER, CONFIG, METRICS, CHECKPOINT, PREDICTIONS, LOG_CSV, TRAIN_LOG, STATE_DIR, FAILED, PROBES_DIR,
             PREDICTIONS_VAL, RELIABILITY_PNG, EXTERNAL_DIR)

_SEED_RE = re.compile(r"^seed-(-?\d+)$")
_MLFLOW_RUN_ID = re.compile(r"[0-9a-f]{32}")  # an MLflow run id (the name of its artifact folder's parent)


# ------------------------------------------------------------------------------ naming

def seed_dirname(seed: int) -> str:
    """``seed-<k>``: the folder name of one seed's run."""
    return f"seed-{int(seed)}"


def parse_seed_dirname(name: str) -> int | None:
    """The ``k`` of a ``seed-<k>`` folder name; None for any other name."""
    m = _SEED_RE.match(name)
    return int(m.group(1)) if m else None


def safe_name(name: str) -> str:
    """A config or arm name as a folder name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"


def default_run_dir(name: str, seed: int, base: str | Path = "runs") -> Path:
    """Where ``medtl finetune`` writes when no folder is given: ``runs/<name>/seed-<k>``."""
    return Path(base) / safe_name(name) / seed_dirname(seed)


def sweep_run_dir(sweep: str | Path, arm: str, seed: int) -> Path:
    """The run folder of (arm, seed) in a sweep folder."""
    return Path(sweep) / arm / seed_dirname(seed)


# ------------------------------------------------------------------------------ the marker

def write_marker(path: str | Path, run_id: str | None = None) -> dict:
    """Write the run-folder marker (medtl version, run id, creation time) into ``path``.

    Keeps the run id of a marker already there (a resumed run is the same run)."""
    import time
    import uuid

    from . import __version__
    from .io import write_json_atomic

    old = read_marker(path)
    rec = {"medtl_version": __version__,
           "run_id": run_id or (old or {}).get("run_id") or uuid.uuid4().hex,
           "created": (old or {}).get("created") or time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json_atomic(Path(path) / MARKER, rec)
    return rec


def read_marker(path: str | Path) -> dict | None:
    """The marker of a run folder, or None when there is none (or it is not medtl's)."""
    try:
        with open(Path(path) / MARKER, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) and isinstance(obj.get("medtl_version"), str) else None


def is_medtl_run_folder(path: str | Path) -> bool:
    """True when ``path`` carries medtl's marker: medtl wrote this folder."""
    return read_marker(path) is not None


def is_legacy_run_folder(path: str | Path) -> bool:
    """A run folder written before the marker existed: ``config.yaml`` is a medtl config (its
    top-level keys are RunConfig's, with the data, model and train sections) and the folder
    holds another file medtl writes (``metrics.json``, ``failed.json``, a resume state, a
    checkpoint, ``train.log``)."""
    import yaml

    from .config import RunConfig

    p = Path(path)
    if not (p / CONFIG).is_file() or not any((p / f).is_file() for f in (METRICS, FAILED, STATE, CHECKPOINT, TRAIN_LOG)):
        return False
    try:
        raw = yaml.safe_load((p / CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return (isinstance(raw, dict) and set(raw) <= set(RunConfig.model_fields)
            and all(isinstance(raw.get(k), dict) for k in ("data", "model", "train")))


def _medtl_temp(name: str, owner: str) -> bool:
    """An atomic-write temporary of ``owner`` (``.NAME.XXXX.tmp``, left by a killed write)."""
    return name.startswith(f".{owner}.") and name.endswith(".tmp")


def _run_entries(path: Path) -> list[tuple[str, Path, bool]]:
    """(relative name, path, written by medtl?) of every entry of a run folder; the state and
    probes folders are looked into (their entries listed before them)."""
    out = []
    for child in sorted(path.iterdir()):
        name = child.name
        if name in (STATE_DIR, PROBES_DIR) and child.is_dir() and not child.is_symlink():
            state = Path(STATE).name
            for sub in sorted(child.iterdir()):
                ok = (sub.name == state or _medtl_temp(sub.name, state)) if name == STATE_DIR else \
                    (sub.suffix in (".json", ".png") or sub.name.endswith(".tmp"))
                out.append((f"{name}/{sub.name}", sub, ok and sub.is_file() and not sub.is_symlink()))
            out.append((name, child, True))
        elif name == EXTERNAL_DIR and child.is_dir() and not child.is_symlink():
            out.extend(_external_entries(child))
        else:
            ok = child.is_file() and not child.is_symlink() and \
                (name in RUN_FILES or any(_medtl_temp(name, f) for f in RUN_FILES))
            out.append((name, child, ok))
    return out


def _external_entries(folder: Path) -> list[tuple[str, Path, bool]]:
    """The entries of ``RUN/external/`` (one folder per evaluated dataset), listed before it."""
    out = []
    for sub in sorted(folder.iterdir()):
        rel = f"{EXTERNAL_DIR}/{sub.name}"
        if not (sub.is_dir() and not sub.is_symlink()):
            out.append((rel, sub, False))
            continue
        for f in sorted(sub.iterdir()):
            ok = f.is_file() and not f.is_symlink() and \
                (f.name in EXTERNAL_FILES or any(_medtl_temp(f.name, e) for e in EXTERNAL_FILES))
            out.append((f"{rel}/{f.name}", f, ok))
        out.append((rel, sub, True))
    out.append((EXTERNAL_DIR, folder, True))
    return out


def foreign_entries(path: str | Path) -> list[str]:
    """Entries of a run folder that medtl did not write (relative paths, sorted)."""
    return [name for name, _, ours in _run_entries(Path(path)) if not ours]


def remove_run_files(path: str | Path) -> list[str]:
    """Remove what medtl writes in a run folder and nothing else (then the folder, if that
    leaves it empty); returns the entries left in place (:func:`foreign_entries`)."""
    p = Path(path)
    left = []
    for name, entry, ours in _run_entries(p):
        if not ours:
            left.append(name)
        elif entry.is_dir():
            if not any(entry.iterdir()):
                entry.rmdir()
        else:
            entry.unlink()
    if not any(p.iterdir()):
        p.rmdir()
    return left


# ------------------------------------------------------------------------------ reading

def read_json(path: Path) -> dict:
    """A JSON object from ``path``, or one-line :class:`DataError`."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not valid JSON (not UTF-8 text)") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a JSON object at the top level")
    return obj


class Run:
    """A run folder, read lazily.  ``Run(path).metrics`` etc.; nothing is read on creation."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._record: RunRecord | None = None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    # the files, by role
    config_path = property(lambda self: self.path / CONFIG)
    metrics_path = property(lambda self: self.path / METRICS)
    checkpoint_path = property(lambda self: self.path / CHECKPOINT)
    predictions_path = property(lambda self: self.path / PREDICTIONS)
    state_path = property(lambda self: self.path / STATE)
    state_dir = property(lambda self: self.path / STATE_DIR)
    failed_path = property(lambda self: self.path / FAILED)
    log_csv_path = property(lambda self: self.path / LOG_CSV)
    train_log_path = property(lambda self: self.path / TRAIN_LOG)
    probes_dir = property(lambda self: self.path / PROBES_DIR)
    val_predictions_path = property(lambda self: self.path / PREDICTIONS_VAL)
    reliability_path = property(lambda self: self.path / RELIABILITY_PNG)
    external_root = property(lambda self: self.path / EXTERNAL_DIR)

    def external_dir(self, name: str) -> Path:
        """``RUN/external/<name>/``: the run evaluated on another dataset (``medtl evaluate``)."""
        return self.path / EXTERNAL_DIR / name

    def external_metrics_path(self, name: str) -> Path:
        return self.external_dir(name) / METRICS

    def external_predictions_path(self, name: str) -> Path:
        return self.external_dir(name) / EXTERNAL_PREDICTIONS

    def external_reliability_path(self, name: str) -> Path:
        return self.external_dir(name) / RELIABILITY_PNG

    def external_names(self) -> list[str]:
        """Names of the finished external evaluations of this run (folders holding metrics.json)."""
        root = self.external_root
        if not root.is_dir():
            return []
        return sorted(d.name for d in root.iterdir() if d.is_dir() and (d / METRICS).is_file())

    def external_record(self, name: str) -> ExternalRecord:
        """``RUN/external/<name>/metrics.json``, typed; one-line :class:`DataError` when it is
        missing or not an external evaluation record."""
        path = self.external_metrics_path(name)
        if not path.is_file():
            have = ", ".join(self.external_names()) or "none"
            raise DataError(f"{self.path}: not evaluated on {name!r} (no {EXTERNAL_DIR}/{name}/{METRICS}; "
                            f"evaluated: {have})")
        try:
            return parse_external(read_json(path))
        except RecordError as exc:
            raise DataError(f"{path}: {exc}") from None

    def write_external_record(self, name: str, record: ExternalRecord) -> None:
        from .io import json_safe, write_json_atomic

        write_json_atomic(self.external_metrics_path(name), json_safe(record.as_dict()))

    def probe_path(self, probe: str, suffix: str = ".json") -> Path:
        return self.probes_dir / f"{probe}{suffix}"

    # status
    def is_run(self) -> bool:
        """Holds a config (any state: unfinished, finished or failed)."""
        return self.config_path.is_file()

    def finished(self) -> bool:
        return self.metrics_path.is_file()

    def failed(self) -> bool:
        return not self.finished() and self.failed_path.is_file()

    def has_state(self) -> bool:
        return self.state_path.is_file()

    @property
    def status(self) -> str:
        """finished | failed | unfinished."""
        return "finished" if self.finished() else ("failed" if self.failed() else "unfinished")

    # contents
    @property
    def record(self) -> RunRecord:
        """The typed run record (``metrics.json`` of any layout, migrated on read; the file is
        not rewritten).  One-line :class:`DataError` for a file that is not a run record."""
        if self._record is None:
            try:
                self._record = parse_record(read_json(self.metrics_path))
            except RecordError as exc:
                raise DataError(f"{self.metrics_path}: {exc}") from None
        return self._record

    @property
    def layout(self) -> int:
        """The layout ``metrics.json`` is stored in (:mod:`medtl.record`)."""
        return layout_of(read_json(self.metrics_path))

    def write_record(self, record: RunRecord) -> None:
        """Write ``metrics.json`` atomically, in the current layout (its presence marks a
        finished run, so it is written last)."""
        from .io import json_safe, write_json_atomic

        write_json_atomic(self.metrics_path, json_safe(record.as_dict()))
        self._record = record

    def raw_config(self) -> dict:
        """config.yaml as written (a dict), without validation."""
        import yaml

        try:
            obj = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise DataError(f"{self.config_path}: unreadable run config ({type(exc).__name__})") from None
        return obj if isinstance(obj, dict) else {}

    def config(self):
        """The run's config as a :class:`medtl.config.RunConfig`."""
        from .config import load_config

        return load_config(self.config_path)

    @property
    def seed(self) -> int:
        """The ``k`` of a ``seed-<k>`` folder, else ``run.seed`` of metrics.json, else 0."""
        k = parse_seed_dirname(self.path.name)
        if k is not None:
            return k
        if self.finished():
            return self.record.run.seed
        return 0

    def predictions(self) -> dict:
        """``y``, ``p`` (positive-class probability for binary runs) and ``ids`` of the test set."""
        return read_predictions(self.predictions_path)

    def load_checkpoint(self) -> dict:
        """The best checkpoint (weights only; pickled objects are refused)."""
        import torch

        try:
            ckpt = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise DataError(f"{self.path}: not a finished medtl run folder (no {CHECKPOINT})") from None
        except Exception as exc:  # noqa: BLE001 - truncated, foreign or unsafe file: one line
            raise DataError(f"{self.checkpoint_path}: unreadable checkpoint ({type(exc).__name__})") from None
        if not isinstance(ckpt, dict) or "model" not in ckpt:
            raise DataError(f"{self.checkpoint_path}: not a medtl checkpoint (no 'model' weights)")
        return ckpt

    def require_finished(self, *files: str) -> "Run":
        """Raise a one-line :class:`DataError` unless the folder is a finished run holding ``files``."""
        if not self.path.is_dir():
            raise DataError(f"{self.path}: no such folder")
        for name in (CONFIG, METRICS) + tuple(files):
            if not self.file(name).is_file():
                raise DataError(f"{self.path}: not a finished medtl run folder (no {name})")
        return self


def read_predictions(path: str | Path) -> dict:
    """``y``, ``p``, optional ``ids`` and ``path`` from a predictions file (a run's
    ``predictions_test.npz``, or a run folder holding one).  Binary ``p`` is the positive class."""
    import numpy as np

    path = Path(path)
    if path.is_dir():
        path = path / PREDICTIONS
    if not path.is_file():
        raise DataError(f"{path}: not found (a finished run writes {PREDICTIONS})")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: np.asarray(z[k]) for k in z.files}
    except Exception as exc:  # noqa: BLE001 - zipfile/pickle/format errors all mean "unreadable"
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc})".replace("\n", " ")) from None
    for k in ("y", "p"):
        if k not in data:
            raise DataError(f"{path}: missing array {k!r} (has {', '.join(sorted(data)) or 'nothing'})")
    p = data["p"]
    if p.ndim == 2 and p.shape[1] == 2:
        p = p[:, 1]
    out = {"y": data["y"], "p": p, "path": path}
    if "ids" in data:
        out["ids"] = data["ids"].ravel()
    if "logit" in data:  # the positive class's logit (z1 - z0), written by newer runs
        out["logit"] = data["logit"]
    return out


# ------------------------------------------------------------------------------ discovery

@dataclass
class Arm:
    """The runs of one arm by seed: finished (``runs``: their records), failed and unfinished."""

    name: str
    source: Path
    runs: dict[int, RunRecord] = field(default_factory=dict)
    run_dirs: dict[int, Path] = field(default_factory=dict)
    failed: dict[int, Path] = field(default_factory=dict)
    incomplete: list[Path] = field(default_factory=list)

    def add(self, seed: int, run_dir: Path) -> None:
        if seed in self.runs or seed in self.failed:
            other = self.run_dirs.get(seed) or self.failed.get(seed)
            if other is not None and Path(other).resolve() == Path(run_dir).resolve():
                return  # the same folder named twice
            raise ConfigError(f"arm {self.name!r} has seed {seed} twice ({run_dir} and {other}); "
                              f"name the arms explicitly to separate them")
        run = Run(run_dir)
        if run.finished():
            self.runs[seed] = run.record
            self.run_dirs[seed] = run.path
        elif run.failed():
            self.failed[seed] = run.failed_path
        else:
            self.incomplete.append(run.path)

    def finished_runs(self) -> list[tuple[int, Run]]:
        return [(s, Run(p)) for s, p in sorted(self.run_dirs.items())]


def seed_children(folder: Path) -> list[tuple[int, Path]]:
    """``(k, path)`` of the ``seed-<k>`` sub-folders of ``folder``, by seed."""
    out = []
    for child in folder.iterdir():
        k = parse_seed_dirname(child.name)
        if k is not None and child.is_dir():
            out.append((k, child))
    return sorted(out)


def _is_leaf_run(folder: Path) -> bool:
    r = Run(folder)
    return r.finished() or r.failed_path.is_file()


def _as_arm(d: Path, name: str | None) -> Arm | None:
    """A single run folder (arm of n = 1, or one seed of the arm named after its parent) or a
    folder of ``seed-<k>`` runs, as an arm; None if it is neither."""
    if _is_leaf_run(d):
        k = parse_seed_dirname(d.name)
        default = d.resolve().parent.name if k is not None else d.resolve().name
        arm = Arm(name=name or default, source=d if k is None else d.resolve().parent)
        arm.add(Run(d).seed, d)
        return arm
    children = seed_children(d)
    if children:
        arm = Arm(name=name or d.resolve().name, source=d)
        for k, child in children:
            arm.add(k, child)
        return arm
    return None


def _merge(arms: dict[str, Arm], arm: Arm) -> None:
    """Add ``arm``; seed folders of one arm given one by one join it, other clashes are errors."""
    old = arms.get(arm.name)
    if old is None:
        arms[arm.name] = arm
        return
    if Path(old.source).resolve() != Path(arm.source).resolve():
        raise ConfigError(f"two arms are named {arm.name!r} ({old.source} and {arm.source}); "
                          f"name them explicitly (NAME=DIR)")
    for seed, p in arm.run_dirs.items():
        old.add(seed, p)
    for seed, p in arm.failed.items():
        old.add(seed, p.parent)
    old.incomplete.extend(p for p in arm.incomplete if p not in old.incomplete)


def discover_arms(dirs: Sequence[str | Path] = (), named: Sequence[tuple[str, str | Path]] = ()) -> dict[str, Arm]:
    """Arms found in ``dirs`` (sweep, arm or run folders) plus explicitly ``named`` (NAME, DIR) arms.

    A sweep folder gives one arm per sub-folder holding ``seed-<k>`` runs; an arm folder is named
    after itself; a ``seed-<k>`` run folder joins the arm named after its parent folder (so the
    seed folders of one arm may be given one by one); any other run folder is an arm of n = 1.
    Raises :class:`DataError` for a missing folder or when no finished run is found, and
    :class:`ConfigError` for two different arms with the same name.
    """
    arms: dict[str, Arm] = {}
    for d in map(Path, dirs):
        if not d.is_dir():
            raise DataError(f"{d}: no such folder")
        arm = _as_arm(d, None)
        if arm is not None:
            _merge(arms, arm)
            continue
        subs = [c for c in sorted(d.iterdir()) if c.is_dir() and seed_children(c)]
        if not subs:
            raise DataError(f"{d}: no runs found (expected {METRICS}, seed-*/{METRICS} or ARM/seed-*/{METRICS})")
        for c in subs:
            _merge(arms, _as_arm(c, None))
    for name, d in named:
        d = Path(d)
        if not name:
            raise ConfigError(f"an arm needs a name: NAME=DIR, got '={d}'")
        if not d.is_dir():
            raise DataError(f"{d}: no such folder (arm {name})")
        arm = _as_arm(d, name)
        if arm is None:
            raise DataError(f"{d}: no runs found for arm {name} (expected {METRICS} or seed-*/{METRICS})")
        _merge(arms, arm)
    if not arms:
        raise DataError("no runs found: give sweep, arm or run folders")
    if not any(a.runs for a in arms.values()):
        n_failed = sum(len(a.failed) for a in arms.values())
        where = ", ".join(str(Path(d)) for d in dirs) or ", ".join(str(d) for _, d in named)
        raise DataError(f"no finished runs ({METRICS}) found in {where} ({n_failed} failed)")
    return arms


def find_run_folders(path: str | Path) -> list[Path]:
    """Run folders (finished or not: folders holding ``config.yaml``) at or under ``path``.

    MLflow stores are not searched (folders named ``mlruns``, file-store folders with
    ``meta.yaml``, and MLflow run folders: a 32-hex run id holding ``artifacts/``), nor hidden
    folders: their artifact copies of config.yaml are not run folders.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: no such run or sweep folder")
    found = []
    for dirpath, dirnames, filenames in os.walk(path):
        if CONFIG in filenames:
            found.append(Path(dirpath))
        if CONFIG in filenames or "meta.yaml" in filenames:
            dirnames.clear()  # a run folder holds no other run; an MLflow store holds none
        dirnames[:] = [d for d in dirnames if d != "mlruns" and not d.startswith(".")
                       and not (_MLFLOW_RUN_ID.fullmatch(d) and os.path.isdir(os.path.join(dirpath, d, "artifacts")))]
    return sorted(found)


def is_sweep_folder(path: str | Path) -> bool:
    p = Path(path)
    return (p / SWEEP_SUMMARY).is_file() or (p / SWEEP_CONFIG).is_file()


def sweep_arm(run_dir: str | Path) -> str | None:
    """The arm of a run folder ``SWEEP/<arm>/seed-<k>/`` inside a sweep folder; else None."""
    run_dir = Path(run_dir)
    if parse_seed_dirname(run_dir.name) is None:
        return None
    return run_dir.parent.name if is_sweep_folder(run_dir.parent.parent) else None


def iter_finished(arms: dict[str, Arm]) -> Iterable[tuple[str, int, Run]]:
    """(arm, seed, Run) of every finished run, arms in order, seeds ascending."""
    for name, arm in arms.items():
        for seed, run in arm.finished_runs():
            yield name, seed, run


__all__ = ["ARTIFACTS", "Arm", "CHECKPOINT", "CONFIG", "EXTERNAL_DIR", "EXTERNAL_FILES", "EXTERNAL_PREDICTIONS",
           "FAILED", "LOG_CSV", "MARKER", "METRICS", "PREDICTIONS", "PREDICTIONS_VAL", "PROBES_DIR", "RELIABILITY_PNG", "RUN_FILES", "Run", "STATE", "STATE_DIR", "SWEEP_CONFIG", "SWEEP_SUMMARY", "TRAIN_LOG",
           "default_run_dir", "discover_arms", "find_run_folders", "foreign_entries", "is_legacy_run_folder",
           "is_medtl_run_folder", "is_sweep_folder", "iter_finished", "parse_seed_dirname", "read_json",
           "read_marker", "read_predictions", "remove_run_files", "safe_name", "seed_children", "seed_dirname",
           "sweep_arm", "sweep_run_dir", "write_marker"]

