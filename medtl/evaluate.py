"""``medtl evaluate``: score finished runs on another dataset (external validation) with each
run's own preprocessing, best checkpoint, val-chosen threshold and val-fitted temperature; and
give run folders written before calibration existed their calibration fields, without retraining.

For every finished run found in the given sweep, arm or run folders (as ``medtl compare`` finds
them):

1. **Calibration of the run itself.**  A run without ``test.ece`` or a temperature (written by an
   older medtl) is re-scored on its own val and test splits in fp32: ``metrics.json`` gains the
   calibration fields of ``val`` and ``test``, ``test.temp_scaled`` and the ``calibration``
   record (the temperature fitted on val NLL), and the folder gains ``predictions_val.npz`` and
   ``reliability.png``.  Its training results are not touched.
2. **External data** (``data``): the dataset is read at the run's ``data.image_size``,
   ``data.resize`` and ``data.sr`` (normalisation lives in the model); its class names are
   mapped onto the run's (``label_map``: data class -> run class, ``-`` drops a class); the
   logits of the chosen split come from the best checkpoint in fp32.  ``RUN/external/<name>/``
   receives ``predictions.npz`` (y, p, logit, ids; never a patient id), ``reliability.png`` and,
   last, ``metrics.json``: the ``metrics`` section has the keys of a run's ``test`` section
   (AUC, accuracy, sensitivity and specificity at the run's threshold, calibration, the
   temperature-scaled calibration, subgroups of ``group_columns``).  Every file is written
   atomically.  The result is cached under a key of the checkpoint's sha256, the data's contents
   (:func:`medtl.data.registry.data_fingerprint`), the options and the run's threshold and
   temperature: a second call reads it and computes nothing.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from .errors import ConfigError, DataError
from .io import atomic_path, json_safe, sha256_file
from .data.registry import data_fingerprint
from .record import MISSING, ExternalRecord, RunRecord
from .runs import EXTERNAL_DIR, Run, discover_arms, iter_finished, read_predictions
from .stats.calibration import scaled_probs
from .stats.case_ci import summary_line

log = logging.getLogger("medtl")

EVAL_VERSION = 4  # 2: metrics carry their case CIs (``ci``); 3: operating points and net benefit; 4: multi-label per-label operating points, multi-class runs
SPLIT_CHOICES = ("test", "val", "train", "all")
DROP = "-"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
SUMMARY_KEYS = ("auc", "acc", "sensitivity", "specificity", "ece", "ece_equal_mass", "brier", "nll",
                "temp_scaled.ece", "temp_scaled.brier", "temp_scaled.nll")


@dataclass
class ExternalSpec:
    """What to evaluate on: the data, its name under ``RUN/external/``, and how to read it."""

    data: str
    name: str
    label_map: dict[str, str] = field(default_factory=dict)
    positive: str | None = None
    split: str = "test"
    group_columns: list[str] | None = None
    data_format: str = "auto"
    #: how to read the data: the data.* keys finetune takes that describe a dataset
    #: (:data:`DATA_OPTIONS`: label columns, patient column, ...)
    data_options: dict = field(default_factory=dict)


#: the data.* keys evaluate takes (the rest follow the run: image size, resize, SR; or evaluate's own)
DATA_OPTIONS = ("path_column", "label_columns", "patient_column", "split_column", "uncertain", "patient_regex",
                "val_fraction", "split_seed")


def default_name(data: str) -> str:
    """``RUN/external/<name>`` for a data path or dataset name: its last component, letters,
    digits, ``_`` and ``-`` only (``medmnist:pneumoniamnist`` -> ``pneumoniamnist``)."""
    stem = Path(str(data).rstrip("/")).stem if ":" not in str(data) else str(data).split(":")[-1]
    return re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-") or "external"


def check_spec(spec: ExternalSpec) -> None:
    bad = sorted(set(spec.data_options) - set(DATA_OPTIONS))
    if bad:
        raise ConfigError(f"data option(s) {', '.join('data.' + b for b in bad)} cannot be set for evaluate "
                          f"(it takes {', '.join('data.' + k for k in DATA_OPTIONS)}; image size, resize and "
                          f"SR follow the run)")
    if spec.data_options:
        from pydantic import ValidationError

        from .config import DataConfig

        try:
            DataConfig(path=spec.data, **spec.data_options)
        except ValidationError as exc:
            e = exc.errors()[0]
            raise ConfigError(f"data.{'.'.join(map(str, e['loc']))}: {e['msg']}") from None
    if not _NAME_RE.match(spec.name):
        raise ConfigError(f"name {spec.name!r}: use letters, digits, '_' and '-' (it becomes "
                          f"{EXTERNAL_DIR}/<name>/ and the metric prefix external.<name>. in compare)")
    if spec.split not in SPLIT_CHOICES:
        raise ConfigError(f"split must be one of {', '.join(SPLIT_CHOICES)} (got {spec.split!r})")
    for src, dst in spec.label_map.items():
        if not src or not dst:
            raise ConfigError(f"label_map: empty class name in {src!r}={dst!r} (expected SRC=DST)")


# ------------------------------------------------------------------------------ the model

def _logits(fm, images: np.ndarray) -> np.ndarray:
    """fp32 logits (n, C) of uint8 images (n, H, W) from a :class:`~medtl.models.inference.FinishedModel`."""
    import torch

    return fm.logits(torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1), batch_size=256)


def _binary_run(run: Run) -> tuple[RunRecord, list[str], float]:
    rec = run.record
    if rec.task != "binary":
        raise ConfigError(f"{run.path}: evaluate scores binary runs; this run's task is {rec.task!r}")
    if len(rec.classes) != 2:
        raise DataError(f"{run.path}: its run record lists {len(rec.classes)} classes for a binary run")
    return rec, list(rec.classes), rec.decision_threshold


# ------------------------------------------------------------------------------ a run's own calibration

def _own_data_config(run: Run, cfg):
    """The run's data config for re-scoring its own splits: the leak policy it trained with (runs
    that predate the policy trained on the splits as given, which 'warn' reproduces)."""
    raw = (run.raw_config().get("data") or {})
    return cfg.data.model_copy(update={"on_leak": raw.get("on_leak", "warn")})


def _add_calibration(section: dict, y, p, z, temperature: float | None) -> None:
    from .stats.calibration import calibration_metrics, temperature_scaled

    section.update(calibration_metrics(y, p))
    if temperature is not None:
        section["temp_scaled"] = temperature_scaled(y, z, temperature)


def _save_npz(path: Path, **arrays) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def ensure_calibration(run: Run) -> tuple[dict, bool]:
    """The run's temperature record; for a run that predates calibration, computed first (its
    own val and test splits re-scored in fp32, the results added to its folder).  Returns
    (record, whether it was computed now)."""
    from .data import load_dataset
    from .figures import write_reliability_png
    from .models.inference import load_finished
    from .record import Calibration
    from .stats.calibration import binary_margin, temperature_record

    if run.record.task in ("multilabel", "multiclass"):  # calibration is binary-only for runs that predate it
        return (run.record.calibration.as_dict() if run.record.calibration is not None else {}), False
    rec, classes, thr = _binary_run(run)
    if rec.temperature is not None and rec.test.ece is not None and run.val_predictions_path.is_file():
        return rec.calibration.as_dict(), False
    fm = load_finished(run.path)
    bundle = load_dataset(_own_data_config(run, fm.cfg))
    val, test = bundle.splits["val"], bundle.splits["test"]
    zv, zt = _logits(fm, val.images), _logits(fm, test.images)
    stored = read_predictions(run.predictions_path)
    if "ids" in stored and list(map(str, stored["ids"])) != list(map(str, test.ids)):
        raise DataError(f"{run.path}: its data no longer gives the test split it was scored on (the test image "
                        f"ids differ from its predictions); calibration cannot be added")
    pv, pt = scaled_probs(zv, 1.0)[:, 1], scaled_probs(zt, 1.0)[:, 1]
    calib = temperature_record(val.labels, binary_margin(zv)) | {
        "added_by": "medtl evaluate", "max_abs_diff_p_vs_stored_test_predictions":
            float(np.max(np.abs(pt - np.asarray(stored["p"], float)))) if len(pt) else 0.0}
    val_m, test_m = rec.val.as_dict(), rec.test.as_dict()
    _add_calibration(val_m, val.labels, pv, binary_margin(zv), None)
    _add_calibration(test_m, test.labels, pt, binary_margin(zt), calib["temperature"])
    updated = rec.with_split("val", json_safe(val_m)).with_split("test", json_safe(test_m)).model_copy(
        update={"calibration": Calibration.model_validate(json_safe(calib))})
    _save_npz(run.val_predictions_path, y=val.labels, p=pv, logit=binary_margin(zv),
              ids=np.asarray(val.ids, dtype=str))
    write_reliability_png(run.reliability_path, test_m, title=f"{run.path.name}: test")
    run.write_record(updated)
    log.info("%s: calibration added (temperature %.3f fitted on val)", run.path, calib["temperature"])
    return updated.calibration.as_dict(), True


# ------------------------------------------------------------------------------ external data

def _cache_key(run: Run, spec: ExternalSpec, cfg, threshold: float | None, temperature: float | None,
               data_fp: str) -> str:
    blob = {"v": EVAL_VERSION, "ckpt": sha256_file(run.checkpoint_path), "data": spec.data, "files": data_fp,
            "format": spec.data_format, "split": spec.split, "label_map": sorted(spec.label_map.items()),
            "positive": spec.positive, "groups": spec.group_columns, "threshold": threshold,
            "options": sorted((k, json.dumps(v, sort_keys=True)) for k, v in spec.data_options.items()),
            "temperature": temperature, "prep": [cfg.data.image_size, cfg.data.resize,
                                                 cfg.data.sr.model_dump(mode="json")]}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:24]


def class_mapping(data_classes: Sequence[str], run_classes: Sequence[str], label_map: Mapping[str, str],
                  where: str) -> dict[str, int | None]:
    """Data class -> run class index (None: dropped).  Identical names map to themselves; every
    other data class needs a ``label_map`` entry, else one line lists both class sets."""
    data_classes, run_classes = [str(c) for c in data_classes], [str(c) for c in run_classes]
    unknown = [s for s in label_map if s not in data_classes]
    if unknown:
        raise ConfigError(f"{where}: label_map names {', '.join(map(repr, unknown))}, not a class of the data "
                          f"(data classes: {', '.join(data_classes)})")
    bad = [d for d in label_map.values() if d != DROP and d not in run_classes]
    if bad:
        raise ConfigError(f"{where}: label_map maps to {', '.join(map(repr, bad))}, not a class of the run "
                          f"(run classes: {', '.join(run_classes)}; '{DROP}' drops a data class)")
    missing = [c for c in data_classes if label_map.get(c, c) != DROP and label_map.get(c, c) not in run_classes]
    if missing:
        raise ConfigError(f"{where}: class names differ: the run has {', '.join(run_classes)}; the data has "
                          f"{', '.join(data_classes)}; map each data class with label_map SRC=DST, e.g. "
                          f"{' '.join(_suggest(c, run_classes) for c in missing)} ('{DROP}' drops a class)")
    return {c: None if label_map.get(c, c) == DROP else run_classes.index(label_map.get(c, c)) for c in data_classes}


def _suggest(data_class: str, run_classes: Sequence[str]) -> str:
    """An example map entry: the run class of the same name up to case, else the choices."""
    same = [r for r in run_classes if r.casefold() == data_class.casefold()]
    return f"{data_class}={same[0]}" if same else f"{data_class}=<{'|'.join([*run_classes, DROP])}>"


@dataclass
class _Scored:
    """The evaluated cases of an external dataset at one preprocessing, mapped to run classes."""

    images: np.ndarray
    labels: np.ndarray          # run class index per case
    ids: list[str]
    groups: dict[str, np.ndarray] | None
    info: dict


def _select(bundle, split: str):
    from .data.types import SPLITS

    names = list(SPLITS) if split == "all" else [split]
    parts = [bundle.splits[s] for s in names if s in bundle.splits]
    images = np.concatenate([s.images for s in parts])
    labels = np.concatenate([np.asarray(s.labels) for s in parts])
    ids = [i for s in parts for i in s.ids]
    groups = None
    if all(s.groups for s in parts) and parts and parts[0].groups:
        groups = {c: np.concatenate([np.asarray(s.groups[c], dtype=object) for s in parts]) for c in parts[0].groups}
    return images, labels, ids, groups


def _data_info(spec: ExternalSpec, bundle) -> dict:
    """What an external evaluation records about the data it scored."""
    return {"path": spec.data, "options": dict(spec.data_options), "source": bundle.source, "dataset": bundle.name,
            "format": bundle.format, "synthetic": bool(bundle.synthetic), "split": spec.split,
            "classes": list(bundle.classes), "notes": list(bundle.notes)}


class ExternalData:
    """External datasets loaded once per preprocessing (image size, resize, SR) and mapped."""

    def __init__(self, spec: ExternalSpec):
        self.spec = spec
        self._bundles: dict[str, object] = {}

    def bundle(self, cfg):
        """The data at the run's preprocessing (loaded once per image size, resize and SR)."""
        from .config import DataConfig
        from .data import load_dataset

        spec = self.spec
        key = json.dumps([cfg.data.image_size, cfg.data.resize, cfg.data.sr.model_dump(mode="json")])
        if key not in self._bundles:
            dc = DataConfig(path=spec.data, format=spec.data_format, image_size=cfg.data.image_size,
                            resize=cfg.data.resize, sr=cfg.data.sr, cache=cfg.data.cache, on_leak="warn",
                            group_columns=spec.group_columns, **spec.data_options)
            self._bundles[key] = load_dataset(dc)
        return self._bundles[key]

    def scored(self, cfg, run_classes: Sequence[str]) -> _Scored:
        spec = self.spec
        bundle = self.bundle(cfg)
        if bundle.multilabel:
            raise ConfigError(f"{spec.data}: multi-label data; evaluate needs single-label classes")
        mapping = class_mapping(bundle.classes, run_classes, spec.label_map, spec.data)
        images, labels, ids, groups = _select(bundle, spec.split)
        idx_map = np.array([-1 if mapping[c] is None else mapping[c] for c in bundle.classes])
        mapped = idx_map[np.asarray(labels, dtype=int)]
        keep = np.flatnonzero(mapped >= 0)
        if keep.size == 0:
            raise DataError(f"{spec.data}: no images left in split {spec.split!r} after the label map")
        info = _data_info(spec, bundle) | {
            "label_map": {c: (run_classes[i] if i is not None else DROP) for c, i in mapping.items()},
            "n_dropped_by_label_map": int(len(mapped) - keep.size)}
        return _Scored(images=images[keep], labels=mapped[keep], ids=[ids[i] for i in keep],
                       groups=None if groups is None else {c: v[keep] for c, v in groups.items()}, info=info)


def _external_metrics(y: np.ndarray, z: np.ndarray, p: np.ndarray, threshold: float, temperature: float,
                      groups) -> dict:
    from .stats import binary_metrics
    from .stats.subgroups import group_metrics

    from .stats.case_ci import binary_cis

    m = binary_metrics(y, p, threshold)
    m["ci"] = binary_cis(y, p, threshold)
    _add_calibration(m, y, p, z, temperature)
    if groups:
        m["groups"], m["group_gaps"] = group_metrics(y, p, threshold, groups)
    return m


def _operating(run: Run, pos: int, y: np.ndarray, p: np.ndarray) -> dict:
    """Operating points fixed on the run's own val predictions (on the evaluated positive class)
    and read on the external set, and net benefit there (:mod:`medtl.stats.operating`); nothing
    for a run without val predictions."""
    from .runs import read_predictions
    from .stats.operating import operating_points

    try:
        v = read_predictions(run.val_predictions_path)
    except DataError:
        return {}
    vp = np.asarray(v["p"], dtype=np.float64).ravel()
    vy = np.asarray(v["y"]).astype(int).ravel()
    if pos != 1:
        vp, vy = 1.0 - vp, (vy == pos).astype(int)
    return operating_points(vy, vp, y, p)


def _positive(spec: ExternalSpec, run_classes: list[str], threshold: float, where: Path) -> tuple[int, float]:
    """(index of the positive class, threshold on its probability)."""
    if spec.positive is None:
        return 1, threshold
    if spec.positive not in run_classes:
        raise ConfigError(f"{where}: positive class {spec.positive!r} is not a class of the run "
                          f"({', '.join(run_classes)})")
    pos = run_classes.index(spec.positive)
    # the run decides class 1 when p1 >= t, i.e. class 0 when p0 > 1 - t
    return pos, threshold if pos == 1 else 1.0 - threshold


def evaluate_external(run: Run, spec: ExternalSpec, data: ExternalData, data_fp: str, *,
                      force: bool = False) -> tuple[ExternalRecord, bool]:
    """``RUN/external/<name>/metrics.json`` (computed, or read from the cache); (record, cached?)."""
    from .figures import write_reliability_png

    from .models.inference import load_finished

    if run.record.task == "multilabel":
        return _evaluate_multilabel(run, spec, data, data_fp, force=force)
    if run.record.task == "multiclass":
        return _evaluate_multiclass(run, spec, data, data_fp, force=force)
    t0 = time.time()
    m, classes, thr = _binary_run(run)
    calib, _ = ensure_calibration(run)
    cfg = run.config()
    pos, thr_pos = _positive(spec, classes, thr, run.path)
    key = _cache_key(run, spec, cfg, thr, calib["temperature"], data_fp)
    old = None if force else _cached_external(run, spec.name, key)
    if old is not None:
        return old, True
    scored = data.scored(cfg, classes)
    z2 = _logits(load_finished(run.path), scored.images)
    margin = z2[:, 1] - z2[:, 0]
    z = margin if pos == 1 else -margin
    y = (scored.labels == pos).astype(int)
    p = scaled_probs(z, 1.0)
    metrics = _external_metrics(y, z, p, thr_pos, calib["temperature"], scored.groups)
    metrics |= _operating(run, pos, y, p)
    extra = {f"group_{c}": np.asarray(v, dtype=str) for c, v in (scored.groups or {}).items()}
    _save_npz(run.external_predictions_path(spec.name), y=y, p=p, logit=z,
              ids=np.asarray(scored.ids, dtype=str), **extra)
    write_reliability_png(run.external_reliability_path(spec.name), metrics,
                          title=f"{run.path.name} on {spec.name}")
    rec = ExternalRecord.model_validate(json_safe({
        "kind": "medtl.external", "version": EVAL_VERSION, "key": key, "name": spec.name,
        "data": scored.info | {"n": int(len(y)), "n_pos": int(y.sum())},
        "run": {"dir": str(run.path), "classes": classes, "positive": classes[pos], "threshold": thr_pos,
                "threshold_rule": m.threshold.rule, "temperature": calib["temperature"], "eval_precision": "fp32"},
        "metrics": metrics, "wall_time_s": round(time.time() - t0, 2)}))
    run.write_external_record(spec.name, rec)
    return rec, False


def _evaluate_multiclass(run: Run, spec: ExternalSpec, data: ExternalData, data_fp: str, *,
                         force: bool = False) -> tuple[ExternalRecord, bool]:
    """A multi-class run scored on single-label data whose classes map onto the run's (by name or
    ``label_map``; unmapped data classes are dropped): macro one-vs-rest AUC, accuracy and the
    per-class AUCs with case CIs, multi-class calibration (and after the run's temperature, when
    it has one), and each class against the rest at the operating points fixed on the run's own
    val predictions.  The decision is argmax, as in training."""
    from .models.inference import load_finished
    from .stats.case_ci import case_cis
    from .stats.metrics import multiclass_metrics
    from .stats.operating import operating_points_one_vs_rest
    from .runs import read_predictions

    t0 = time.time()
    rec = run.record
    classes = list(rec.classes)
    cfg = run.config()
    temperature = rec.temperature
    key = _cache_key(run, spec, cfg, None, temperature, data_fp)
    old = None if force else _cached_external(run, spec.name, key)
    if old is not None:
        return old, True
    scored = data.scored(cfg, classes)
    z = _logits(load_finished(run.path), scored.images).astype(np.float64)
    p = scaled_probs(z, 1.0)
    y = np.asarray(scored.labels, dtype=int)
    metrics = multiclass_metrics(y, p, classes) | {
        "n": int(len(y)), "n_per_class": {c: int((y == k).sum()) for k, c in enumerate(classes)},
        "ci": case_cis("multiclass", y, p, classes=classes)}
    _add_calibration(metrics, y, p, z, temperature)
    try:
        v = read_predictions(run.val_predictions_path)
        metrics |= operating_points_one_vs_rest(v["y"], v["p"], y, p, classes)
    except DataError:
        pass
    _save_npz(run.external_predictions_path(spec.name), y=y, p=p, logit=z, ids=np.asarray(scored.ids, dtype=str))
    out = ExternalRecord.model_validate(json_safe({
        "kind": "medtl.external", "version": EVAL_VERSION, "key": key, "name": spec.name,
        "data": scored.info | {"n": int(len(y))},
        "run": {"dir": str(run.path), "classes": classes, "threshold_rule": "argmax", "temperature": temperature,
                "eval_precision": "fp32"},
        "metrics": metrics, "wall_time_s": round(time.time() - t0, 2)}))
    run.write_external_record(spec.name, out)
    return out, False


def _cached_external(run: Run, name: str, key: str) -> ExternalRecord | None:
    """The run's stored evaluation on ``name`` when it was made with ``key`` (else None)."""
    if not run.external_metrics_path(name).is_file():
        return None
    try:
        old = run.external_record(name)
    except DataError:
        return None
    return old if old.key == key else None


def _operating_multilabel(run: Run, ri: Sequence[int], names: Sequence[str], y: np.ndarray, p: np.ndarray) -> dict:
    """Per shared label, the operating points fixed on the run's own val predictions of that label
    and read on the external set, with their macro means; nothing without val predictions."""
    from .runs import read_predictions
    from .stats.operating import operating_points_multilabel

    try:
        v = read_predictions(run.val_predictions_path)
    except DataError:
        return {}
    vy, vp = np.asarray(v["y"]), np.asarray(v["p"], dtype=np.float64)
    if vy.ndim != 2 or vp.shape != vy.shape:
        return {}
    return operating_points_multilabel(vy[:, ri], vp[:, ri], y, p, list(names))


def _evaluate_multilabel(run: Run, spec: ExternalSpec, data: ExternalData, data_fp: str, *,
                         force: bool = False) -> tuple[ExternalRecord, bool]:
    """A multi-label run scored on multi-label data, on the labels the two share through the
    pathology table (:func:`medtl.data.pathologies.harmonise`; ``label_map`` overrides it):
    per-label AUC with DeLong CIs and their macro mean; the dropped labels and why are recorded."""
    import torch

    from .data.pathologies import harmonise
    from .models.inference import load_finished
    from .stats.case_ci import delong_ci
    from .stats.metrics import auc

    t0 = time.time()
    rec = run.record
    classes = list(rec.classes)
    cfg = run.config()
    key = _cache_key(run, spec, cfg, None, None, data_fp)  # no threshold or temperature applies
    old = None if force else _cached_external(run, spec.name, key)
    if old is not None:
        return old, True
    bundle = data.bundle(cfg)
    if not bundle.multilabel:
        raise ConfigError(f"{spec.data}: single-label data ({', '.join(bundle.classes)}); {run.path} is a "
                          f"multi-label run: score it on multi-label data")
    unknown = [c for c in spec.label_map if c not in bundle.classes]
    if unknown:
        raise ConfigError(f"{spec.data}: label_map names {', '.join(map(repr, unknown))}, not a label of the data "
                          f"(data labels: {', '.join(bundle.classes)})")
    h = harmonise(classes, list(bundle.classes), spec.label_map)
    if not h["pairs"]:
        raise ConfigError(f"{spec.data}: no label shared with {run.path} (run: {', '.join(classes)}; data: "
                          f"{', '.join(bundle.classes)}); map them with label_map DATA=RUN")
    images, labels, ids, _ = _select(bundle, spec.split)
    z = _logits(load_finished(run.path), images)
    ri = [r for r, _, _ in h["pairs"]]
    di = [d for _, d, _ in h["pairs"]]
    names = [n for _, _, n in h["pairs"]]
    y = np.asarray(labels)[:, di].astype(int)
    p = torch.sigmoid(torch.from_numpy(z[:, ri].astype(np.float64))).numpy()
    per = {n: auc(y[:, k], p[:, k]) for k, n in enumerate(names)}
    valid = [v for v in per.values() if np.isfinite(v)]
    macro = float(np.mean(valid)) if valid else float("nan")
    metrics = {"auc": macro, "auc_macro": macro, "auc_per_class": per, "n": int(len(y)),
               "n_pos_per_class": {n: int(y[:, k].sum()) for k, n in enumerate(names)},
               "ci": {"auc_per_class": {n: delong_ci(y[:, k], p[:, k]) for k, n in enumerate(names)}}}
    metrics |= _operating_multilabel(run, ri, names, y, p)
    _save_npz(run.external_predictions_path(spec.name), y=y, p=p, logit=z[:, ri], labels=np.asarray(names, dtype=str),
              ids=np.asarray(ids, dtype=str))
    info = _data_info(spec, bundle) | {
        "labels": {"shared": names, "run": [classes[r] for r in ri], "data": [bundle.classes[d] for d in di],
                   "dropped_run": h["dropped_run"], "dropped_data": h["dropped_data"]}}
    out = ExternalRecord.model_validate(json_safe({
        "kind": "medtl.external", "version": EVAL_VERSION, "key": key, "name": spec.name,
        "data": info | {"n": int(len(y))},
        "run": {"dir": str(run.path), "classes": classes, "eval_precision": "fp32"},
        "metrics": metrics, "wall_time_s": round(time.time() - t0, 2)}))
    run.write_external_record(spec.name, out)
    return out, False


# ------------------------------------------------------------------------------ many runs

def _pick(section, key: str):
    """The value at a dotted key of a metrics section (None where absent)."""
    v = section.at(key)
    return None if v is MISSING else v


def temperature_effect(rows: Sequence[Mapping]) -> dict:
    """Does temperature scaling lower ECE?  Per run ``temp_scaled.ece - ece`` (the same cases, so
    paired per seed): mean change with its t interval over seeds and the paired t test of no change
    that matches it (Wilcoxon beside it; :func:`medtl.stats.compare.paired_tests`)."""
    from .stats.compare import describe, paired_tests

    pairs = [(r["metrics"].get("ece"), r["metrics"].get("temp_scaled.ece")) for r in rows]
    pairs = [(float(a), float(b)) for a, b in pairs if a is not None and b is not None
             and np.isfinite(a) and np.isfinite(b)]
    before, after = np.array([a for a, _ in pairs]), np.array([b for _, b in pairs])
    test = paired_tests(after, before)
    return {"change": describe(after - before), "n_lower": int(np.sum(after < before)),
            "n": len(pairs), "p": test["ttest_rel"]["p"], "test": "paired t", "wilcoxon_p": test["wilcoxon"]["p"],
            "note": test["note"]}


def summarise(rows: Sequence[Mapping], keys: Sequence[str] = SUMMARY_KEYS) -> dict:
    """Per arm and metric: mean, sd and t CI over seeds (:func:`medtl.stats.compare.describe`);
    ``ece_change_after_T``: :func:`temperature_effect` of the arm."""
    from .stats.compare import describe

    by_arm: dict[str, list[Mapping]] = {}
    for r in rows:
        by_arm.setdefault(r["arm"], []).append(r)
    out = {}
    for arm, rs in by_arm.items():
        out[arm] = {"seeds": [r["seed"] for r in rs]}
        for k in keys:
            vals = [r["metrics"].get(k) for r in rs]
            vals = [float("nan") if v is None else float(v) for v in vals]
            out[arm][k] = describe(vals)
        out[arm]["ece_change_after_T"] = temperature_effect(rs)
    return out


CASE_KEYS = ("auc", "acc", "sensitivity", "specificity")


def add_seed_case_intervals(summary: dict, arms: Mapping, name: str | None) -> None:
    """Per arm, AUC, accuracy, sensitivity and specificity also get the interval over seeds *and*
    the scored cases (``ci_seeds_cases_low/high``; :func:`medtl.stats.hierarchical.mean_ci`), from
    each run's predictions on the data it was scored on: the interval for claims about patients."""
    from .stats.comparison import run_predictions
    from .stats.hierarchical import mean_ci

    for arm_name, st in summary.items():
        preds = run_predictions(arms[arm_name], name) if arm_name in arms else {}
        runs = [preds[s] for s in st["seeds"] if s in preds]
        for k in CASE_KEYS:
            if k not in st:
                continue
            r = mean_ci(runs, k) if runs else {"ci_low": float("nan"), "ci_high": float("nan"),
                                               "note": "no predictions"}
            st[k].update(ci_seeds_cases_low=r["ci_low"], ci_seeds_cases_high=r["ci_high"],
                         ci_seeds_cases_note=r.get("note"))


def evaluate_runs(dirs: Sequence[str | Path], data: str | None = None, *, name: str | None = None,
                  label_map: Mapping[str, str] | None = None, positive: str | None = None, split: str = "test",
                  group_columns: Sequence[str] | None = None, data_format: str = "auto", force: bool = False,
                  progress: Callable[[str], None] | None = None, data_options: Mapping | None = None) -> dict:
    """Evaluate every finished run in ``dirs`` (sweep, arm or run folders): on ``data`` when given
    (``RUN/external/<name>/``), and in any case make sure each run carries its calibration.
    ``data_options``: how to read ``data`` (``{"label_columns": ["covid"], "patient_column": ...}``,
    the keys of :data:`DATA_OPTIONS`, as finetune's ``data.*``).
    Returns ``{"name", "data", "runs": [...], "arms": summarise(...)}`` (JSON-ready)."""
    arms = discover_arms(list(dirs))
    spec = None
    if data is not None:
        spec = ExternalSpec(data=str(data), name=name or default_name(str(data)), label_map=dict(label_map or {}),
                            positive=positive, split=split, data_format=data_format,
                            group_columns=list(group_columns) if group_columns else None,
                            data_options=dict(data_options or {}))
        check_spec(spec)
    elif label_map or positive or group_columns or name or data_options:
        raise ConfigError("name, label_map, positive, group_columns and data options describe external data: "
                          "give data too")
    data_fp = data_fingerprint(spec.data) if spec else ""
    loader = ExternalData(spec) if spec else None
    rows = []
    for arm, seed, run in iter_finished(arms):
        t = time.time()
        if spec is None:
            _, computed = ensure_calibration(run)
            rec, cached, metrics = None, not computed, run.record.test
        else:
            rec, cached = evaluate_external(run, spec, loader, data_fp, force=force)
            metrics = rec.metrics
        rows.append({"arm": arm, "seed": seed, "run_dir": str(run.path), "cached": cached,
                     "metrics": {k: _pick(metrics, k) for k in SUMMARY_KEYS} | {"n": metrics.n, "ci": metrics.ci}})
        if progress:
            progress(f"{arm}/seed {seed}: {summary_line(metrics)}; ECE "
                     f"{_fmt(rows[-1]['metrics']['ece'])}{' (cached)' if cached else ''} ({time.time() - t:.1f}s)")
    first = rec.data if rec else None
    arms_summary = summarise(rows)
    add_seed_case_intervals(arms_summary, arms, spec.name if spec else None)
    return json_safe({"name": spec.name if spec else None, "data": first, "runs": rows, "arms": arms_summary,
                      "n_cached": sum(r["cached"] for r in rows), "leak_warnings": _leak_warnings(arms)})


def _leak_warnings(arms) -> dict[str, str]:
    """``{arm: warning}`` on the runs' own training data (leaky, unchecked, known overlap, or a
    run that predates the leak record): :func:`medtl.stats.comparison.leak_warnings`."""
    from .stats.comparison import leak_warnings

    return leak_warnings(arms)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"
