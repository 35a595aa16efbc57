"""The typed run record: what a finished run's ``metrics.json`` holds, versioned, with the
migrations that read every earlier layout.

:mod:`medtl.runs` reads and writes these files; every other module gets a :class:`RunRecord`
(``Run(path).record``) or an :class:`ExternalRecord` (``Run(path).external_record(name)``) and
reads attributes, never the JSON.  Each fact is stored once: the leak status lives in
``data.leaks.status`` only, the operating threshold in ``threshold.value``, the fitted
temperature in ``calibration.temperature``.

Layouts (``schema_version``; files before 3 carry none and are recognised by their keys):

=====  ====================================================================================
0      foundation: ``run``, ``task``, ``classes``, ``threshold``, ``val``, ``test``, ``history``
1      + ``data`` (source, leak record, split sizes), ``calibration``, ``threshold.precision``,
       ``run.leak_status`` (a copy of ``data.leaks.status``)
2      + each split's case CIs (``ci``); leak status ``unchecked`` for data without patient ids
3      ``schema_version``; ``run.leak_status`` dropped (the copy); written by this release
=====  ====================================================================================

Reading never rewrites a file: an old folder stays as it was until a command that adds to it
(``medtl evaluate``) writes the record back, in the current layout.

Metric sections (``val``, ``test``, an external evaluation's ``metrics``) are typed for the keys
every binary run has and keep the task-specific rest (per-class AUCs, subgroups, reliability
bins) as extra fields.  `RunRecord.at` looks a dotted path up (``test.auc``,
``test.temp_scaled.ece``) among the keys the file really holds, so a metric a run never
computed is *missing*, not a default.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 3

#: returned by :meth:`RunRecord.at` for a path the record does not hold
MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING", "__bool__": lambda self: False})()


class RecordError(ValueError):
    """A metrics.json that is not a run record of any known layout (the caller names the file)."""


class _Section(BaseModel):
    """A record section: typed keys plus whatever else the file holds (kept on write)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def as_dict(self) -> dict:
        """The keys the file holds (or the writer set), JSON-ready; defaults not set are left out."""
        return self.model_dump(mode="json", exclude_unset=True, by_alias=True)

    def at(self, path: str) -> Any:
        """Value at a dotted path among the keys held (:data:`MISSING` when absent)."""
        return lookup(self.as_dict(), path)


def lookup(obj: Any, path: str) -> Any:
    cur = obj
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return MISSING
    return cur


def number_keys(obj: dict, prefix: str = "", skip: tuple[str, ...] = ()) -> list[str]:
    """Dotted paths of every numeric (or null) leaf; ``ci`` sub-dicts (a metric's case CI, not
    a metric of its own) and the top-level keys in ``skip`` are left out."""
    out: list[str] = []
    for k, v in obj.items():
        if (not prefix and k in skip) or k == "ci":
            continue
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.extend(number_keys(v, key + "."))
        elif v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)):
            out.append(key)
    return out


class TempScaled(_Section):
    """A split's calibration after the temperature fitted on val (binary runs)."""

    temperature: float | None = None
    ece: float | None = None
    brier: float | None = None
    nll: float | None = None


class Metrics(_Section):
    """A split's metrics (``val``, ``test``, an external evaluation): binary runs have every typed
    key; multi-class and multi-label runs have ``auc`` (macro) and their per-class extras."""

    auc: float | None = None
    acc: float | None = None
    sensitivity: float | None = None
    specificity: float | None = None
    balanced_acc: float | None = None
    n: int | None = None
    n_pos: int | None = None
    loss: float | None = None
    ece: float | None = None
    brier: float | None = None
    nll: float | None = None
    temp_scaled: TempScaled | None = None
    ci: dict[str, Any] = Field(default_factory=dict)


class RunFacts(_Section):
    """``run``: how the run was made (dataset, backbone, input size, device, precision, versions)."""

    name: str = ""
    seed: int = 0
    dataset: str | None = None
    synthetic: bool = False
    data_format: str | None = None
    backbone: str | None = None
    weights: str | None = None
    image_size: int | None = None
    input_size: int | None = None
    epochs: int | None = None
    best_epoch: int | None = None
    device: str | None = None
    precision: str | None = None
    medtl_version: str | None = None
    torch_version: str | None = None
    wall_time_s: float | None = None


class Threshold(_Section):
    """The operating threshold of a binary run, chosen on val (``argmax`` for other tasks)."""

    rule: str = "argmax"
    value: float | None = None
    chosen_on: str = "val"
    precision: str | None = None


class Leaks(_Section):
    """The patient/image overlap record of the run's splits (``medtl.data.leaks``)."""

    status: str = "unknown"   # clean | leaky | dropped | unchecked | unknown (predates the record)
    policy: str | None = None
    known_overlap: str | None = None
    n_without_patient: dict[str, int] = Field(default_factory=dict)   # per split: images naming no patient


class DataFacts(_Section):
    source: str | None = None
    leaks: Leaks = Field(default_factory=Leaks)
    n: dict[str, int] = Field(default_factory=dict)


class Calibration(_Section):
    """The temperature fitted on val NLL (binary runs), and who added it."""

    temperature: float | None = None


class RunRecord(BaseModel):
    """A finished run's ``metrics.json``, typed (layout :data:`SCHEMA_VERSION`)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    run: RunFacts = Field(default_factory=RunFacts)
    task: Literal["binary", "multiclass", "multilabel"]
    classes: list[str] = Field(default_factory=list)
    threshold: Threshold = Field(default_factory=Threshold)
    data: DataFacts = Field(default_factory=DataFacts)
    val: Metrics = Field(default_factory=Metrics)
    test: Metrics = Field(default_factory=Metrics)
    history: list[dict[str, Any]] = Field(default_factory=list)
    calibration: Calibration | None = None

    # ---- facts that were dug out of the dict in several places
    @property
    def decision_threshold(self) -> float:
        """The binary decision threshold chosen on val (0.5 where none was recorded)."""
        v = self.threshold.value
        return 0.5 if v is None else float(v)

    @property
    def temperature(self) -> float | None:
        return None if self.calibration is None else self.calibration.temperature

    @property
    def leak_status(self) -> str:
        return self.data.leaks.status

    @property
    def precision(self) -> str:
        """The training precision (fp32 where the record predates it)."""
        return self.run.precision or "fp32"

    # ---- dotted access for compare, evaluate and tracking
    def as_dict(self) -> dict:
        """The record as written (JSON-ready): the keys held, plus ``schema_version``."""
        return {"schema_version": SCHEMA_VERSION,
                **self.model_dump(mode="json", exclude_unset=True, exclude={"schema_version"})}

    def at(self, path: str) -> Any:
        """The value at a dotted path such as ``test.auc`` (:data:`MISSING` when absent)."""
        return lookup(self.as_dict(), path)

    def metric_keys(self) -> list[str]:
        """Dotted paths of every numeric metric (``history``, ``run`` and case CIs left out)."""
        return number_keys(self.as_dict(), skip=("history", "run", "schema_version"))

    def with_split(self, name: Literal["val", "test"], metrics: dict) -> "RunRecord":
        """A copy whose ``name`` section holds ``metrics``."""
        return self.model_copy(update={name: Metrics.model_validate(metrics)})


class ExternalRun(_Section):
    """``run`` of an external evaluation: how the run was applied to the other data."""

    dir: str | None = None
    classes: list[str] = Field(default_factory=list)
    positive: str | None = None
    threshold: float | None = None
    threshold_rule: str | None = None
    temperature: float | None = None
    eval_precision: str = "fp32"


class ExternalRecord(BaseModel):
    """``RUN/external/<name>/metrics.json`` (``medtl evaluate``)."""

    model_config = ConfigDict(extra="allow")

    kind: Literal["medtl.external"] = "medtl.external"
    version: int = 0
    key: str | None = None
    name: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
    run: ExternalRun = Field(default_factory=ExternalRun)
    metrics: Metrics = Field(default_factory=Metrics)
    wall_time_s: float | None = None

    def as_dict(self) -> dict:
        return self.model_dump(mode="json", exclude_unset=True)


# ------------------------------------------------------------------------------ migrations

def layout_of(obj: dict) -> int:
    """The layout of a metrics.json object (see the module docstring)."""
    v = obj.get("schema_version")
    if v is not None:
        if not isinstance(v, int) or isinstance(v, bool):
            raise RecordError(f"schema_version must be an integer (got {v!r})")
        return v
    if "data" not in obj:
        return 0
    test = obj.get("test") if isinstance(obj.get("test"), dict) else {}
    return 2 if "ci" in test else 1


def _from_0(obj: dict) -> dict:
    # layout 0 predates the data section: no leak record (status unknown), no calibration
    return obj | {"data": {"source": (obj.get("run") or {}).get("data_source"), "leaks": {"status": "unknown"}}}


def _from_1(obj: dict) -> dict:
    return obj  # layout 2 only added keys (case CIs); nothing to move


def _from_2(obj: dict) -> dict:
    # run.leak_status was a copy of data.leaks.status: keep the one in data (or take the copy
    # where data's is absent), drop the copy
    run = dict(obj.get("run") or {})
    copy = run.pop("leak_status", None)
    data = dict(obj.get("data") or {})
    leaks = dict(data.get("leaks") or {})
    if "status" not in leaks and copy is not None:
        leaks["status"] = copy
    return obj | {"run": run, "data": data | {"leaks": leaks}, "schema_version": 3}


MIGRATIONS = {0: _from_0, 1: _from_1, 2: _from_2}


def migrate(obj: dict) -> tuple[dict, int]:
    """(the object in the current layout, the layout it was read in)."""
    start = layout = layout_of(obj)
    if layout > SCHEMA_VERSION:
        raise RecordError(f"written by a newer medtl (run record layout {layout}; this medtl reads up to "
                          f"{SCHEMA_VERSION}): upgrade medtl to read it")
    while layout < SCHEMA_VERSION:
        obj = MIGRATIONS[layout](obj)
        layout += 1
    return obj, start


def parse_record(obj: dict) -> RunRecord:
    """A :class:`RunRecord` from a metrics.json object of any known layout; :class:`RecordError`
    (one line) otherwise."""
    obj, _ = migrate(obj)
    try:
        return RunRecord.model_validate(obj)
    except ValidationError as exc:
        raise RecordError(_first_error(exc)) from None


def parse_external(obj: dict) -> ExternalRecord:
    try:
        return ExternalRecord.model_validate(obj)
    except ValidationError as exc:
        raise RecordError(_first_error(exc)) from None


def _first_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    where = ".".join(str(p) for p in e.get("loc", ())) or "top level"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"not a medtl run record: {where}: {e.get('msg', 'invalid')}{more}"


__all__ = ["Calibration", "DataFacts", "ExternalRecord", "ExternalRun", "Leaks", "MISSING", "Metrics",
           "RecordError", "RunFacts", "RunRecord", "SCHEMA_VERSION", "TempScaled", "Threshold", "layout_of", "lookup", "migrate",
           "number_keys", "parse_external", "parse_record"]
