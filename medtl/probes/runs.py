"""Loading a finished run for probing, batched fp32 inference, decisions, and the per-run cache.

Conventions shared by every probe:

* Inputs are float images in [0, 1], shape (B,1,H,W); the model normalises internally.
* Inference and attacks run in fp32 (no autocast), in eval mode, on ``train.device``, with the
  model in channels-last memory format (the same fp32 arithmetic, faster convolution kernels).
  Translation and corruption forwards may run at the run's training precision
  (``precision="train"``): every such probe also records how often its clean decisions agree
  with fp32's, so the choice is checked on each run.
* The *decision* of a binary run is ``p(class 1) >= threshold`` with the run's operating
  threshold (chosen on val, from metrics.json), so the clean accuracy of a probe equals the
  run's test accuracy; multi-class runs use argmax.
* Multi-label runs (sigmoid outputs, BCE training): ``labels`` are (N, L) 0/1 arrays, ``proba``
  gives per-label sigmoid probabilities, and the decision is a 0/1 vector, ``p_l >= threshold_l``
  per label.  metrics.json records no per-label operating threshold for a multi-label run, so
  ``threshold_l`` = 0.5 for every label; each probe's JSON says so (``decision``:
  :func:`decision_facts`).  AUCs are per label and their macro mean over the labels whose AUC is
  defined (:func:`medtl.stats.metrics.multilabel_metrics`); a decision "changes" when any label's
  does.  Shape bias and the shortcut probe need single-label decisions and refuse such runs
  (:func:`require_single_label`); the suite skips them, saying so.
* Results are cached as ``RUN/probes/<probe>.json`` (atomic writes), keyed by the probe's
  parameters and the checkpoint's sha256: changing either recomputes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ..errors import ConfigError
from ..io import json_safe, sha256_file, write_json_atomic
from ..record import RunRecord
from ..runs import CHECKPOINT, Run
from ..models.inference import predict_logits, predict_proba
from ..stats.metrics import auc, multilabel_metrics

CACHE_VERSION = 1


@dataclass
class ProbeRun:
    """A finished run, ready to probe."""

    path: Path
    cfg: Any
    model: torch.nn.Module
    classes: list[str]
    task: str
    threshold: float | np.ndarray  # binary: p(class 1) >= threshold; multi-label: (L,) per label
    images: np.ndarray        # uint8 (N,H,W) test images
    labels: np.ndarray        # int64 (N,); multi-label: int64 (N, L) of 0/1
    ids: list[str]            # non-identifying image ids
    device: torch.device
    record: RunRecord | None = None
    checkpoint_sha256: str = ""
    channels_last: bool = False
    threshold_rule: str = ""

    @property
    def multilabel(self) -> bool:
        return self.task == "multilabel"

    def amp_dtype(self, precision: str) -> torch.dtype | None:
        """The autocast dtype of ``precision``: 'fp32' (None), 'bf16', 'fp16', or 'train' (the
        run's training precision, from metrics.json; fp32 where unknown or unsupported here)."""
        if precision == "train":
            precision = self.record.precision if self.record is not None else "fp32"
        if precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"precision must be fp32, bf16, fp16 or train (got {precision!r})")
        if precision == "fp16" and self.device.type != "cuda":
            return None  # CPU autocast in fp16 is not what the run trained with: fp32 instead
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

    def proba(self, x: torch.Tensor, batch_size: int = 512, amp_dtype: torch.dtype | None = None) -> np.ndarray:
        """Probabilities (n, C) of images ``x`` (uint8 or float in [0,1]); fp32 unless ``amp_dtype``.
        Softmax over the classes; per-label sigmoids for a multi-label run."""
        if self.multilabel:
            logits = predict_logits(self.model, x, device=self.device, batch_size=batch_size, amp_dtype=amp_dtype,
                                    channels_last=self.channels_last)
            return torch.sigmoid(logits).double().numpy() if logits.numel() else np.zeros((0, len(self.classes)))
        return predict_proba(self.model, x, self.device, batch_size, amp_dtype=amp_dtype,
                             channels_last=self.channels_last)

    @property
    def probes_dir(self) -> Path:
        return Run(self.path).probes_dir

    def x(self, idx: np.ndarray | None = None) -> torch.Tensor:
        """Float (n,1,H,W) images in [0,1] on CPU."""
        imgs = self.images if idx is None else self.images[idx]
        return torch.from_numpy(np.ascontiguousarray(imgs)).unsqueeze(1).float().div_(255.0)


#: probes run the model in channels-last memory format (benchmarks switch it off for a plain baseline)
CHANNELS_LAST = True


def load_run(run_dir: str | Path, device: str | None = None) -> ProbeRun:
    """Rebuild the model of a finished run and load its test split.

    Raises :class:`DataError` (one line) for a folder that is not a finished run.
    """
    from ..data import load_dataset
    from ..models.inference import load_finished

    fm = load_finished(run_dir, device, channels_last=CHANNELS_LAST)
    if fm.task not in ("binary", "multiclass", "multilabel"):
        raise ConfigError(f"{fm.path}: probes support binary, multi-class and multi-label runs, not {fm.task!r}")
    bundle = load_dataset(fm.cfg.data, on_leak="warn")  # the test split is the published one under every policy
    test = bundle.splits["test"]
    threshold, rule = fm.threshold, ""
    labels = np.asarray(test.labels, dtype=np.int64)
    if fm.task == "multilabel":
        threshold, rule = label_thresholds(fm.classes)
        labels = (np.asarray(test.labels, dtype=np.float64) > 0.5).astype(np.int64).reshape(len(test.ids), -1)
    return ProbeRun(path=fm.path, cfg=fm.cfg, model=fm.model, classes=fm.classes, task=fm.task,
                    threshold=threshold, images=test.images, labels=labels,
                    ids=list(test.ids), device=fm.device, record=fm.record, checkpoint_sha256=fm.checkpoint_sha256,
                    channels_last=CHANNELS_LAST, threshold_rule=rule)


#: the decision rule of a multi-label run's probes (metrics.json records no per-label threshold)
MULTILABEL_RULE = "p >= 0.5 per label (metrics.json records no per-label operating threshold)"


def label_thresholds(classes: list[str]) -> tuple[np.ndarray, str]:
    """The per-label decision thresholds of a multi-label run and the rule that gave them."""
    return np.full(len(classes), 0.5), MULTILABEL_RULE


def decision_facts(run: ProbeRun) -> dict:
    """``{"decision": {rule, thresholds per label}}`` for a multi-label run's probe JSON (how its
    decisions were made); ``{}`` for single-label runs, whose results stay as they were."""
    if not run.multilabel:
        return {}
    return {"decision": {"rule": run.threshold_rule,
                         "thresholds": {c: float(t) for c, t in zip(run.classes, np.asarray(run.threshold))}}}


def top_labels(run: ProbeRun, k: int) -> list[int]:
    """The ``k`` most prevalent labels of a multi-label run's test split (indices; ties: label order)."""
    prevalence = np.asarray(run.labels).reshape(len(run.labels), -1).sum(0)
    return [int(j) for j in np.argsort(-prevalence, kind="stable")[:k]]


def require_single_label(run_dir: str | Path, what: str) -> None:
    """One-line :class:`ConfigError` naming the run folder when it is a multi-label run: ``what``
    says why the probe needs single-label decisions."""
    run = Run(run_dir).require_finished(CHECKPOINT)
    if run.record.task == "multilabel":
        raise ConfigError(f"{run.path}: {what}; multi-label runs are not supported")


# ------------------------------------------------------------------------------------ inference

def decide(prob: np.ndarray, task: str, threshold) -> np.ndarray:
    """Decisions (int) from probabilities: the run's threshold for binary, argmax for multi-class;
    for multi-label a 0/1 vector per image (``p >= threshold`` per label, the last axis)."""
    if task == "binary":
        return (prob[..., 1] >= threshold).astype(np.int64)
    if task == "multilabel":
        return (prob >= np.asarray(threshold)).astype(np.int64)
    return prob.argmax(-1).astype(np.int64)


def changed(a: np.ndarray, b: np.ndarray, task: str) -> np.ndarray:
    """Where decisions ``a`` and ``b`` differ; a multi-label decision vector differs when any label does."""
    diff = a != b
    return diff.any(-1) if task == "multilabel" else diff


def scores(run: ProbeRun, labels: np.ndarray, prob: np.ndarray) -> dict:
    """AUC and accuracy at the run's decisions.  Multi-label: macro AUC (mean over the labels whose
    AUC is defined) with ``auc_per_label``, and ``acc`` = the fraction of (image, label) decisions
    that are right."""
    pred = decide(prob, run.task, run.threshold)
    if run.multilabel:
        m = multilabel_metrics(labels, prob, run.classes)
        return {"auc": m["auc_macro"], "acc": float(np.mean(pred == labels)) if len(labels) else float("nan"),
                "auc_per_label": m["auc_per_class"]}
    return {"auc": auc(labels, prob), "acc": float(np.mean(pred == labels)) if len(labels) else float("nan")}


def sample_indices(n_total: int, n: int | None, seed: int, labels: np.ndarray | None = None) -> np.ndarray:
    """A seeded, sorted sample of ``n`` indices (all when n is None or >= n_total);
    stratified by label when labels are given, so AUC stays defined."""
    if n is None or n <= 0 or n >= n_total:
        return np.arange(n_total)
    rng = np.random.default_rng(seed)
    if labels is None:
        return np.sort(rng.choice(n_total, n, replace=False))
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = rarest_label(labels)
    out = []
    classes = np.unique(labels)
    for c in classes:
        pool = np.flatnonzero(labels == c)
        k = max(1, int(round(n * len(pool) / n_total)))
        out.append(rng.choice(pool, min(k, len(pool)), replace=False))
    return np.sort(np.concatenate(out))


def rarest_label(labels: np.ndarray) -> np.ndarray:
    """A stratum per image of multi-label 0/1 ``labels`` (N, L): its rarest positive label (-1 for
    none), so a stratified sample keeps every label's positives where it can."""
    labels = np.asarray(labels)
    if labels.shape[1] == 0:
        return np.full(len(labels), -1)
    prevalence = labels.sum(0)
    rank = np.where(labels > 0, prevalence[None, :], np.inf)
    return np.where(np.isfinite(rank).any(1), rank.argmin(1), -1)


# ------------------------------------------------------------------------------------ caching

def cache_key(probe: str, params: Mapping, checkpoint_sha256: str) -> str:
    blob = json.dumps({"probe": probe, "params": json_safe(params), "ckpt": checkpoint_sha256,
                       "v": CACHE_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_probe(run_dir: str | Path, probe: str, params: Mapping, compute: Callable[[ProbeRun], dict],
                 *, force: bool = False, run: ProbeRun | None = None,
                 extra_key: str = "") -> dict:
    """Return RUN/probes/<probe>.json when its key matches ``params`` (and the checkpoint),
    else load the run, ``compute(run)``, and write the result atomically."""
    run_folder = Run(run_dir).require_finished(CHECKPOINT)
    key = cache_key(probe, params, sha256_file(run_folder.checkpoint_path) + extra_key)
    out = run_folder.probe_path(probe)
    if out.is_file() and not force:
        try:
            old = json.loads(out.read_text(encoding="utf-8"))
            if old.get("key") == key:
                old["cached"] = True
                return old
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass
    if run is None:
        run = load_run(run_folder.path)
    result = compute(run)
    result = json_safe({"probe": probe, "key": key, "params": dict(params), **result})
    write_json_atomic(out, result)
    result["cached"] = False
    return result


def precision_check(run: ProbeRun, x: torch.Tensor, amp_dtype: torch.dtype | None, batch_size: int) -> dict:
    """How a probe's forward precision compares with fp32 on its clean images: the fraction of
    decisions that agree, and the largest change of a probability."""
    name = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype]
    if amp_dtype is None:
        return {"forward": name}
    p32, pa = run.proba(x, batch_size), run.proba(x, batch_size, amp_dtype)
    agree = ~changed(decide(p32, run.task, run.threshold), decide(pa, run.task, run.threshold), run.task)
    return {"forward": name, "clean_decision_agreement_with_fp32": float(agree.mean()) if len(agree) else None,
            "max_abs_prob_diff": float(np.abs(p32 - pa).max()) if len(pa) else None}


def check_positive(name: str, value, minimum=1) -> None:
    if value is None or value < minimum:
        raise ConfigError(f"{name} must be >= {minimum} (got {value})")
