"""The fine-tuning loop behind ``medtl finetune``.

Design choices:
- The decoded dataset lives in memory as uint8 tensors; batches are sliced, converted and
  augmented on the fly (batch-wise, no per-image Python loop).  For X-ray datasets that fit
  in RAM this is faster than a DataLoader with worker processes on a 2-core machine.
- Every random choice of epoch ``e`` (data order, augmentation, mixup, dropout) is drawn
  from generators seeded by ``(seed, e)``.  A run resumed from the end of epoch ``e-1``
  therefore continues exactly as an uninterrupted run would.
- Files in the run folder are each written atomically.  The folder only ever holds
  complete files: ``config.yaml``; ``state/last.pt`` (resume point, removed when the run
  finishes); ``checkpoint_best.pt``; ``log.csv``; ``train.log``; ``predictions_test.npz``; and, last, ``metrics.json``,
  whose presence marks a finished run.
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

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from pydantic import ValidationError

from .. import __version__
from .._malloc import keep_freed_memory
from ..config import RunConfig, config_to_yaml
from ..errors import ConfigError, TrainingError
from ..io import atomic_path, write_json_atomic, write_text_atomic
from ..stats import binary_metrics, choose_threshold, multiclass_metrics, multilabel_metrics, nan_to_none
from .schedule import lr_factor, scaled_lr

log = logging.getLogger("medtl")

STATE_FILE = "state/last.pt"
BEST_FILE = "checkpoint_best.pt"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
LOG_CSV = "log.csv"
PRED_FILE = "predictions_test.npz"


# ---------------------------------------------------------------- devices and precision

@dataclass
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # None: fp32
    channels_last: bool
    use_scaler: bool

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]


def _cpu_has_bf16() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # pragma: no cover - older torch
        return False


def resolve_runtime(train_cfg) -> Runtime:
    dev = train_cfg.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(dev)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={train_cfg.device}: CUDA is not available on this machine")
    prec = train_cfg.precision
    if prec == "auto":
        prec = "fp16" if device.type == "cuda" else ("bf16" if _cpu_has_bf16() else "fp32")
    if prec == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision=fp16 needs CUDA; use bf16 or fp32 on CPU")
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[prec]
    cl = train_cfg.channels_last
    if cl is None:
        cl = device.type == "cuda" or amp is not None
    return Runtime(device, amp, bool(cl), use_scaler=(amp == torch.float16))


def _autocast(rt: Runtime):
    if rt.amp_dtype is None:
        return torch.autocast(device_type=rt.device.type, enabled=False)
    return torch.autocast(device_type=rt.device.type, dtype=rt.amp_dtype)


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
        self.weight = None
        self.pos_weight = None
        if class_weighting == "balanced":
            if self.multilabel:
                pos = np.clip(y.sum(0), 1, None)
                self.pos_weight = torch.tensor((len(y) - pos) / pos, dtype=torch.float32, device=device)
            else:
                counts = np.bincount(y, minlength=self.num_outputs).astype(np.float64)
                w = len(y) / (self.num_outputs * np.clip(counts, 1, None))
                self.weight = torch.tensor(w, dtype=torch.float32, device=device)

    def targets(self, labels: np.ndarray) -> torch.Tensor:
        if self.multilabel:
            return torch.as_tensor(labels, dtype=torch.float32)
        return torch.as_tensor(labels, dtype=torch.long)

    def loss(self, logits: torch.Tensor, target: torch.Tensor, soft: torch.Tensor | None = None) -> torch.Tensor:
        logits = logits.float()
        if self.multilabel:
            t = target if soft is None else soft
            t = t * (1 - self.ls) + 0.5 * self.ls
            return F.binary_cross_entropy_with_logits(logits, t, pos_weight=self.pos_weight)
        if soft is not None:  # mixup: soft one-hot targets
            t = soft * (1 - self.ls) + self.ls / self.num_outputs
            logp = F.log_softmax(logits, 1)
            if self.weight is not None:
                logp = logp * self.weight
            return -(t * logp).sum(1).mean()
        return F.cross_entropy(logits, target, weight=self.weight, label_smoothing=self.ls)

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
            return multiclass_metrics(y, prob)
        return multilabel_metrics(y, prob, self.classes)


# ---------------------------------------------------------------- evaluation

@torch.no_grad()
def predict(model, images_u8: torch.Tensor, rt: Runtime, batch_size: int = 256) -> torch.Tensor:
    """Logits (float32, CPU) for uint8 images (N,1,H,W), in eval mode."""
    model.eval()
    outs = []
    for i in range(0, len(images_u8), batch_size):
        x = images_u8[i:i + batch_size].to(rt.device, non_blocking=True).float().div_(255.0)
        if rt.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(rt):
            outs.append(model(x).float().cpu())
    return torch.cat(outs) if outs else torch.empty(0)


def evaluate(model, split, task: Task, rt: Runtime, batch_size: int, threshold: float = 0.5):
    images = torch.from_numpy(split.images).unsqueeze(1)
    logits = predict(model, images, rt, batch_size)
    target = task.targets(split.labels)
    loss = float(task.loss(logits, target)) if len(target) else float("nan")
    prob = task.probs(logits)
    m = task.metrics(split.labels, prob, threshold)
    m["loss"] = loss
    return m, prob


# ---------------------------------------------------------------- the run

class RunFolder:
    def __init__(self, out: Path):
        self.out = Path(out)

    def p(self, name: str) -> Path:
        return self.out / name

    def finished(self) -> bool:
        return self.p(METRICS_FILE).is_file()

    def has_state(self) -> bool:
        return self.p(STATE_FILE).is_file()


def _config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    diffs = []
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            diffs += _config_diff(va, vb, prefix + k + ".")
        elif va != vb:
            diffs.append(prefix + k)
    return diffs


# keys that may differ between an interrupted run and its resumption
_RESUME_SAFE = {"train.num_threads", "train.device", "data.cache"}


def check_existing(folder: RunFolder, cfg: RunConfig) -> str:
    """'new', 'resume' or 'finished'; raises if the folder holds a different run."""
    cfg_path = folder.p(CONFIG_FILE)
    if not folder.out.exists() or not any(folder.out.iterdir()):
        return "new"
    if not cfg_path.is_file():
        raise ConfigError(f"{folder.out}: folder exists and is not a medtl run folder; choose another --out")
    try:
        old = yaml.safe_load(cfg_path.read_text())
    except yaml.YAMLError:
        raise ConfigError(f"{cfg_path}: unreadable config in existing run folder; use --restart") from None
    try:  # fill in keys added to the schema since that run was written, with their defaults
        old = RunConfig.model_validate(old or {}).model_dump(mode="json")
    except ValidationError:
        pass  # keys since removed: compare as written, which reports them
    diff = [d for d in _config_diff(old or {}, cfg.model_dump(mode="json")) if d not in _RESUME_SAFE]
    if diff:
        raise ConfigError(f"{folder.out}: holds a run with a different config (differs in: {', '.join(diff)}); "
                          "use another --out, or --restart to discard it")
    if folder.finished():
        return "finished"
    return "resume" if folder.has_state() else "new"


def _write_log_csv(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    fields = ["epoch", "train_loss", "val_loss", "val_auc", "val_acc", "lr", "seconds"]
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    for row in history:
        w.writerow({k: (f"{row[k]:.6g}" if isinstance(row.get(k), float) else row.get(k)) for k in fields})
    write_text_atomic(path, buf.getvalue())


def _save_torch_atomic(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class _FileLog:
    """Mirrors medtl's log messages into the run folder's train.log."""

    def __init__(self, path: Path):
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))

    def __enter__(self):
        self.old_level = log.level
        if log.getEffectiveLevel() > logging.INFO:
            log.setLevel(logging.INFO)
        log.addHandler(self.handler)
        return self

    def __exit__(self, *exc):
        log.removeHandler(self.handler)
        log.setLevel(self.old_level)
        self.handler.close()


def finetune(cfg: RunConfig, out: str | Path, progress: bool = True, restart: bool = False) -> dict:
    """Fine-tune per ``cfg`` into the run folder ``out``; returns the metrics dict.

    Re-running with the same config resumes an interrupted run from its last finished
    epoch, or returns the stored metrics of a finished one.
    """
    from ..data import load_dataset
    from ..models import apply_bn_gamma, create_model, param_groups, set_trainable

    folder = RunFolder(Path(out))
    if restart and folder.out.exists():
        if folder.out.is_dir() and (folder.p(CONFIG_FILE).is_file() or not any(folder.out.iterdir())):
            shutil.rmtree(folder.out)
        else:
            raise ConfigError(f"{folder.out}: --restart refuses to delete a folder that is not a medtl run folder")
    status = check_existing(folder, cfg)
    if status == "finished":
        import json

        log.info("run already finished: %s", folder.p(METRICS_FILE))
        return json.loads(folder.p(METRICS_FILE).read_text())

    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    rt = resolve_runtime(cfg.train)
    keep_freed_memory()  # per-step buffers come back from the heap, not fresh pages (_malloc.py)
    t0 = time.time()

    # Everything that can fail on bad input happens before the run folder is touched.
    bundle = load_dataset(cfg.data, seed=cfg.data.split_seed)
    for name in ("train", "val", "test"):
        if len(bundle.splits[name].labels) == 0:
            raise ConfigError(f"{cfg.data.path}: the {name} split is empty")
    task = Task(bundle, cfg.train.label_smoothing, cfg.train.class_weighting, rt.device)
    torch.manual_seed(cfg.seed)
    model, report = create_model(cfg.model.backbone, task.num_outputs, weights=cfg.model.weights,
                                 drop_rate=cfg.model.drop_rate)
    gamma_touched = apply_bn_gamma(model, cfg.train.bn_gamma) if cfg.train.bn_gamma else []
    trainable = set_trainable(model, cfg.train.trainable)
    model.to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)

    train = bundle.splits["train"]
    n_train = len(train.labels)
    bs = min(cfg.train.batch_size, n_train)
    steps_per_epoch = n_train // bs  # drop the last partial batch (BN needs > 1 sample)
    total_steps = steps_per_epoch * cfg.train.epochs
    warmup_steps = int(round(cfg.train.warmup_epochs * steps_per_epoch))
    milestones = [int(round(f * total_steps)) for f in cfg.train.step_milestones]
    base_lr = scaled_lr(cfg.train.lr, bs, cfg.train.lr_scale_batch)
    groups = param_groups(model, cfg.train.weight_decay, cfg.train.no_bias_decay)
    if cfg.train.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=base_lr, momentum=cfg.train.momentum,
                              nesterov=cfg.train.nesterov and cfg.train.momentum > 0)
    else:
        opt = torch.optim.AdamW(groups, lr=base_lr)
    for g in opt.param_groups:
        g["initial_lr"] = base_lr
    scaler = torch.amp.GradScaler("cuda") if rt.use_scaler else None

    fresh = status == "new"
    folder.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder.p(CONFIG_FILE), config_to_yaml(cfg))
    history: list[dict] = []
    start_epoch, best_score, best_epoch = 0, -math.inf, -1
    with _FileLog(folder.p("train.log")):
        if bundle.synthetic:
            log.info("dataset: %s — SYNTHETIC data, not clinical images", bundle.name)
        else:
            log.info("dataset: %s (%s) classes=%s", bundle.name, bundle.format, bundle.classes)
        for note in bundle.notes:
            log.info("data note: %s", note)
        log.info("runtime: device=%s precision=%s channels_last=%s threads=%d", rt.device, rt.precision,
                 rt.channels_last, torch.get_num_threads())
        if report is not None:
            log.info("weights: %s missing=%s unexpected=%s", cfg.model.weights,
                     getattr(report, "missing", None), getattr(report, "unexpected", None))
        if gamma_touched:
            log.info("bn_gamma applied to %d layers: %s", len(gamma_touched),
                     ", ".join(f"{n}={v:g}" for n, v in gamma_touched))
        log.info("trainable: %s", trainable)

        if status == "resume":
            state = torch.load(folder.p(STATE_FILE), map_location="cpu", weights_only=True)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            start_epoch = int(state["epoch"])
            best_score, best_epoch = float(state["best_score"]), int(state["best_epoch"])
            history = list(state["history"])
            log.info("resuming after epoch %d", start_epoch)

        train_images = torch.from_numpy(train.images).unsqueeze(1)  # uint8 (N,1,H,W)
        train_targets = task.targets(train.labels)
        try:
            for epoch in range(start_epoch, cfg.train.epochs):
                row = _train_epoch(model, opt, scaler, task, rt, cfg, epoch, train_images, train_targets,
                                   bs, steps_per_epoch, total_steps, warmup_steps, milestones, base_lr,
                                   progress)
                val_m, _ = evaluate(model, bundle.splits["val"], task, rt, max(bs, 128))
                row.update(val_loss=val_m["loss"], val_auc=val_m["auc"], val_acc=val_m.get("acc", float("nan")))
                history.append(row)
                score = {"auc": val_m["auc"], "loss": -val_m["loss"], "acc": val_m.get("acc", float("nan"))}[
                    cfg.train.select_metric]
                if math.isnan(score):
                    score = -val_m["loss"]
                if score > best_score:
                    best_score, best_epoch = score, epoch + 1
                    _save_torch_atomic({"model": model.state_dict(), "epoch": epoch + 1,
                                        "classes": task.classes, "config": config_to_yaml(cfg),
                                        "medtl_version": __version__}, folder.p(BEST_FILE))
                _save_torch_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(),
                                    "scaler": scaler.state_dict() if scaler is not None else None,
                                    "epoch": epoch + 1, "best_score": best_score, "best_epoch": best_epoch,
                                    "history": history}, folder.p(STATE_FILE))
                _write_log_csv(folder.p(LOG_CSV), history)
                log.info("epoch %d/%d train_loss=%.4f val_loss=%.4f val_auc=%.4f lr=%.3g (%.1fs)",
                         epoch + 1, cfg.train.epochs, row["train_loss"], row["val_loss"], row["val_auc"],
                         row["lr"], row["seconds"])
        except TrainingError:
            if fresh:
                shutil.rmtree(folder.out, ignore_errors=True)
            raise

        # Final evaluation with the best checkpoint; threshold chosen on val, applied to test.
        best = torch.load(folder.p(BEST_FILE), map_location="cpu", weights_only=True)
        model.load_state_dict(best["model"])
        val_m, val_prob = evaluate(model, bundle.splits["val"], task, rt, max(bs, 128))
        threshold = 0.5
        if task.kind == "binary":
            threshold = choose_threshold(bundle.splits["val"].labels, val_prob[:, 1], cfg.train.threshold_rule)
            val_m = task.metrics(bundle.splits["val"].labels, val_prob, threshold) | {"loss": val_m["loss"]}
        test_split = bundle.splits["test"]
        test_m, test_prob = evaluate(model, test_split, task, rt, max(bs, 128), threshold)
        # per-image test predictions, for paired tests between models (DeLong) and probes
        with atomic_path(folder.p(PRED_FILE)) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, y=test_split.labels, p=test_prob[:, 1] if task.kind == "binary" else test_prob,
                         ids=np.asarray(test_split.ids, dtype=str))
        metrics = {
            "run": {
                "name": cfg.name, "seed": cfg.seed, "dataset": bundle.name, "synthetic": bool(bundle.synthetic),
                "data_format": bundle.format, "backbone": cfg.model.backbone, "weights": cfg.model.weights,
                "image_size": cfg.data.image_size,
                "input_size": int(train.images.shape[-1]), "sr": cfg.data.sr.method,
                "epochs": cfg.train.epochs, "best_epoch": best_epoch,
                "device": str(rt.device), "precision": rt.precision, "medtl_version": __version__,
                "torch_version": torch.__version__,
                "wall_time_s": round(time.time() - t0, 2),
                "bn_gamma_layers": [[n, v] for n, v in gamma_touched],
            },
            "task": task.kind,
            "classes": task.classes,
            "threshold": {"rule": cfg.train.threshold_rule if task.kind == "binary" else "argmax",
                          "value": threshold, "chosen_on": "val"},
            "val": val_m,
            "test": test_m,
            "history": history,
        }
        metrics = nan_to_none(metrics)
        write_json_atomic(folder.p(METRICS_FILE), metrics)
        state_dir = folder.p("state")
        if state_dir.exists():
            shutil.rmtree(state_dir, ignore_errors=True)
        log.info("test: %s", {k: metrics["test"].get(k) for k in ("auc", "acc", "sensitivity", "specificity", "n")})
    return metrics


def _train_epoch(model, opt, scaler, task, rt, cfg, epoch, images, targets, bs, steps_per_epoch,
                 total_steps, warmup_steps, milestones, base_lr, progress) -> dict:
    from ..data import augment_batch

    model.train()
    torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # dropout and any other global-RNG use
    g_order = _epoch_generator(cfg.seed, epoch, 0)
    g_aug = _epoch_generator(cfg.seed, epoch, 1)
    perm = torch.randperm(len(images), generator=g_order)
    t0 = time.time()
    total, count = 0.0, 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", unit="batch",
                   leave=False, dynamic_ncols=True)
    lr = base_lr
    for i in range(steps_per_epoch):
        step = epoch * steps_per_epoch + i
        f = lr_factor(step, total_steps, warmup_steps, cfg.train.schedule, milestones, cfg.train.step_gamma,
                      cfg.train.warmup_start_factor, cfg.train.min_lr_factor)
        lr = base_lr * f
        for g in opt.param_groups:
            g["lr"] = lr
        idx = perm[i * bs:(i + 1) * bs]
        x = images[idx].float().div_(255.0)
        x = augment_batch(x, cfg.data.augment, g_aug)
        y = targets[idx]
        soft = None
        if cfg.train.mixup_alpha > 0:
            lam = _beta(cfg.train.mixup_alpha, g_aug)
            j = torch.randperm(len(x), generator=g_aug)
            x = lam * x + (1 - lam) * x[j]
            oh = task.one_hot(y)
            soft = lam * oh + (1 - lam) * oh[j]
        x = x.to(rt.device, non_blocking=True)
        y = y.to(rt.device, non_blocking=True)
        if soft is not None:
            soft = soft.to(rt.device)
        if rt.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(rt):
            logits = model(x)
        loss = task.loss(logits, y, soft)
        if not torch.isfinite(loss):
            if bar is not None:
                bar.close()
            raise TrainingError(f"loss became {float(loss.detach())} at epoch {epoch + 1}, step {i + 1} "
                                f"(lr={lr:.3g}); lower train.lr or check the data")
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if cfg.train.grad_clip:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            if cfg.train.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            opt.step()
        lv = float(loss.detach())
        total += lv * len(idx)
        count += len(idx)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{lv:.4f}", lr=f"{lr:.3g}", refresh=False)
    if bar is not None:
        bar.close()
    return {"epoch": epoch + 1, "train_loss": total / max(count, 1), "lr": lr, "seconds": time.time() - t0}


def _beta(alpha: float, g: torch.Generator) -> float:
    """Beta(alpha, alpha) drawn reproducibly from the epoch generator.

    torch.distributions cannot take a generator, so numpy is seeded from it."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
    return float(np.random.default_rng(seed).beta(alpha, alpha))
