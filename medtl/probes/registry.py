"""The probe registry: one name -> one :class:`Probe`, which declares everything the rest of
medtl needs to run and report it (as timm's model registry does for architectures).

A probe is registered once, by its own module::

    register(Probe(name="translation", run=translation_probe, defaults=DEFAULTS,
                   presets={"full": {...}, "quick": {...}}, record=..., scalars=..., headline=...))

and from then on ``medtl probe run NAME`` (and ``medtl probe list``), the robustness suite
(``medtl robustness-report``), ``medtl study`` and the report pages enumerate it: adding a probe
touches its module (and, for a section of its own on the page, its template) only.

What each field is for:

* ``run(run_dir, *, force=False, **params) -> dict``: the cached per-run result
  (``RUN/probes/<name>.json``; :func:`medtl.probes.runs.cached_probe`).
* ``defaults``: every parameter with its default; ``presets``: the suite's ``full`` and ``quick``
  overrides of them; ``sample_param``: the parameter the suite's one ``n_images`` sets (None: the
  probe has no image sample).
* ``record(result, run) -> dict``: the probe's entries of the suite's per-run record (top-level
  keys; a ``clean`` dict is merged into the run's clean facts).
* ``scalars(record) -> {metric: float}``: the flat per-run metrics the suite aggregates over seeds
  (mean, t CI) and tests between arms; each key starts with the probe's name.
* ``headline(keys, records) -> [metric]``: which of them are headline metrics (tested in the
  Holm family of the report, declarable primary in a study).
* ``section``: a template under ``medtl/reports/templates`` that renders the probe's section; a
  probe without one gets the generic section: a table of its scalar metrics per arm.
* ``transfer``: ``run`` also accepts ``source=`` (a run to craft on), and ``record`` then receives
  that result as ``transfer``.
* ``methods``: the probe's sentence in the report's methods list.
* ``single_label_only``: None where the probe also takes multi-label runs; else why it does not
  (its ``run`` refuses them in one line, and the suite skips it for them, recording this reason
  under the run's ``skipped`` and showing it on the page).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..errors import ConfigError


def scalar(v) -> float:
    """A per-run metric as a float for the seed statistics (a missing value, None, is NaN)."""
    return float("nan") if v is None else float(v)


def _no_headline(keys: Sequence[str], records: Sequence[Mapping]) -> list[str]:
    return []


def _generic_scalars(name: str) -> Callable[[Mapping], dict[str, float]]:
    """Every top-level number of the probe's record section, as ``<name>.<key>``."""

    def scalars(rec: Mapping) -> dict[str, float]:
        sec = rec.get(name) or {}
        return {f"{name}.{k}": float(v) for k, v in sec.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}

    return scalars


@dataclass(frozen=True)
class Probe:
    name: str
    run: Callable[..., dict]
    defaults: Mapping[str, Any]
    summary: str = ""
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    sample_param: str | None = "n_images"
    record: Callable[..., Mapping] | None = None
    scalars: Callable[[Mapping], Mapping[str, float]] | None = None
    headline: Callable[[Sequence[str], Sequence[Mapping]], list[str]] = _no_headline
    section: str | None = None
    transfer: bool = False
    methods: str = ""
    order: int = 100   # where the probe sits in the suite, the record and the page (built-ins: 10..60)
    single_label_only: str | None = None   # why multi-label runs are refused (None: they are probed)

    def params(self, preset: str = "full", n_images: int | None = None, **overrides) -> dict:
        """The probe's parameters: defaults, then the preset's overrides, then ``n_images`` (where
        the probe samples images), then ``overrides`` (None values ignored)."""
        if preset not in ("full", "quick"):
            raise ConfigError(f"preset must be full or quick (got {preset!r})")
        p = dict(self.defaults) | dict(self.presets.get(preset, {}))
        if n_images and self.sample_param:
            p[self.sample_param] = n_images
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise ConfigError(f"probe {self.name}: unknown parameter(s) {', '.join(unknown)} "
                              f"(parameters: {', '.join(sorted(self.defaults))})")
        return p | {k: v for k, v in overrides.items() if v is not None}

    def record_of(self, result: Mapping, run, transfer: Mapping | None = None) -> Mapping:
        if self.record is None:  # the generic record: the result's top-level scalars
            return {self.name: {k: v for k, v in result.items() if k not in ("key", "probe", "params", "cached")
                                and (isinstance(v, (int, float, str, bool)) or v is None)}}
        return self.record(result, run, transfer) if self.transfer else self.record(result, run)

    def scalars_of(self, rec: Mapping) -> dict[str, float]:
        return dict((self.scalars or _generic_scalars(self.name))(rec))


_REGISTRY: dict[str, Probe] = {}


def register(probe: Probe, *, replace: bool = False) -> Probe:
    """Add ``probe`` (a second registration of a name is an error unless ``replace``)."""
    if not probe.name.replace("_", "").isalnum():
        raise ConfigError(f"probe name must be letters, digits and underscores (got {probe.name!r})")
    if probe.name in _REGISTRY and not replace:
        raise ConfigError(f"probe {probe.name!r} is already registered")
    _REGISTRY[probe.name] = probe
    return probe


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


BUILTIN = ("translation", "adversarial", "corruptions", "explain", "shape_bias", "shortcut")
# The built-in probes register when their modules are imported, which ``medtl/probes/__init__.py``
# does: importing this module (any module of the package) runs the package's __init__ first.


def get(name: str) -> Probe:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown probe {name!r}; registered: {', '.join(names())}") from None


def names() -> list[str]:
    """Registered probe names, in report order (built-in probes first)."""
    return [p.name for p in probes()]


def probes() -> list[Probe]:
    """Registered probes in report order (``order``, then registration)."""
    return sorted(_REGISTRY.values(), key=lambda p: p.order)


def scalar_metrics(rec: Mapping) -> dict[str, float]:
    """The flat metrics of one run's suite record: clean AUC (multi-label: also each label's), every
    registered probe's scalars (in registration order), the run's test calibration."""
    from ..stats.robustness import calibration_scalars

    clean = (rec.get("clean") or {}).get("auc")
    out = {"clean.auc": scalar(clean)}
    per_label = (rec.get("clean") or {}).get("auc_per_label") or {}  # multi-label runs: each label's test AUC
    out |= {f"clean.per_label.{c}.auc": scalar(v) for c, v in per_label.items()}
    for p in probes():
        if p.name in rec:  # a record written before a probe existed has no entry for it
            out |= p.scalars_of(rec)
    return out | calibration_scalars(rec)


def headline_metrics(records: Sequence[Mapping]) -> list[str]:
    """The metrics arms are tested on: clean AUC, then each probe's headline metrics (translation:
    P(change) at one pixel and consistency; adversarial: one attack's largest-ε AUC; corruptions:
    the mean AUC drop; shape bias where interpretable), those the runs have."""
    flat = [scalar_metrics(r) for r in records]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    out = ["clean.auc"]
    for p in probes():
        if any(p.name in r for r in records):
            out += p.headline(keys, records)
    return [k for k in dict.fromkeys(out) if k in keys]


def probe_metrics():
    """:class:`medtl.stats.robustness.ProbeMetrics` of the registered probes."""
    from ..stats.robustness import ProbeMetrics

    return ProbeMetrics(scalars=scalar_metrics, headline=headline_metrics)


__all__ = ["Probe", "scalar", "get", "headline_metrics", "names", "probe_metrics", "probes", "register", "scalar_metrics",
           "unregister"]
