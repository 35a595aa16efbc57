"""Adversarial robustness: FGSM and PGD under L∞ and L2, white-box and black-box transfer.

* Image space: the model takes [0, 1] images and normalises inside, so ε is in pixel units
  (L∞: ε = 8/255 means every pixel may move by 8 grey levels) and adversarial images are
  clamped to [0, 1].
* L2 budgets: ``ε_L2 = ε · sqrt(H·W) · l2_scale`` (default ``l2_scale = 1``): the L2 norm of a
  perturbation of ε on every pixel, so at the same ε the L2 ball contains the L∞ ball.
* PGD: ``steps`` iterations (default 10), step size 2.5·ε/steps (Madry et al.), uniform random
  start (L∞) / random start in the L2 ball, seeded.  FGSM is one signed-gradient step of size ε
  (L2: one normalised-gradient step of size ε_L2, torchattacks' PGDL2 with 1 step, no start).
* Loss: cross-entropy on the true label; the model in eval mode, fp32, no autocast.
* ε = 0 is the clean image itself (no attack is run), so AUC(0) is the clean AUC.
* Metrics per ε: AUC, ACC (decision at the run's threshold), attack success rate = fraction of
  the images correctly decided on clean input whose decision becomes wrong.
* Black-box transfer (``source``): adversarial images are crafted on the source run's model
  (same test set required) and evaluated on this run.

Attacks come from torchattacks (FGSM, PGD, PGDL2); they take [0,1] inputs of any channel
count and a logits-returning model, which :class:`ImageClassifier` is.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from .runs import (ProbeRun, cached_probe, check_positive, load_run, new_figure, predict_proba,
                   sample_indices, scores, write_png)

ATTACKS = ("fgsm_linf", "pgd_linf", "fgsm_l2", "pgd_l2")
DEFAULT_EPS = [0.0, 0.5 / 255, 1 / 255, 2 / 255, 4 / 255, 8 / 255]
DEFAULTS = {"eps": DEFAULT_EPS, "attacks": list(ATTACKS), "steps": 10, "random_start": True, "l2_scale": 1.0,
            "n_images": None, "seed": 0, "batch_size": 128}


def _attack(model: torch.nn.Module, name: str, eps: float, steps: int, random_start: bool):
    import torchattacks

    if name == "fgsm_linf":
        return torchattacks.FGSM(model, eps=eps)
    if name == "pgd_linf":
        return torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=random_start)
    if name == "fgsm_l2":
        return torchattacks.PGDL2(model, eps=eps, alpha=eps, steps=1, random_start=False)
    if name == "pgd_l2":
        return torchattacks.PGDL2(model, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=random_start)
    raise ConfigError(f"unknown attack {name!r}; use one of {', '.join(ATTACKS)}")


def craft(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, name: str, eps: float, *, steps: int = 10,
          random_start: bool = True, l2_scale: float = 1.0, seed: int = 0, batch_size: int = 128,
          device: torch.device | str = "cpu") -> torch.Tensor:
    """Adversarial versions (CPU, float) of x (N,1,H,W) in [0,1]; ε in pixel units (L∞)."""
    if eps == 0:
        return x.clone()
    e = float(eps) * (math.sqrt(x.shape[-1] * x.shape[-2]) * l2_scale if name.endswith("l2") else 1.0)
    model = model.float().eval()
    atk = _attack(model, name, e, steps, random_start)
    outs = []
    with torch.random.fork_rng(devices=[]), torch.autocast(device_type=torch.device(device).type, enabled=False):
        torch.manual_seed(seed)
        if torch.device(device).type == "cuda":
            torch.cuda.manual_seed_all(seed)
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(device).float()
            yb = y[i:i + batch_size].to(device)
            with torch.enable_grad():
                outs.append(atk(xb, yb).detach().float().cpu())
    return torch.cat(outs)


def compute_adversarial(run: ProbeRun, *, eps=DEFAULT_EPS, attacks=ATTACKS, steps: int = 10,
                        random_start: bool = True, l2_scale: float = 1.0, n_images: int | None = None,
                        seed: int = 0, batch_size: int = 128, source: ProbeRun | None = None,
                        plots: bool = True) -> dict:
    check_positive("--steps", steps, 1)
    eps = sorted(float(e) for e in eps)
    if any(e < 0 or e > 1 for e in eps):
        raise ConfigError(f"--eps values must lie in [0, 1] (pixel units), got {eps}")
    for a in attacks:
        if a not in ATTACKS:
            raise ConfigError(f"unknown attack {a!r}; use one of {', '.join(ATTACKS)}")
    crafter = run if source is None else source
    if source is not None:
        if source.images.shape != run.images.shape or list(source.ids) != list(run.ids):
            raise ConfigError(f"--source {source.path}: its test set differs from {run.path}'s "
                              "(transfer needs the same test images)")
    t0 = time.time()
    idx = sample_indices(len(run.labels), n_images, seed, run.labels)
    x = run.x(idx)
    y_np = run.labels[idx]
    y = torch.from_numpy(y_np)
    clean_prob = predict_proba(run.model, x, run.device, batch_size)
    clean_correct = (np.argmax(clean_prob, 1) if run.task != "binary"
                     else (clean_prob[:, 1] >= run.threshold).astype(int)) == y_np
    prefix = "" if source is None else "transfer_"
    out: dict = {"n_images": int(len(idx)), "mode": "white-box" if source is None else "black-box transfer",
                 "source": None if source is None else str(source.path), "attacks": {}}
    n_grad = 0
    for a in attacks:
        rows = []
        for k, e in enumerate(eps):
            xa = craft(crafter.model, x, y, a, e, steps=steps, random_start=random_start, l2_scale=l2_scale,
                       seed=seed * 1009 + k, batch_size=batch_size, device=crafter.device)
            n_grad += 0 if e == 0 else len(x) * (1 if a.startswith("fgsm") else steps)
            prob = clean_prob if e == 0 else predict_proba(run.model, xa, run.device, batch_size)
            s = scores(run, y_np, prob)
            pred_ok = (np.argmax(prob, 1) if run.task != "binary" else (prob[:, 1] >= run.threshold).astype(int)) == y_np
            success = float(np.mean(~pred_ok[clean_correct])) if clean_correct.any() else float("nan")
            linf = float((xa - x).abs().amax()) if len(x) else 0.0
            l2 = float((xa - x).flatten(1).norm(dim=1).max()) if len(x) else 0.0
            rows.append({"eps": e, "eps_255": e * 255, "auc": s["auc"], "acc": s["acc"], "success_rate": success,
                         "max_linf": linf, "max_l2": l2})
        out["attacks"][prefix + a] = rows
    out["clean"] = scores(run, y_np, clean_prob)
    out["seconds"] = time.time() - t0
    out["gradient_images_per_s"] = n_grad / max(out["seconds"], 1e-9)
    if plots:
        out["plots"] = {"auc_vs_eps": _plot(run, out, prefix)}
    return out


def _plot(run: ProbeRun, res: dict, prefix: str) -> str:
    fig = new_figure(5.0, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for a, rows in res["attacks"].items():
        ax.plot([r["eps_255"] for r in rows], [r["auc"] for r in rows], marker="o", label=a)
    ax.set_xlabel("ε (×1/255, L∞ units)")
    ax.set_ylabel("AUC")
    ax.set_title(res["mode"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    name = f"adversarial_{prefix or 'whitebox_'}auc.png".replace("__", "_")
    write_png(run.probes_dir / name, fig)
    return name


def adversarial_probe(run_dir: str | Path, *, source: str | Path | None = None, force: bool = False,
                      plots: bool = True, **params) -> dict:
    """Cached adversarial probe (RUN/probes/adversarial.json; with ``source``:
    RUN/probes/adversarial_transfer.json, keyed also by the source checkpoint)."""
    p = {**DEFAULTS, **{k: v for k, v in params.items() if v is not None}}
    p["eps"] = sorted(float(e) for e in p["eps"])
    p["attacks"] = list(p["attacks"])
    if source is None:
        return cached_probe(run_dir, "adversarial", p, lambda run: compute_adversarial(run, plots=plots, **p),
                            force=force)
    src_dir = Path(source)
    src = load_run(src_dir)  # validates the folder (one-line error) before anything is computed
    return cached_probe(run_dir, "adversarial_transfer", p,
                        lambda run: compute_adversarial(run, source=src, plots=plots, **p), force=force,
                        extra_key=":" + src.checkpoint_sha256)
