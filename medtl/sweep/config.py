"""Sweep configs: a base finetune config, arms that override parts of it, and seeds.

    name: warmup
    base: ../pneumoniamnist28.yaml      # relative to this file
    seeds: 30                           # 0..29, or a list [0, 1, 5]
    set:                                # overrides for every arm (dotted keys)
      train.epochs: 10
    arms:
      warmup: {}
      no_warmup: {train.warmup_epochs: 0}
    default_arms: [warmup, no_warmup]   # optional: arms run when --arms is not given
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..config import RunConfig, apply_override, build_config, read_yaml_mapping
from ..errors import ConfigError

_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "sweep"
    base: str | None = None
    seeds: int | list[int] = 30
    set: dict[str, Any] = Field(default_factory=dict)
    arms: dict[str, dict[str, Any]]
    default_arms: list[str] | None = None

    @field_validator("arms")
    @classmethod
    def _arms(cls, v: dict) -> dict:
        if not v:
            raise ValueError("a sweep needs at least one arm")
        for name, over in v.items():
            if not _ARM_NAME.match(name):
                raise ValueError(f"arm name {name!r} must be letters, digits, '_', '.', '+', '-'")
            if over is None:
                v[name] = {}
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v):
        if isinstance(v, int):
            if v < 1:
                raise ValueError("seeds must be >= 1")
            return v
        if not v or len(set(v)) != len(v) or any(s < 0 for s in v):
            raise ValueError("seeds must be a non-empty list of distinct non-negative integers")
        return v

    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


def _flatten(prefix: str, value: Any, out: dict) -> None:
    """Turn nested mappings into dotted keys, except for values that are mappings by nature."""
    if isinstance(value, dict) and prefix not in _DICT_VALUED:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


_DICT_VALUED = {"train.bn_gamma", "data.synthetic_n"}


def load_sweep(path: str | Path, arms: list[str] | None = None,
               seeds: list[int] | None = None) -> tuple[SweepConfig, dict[str, RunConfig], list[int]]:
    """Load a sweep file; return it, the resolved RunConfig of each selected arm (seed 0) and
    the seeds.  Every arm's config is validated up front, so a typo fails before any run."""
    p = Path(path)
    raw = read_yaml_mapping(p, "sweep config")
    try:
        sweep = SweepConfig.model_validate(raw)
    except ValidationError as exc:
        msgs = []
        for e in exc.errors():
            loc = ".".join(str(x) for x in e["loc"])
            if e["type"] == "extra_forbidden":
                msgs.append(f"unknown key '{loc}' (valid keys: {', '.join(SweepConfig.model_fields)})")
            else:
                msgs.append(f"'{loc}': {e['msg']}")
        raise ConfigError(f"{p}: invalid sweep config: " + "; ".join(msgs)) from None

    base_raw: dict = {}
    if sweep.base:
        bp = (p.parent / sweep.base) if not Path(sweep.base).is_absolute() else Path(sweep.base)
        if not bp.is_file():
            raise ConfigError(f"{p}: base config {sweep.base} not found (looked at {bp})")
        try:
            base_raw = yaml.safe_load(bp.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
            raise ConfigError(f"{bp}: base config is not readable YAML ({type(exc).__name__})") from None
        if not isinstance(base_raw, dict):
            raise ConfigError(f"{bp}: a config must be a mapping")

    chosen = arms or sweep.default_arms or list(sweep.arms)
    unknown = [a for a in chosen if a not in sweep.arms]
    if unknown:
        raise ConfigError(f"{p}: unknown arm(s) {', '.join(unknown)} (arms: {', '.join(sweep.arms)})")
    resolved: dict[str, RunConfig] = {}
    for arm in chosen:
        merged = yaml.safe_load(yaml.safe_dump(base_raw))  # deep copy
        flat: dict[str, Any] = {}
        _flatten("", sweep.set, flat)
        _flatten("", sweep.arms[arm], flat)
        for k, v in flat.items():
            apply_override(merged, k, v)
        merged["name"] = f"{sweep.name}/{arm}"
        merged["seed"] = 0
        resolved[arm] = build_config(merged, source=f"{p} (arm {arm})")
    return sweep, resolved, (seeds if seeds is not None else sweep.seed_list())
