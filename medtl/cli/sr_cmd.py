"""`medtl sr train|eval`: parse, load HR images with medtl's data loader, call :mod:`medtl.sr`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import ConfigError

app = typer.Typer(no_args_is_help=True, help="Learned super-resolution: train and evaluate SR models.")

SPLIT_NAMES = ("train", "val", "test")


def _load_hr(data: str, hr_size: int, on_leak: str = "warn"):
    """The dataset at HR side ``hr_size`` (any source medtl reads), without data.sr.  Leaks
    between its splits only matter for the held-out test images' independence: ``warn`` by
    default (the log and the model file say so), ``drop_train`` to train without them."""
    from ..config import DataConfig
    from ..data import load_dataset

    try:
        cfg = DataConfig(path=str(data), image_size=hr_size, on_leak=on_leak)
    except Exception as exc:  # pydantic ValidationError: out-of-range size
        raise ConfigError(f"--hr-size {hr_size}: {' '.join(str(exc).split())[:200]}") from None
    return load_dataset(cfg)


def _fmt_row(name: str, m: dict, digits: int) -> str:
    f = f"{{:.{digits}f}}"
    ci = f"[{f.format(m['diff_ci_low'])}, {f.format(m['diff_ci_high'])}]" \
        if m.get("diff_ci_low") is not None and m.get("diff_ci_high") is not None else "n/a"
    return (f"{name:<6} {f.format(m['learned']):>10} {f.format(m['bicubic']):>10} "
            f"{('+' if m['diff'] >= 0 else '') + f.format(m['diff']):>10}  {ci}")


def format_eval(r: dict) -> str:
    """A small text table of an :func:`medtl.train.sr.evaluate_sr` result."""
    head = (f"x{r['scale']} SR on {r['n']} images, {r['lr_shape'][0]}x{r['lr_shape'][1]} -> "
            f"{r['hr_shape'][0]}x{r['hr_shape'][1]} px" + (f", noise std {r['noise_std']:g}" if r.get("noise_std") else ""))
    lines = [head, f"{'metric':<6} {'learned':>10} {'bicubic':>10} {'diff':>10}  95% CI of diff (paired bootstrap)",
             _fmt_row("PSNR", r["psnr"], 3), _fmt_row("SSIM", r["ssim"], 4),
             f"learned PSNR > bicubic on {100 * r['wins']:.1f}% of images"]
    return "\n".join(lines)


@app.command("train")
def train(
    data: str = typer.Option(..., "--data", help="HR images: a folder, CSV, DICOM folder, MedMNIST .npz, builtin:synthetic."),
    scale: int = typer.Option(..., "--scale", help="Upscale factor: 2, 3 or 4."),
    out: Path = typer.Option(..., "--out", "-o", help="SR model file to write (e.g. sr_x4.pt)."),
    hr_size: int = typer.Option(224, "--hr-size", help="Side (px) the HR images are loaded at."),
    on_leak: str = typer.Option("warn", "--on-leak", help="Test patients also in train/val: warn or drop_train."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (default 5000)."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Patches per step (default 32)."),
    patch: Optional[int] = typer.Option(None, "--patch", help="HR patch side, a multiple of --scale (default 32*scale)."),
    noise: float = typer.Option(0.0, "--noise", help="Gaussian noise std (0-255 units) added to LR inputs."),
    seed: int = typer.Option(0, "--seed", help="Seed for init and patch sampling."),
    restart: bool = typer.Option(False, "--restart", help="Discard an interrupted training or a model in --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, warnings only."),
) -> None:
    """Train an SR model on the train+val splits of --data (its test split is held out).

    Pairs are random HR patches and their Pillow-bicubic downscales (+ noise with --noise).
    Re-running the same command resumes an interrupted training, or reuses a finished model."""
    import numpy as np

    from ..train.sr import train_sr
    from ..sr.model import SCALES
    from ..train.sr import DEFAULT_BATCH, DEFAULT_STEPS
    from .common import setup_logging, training_process

    setup_logging(quiet)
    training_process(None)
    if scale not in SCALES:
        raise ConfigError(f"--scale must be one of {', '.join(map(str, SCALES))} (got {scale})")
    bundle = _load_hr(data, hr_size, on_leak)
    hr = np.concatenate([bundle.splits["train"].images, bundle.splits["val"].images])
    if len(hr) == 0:
        raise ConfigError(f"{data}: the train and val splits are empty: nothing to train on")
    tag = " [SYNTHETIC data]" if bundle.synthetic else ""
    info = train_sr(hr, scale, out, seed=seed, steps=steps if steps is not None else DEFAULT_STEPS,
                    batch_size=batch if batch is not None else DEFAULT_BATCH, patch=patch, noise_std=noise,
                    progress=not quiet, restart=restart, source=f"{data} (train+val, {hr_size} px){tag}")
    typer.echo(f"SR model x{scale}{tag}: {out} ({info['n_images']} HR images, {info['steps']} steps, "
               f"final loss {info['final_loss']:.5f}, {info['wall_time_s']:.0f} s)")


@app.command("eval")
def evaluate(
    model: Path = typer.Option(..., "--model", "-m", help="SR model file written by `medtl sr train`."),
    data: str = typer.Option(..., "--data", help="HR images (any source medtl reads)."),
    split: str = typer.Option("test", "--split", help="train, val or test."),
    hr_size: int = typer.Option(224, "--hr-size", help="Side (px) the HR images are loaded at."),
    noise: float = typer.Option(0.0, "--noise", help="Gaussian noise std (0-255 units) added to LR inputs."),
    seed: int = typer.Option(0, "--seed", help="Seed for the noise and the bootstrap CI."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the full result as JSON."),
) -> None:
    """Score an SR model against Pillow bicubic: PSNR/SSIM, paired difference, 95% CI.

    The HR images of --split are downscaled by the model's scale (as in training), upscaled
    with the model and with Pillow bicubic, and both are compared with the HR images."""
    from ..io import write_json_atomic
    from ..sr import load_sr_model
    from ..train.sr import evaluate_sr

    if split not in SPLIT_NAMES:
        raise ConfigError(f"--split must be one of {', '.join(SPLIT_NAMES)} (got {split!r})")
    if noise < 0:
        raise ConfigError(f"--noise must be >= 0 (got {noise})")
    if out is not None and (out.is_dir() or (out.exists() and out.suffix.lower() != ".json")):
        raise ConfigError(f"{out}: exists and is not a .json file; it is not overwritten: choose another --out")
    sr_model, meta = load_sr_model(model)
    scale = int(meta["arch"]["scale"])
    bundle = _load_hr(data, hr_size)
    hr = bundle.splits[split].images
    if len(hr) == 0:
        raise ConfigError(f"{data}: the {split} split is empty")
    result = evaluate_sr(hr, sr_model, scale, noise_std=noise, seed=seed)
    result["model"] = {"path": str(model), "sha256": meta["sha256"], "arch": meta["arch"],
                       "trained_on": meta["train"].get("source"), "train_steps": meta["train"].get("steps")}
    result["data"] = {"source": str(data), "split": split, "hr_size": hr_size, "synthetic": bool(bundle.synthetic)}
    typer.echo(("[SYNTHETIC data] " if bundle.synthetic else "") + format_eval(result))
    if out is not None:
        write_json_atomic(out, result)
        typer.echo(f"written: {out}")
