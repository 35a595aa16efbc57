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

An arm may name its own base config (``base:`` inside the arm, relative to this file), so that
one sweep (and one study) can hold arms on different datasets; the order is always: the arm's
base (or the sweep's), then ``set``, then the arm's own keys:

    arms:
      k64-scratch: {base: ../kermany64.yaml, seeds: 5}

An arm may also run fewer seeds than the sweep (``seeds:`` inside the arm: a count or a list),
for an expensive arm; its pairs are then tested on the seeds both arms share.
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
            own = v[name].get("seeds")
            if own is not None and not _valid_seeds(own):
                raise ValueError(f"arm {name}: seeds must be a count >= 1 or a list of distinct non-negative "
                                 f"integers (got {own!r})")
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

    def arm_seeds(self, arm: str, seeds: list[int] | None = None) -> list[int]:
        """The seeds of ``arm``: its own ``seeds`` if it has them, else the sweep's; ``seeds`` (a
        command-line choice) restricts both."""
        own = self.arms[arm].get("seeds")
        mine = self.seed_list() if own is None else (list(range(own)) if isinstance(own, int) else list(own))
        return mine if seeds is None else ([s for s in seeds if s in mine] if own is not None else list(seeds))


def _valid_seeds(v) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return v >= 1
    return (isinstance(v, list) and bool(v) and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                     for s in v) and len(set(v)) == len(v))


def _flatten(prefix: str, value: Any, out: dict) -> None:
    """Turn nested mappings into dotted keys, except for values that are mappings by nature."""
    if isinstance(value, dict) and prefix not in _DICT_VALUED:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


_DICT_VALUED = {"train.bn_gamma", "data.synthetic_n"}


def _read_base(p: Path, base: str) -> dict:
    """The base config ``base`` (relative to the sweep file ``p``) as a mapping; one-line errors."""
    bp = (p.parent / base) if not Path(base).is_absolute() else Path(base)
    if not bp.is_file():
        raise ConfigError(f"{p}: base config {base} not found (looked at {bp})")
    try:
        raw = yaml.safe_load(bp.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"{bp}: base config is not readable YAML ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{bp}: a config must be a mapping")
    return raw


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

    base_raw = _read_base(p, sweep.base) if sweep.base else {}
    chosen = arms or sweep.default_arms or list(sweep.arms)
    unknown = [a for a in chosen if a not in sweep.arms]
    if unknown:
        raise ConfigError(f"{p}: unknown arm(s) {', '.join(unknown)} (arms: {', '.join(sweep.arms)})")
    resolved: dict[str, RunConfig] = {}
    for arm in chosen:
        own = dict(sweep.arms[arm])
        own.pop("seeds", None)
        arm_base = own.pop("base", None)
        if arm_base is not None and not isinstance(arm_base, str):
            raise ConfigError(f"{p}: arm {arm}: base must be a config file path (got {arm_base!r})")
        merged = yaml.safe_load(yaml.safe_dump(_read_base(p, arm_base) if arm_base else base_raw))  # deep copy
        flat: dict[str, Any] = {}
        _flatten("", sweep.set, flat)
        _flatten("", own, flat)
        for k, v in flat.items():
            apply_override(merged, k, v)
        merged["name"] = f"{sweep.name}/{arm}"
        merged["seed"] = 0
        resolved[arm] = build_config(merged, source=f"{p} (arm {arm})")
    return sweep, resolved, (seeds if seeds is not None else sweep.seed_list())
