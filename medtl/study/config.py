"""The study config: one YAML that names a sweep, the comparison, the probes and external data.

    name: warmup-study
    sweep: sweeps/warmup.yaml           # a sweep config, relative to this file ...
    # sweep: {base: ../pneumoniamnist28.yaml, seeds: 30, set: {train.epochs: 8},
    #         arms: {warmup: {}, no_warmup: {train.warmup_epochs: 0}}}   # ... or inline
    compare:
      metrics: [test.auc, test.acc]
      anchor: 0.944                     # optional published figure
    probes:
      preset: full                      # full | quick | none
      n_images: null                    # override the images per probe
      source: null                      # a run folder for black-box transfer attacks
    evaluate:                           # optional external datasets (medtl evaluate)
      - data: kermany:chest_xray
        name: kermany
        label_map: {NORMAL: normal, PNEUMONIA: pneumonia}
    primary: [test.auc]                 # the primary endpoints: one Holm family across the study
    pairs: [warmup vs no_warmup]        # optional: the arm pairs to test (default: every pair)
    primary_pairs: [warmup vs no_warmup]  # optional: of those, the primary ones (default: all)
    margin: 0.01                        # equivalence margin (TOST), or {metric: margin}
    plan:                               # seeds needed, from pilot runs (or, without, the study's own)
      difference: 0.005
      pilot: null

``primary`` names compare metrics (``test.auc``) or robustness headline metrics
(``translation.p_change_1px``, ``clean.auc``, ...); every other test of the study is exploratory,
Holm-corrected in its own family.  With many arms, ``pairs`` keeps the tests to the questions
asked (arms on different datasets are never paired by accident) and ``primary_pairs`` keeps the
primary family to one pair per question, so its Holm correction stays small.  ``probes.arms``
probes only the named arms.  Every pair ends in one word: differs, equivalent within the
margin, or inconclusive.

Relative paths (``sweep``, an inline ``base``, ``probes.source``) are relative to the study file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config import read_yaml_mapping
from ..errors import ConfigError
from ..stats.compare import parse_pair


# robustness headline metrics (medtl.stats.robustness.headline_metrics) that may be declared primary
def robustness_prefixes() -> tuple[str, ...]:
    """``clean.`` and ``<probe>.`` of every registered probe (:mod:`medtl.probes.registry`)."""
    from ..probes import registry

    return ("clean.",) + tuple(f"{n}." for n in registry.names())


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CompareSpec(_Strict):
    metrics: list[str] = Field(default_factory=lambda: ["test.auc", "test.acc"])
    anchor: float | None = Field(None, gt=0, lt=1)
    alpha: float = Field(0.05, gt=0, lt=1)
    bootstrap: int = Field(10000, ge=100)

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("name at least one metric (e.g. test.auc)")
        return v


class ProbeSpec(_Strict):
    preset: Literal["full", "quick", "none"] = "full"
    n_images: int | None = Field(None, ge=1)
    source: str | None = None
    arms: list[str] | None = None  # probe only these arms (default: all)



class EvaluateSpec(_Strict):
    data: str
    name: str | None = None
    label_map: dict[str, str] = Field(default_factory=dict)
    positive: str | None = None
    split: str = "test"
    options: dict[str, Any] = Field(default_factory=dict)  # how to read data: data.* keys (evaluate's DATA_OPTIONS)


class PlanSpec(_Strict):
    difference: float | None = Field(None, gt=0, description="the true difference to detect")
    pilot: str | None = Field(None, description="pilot sweep folder; default: the study's own runs (a check, not a plan)")
    power: float = Field(0.8, gt=0, lt=1)
    theta: float = Field(0.0, description="the true difference assumed when planning equivalence")


class StudyConfig(_Strict):
    name: str = "study"
    sweep: str | dict[str, Any]
    compare: CompareSpec = Field(default_factory=CompareSpec)
    probes: ProbeSpec = Field(default_factory=ProbeSpec)
    evaluate: list[EvaluateSpec] = Field(default_factory=list)
    primary: list[str] = Field(default_factory=list)
    pairs: list[str] | None = None
    primary_pairs: list[str] | None = None
    margin: float | dict[str, float] | None = None
    plan: PlanSpec | None = None
    # patients: test-set metrics are concluded over seeds and test cases; test_set: about this test set only
    scope: Literal["patients", "test_set"] = "patients"

    @field_validator("margin")
    @classmethod
    def _margin(cls, v):
        vals = list(v.values()) if isinstance(v, dict) else ([] if v is None else [v])
        if any(not (x > 0) for x in vals):
            raise ValueError("margins must be positive")
        return v

    @field_validator("primary")
    @classmethod
    def _primary(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("names a metric twice")
        return v

    @field_validator("pairs", "primary_pairs")
    @classmethod
    def _pairs(cls, v):
        if v is None:
            return v
        if not v:
            raise ValueError("list at least one pair 'ARM_A vs ARM_B' (or leave the key out)")
        keys = [frozenset(parse_pair(t)) for t in v]
        if len(set(keys)) != len(keys):
            raise ValueError("names a pair twice")
        return v

    def pair_list(self) -> list[tuple[str, str]] | None:
        return None if self.pairs is None else [parse_pair(t) for t in self.pairs]

    def primary_pair_list(self) -> list[tuple[str, str]] | None:
        return None if self.primary_pairs is None else [parse_pair(t) for t in self.primary_pairs]

    def check_arms(self, arms: list[str], where: str) -> None:
        """Every arm named by ``pairs``, ``primary_pairs`` and ``probes.arms`` is an arm of the sweep."""
        named = [a for p in (self.pair_list() or []) + (self.primary_pair_list() or []) for a in p]
        named += list(self.probes.arms or [])
        unknown = sorted(set(named) - set(arms))
        if unknown:
            raise ConfigError(f"{where}: unknown arm(s) {', '.join(unknown)} (the sweep's arms: {', '.join(arms)})")

    @model_validator(mode="after")
    def _primary_known(self):
        if self.primary_pairs is not None:
            if not self.primary:
                raise ValueError("primary_pairs needs primary metrics (primary: [test.auc])")
            if self.pairs is not None:
                tested = {frozenset(p) for p in self.pair_list()}
                missing = [t for t in self.primary_pairs if frozenset(parse_pair(t)) not in tested]
                if missing:
                    raise ValueError(f"primary pair(s) {', '.join(missing)} are not among the tested pairs")
        for m in self.primary:
            prefixes = robustness_prefixes()
            if m not in self.compare.metrics and not m.startswith(prefixes):
                raise ValueError(f"primary metric {m!r} is neither a compare metric ({', '.join(self.compare.metrics)}) "
                                 f"nor a robustness headline metric ({', '.join(p + '*' for p in prefixes)})")
            if m.startswith(prefixes) and self.probes.preset == "none":
                raise ValueError(f"primary metric {m!r} needs the probes (probes.preset is none)")
        if self.plan is not None and self.plan.difference is None and self.margin is None:
            raise ValueError("plan: give plan.difference, or a study margin to plan equivalence for")
        return self


def _errors(exc: ValidationError) -> str:
    msgs = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e["loc"])
        msgs.append(f"unknown key '{loc}'" if e["type"] == "extra_forbidden" else f"'{loc}': {e['msg']}")
    return "; ".join(msgs)


def load_study(path: str | Path) -> tuple[StudyConfig, Path]:
    """The study config at ``path`` (validated; one-line errors) and its folder (paths in it are
    relative to that folder)."""
    p = Path(path)
    raw = read_yaml_mapping(p, "study config")
    try:
        cfg = StudyConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{p}: invalid study config: {_errors(exc)}") from None
    return cfg, p.resolve().parent


def resolve(folder: Path, rel: str) -> Path:
    q = Path(rel).expanduser()
    return q if q.is_absolute() else folder / q


def sweep_yaml(cfg: StudyConfig, folder: Path) -> str:
    """The sweep config of a study as YAML text, with an inline ``base`` made absolute."""
    if isinstance(cfg.sweep, str):
        p = resolve(folder, cfg.sweep)
        if not p.is_file():
            raise ConfigError(f"sweep: {cfg.sweep} not found (looked at {p})")
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        rel = p.parent
    else:
        raw, rel = dict(cfg.sweep), folder
    if isinstance(raw, dict):  # the sweep's base and every arm's own base, made absolute
        if raw.get("base") and not Path(str(raw["base"])).is_absolute():
            raw["base"] = str(resolve(rel, str(raw["base"])).resolve())
        for arm in (raw.get("arms") or {}).values():
            if isinstance(arm, dict) and isinstance(arm.get("base"), str) and not Path(arm["base"]).is_absolute():
                arm["base"] = str(resolve(rel, arm["base"]).resolve())
    raw.setdefault("name", cfg.name)
    return yaml.safe_dump(raw, sort_keys=False)
