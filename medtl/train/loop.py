"""The fine-tuning loop behind ``medtl finetune``.

Design choices:
- The decoded dataset lives in memory as uint8 tensors; batches are sliced, converted and
  augmented on the fly (batch-wise, no per-image Python loop).  For X-ray datasets that fit
  in RAM this is faster than a DataLoader with worker processes on a 2-core machine.
- Every random choice of epoch ``e`` (data order, augmentation, mixup, dropout) is drawn
  from generators seeded by ``(seed, e)``.  A run resumed from the end of epoch ``e-1``
  therefore continues exactly as an uninterrupted run would.
- The run folder's files (:mod:`medtl.runs`) are each written atomically; ``metrics.json``
  (the typed run record, :mod:`medtl.record`), written last, marks a finished run.  Claiming,
  restarting and logging into the folder are :mod:`medtl.lifecycle`'s.  The resume point is a
  :class:`~medtl.train.resumable.TrainingState`.
- Process-wide settings (threads, malloc) are the entry point's job
  (:func:`medtl.train.runtime.configure_process`).
"""
from __future__ import annotations

import csv
import io
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from .. import __version__
from ..config import RunConfig, config_to_yaml
from ..errors import ConfigError, TrainingError
from ..io import atomic_path, json_safe, write_text_atomic
from ..models.inference import predict_logits
from ..record import RunRecord
from ..lifecycle import FileLog, claim, discard, save_torch_atomic, start
from ..runs import Run
from ..stats import binary_metrics, choose_threshold, multiclass_metrics, multilabel_metrics
from ..stats.case_ci import case_cis, summary_line
from .resumable import Progress, TrainingState, check_finite, settings_diff
from .runtime import Runtime, resolve_runtime
from .schedule import lr_factor, scaled_lr

log = logging.getLogger("medtl")

STATE_KIND = "medtl-finetune-state"
# keys that may differ between an interrupted run and its resumption: the thread count, the
# device *setting* (the resolved device and precision are compared in the state file) and caching
RESUME_SAFE = {"train.num_threads", "train.device", "data.cache"}


# settings whose method changed although the key stayed: (key, a key that came with the change,
# what the old method was).  A run folder that set the key but lacks the new one was made by the
# old method: it is neither resumed nor reused as if it were a run of the new one
METHOD_CHANGES = (
    ("data.augment.stylize", "data.augment.stylize_window",
     "data.augment.stylize was the Fourier amplitude swap, now a texture scramble with histogram matching"),
)


def method_changes(raw: dict) -> list[str]:
    """What :data:`METHOD_CHANGES` says about a run folder's raw config (as written, before
    defaults are filled in): one line per setting made by a replaced method."""
    def lookup(key: str) -> tuple[bool, Any]:
        cur: Any = raw
        for part in key.split("."):
            if not isinstance(cur, dict) or part not in cur:
                return False, None
            cur = cur[part]
        return True, cur

    return [what for key, new_key, what in METHOD_CHANGES if lookup(key)[1] and not lookup(new_key)[0]]


def _epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + epoch * 7919 + stream * 104_729) % (2**63 - 1))
    return g


# ---------------------------------------------------------------- task helpers

class Task:
    """Loss and metrics for binary, multi-class or multi-label targets."""

    def __init__(self, bundle, label_smoothing: float, class_weighting: str, device):
        self.classes = list(bundle.classes)
        self.multilabel = bool(bundle.multilabel)
        self.kind = "multilabel" if self.multilabel else ("binary" if len(self.classes) == 2 else "multiclass")
        self.num_outputs = len(self.classes)
        self.ls = label_smoothing
        y = bundle.splits["train"].labels
        # class weights are kept on the CPU and moved to the logits' device in loss(): training
        # logits (CUDA) and evaluation logits (CPU) can then never meet weights on another device
        del device
        self.weight = None
        self.pos_weight = None
        if class_weighting == "balanced":
            if self.multilabel:
                pos = np.clip(y.sum(0), 1, None)
                self.pos_weight = torch.tensor((len(y) - pos) / pos, dtype=torch.float32)
            else:
                counts = np.bincount(y, minlength=self.num_outputs).astype(np.float64)
                w = len(y) / (self.num_outputs * np.clip(counts, 1, None))
                self.weight = torch.tensor(w, dtype=torch.float32)

    def targets(self, labels: np.ndarray) -> torch.Tensor:
        if self.multilabel:
            return torch.as_tensor(labels, dtype=torch.float32)
        return torch.as_tensor(labels, dtype=torch.long)

    def loss(self, logits: torch.Tensor, target: torch.Tensor, soft: torch.Tensor | None = None) -> torch.Tensor:
        logits = logits.float()
        weight = None if self.weight is None else self.weight.to(logits.device)
        pos_weight = None if self.pos_weight is None else self.pos_weight.to(logits.device)
        if self.multilabel:
            t = target if soft is None else soft
            t = t * (1 - self.ls) + 0.5 * self.ls
            return F.binary_cross_entropy_with_logits(logits, t, pos_weight=pos_weight)
        if soft is not None:  # mixup: soft one-hot targets
            t = soft * (1 - self.ls) + self.ls / self.num_outputs
            logp = F.log_softmax(logits, 1)
            if weight is not None:
                logp = logp * weight
            return -(t * logp).sum(1).mean()
        return F.cross_entropy(logits, target, weight=weight, label_smoothing=self.ls)

    def one_hot(self, target: torch.Tensor) -> torch.Tensor:
        if self.multilabel:
            return target.float()
        return F.one_hot(target, self.num_outputs).float()

    def probs(self, logits: torch.Tensor) -> np.ndarray:
        logits = logits.float()
        if self.multilabel:
            return torch.sigmoid(logits).numpy()
        return torch.softmax(logits, 1).numpy()

    def metrics(self, y: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> dict:
        if self.kind == "binary":
            return binary_metrics(y, prob[:, 1], threshold)
        if self.kind == "multiclass":
            return multiclass_metrics(y, prob, self.classes)
        return multilabel_metrics(y, prob, self.classes)


# ---------------------------------------------------------------- evaluation

def evaluate(model, split, task: Task, rt: Runtime, batch_size: int, threshold: float = 0.5):
    """Metrics (with ``loss``) and probabilities of ``model`` on one split, at the run's precision."""
    images = torch.from_numpy(split.images).unsqueeze(1)
    logits = predict_logits(model, images, device=rt.device, batch_size=batch_size, amp_dtype=rt.amp_dtype,
                            channels_last=rt.channels_last)
    target = task.targets(split.labels)
    if len(target) and target.device != logits.device:
        target = target.to(logits.device)
    loss = float(task.loss(logits, target)) if len(target) else float("nan")
    prob = task.probs(logits)
    m = task.metrics(split.labels, prob, threshold)
    m["loss"] = loss
    return m, prob


# ---------------------------------------------------------------- the run folder

def _differences(cfg: RunConfig) -> Callable[[dict], list[str]]:
    """What makes a stored run another run than ``cfg`` (:func:`medtl.lifecycle.claim`)."""

    def differences(old: dict) -> list[str]:
        changed = method_changes(old)
        if changed:  # before the defaults are filled in: they would make the old run look like a new one
            return [f"a run made with a method medtl has since replaced ({'; '.join(changed)})"]
        try:  # fill in keys added to the schema since that run was written, with their defaults
            old = RunConfig.model_validate(old).model_dump(mode="json")
        except ValidationError:
            pass  # keys since removed: compare as written, which reports them
        diff = [d for d in settings_diff(old, cfg.model_dump(mode="json")) if d not in RESUME_SAFE]
        return [f"a run with a different config (differs in: {', '.join(diff)})"] if diff else []

    return differences


def _stored_settings(old: dict) -> dict:
    """A resume state's settings with config keys added since it was written filled in with their
    defaults (as :func:`check_existing` does for the stored config.yaml)."""
    runtime = old.pop("runtime", None)
    try:
        old = RunConfig.model_validate(old).model_dump(mode="json")
    except ValidationError:
        pass  # keys since removed: compared as written, which reports them
    return old | ({"runtime": runtime} if runtime is not None else {})


def check_existing(run: Run, cfg: RunConfig) -> str:
    """'new', 'resume' or 'finished' for fine-tuning ``cfg`` into ``run``'s folder
    (:func:`medtl.lifecycle.claim`)."""
    return claim(run, _differences(cfg))


def _write_log_csv(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    fields = ["epoch", "train_loss", "val_loss", "val_auc", "val_acc", "lr", "seconds"]
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    for row in history:
        w.writerow({k: (f"{row[k]:.6g}" if isinstance(row.get(k), float) else row.get(k)) for k in fields})
    write_text_atomic(path, buf.getvalue())


# ---------------------------------------------------------------- set-up

@dataclass
class _Setup:
    """Everything a run trains with, built before the run folder is touched."""

    bundle: Any
    task: Task
    rt: Runtime
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    scaler: Any
    bs: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    milestones: list[int]
    base_lr: float
    gamma_touched: list
    trainable: Any
    weights_report: Any
    teacher: Any = None  # medtl.train.distill.Teacher, with train.teacher
    net: Any = None  # what trains: the model, or the model inside DistributedDataParallel
    dist: Any = None  # medtl.train.distributed.Dist


def _check_input_side(cfg: RunConfig, bundle) -> None:
    from ..models.archs import BLURPOOL_MIN_SIDE, check_input_side

    side = min(bundle.splits["train"].images.shape[-2:])
    check_input_side(cfg.model.backbone, int(side))
    if cfg.model.antialias == "blurpool" and side < BLURPOOL_MIN_SIDE:
        raise ConfigError(f"model.antialias: blurpool needs inputs of at least {BLURPOOL_MIN_SIDE} px (its reflect "
                          f"padding); this run feeds {side} px (raise data.image_size or upscale with data.sr)")
    if cfg.data.augment.cue.kind not in ("none", ["none"]):
        from ..data.cues import check_cue

        check_cue(cfg.data.augment.cue, side)


def _prepare(cfg: RunConfig) -> _Setup:
    """Data, task, model and optimiser.  Everything that can fail on bad input fails here."""
    from ..data import load_dataset
    from ..models import apply_bn_gamma, model_for_run, param_groups, set_trainable

    from .distributed import check_config, current, wrap

    d = current()
    check_config(cfg, d)
    rt = resolve_runtime(cfg.train)
    if d.enabled and rt.device.type == "cuda" and rt.device.index is None:
        rt.device = torch.device("cuda", torch.cuda.current_device())
    bundle = load_dataset(cfg.data)
    for name in ("train", "val", "test"):
        if len(bundle.splits[name].labels) == 0:
            raise ConfigError(f"{cfg.data.path}: the {name} split is empty")
    task = Task(bundle, cfg.train.label_smoothing, cfg.train.class_weighting, rt.device)
    torch.manual_seed(cfg.seed)
    _check_input_side(cfg, bundle)
    model, report = model_for_run(cfg, task.num_outputs, weights=cfg.model.weights)
    gamma_touched = apply_bn_gamma(model, cfg.train.bn_gamma) if cfg.train.bn_gamma else []
    trainable = set_trainable(model, cfg.train.trainable)
    model.to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = wrap(model, rt.device, d)  # data-parallel: synchronised BN in place, DDP around it

    n_train = len(bundle.splits["train"].labels)
    bs = min(cfg.train.batch_size, n_train)
    if bs % d.world:  # data-parallel: a train split smaller than the batch shrank it
        raise ConfigError(f"{cfg.data.path}: the train split ({n_train} images) makes the global batch {bs}, which "
                          f"does not split evenly over {d.world} processes")
    steps_per_epoch = n_train // bs  # drop the last partial batch (BN needs > 1 sample)
    total_steps = steps_per_epoch * cfg.train.epochs
    base_lr = scaled_lr(cfg.train.lr, bs, cfg.train.lr_scale_batch)
    groups = param_groups(model, cfg.train.weight_decay, cfg.train.no_bias_decay)
    if cfg.train.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=base_lr, momentum=cfg.train.momentum,
                              nesterov=cfg.train.nesterov and cfg.train.momentum > 0)
    else:
        opt = torch.optim.AdamW(groups, lr=base_lr)
    for g in opt.param_groups:
        g["initial_lr"] = base_lr
    teacher = None
    if cfg.train.teacher:
        from .distill import load_teacher

        teacher = load_teacher(cfg.train.teacher, task.classes, task.multilabel, rt.device,
                               cfg.train.distill_alpha, cfg.train.distill_temperature)
    return _Setup(teacher=teacher, net=net, dist=d, bundle=bundle, task=task, rt=rt, model=model, opt=opt,
                  scaler=torch.amp.GradScaler("cuda") if rt.use_scaler else None, bs=bs,
                  steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                  warmup_steps=int(round(cfg.train.warmup_epochs * steps_per_epoch)),
                  milestones=[int(round(f * total_steps)) for f in cfg.train.step_milestones],
                  base_lr=base_lr, gamma_touched=gamma_touched, trainable=trainable, weights_report=report)


def _log_setup(s: _Setup, cfg: RunConfig) -> None:
    b = s.bundle
    if b.synthetic:
        log.info("dataset: %s — SYNTHETIC data, not clinical images", b.name)
    else:
        log.info("dataset: %s (%s) classes=%s", b.name, b.format, b.classes)
    for note in b.notes:
        log.info("data note: %s", note)
    log.info("runtime: device=%s precision=%s channels_last=%s threads=%d fast_conv=%s", s.rt.device,
             s.rt.precision, s.rt.channels_last, torch.get_num_threads(), cfg.train.fast_conv)
    if s.weights_report is not None:
        r = s.weights_report
        log.info("weights: %s missing=%s unexpected=%s mismatched=%s adapted=%s", cfg.model.weights,
                 getattr(r, "missing", None), getattr(r, "unexpected", None), getattr(r, "mismatched", None),
                 getattr(r, "adapted", None))
    if s.gamma_touched:
        log.info("bn_gamma applied to %d layers: %s", len(s.gamma_touched),
                 ", ".join(f"{n}={v:g}" if isinstance(v, float) else f"{n}={v}" for n, v in s.gamma_touched))
    log.info("trainable: %s", s.trainable)
    if s.teacher is not None:
        log.info("distilling from %s (alpha %g, T %g)", s.teacher.run_dir, s.teacher.alpha, s.teacher.temperature)


# ---------------------------------------------------------------- training

def _input_transforms(cfg: RunConfig, epoch: int, images: torch.Tensor, labels: np.ndarray | None = None):
    """The epoch's input transforms before the augmentation, as one function of (batch, dataset
    indices): ``data.augment.stylize`` (partners from the un-augmented ``images``), then
    ``data.augment.cue`` (the cue version of whatever goes on, so a cue image carries that cue
    only).  Both plans are drawn for the whole training set from (seed, epoch): batch order and
    resuming do not change them."""
    aug = cfg.data.augment
    steps = []
    if aug.stylize > 0:
        from ..data.stylize import stylize_batch, stylize_plan

        style = stylize_plan(len(images), aug.stylize, cfg.seed, epoch)
        steps.append(lambda x, idx: stylize_batch(x, idx, images, style, aug.stylize_window, aug.stylize_method))
    if aug.cue.kind not in ("none", ["none"]):
        from ..data.cues import cue_batch, cue_plan

        plan = cue_plan(len(images), aug.cue, cfg.seed, epoch, labels)
        steps.append(lambda x, idx: cue_batch(x, idx, plan, images))

    def apply(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        for step in steps:
            x = step(x, idx)
        return x

    return apply


def _train_epoch(s: _Setup, cfg: RunConfig, epoch: int, images: torch.Tensor, targets: torch.Tensor,
                 progress: bool) -> dict:
    from ..data import augment_batch

    model, opt, task, rt, tc = s.net, s.opt, s.task, s.rt, cfg.train
    model.train()
    torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # dropout and any other global-RNG use
    g_order = _epoch_generator(cfg.seed, epoch, 0)
    g_aug = _epoch_generator(cfg.seed, epoch, 1)
    perm = torch.randperm(len(images), generator=g_order)
    shape_inputs = _input_transforms(cfg, epoch, images, s.bundle.splits["train"].labels)
    t0 = time.time()
    total, count = 0.0, 0
    lr = s.base_lr
    with Progress(progress and s.dist.main, s.steps_per_epoch, f"epoch {epoch + 1}/{tc.epochs}", "batch") as bar:
        for i in range(s.steps_per_epoch):
            step = epoch * s.steps_per_epoch + i
            lr = s.base_lr * lr_factor(step, s.total_steps, s.warmup_steps, tc.schedule, s.milestones,
                                       tc.step_gamma, tc.warmup_start_factor, tc.min_lr_factor)
            for g in opt.param_groups:
                g["lr"] = lr
            idx = perm[i * s.bs:(i + 1) * s.bs]
            x = shape_inputs(images[idx].float().div_(255.0), idx)  # stylize, cue: before the augmentation
            x = augment_batch(x, cfg.data.augment, g_aug)
            y = targets[idx]
            soft = None
            if tc.mixup_alpha > 0:
                lam = _beta(tc.mixup_alpha, g_aug)
                j = torch.randperm(len(x), generator=g_aug)
                x = lam * x + (1 - lam) * x[j]
                oh = task.one_hot(y)
                soft = (lam * oh + (1 - lam) * oh[j]).to(rt.device)
            x, y, soft = s.dist.shard(x, y, soft)  # data-parallel: this rank's part of the global batch
            x, y = x.to(rt.device, non_blocking=True), y.to(rt.device, non_blocking=True)
            if rt.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with rt.autocast():
                logits = model(x)
            loss = task.loss(logits, y, soft)
            if s.teacher is not None:  # knowledge distillation: the teacher sees the same (mixed) batch
                from .distill import distill_loss

                with torch.no_grad(), rt.autocast():
                    t_logits = s.teacher.model(x)
                a = s.teacher.alpha
                loss = (1 - a) * loss + a * distill_loss(logits, t_logits, s.teacher.temperature, task.multilabel)
            lv = s.dist.mean(loss)  # the global batch's loss (every rank sees the same value)
            check_finite(torch.tensor(lv), f"epoch {epoch + 1}, step {i + 1}", lr)
            _step(s, tc, loss)
            total += lv * len(idx)
            count += len(idx)
            bar.update(loss=f"{lv:.4f}", lr=f"{lr:.3g}")
    return {"epoch": epoch + 1, "train_loss": total / max(count, 1), "lr": lr, "seconds": time.time() - t0}


def _step(s: _Setup, tc, loss: torch.Tensor) -> None:
    """Backward and optimiser step (with the fp16 gradient scaler where it is used)."""
    s.opt.zero_grad(set_to_none=True)
    if s.scaler is not None:
        s.scaler.scale(loss).backward()
        if tc.grad_clip:
            s.scaler.unscale_(s.opt)
            torch.nn.utils.clip_grad_norm_(s.model.parameters(), tc.grad_clip)
        s.scaler.step(s.opt)
        s.scaler.update()
    else:
        loss.backward()
        if tc.grad_clip:
            torch.nn.utils.clip_grad_norm_(s.model.parameters(), tc.grad_clip)
        s.opt.step()


def _beta(alpha: float, g: torch.Generator) -> float:
    """Beta(alpha, alpha) drawn reproducibly from the epoch generator.

    torch.distributions cannot take a generator, so numpy is seeded from it."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def _select_score(val_m: dict, rule: str) -> float:
    score = {"auc": val_m["auc"], "loss": -val_m["loss"], "acc": val_m.get("acc", float("nan"))}[rule]
    return -val_m["loss"] if math.isnan(score) else score


def _train(s: _Setup, cfg: RunConfig, run: Run, state: TrainingState, progress: bool) -> tuple[list[dict], int]:
    """All epochs, resumable; keeps the best checkpoint by ``train.select_metric``.
    Returns the epoch history and the best epoch."""
    history: list[dict] = []
    start_epoch, best_score, best_epoch = 0, -math.inf, -1
    saved = state.load()
    if saved is not None:
        s.model.load_state_dict(saved["model"])
        s.opt.load_state_dict(saved["optimizer"])
        if s.scaler is not None and saved.get("scaler"):
            s.scaler.load_state_dict(saved["scaler"])
        start_epoch = int(saved["epoch"])
        best_score, best_epoch = float(saved["best_score"]), int(saved["best_epoch"])
        history = list(saved["history"])
        log.info("resuming after epoch %d", start_epoch)
    train = s.bundle.splits["train"]
    images = torch.from_numpy(train.images).unsqueeze(1)  # uint8 (N,1,H,W)
    targets = s.task.targets(train.labels)
    for epoch in range(start_epoch, cfg.train.epochs):
        row = _train_epoch(s, cfg, epoch, images, targets, progress)
        if not s.dist.main:  # data-parallel: rank 0 evaluates and writes; the others wait for it
            s.dist.barrier()
            continue
        val_m, _ = evaluate(s.model, s.bundle.splits["val"], s.task, s.rt, max(s.bs, 128))
        row.update(val_loss=val_m["loss"], val_auc=val_m["auc"], val_acc=val_m.get("acc", float("nan")))
        history.append(row)
        score = _select_score(val_m, cfg.train.select_metric)
        if score > best_score:
            best_score, best_epoch = score, epoch + 1
            save_torch_atomic({"model": s.model.state_dict(), "epoch": epoch + 1, "classes": s.task.classes,
                                "config": config_to_yaml(cfg), "medtl_version": __version__}, run.checkpoint_path)
        state.save(model=s.model.state_dict(), optimizer=s.opt.state_dict(),
                   scaler=s.scaler.state_dict() if s.scaler is not None else None, epoch=epoch + 1,
                   best_score=best_score, best_epoch=best_epoch, history=history)
        _write_log_csv(run.log_csv_path, history)
        log.info("epoch %d/%d train_loss=%.4f val_loss=%.4f val_auc=%.4f lr=%.3g (%.1fs)", epoch + 1,
                 cfg.train.epochs, row["train_loss"], row["val_loss"], row["val_auc"], row["lr"], row["seconds"])
        s.dist.barrier()
    return history, best_epoch


# ---------------------------------------------------------------- final evaluation

def _evaluate_fp32(model, split, task: Task, rt32: Runtime, batch_size: int, threshold: float = 0.5):
    """:func:`evaluate` that also returns the logits: (metrics with loss, probabilities, logits)."""
    images = torch.from_numpy(split.images).unsqueeze(1)
    logits = predict_logits(model, images, device=rt32.device, batch_size=batch_size, amp_dtype=None,
                            channels_last=rt32.channels_last)
    target = task.targets(split.labels)
    loss = float(task.loss(logits, target)) if len(target) else float("nan")
    prob = task.probs(logits)
    return task.metrics(split.labels, prob, threshold) | {"loss": loss}, prob, logits.numpy()


def _save_predictions(path: Path, split, task: Task, prob: np.ndarray, logits: np.ndarray) -> None:
    """Per-image predictions (y, p, logit, ids): binary p is the positive class and logit its
    logit z1 - z0; otherwise both are per class."""
    binary = task.kind == "binary"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, y=split.labels, p=prob[:, 1] if binary else prob,
                     logit=(logits[:, 1] - logits[:, 0]) if binary else logits, ids=np.asarray(split.ids, dtype=str))


def _calibration(task: Task, val, val_out, test, test_out, threshold: float, val_m: dict, test_m: dict) -> dict:
    """Calibration of val and test (ECE, MCE, Brier, NLL, reliability data), the temperature
    fitted on val NLL and the temperature-scaled test calibration, subgroup metrics of test
    (``data.group_columns``), added to ``val_m`` / ``test_m``; returns the run's calibration record."""
    from ..stats.calibration import binary_margin, calibration_metrics, temperature_record, temperature_scaled
    from ..stats.subgroups import group_metrics

    if task.kind == "multilabel":
        return {}
    binary = task.kind == "binary"
    (val_prob, val_logits), (test_prob, test_logits) = val_out, test_out
    z_val = binary_margin(val_logits) if binary else val_logits
    z_test = binary_margin(test_logits) if binary else test_logits
    record = temperature_record(val.labels, z_val)
    val_m.update(calibration_metrics(val.labels, val_prob[:, 1] if binary else val_prob))
    test_m.update(calibration_metrics(test.labels, test_prob[:, 1] if binary else test_prob))
    test_m["temp_scaled"] = temperature_scaled(test.labels, z_test, record["temperature"])
    if binary and test.groups:
        test_m["groups"], test_m["group_gaps"] = group_metrics(test.labels, test_prob[:, 1], threshold, test.groups)
    return record


def _final_evaluation(s: _Setup, cfg: RunConfig, run: Run) -> tuple[dict, dict, float, dict]:
    """Best checkpoint; threshold chosen on val and applied to test; calibration and the
    temperature fitted on val; val and test predictions and the reliability diagram written.
    Returns (val metrics, test metrics, threshold, calibration record)."""
    best = torch.load(run.checkpoint_path, map_location="cpu", weights_only=True)
    s.model.load_state_dict(best["model"])
    # fp32 whatever the training precision: the threshold, the test metrics and the per-image
    # predictions (DeLong's input) must not carry bf16's 1/256 resolution near p = 1
    rt32 = Runtime(s.rt.device, None, s.rt.channels_last, use_scaler=False)
    task, val = s.task, s.bundle.splits["val"]
    val_m, val_prob, val_logits = _evaluate_fp32(s.model, val, task, rt32, max(s.bs, 128))
    threshold = 0.5
    if task.kind == "binary":
        threshold = choose_threshold(val.labels, val_prob[:, 1], cfg.train.threshold_rule)
        val_m = task.metrics(val.labels, val_prob, threshold) | {"loss": val_m["loss"]}
    test = s.bundle.splits["test"]
    test_m, test_prob, test_logits = _evaluate_fp32(s.model, test, task, rt32, max(s.bs, 128), threshold)
    if task.kind == "binary":  # clinical operating points fixed on val, read on test; net benefit
        from ..stats.operating import operating_points

        test_m |= operating_points(val.labels, val_prob[:, 1], test.labels, test_prob[:, 1])
    elif task.kind == "multilabel":  # per label, and their macro means
        from ..stats.operating import operating_points_multilabel

        test_m |= operating_points_multilabel(val.labels, val_prob, test.labels, test_prob, task.classes)
    elif task.kind == "multiclass":  # each class against the rest, per class and their macro means
        from ..stats.operating import operating_points_one_vs_rest

        test_m |= operating_points_one_vs_rest(val.labels, val_prob, test.labels, test_prob, task.classes)
    calib = _calibration(task, val, (val_prob, val_logits), test, (test_prob, test_logits), threshold, val_m, test_m)
    # every run's val and test metrics carry their case CIs (DeLong for AUC, Wilson for proportions)
    val_m["ci"] = case_cis(task.kind, val.labels, val_prob, threshold, task.classes)
    test_m["ci"] = case_cis(task.kind, test.labels, test_prob, threshold, task.classes)
    # per-image predictions: test for paired tests between models (DeLong) and probes, val for
    # post-hoc recalibration (the temperature) without re-running the model
    _save_predictions(run.predictions_path, test, task, test_prob, test_logits)
    _save_predictions(run.val_predictions_path, val, task, val_prob, val_logits)
    if calib:
        from ..figures import write_reliability_png

        write_reliability_png(run.reliability_path, test_m, title=f"{cfg.name} seed {cfg.seed}: test")
    return val_m, test_m, threshold, calib


def _weights_facts(s: _Setup, cfg: RunConfig) -> dict:
    """What the backbone started from: the weights' family and sha256, and for weights made by
    ``medtl pretrain`` their provenance (recipe, source, size, epochs, seed)."""
    if cfg.model.weights.lower() == "none":
        return {}
    from ..models.weights import get_weights, list_weights

    info = getattr(s.model, "info", {}) or {}
    prov = get_weights(cfg.model.weights).provenance if cfg.model.weights in list_weights() else {}
    return {"weights_family": info.get("family"), "weights_sha256": info.get("weights_sha256"),
            "weights_provenance": dict(prov) or None}


def _run_record(s: _Setup, cfg: RunConfig, best_epoch: int, wall: float) -> dict:
    return {
        "name": cfg.name, "seed": cfg.seed, "dataset": s.bundle.name, "synthetic": bool(s.bundle.synthetic),
        "data_source": getattr(s.bundle, "source", None), "data_notes": list(s.bundle.notes),
        "data_format": s.bundle.format, "backbone": cfg.model.backbone, "weights": cfg.model.weights,
        "antialias": cfg.model.antialias, "stylize": cfg.data.augment.stylize,
        "cue": "+".join([cfg.data.augment.cue.kind] if isinstance(cfg.data.augment.cue.kind, str)
                        else cfg.data.augment.cue.kind),
        "image_size": cfg.data.image_size, "input_size": int(s.bundle.splits["train"].images.shape[-1]),
        "sr": cfg.data.sr.method, "epochs": cfg.train.epochs, "best_epoch": best_epoch,
        "device": str(s.rt.device), "precision": s.rt.precision, "eval_precision": "fp32",
        "fast_conv": bool(cfg.train.fast_conv), **_weights_facts(s, cfg),
        "threads": torch.get_num_threads(), "medtl_version": __version__, "torch_version": torch.__version__,
        "wall_time_s": round(wall, 2), "bn_gamma_layers": [[n, v] for n, v in s.gamma_touched],
    } | ({"teacher": s.teacher.facts()} if s.teacher is not None else {}) | (
        {"data_parallel": {"world_size": s.dist.world, "backend": torch.distributed.get_backend(),
                           "global_batch": s.bs}} if s.dist.enabled else {})


# ---------------------------------------------------------------- the run

def finetune(cfg: RunConfig, out: str | Path, progress: bool = True, restart: bool = False,
             allow_runtime_change: bool = False) -> dict:
    """Fine-tune per ``cfg`` into the run folder ``out``; returns its :class:`~medtl.record.RunRecord`.

    Re-running with the same config resumes an interrupted run from its last finished
    epoch, or returns the stored metrics of a finished one.  ``restart`` discards an existing
    run in ``out`` first.  A resume on another device type or precision is refused (the
    resumed run would not be exact) unless ``allow_runtime_change``.
    """
    from .distributed import current

    d = current()  # data-parallel (torchrun): rank 0 writes the run folder, every rank trains
    run = Run(out)
    if restart and d.main:
        discard(run)
    d.barrier()
    status = check_existing(run, cfg)
    if status == "finished":
        log.info("run already finished: %s", run.metrics_path)
        return run.record
    t0 = time.time()
    s = _prepare(cfg)
    fresh = status == "new"
    d.barrier()  # every rank has read the folder before rank 0 writes to it
    if d.main:
        start(run, config_to_yaml(cfg))
    d.barrier()
    settings = cfg.model_dump(mode="json") | {"runtime": {"device_type": s.rt.device.type,
                                                           "precision": s.rt.precision}}
    ignore = RESUME_SAFE | ({"runtime.device_type", "runtime.precision"} if allow_runtime_change else set())
    state = TrainingState(run.state_path, STATE_KIND, settings, ignore=ignore, normalize=_stored_settings)
    if not d.main:
        _train(s, cfg, run, state, progress)
        d.barrier()  # rank 0's final evaluation and record
        return run.record
    with FileLog(run.train_log_path):
        _log_setup(s, cfg)
        try:
            history, best_epoch = _train(s, cfg, run, state, progress)
        except TrainingError:
            if fresh:
                shutil.rmtree(run.path, ignore_errors=True)
            raise
        val_m, test_m, threshold, calib = _final_evaluation(s, cfg, run)
        record = RunRecord.model_validate(json_safe({
            "run": _run_record(s, cfg, best_epoch, time.time() - t0),
            "task": s.task.kind, "classes": s.task.classes,
            "threshold": {"rule": cfg.train.threshold_rule if s.task.kind == "binary" else "argmax",
                          "value": threshold, "chosen_on": "val", "precision": "fp32"},
            "data": {"source": s.bundle.source, "leaks": s.bundle.leaks,
                     "n": {k: len(v) for k, v in s.bundle.splits.items()}}
                    | ({"train_fraction": s.bundle.train_fraction} if s.bundle.train_fraction else {}),
            "val": val_m, "test": test_m, "history": history,
        } | ({"calibration": calib} if calib else {})))
        run.write_record(record)
        shutil.rmtree(run.state_dir, ignore_errors=True)
        log.info("test: %s", summary_line(record.test))
    d.barrier()
    return record
