"""Training and evaluation of the SR model.

Training: Adam with cosine decay on random HR patches paired with :func:`~medtl.sr.apply.degrade`
of the same image (the whole image is degraded once; the LR patch is the aligned crop, so patch
borders see exactly the LR pixels a full image gives), random horizontal/vertical flips, L1
loss.  L1 rather than MSE: it is what EDSR-era SR training settled on (Lim et al. 2017, Zhao
et al. 2017: faster convergence and equal or better PSNR than training on MSE itself), and it
is less pulled by outliers such as the JPEG blocks and burnt-in text of re-encoded X-rays.

Determinism and resumption: the model is initialised from ``seed``; the batch of step ``k`` is
drawn from ``np.random.default_rng([seed, k])``, so the random state of the run *is* the step
counter.  A state file beside ``out`` (``OUT.state.pt``: model, optimizer, step) is written
atomically every ``STATE_EVERY`` steps and on Ctrl-C; re-running with the same settings
resumes from it and ends with the same weights, bit for bit on CPU with the same thread
count, as an uninterrupted run.  The finished model file records its settings; re-running
with the same settings returns the stored info without training.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import __version__
from ..errors import ConfigError
from ..io import array_digest, json_safe
from ..sr.apply import add_noise, crop_to_multiple, degrade, upscale_learned, upscale_resize
from ..sr.io import FORMAT, read_sr_file, save_sr_model
from ..sr.model import build_sr_model, resolve_arch
from .resumable import Progress, TrainingState, check_finite
from .schedule import lr_factor

log = logging.getLogger("medtl")

STATE_KIND = FORMAT + "-state"  # the tag of SR training state files (unchanged since v1)
TRAINER_VERSION = 1  # bump when the training procedure changes, so cached models are retrained
STATE_EVERY = 200
# defaults: about 4 min on 2 CPU cores at x4 (32 x 32 px LR patches, batch 32)
DEFAULT_STEPS = 5000
DEFAULT_BATCH = 32
DEFAULT_LR_PATCH = 32  # LR patch side; the HR patch side is LR_PATCH * scale
DEFAULT_LR = 1e-3
MIN_LR_FACTOR = 0.01
LOSSES = ("l1", "mse")
# settings that define a trained model: a cached model or a state file is reused only when
# every one of these is equal
SETTING_KEYS = ("trainer", "arch", "scale", "seed", "steps", "batch_size", "patch", "lr", "noise_std", "loss",
                "optimizer", "schedule", "min_lr_factor", "augment", "degradation", "data_sha256", "n_images",
                "hr_shape")
SSIM_SETTINGS = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}  # Wang et al. 2004


def state_path(out: str | Path) -> Path:
    """The resumable-state file beside a model file: ``sr.pt`` -> ``sr.state.pt``."""
    out = Path(out)
    return out.with_suffix(".state.pt") if out.suffix else out.with_name(out.name + ".state.pt")


def lr_at(step: int, steps: int, base_lr: float, min_factor: float = MIN_LR_FACTOR) -> float:
    """Cosine decay from ``base_lr`` (step 0) to ``min_factor * base_lr`` (last step)."""
    return base_lr * lr_factor(step, steps - 1, 0, "cosine", min_factor=min_factor)


def _settings(hr: np.ndarray, scale: int, arch: dict, seed: int, steps: int, batch_size: int, patch: int,
              lr: float, noise_std: float, loss: str) -> dict:
    return {
        "trainer": TRAINER_VERSION, "arch": dict(arch), "scale": int(scale), "seed": int(seed),
        "steps": int(steps), "batch_size": int(batch_size), "patch": int(patch), "lr": float(lr),
        "noise_std": float(noise_std), "loss": loss, "optimizer": "adam", "schedule": "cosine",
        "min_lr_factor": MIN_LR_FACTOR, "augment": "hflip+vflip",
        "degradation": "pillow-bicubic-down" + ("+gaussian" if noise_std else ""),
        "data_sha256": array_digest(hr), "n_images": int(len(hr)), "hr_shape": [int(hr.shape[1]), int(hr.shape[2])],
    }


def _diff_keys(old: dict, new: dict) -> list[str]:
    return [k for k in SETTING_KEYS if old.get(k) != new.get(k)]


def _validate(hr: np.ndarray, scale: int, seed: int, steps: int, batch_size: int, patch: int | None, lr: float,
              noise_std: float, loss: str) -> int:
    """Checks the inputs; returns the HR patch side."""
    if not isinstance(hr, np.ndarray) or hr.ndim != 3 or hr.dtype != np.uint8:
        raise ConfigError(f"SR training needs uint8 images (N, H, W); got "
                          f"{getattr(hr, 'dtype', type(hr).__name__)} {getattr(hr, 'shape', '')}")
    if len(hr) == 0:
        raise ConfigError("SR training: no HR images")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0 (got {seed})")
    if steps < 1:
        raise ConfigError(f"steps must be >= 1 (got {steps})")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1 (got {batch_size})")
    if not (lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"SR learning rate must be > 0 (got {lr})")
    if not (noise_std >= 0 and math.isfinite(noise_std)):
        raise ConfigError(f"noise_std must be >= 0 (got {noise_std})")
    if loss not in LOSSES:
        raise ConfigError(f"SR loss must be one of {', '.join(LOSSES)} (got {loss!r})")
    side = min(hr.shape[1], hr.shape[2]) // scale * scale
    if patch is None:
        patch = min(DEFAULT_LR_PATCH * scale, side)
    if patch % scale:
        raise ConfigError(f"patch {patch} must be a multiple of scale {scale}")
    if patch < 2 * scale:
        raise ConfigError(f"patch {patch} is too small for x{scale} (at least {2 * scale})")
    if patch > side:
        raise ConfigError(f"patch {patch} is larger than the HR images ({hr.shape[1]}x{hr.shape[2]} px, "
                          f"{side} usable at x{scale})")
    return int(patch)


def _batch(lr_all: np.ndarray, hr_all: np.ndarray, scale: int, lp: int, bs: int, seed: int, step: int,
           noise_std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The (LR, HR) float batch of one step, from its own generator (seed, step)."""
    rng = np.random.default_rng([seed, step])
    n, h, w = lr_all.shape
    idx = rng.integers(0, n, bs)
    ys = rng.integers(0, h - lp + 1, bs)
    xs = rng.integers(0, w - lp + 1, bs)
    flips = rng.integers(0, 4, bs)
    hp = lp * scale
    lr_b = np.empty((bs, lp, lp), np.uint8)
    hr_b = np.empty((bs, hp, hp), np.uint8)
    for i in range(bs):
        lo = lr_all[idx[i], ys[i]:ys[i] + lp, xs[i]:xs[i] + lp]
        hi = hr_all[idx[i], ys[i] * scale:ys[i] * scale + hp, xs[i] * scale:xs[i] * scale + hp]
        if flips[i] & 1:
            lo, hi = lo[:, ::-1], hi[:, ::-1]
        if flips[i] & 2:
            lo, hi = lo[::-1], hi[::-1]
        lr_b[i], hr_b[i] = lo, hi
    lr_b = add_noise(lr_b, noise_std, rng)
    x = torch.from_numpy(lr_b).unsqueeze(1).float().div_(255.0)
    y = torch.from_numpy(hr_b).unsqueeze(1).float().div_(255.0)
    return x, y


def _existing_model(out: Path, settings: dict) -> dict | None:
    """The stored train info of ``out`` when it was trained with these settings; None when
    ``out`` does not exist; ConfigError when it holds something else."""
    if not out.exists():
        return None
    try:
        obj = read_sr_file(out)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; write the model elsewhere") from None
    info = dict(obj.get("train") or {})
    diff = _diff_keys(info, settings)
    if diff:
        raise ConfigError(f"{out}: holds an SR model trained with different settings (differs in: "
                          f"{', '.join(diff)}); write elsewhere, or restart to retrain it")
    return info


def _discard(out: Path, state: TrainingState) -> None:
    """Before a restart: refuse to overwrite anything but an SR model file; drop the state."""
    if out.exists():
        if not out.is_file():
            raise ConfigError(f"{out}: exists and is not a file; write the model elsewhere")
        try:
            read_sr_file(out)
        except ConfigError as exc:
            raise ConfigError(f"{exc}; restart overwrites only SR model files, write elsewhere") from None
    state.clear()


def train_sr(hr_images: np.ndarray, scale: int, out: str | Path, seed: int = 0, steps: int = DEFAULT_STEPS,
             batch_size: int = DEFAULT_BATCH, patch: int | None = None, lr: float = DEFAULT_LR,
             noise_std: float = 0.0, progress: bool = True, restart: bool = False, source: str = "",
             arch: dict | None = None, loss: str = "l1") -> dict:
    """Train an SR model on HR uint8 images (N, H, W) and write it to ``out``; returns its train info.

    ``patch`` is the HR patch side (a multiple of ``scale``; default ``32 * scale``, capped at
    the image side).  ``source`` names the data (stored, not compared).  ``arch`` overrides
    :data:`~medtl.sr.model.DEFAULT_ARCH` keys (``scale`` comes from ``scale``).
    """
    out = Path(out)
    arch = resolve_arch(arch, scale=int(scale))  # checks scale
    scale = arch["scale"]
    hr = np.asarray(hr_images)
    patch = _validate(hr, scale, int(seed), int(steps), int(batch_size), patch, float(lr), float(noise_std), loss)
    hr = crop_to_multiple(hr, scale)
    settings = _settings(hr, scale, arch, seed, steps, batch_size, patch, lr, noise_std, loss)
    state = TrainingState(state_path(out), STATE_KIND, settings, compare=SETTING_KEYS)
    if restart:
        _discard(out, state)
    else:
        info = _existing_model(out, settings)
        if info is not None:
            log.info("SR model %s already trained with these settings: reusing it", out)
            return info
    saved = state.load()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = build_sr_model(arch)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=float(lr))
    run = {"start": 0, "elapsed": 0.0, "losses": []}
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        run.update(start=int(saved["step"]), elapsed=float(saved.get("elapsed_s", 0.0)),
                   losses=[float(v) for v in saved.get("recent_losses", [])])
        log.info("resuming SR training from step %d/%d (%s)", run["start"], steps, state.path)
    elapsed = _train_steps(model, opt, hr, settings, state, run, progress)
    recent = run["losses"][-100:]
    info = json_safe(dict(settings) | {
        "source": str(source),
        "final_loss": float(np.mean(recent)) if recent else float("nan"),  # mean of the last <= 100 steps
        "last_loss": recent[-1] if recent else float("nan"),
        "wall_time_s": round(elapsed, 2),
        "resumed_from_step": run["start"],
        "threads": torch.get_num_threads(),
        "torch_version": str(torch.__version__),
        "medtl_version": __version__,
    })
    save_sr_model(out, model, arch, info)
    state.clear()
    log.info("SR model written: %s (final loss %.5f, %.0f s)", out, info["final_loss"] or float("nan"),
             info["wall_time_s"])
    return info


def _train_steps(model, opt, hr: np.ndarray, st: dict, state: TrainingState, run: dict, progress: bool) -> float:
    """The optimisation steps from ``run["start"]``; saves the state every ``STATE_EVERY`` steps
    and on Ctrl-C (unless the interrupt hit mid-update).  Returns the total training seconds."""
    scale, steps, seed, noise_std = st["scale"], st["steps"], st["seed"], st["noise_std"]
    lr_all = degrade(hr, scale)  # noise is added per patch, from the step's generator
    lp = st["patch"] // scale
    loss_fn = F.l1_loss if st["loss"] == "l1" else F.mse_loss
    losses, start = run["losses"], run["start"]
    t0, done, in_update = time.time(), start, False

    def save() -> None:
        state.save(step=done, model=model.state_dict(), optimizer=opt.state_dict(),
                   elapsed_s=run["elapsed"] + (time.time() - t0), recent_losses=losses[-100:])

    with Progress(progress, steps, f"SR x{scale}", "step", initial=start) as bar:
        try:
            for step in range(start, steps):
                x, y = _batch(lr_all, hr, scale, lp, st["batch_size"], seed, step, noise_std)
                cur_lr = lr_at(step, steps, st["lr"])
                for g in opt.param_groups:
                    g["lr"] = cur_lr
                in_update = True
                value = loss_fn(model(x), y)
                check_finite(value, f"SR training step {step + 1}", cur_lr)
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
                done, in_update = step + 1, False
                losses.append(float(value.detach()))
                if len(losses) > 200:
                    del losses[:-100]
                bar.update(loss=f"{losses[-1]:.4f}", lr=f"{cur_lr:.2g}")
                if done % STATE_EVERY == 0 and done < steps:
                    save()
        except KeyboardInterrupt:
            # an interrupt inside an update may leave it half applied: keep the last periodic state then
            if not in_update and done > start:
                save()
            log.warning("SR training interrupted at step %d/%d; re-run the same command to resume", done, steps)
            raise
    return run["elapsed"] + (time.time() - t0)


# ------------------------------------------------------------------ evaluation

def _paired_summary(learned: np.ndarray, base: np.ndarray, seed: int) -> dict:
    from ..stats.compare import bootstrap_diff_ci

    ci = bootstrap_diff_ci(learned, base, paired=True, seed=seed, n_resamples=10000, method="bca")
    return {"learned": float(np.mean(learned)), "bicubic": float(np.mean(base)),
            "diff": float(np.mean(learned - base)), "diff_ci_low": ci["ci_low"], "diff_ci_high": ci["ci_high"],
            "ci_method": ci["ci_method"]}


def evaluate_sr(hr_images: np.ndarray, model, scale: int, noise_std: float = 0.0, seed: int = 0,
                batch_size: int = 64) -> dict:
    """Degrade held-out HR uint8 images (N, H, W) by ``scale``, upscale them with the model and
    with Pillow bicubic, and compare both with HR: per-image PSNR and SSIM (scikit-image,
    data_range=255, SSIM as Wang et al. 2004: Gaussian window sigma 1.5), means, the mean paired
    difference learned - bicubic with a seeded paired bootstrap 95% CI (BCa), and ``wins``: the
    fraction of images where the learned PSNR is higher.  Images whose side is not a multiple
    of ``scale`` are compared on their top-left multiple-of-scale part.  JSON-safe."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    scale = int(scale)
    if int(getattr(model, "scale", scale)) != scale:
        raise ConfigError(f"SR model upscales x{model.scale}, evaluation asked for x{scale}")
    hr = np.asarray(hr_images)
    if hr.ndim != 3 or hr.dtype != np.uint8 or len(hr) == 0:
        raise ConfigError(f"SR evaluation needs uint8 images (N, H, W), N >= 1; got {hr.dtype} {hr.shape}")
    hr = crop_to_multiple(hr, scale)
    rng = np.random.default_rng(seed) if noise_std else None
    lr = degrade(hr, scale, noise_std, rng)
    learned = upscale_learned(lr, model, batch_size=batch_size)
    bicubic = upscale_resize(lr, hr.shape[1:], "bicubic")
    n = len(hr)
    per = {k: np.empty(n) for k in ("psnr_learned", "psnr_bicubic", "ssim_learned", "ssim_bicubic")}
    for i in range(n):
        for name, img in (("learned", learned[i]), ("bicubic", bicubic[i])):
            per[f"psnr_{name}"][i] = peak_signal_noise_ratio(hr[i], img, data_range=255)
            per[f"ssim_{name}"][i] = structural_similarity(hr[i], img, data_range=255, **SSIM_SETTINGS)
    result = {
        "n": n, "scale": scale, "noise_std": float(noise_std), "seed": int(seed),
        "hr_shape": [int(hr.shape[1]), int(hr.shape[2])], "lr_shape": [int(lr.shape[1]), int(lr.shape[2])],
        "psnr": _paired_summary(per["psnr_learned"], per["psnr_bicubic"], seed),
        "ssim": _paired_summary(per["ssim_learned"], per["ssim_bicubic"], seed),
        "wins": float(np.mean(per["psnr_learned"] > per["psnr_bicubic"])),
        "metrics": {"psnr": "skimage.metrics.peak_signal_noise_ratio(data_range=255)",
                    "ssim": "skimage.metrics.structural_similarity(data_range=255, "
                            + ", ".join(f"{k}={v}" for k, v in SSIM_SETTINGS.items()) + ")",
                    "baseline": "Pillow BICUBIC upscale of the same LR images",
                    "degradation": "Pillow BICUBIC downscale (antialiased)" + (" + Gaussian noise" if noise_std else ""),
                    "ci": "paired bootstrap of the mean difference learned - bicubic, 95%, 10000 resamples"},
        "per_image": {k: v.tolist() for k, v in per.items()},
    }
    return json_safe(result)
