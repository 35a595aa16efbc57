"""Adversarial robustness: FGSM and PGD under L∞ and L2, white-box and black-box transfer.

* Image space: the model takes [0, 1] images and normalises inside, so ε is in pixel units
  (L∞: ε = 8/255 means every pixel may move by 8 grey levels) and adversarial images are
  clamped to [0, 1].
* L2 budgets: ``ε_L2 = ε · sqrt(H·W) · l2_scale`` (default ``l2_scale = 1``): the L2 norm of a
  perturbation of ε on every pixel, so at the same ε the L2 ball contains the L∞ ball.
* PGD: ``steps`` iterations (default 10), step size 2.5·ε/steps (Madry et al.), uniform random
  start (L∞) / random start in the L2 ball, seeded.  FGSM is one signed-gradient step of size ε
  (L2: one normalised-gradient step of size ε_L2, torchattacks' PGDL2 with 1 step, no start).
* Loss: the run's own loss: cross-entropy on the true label; for a multi-label run
  binary cross-entropy with logits on the multi-hot target (torchattacks hard-codes
  cross-entropy, so multi-label FGSM / PGD run medtl's :func:`bce_attack`, the same steps,
  step sizes, random starts and projections as torchattacks' FGSM, PGD and PGDL2); the model in
  eval mode, fp32, no autocast.  AutoAttack needs single-label decisions (its success test is
  an arg-max) and refuses multi-label runs.
* ε = 0 is the clean image itself (no attack is run), so AUC(0) is the clean AUC.
* Metrics per ε: AUC, ACC (decision at the run's threshold), attack success rate = fraction of
  the images correctly decided on clean input whose decision becomes wrong.  Multi-label: macro
  AUC with ``auc_per_label``, ACC over (image, label) decisions, success rate over the images
  whose whole decision vector is right on clean input, ``flip_rate`` = the fraction of images
  whose decision vector changes (any label), and ``bce``, the mean BCE of the attacked outputs.
* Black-box transfer (``source``): adversarial images are crafted on the source run's model
  (same test set required) and evaluated on this run.
* AutoAttack (opt-in, slow: ``autoattack_linf``, ``autoattack_l2``): the "standard" version as
  RobustBench runs it (Croce & Hein 2020): APGD-CE (100 iterations), APGD-T (100 iterations,
  up to 9 target classes), FAB-T (100 iterations, up to 9 targets) and Square (5000 queries),
  one restart each, each attack run only on the images that the ones before did not flip.
  Its budgets are fixed (``steps`` and ``random_start`` do not apply); its seed is ``seed``.
  It counts an image as flipped when the arg-max of the logits is wrong, so for a binary run the
  logits it sees are shifted by logit(threshold): arg-max then is the run's decision
  (p(class 1) >= threshold). APGD-T's targeted DLR loss needs 4 classes or more (it divides by
  z_1 - (z_3 + z_4)/2 of the sorted logits); with fewer (binary: one target, the other class)
  it maximises the targeted margin z_target - z_true (the DLR numerator; L∞ steps use the
  gradient's sign and L2 steps its direction, so the missing normalisation changes no step).
  An image the ensemble does not flip stays the clean image, so robust accuracy <= clean.

Attacks come from torchattacks (FGSM, PGD, PGDL2; APGD, APGDT, FAB, Square, MultiAttack for
AutoAttack); they take [0,1] inputs of any channel count and a logits-returning model, which
:class:`ImageClassifier` is. torchattacks is not a declared dependency of medtl (its last
release pins requests~=2.25.1): it is installed with ``pip install --no-deps
torchattacks==3.5.1`` (scripts/setup.sh does).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..figures import new_figure, write_png
from .registry import Probe, register, scalar
from .runs import (ProbeRun, cached_probe, changed, check_positive, decide, decision_facts, load_run, sample_indices,
                   scores)

ATTACKS = ("fgsm_linf", "pgd_linf", "fgsm_l2", "pgd_l2")  # the default set
OPT_IN_ATTACKS = ("autoattack_linf", "autoattack_l2")      # slow: run only when named in ``attacks``
KNOWN_ATTACKS = ATTACKS + OPT_IN_ATTACKS
# AutoAttack "standard" budgets (fra31/auto-attack's set_version('standard'), as RobustBench uses it)
AUTOATTACK = {"apgd_steps": 100, "fab_steps": 100, "square_queries": 5000, "max_targets": 9}
TORCHATTACKS_INSTALL = "pip install --no-deps torchattacks==3.5.1"
DEFAULT_EPS = [0.0, 0.5 / 255, 1 / 255, 2 / 255, 4 / 255, 8 / 255]
DEFAULTS = {"eps": DEFAULT_EPS, "attacks": list(ATTACKS), "steps": 10, "random_start": True, "l2_scale": 1.0,
            "n_images": None, "seed": 0, "batch_size": 128}


def _torchattacks():
    try:
        import torchattacks
    except ImportError:
        raise ConfigError("adversarial attacks need torchattacks, which is installed apart from medtl's "
                          f"dependencies: {TORCHATTACKS_INSTALL}") from None
    return torchattacks


class _DecisionLogits(torch.nn.Module):
    """A binary model's logits shifted by (0, logit(threshold)): their arg-max is the decision
    p(class 1) >= threshold, which is what AutoAttack's success test (arg-max) then checks."""

    def __init__(self, model: torch.nn.Module, threshold: float):
        super().__init__()
        self.model = model
        t = min(max(float(threshold), 1e-6), 1 - 1e-6)
        self.register_buffer("offset", torch.tensor([0.0, math.log(t / (1 - t))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) - self.offset


def _autoattack(ta, model: torch.nn.Module, norm: str, eps: float, n_classes: int, seed: int):
    """AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square) from torchattacks' own classes.

    Built like torchattacks.AutoAttack(version='standard') but with the reference budgets (that
    class keeps torchattacks' 10-step defaults) and an APGD-T that also works below 4 classes."""

    class APGDT(ta.APGDT):
        def dlr_loss_targeted(self, x, y, y_target):
            if x.shape[1] >= 4:
                return super().dlr_loss_targeted(x, y, y_target)
            u = torch.arange(x.shape[0], device=x.device)
            return x[u, y_target] - x[u, y]  # targeted margin (see the module docstring)

    k = min(int(n_classes), AUTOATTACK["max_targets"] + 1)  # torchattacks: n_classes - 1 targets
    common = {"norm": norm, "eps": eps, "seed": seed}
    return ta.MultiAttack([
        ta.APGD(model, loss="ce", steps=AUTOATTACK["apgd_steps"], n_restarts=1, **common),
        APGDT(model, steps=AUTOATTACK["apgd_steps"], n_restarts=1, n_classes=k, **common),
        ta.FAB(model, steps=AUTOATTACK["fab_steps"], n_restarts=1, multi_targeted=True, n_classes=k, **common),
        ta.Square(model, n_queries=AUTOATTACK["square_queries"], n_restarts=1, p_init=0.8, resc_schedule=False,
                  **common),
    ])


def _attack(model: torch.nn.Module, name: str, eps: float, steps: int, random_start: bool, *, seed: int = 0,
            n_classes: int = 2):
    torchattacks = _torchattacks()

    if name == "fgsm_linf":
        return torchattacks.FGSM(model, eps=eps)
    if name == "pgd_linf":
        return torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=random_start)
    if name == "fgsm_l2":
        return torchattacks.PGDL2(model, eps=eps, alpha=eps, steps=1, random_start=False)
    if name == "pgd_l2":
        return torchattacks.PGDL2(model, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=random_start)
    if name in ("autoattack_linf", "autoattack_l2"):
        return _autoattack(torchattacks, model, "Linf" if name.endswith("linf") else "L2", eps, n_classes, seed)
    raise ConfigError(f"unknown attack {name!r}; use one of {', '.join(KNOWN_ATTACKS)}")


def _gradient_images(name: str, n: int, steps: int) -> int:
    """Images × gradient steps an attack costs (AutoAttack: APGD-CE's alone, a lower bound)."""
    if name.startswith("autoattack"):
        return n * AUTOATTACK["apgd_steps"]
    return n * (1 if name.startswith("fgsm") else steps)


def bce_attack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, name: str, eps: float, steps: int,
               random_start: bool) -> torch.Tensor:
    """FGSM / PGD (L∞ or L2) of ``x`` in [0,1] maximising BCE-with-logits on the multi-hot target
    ``y`` (float (n, L)): torchattacks' FGSM, PGD and PGDL2 with that loss in place of
    cross-entropy (same step sizes, random starts, projections; ``eps`` is the budget itself, the
    L2 one already scaled).  Draws from the global torch generator, as torchattacks does."""
    l2 = name.endswith("l2")
    n_steps, alpha, start = (1, eps, False) if name.startswith("fgsm") else (steps, 2.5 * eps / steps, random_start)
    x, y = x.detach(), y.detach().float()
    adv = x.clone()
    if start and l2:
        delta = torch.empty_like(x).normal_()
        norm = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        adv = (x + delta * torch.zeros_like(norm).uniform_(0, 1) / norm * eps).clamp(0, 1)
    elif start:
        adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(n_steps):
        adv = adv.detach().requires_grad_(True)
        loss = F.binary_cross_entropy_with_logits(model(adv).float(), y)
        grad = torch.autograd.grad(loss, adv)[0]
        if l2:
            grad = grad / (grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-10)
            delta = adv.detach() + alpha * grad - x
            factor = torch.clamp(eps / delta.flatten(1).norm(dim=1), max=1.0).view(-1, 1, 1, 1)
            adv = (x + delta * factor).clamp(0, 1)
        else:
            adv = (x + (adv.detach() + alpha * grad.sign() - x).clamp(-eps, eps)).clamp(0, 1)
    return adv.detach()


class _BCEAttack:
    """:func:`bce_attack` called as a torchattacks attack is: ``atk(images, targets)``."""

    def __init__(self, model: torch.nn.Module, name: str, eps: float, steps: int, random_start: bool):
        if name not in ATTACKS:
            raise ConfigError(f"attack {name!r} needs single-label decisions (its success test is an arg-max "
                              f"over classes); multi-label runs support {', '.join(ATTACKS)}")
        self.model, self.name, self.eps, self.steps, self.random_start = model, name, eps, steps, random_start

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return bce_attack(self.model, x, y, self.name, self.eps, self.steps, self.random_start)


def craft(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, name: str, eps: float, *, steps: int = 10,
          random_start: bool = True, l2_scale: float = 1.0, seed: int = 0, batch_size: int = 128,
          device: torch.device | str = "cpu", threshold: float | None = None,
          multilabel: bool = False) -> torch.Tensor:
    """Adversarial versions (CPU, float) of x (N,1,H,W) in [0,1]; ε in pixel units (L∞).

    ``threshold``: a binary model's decision threshold on p(class 1), used by AutoAttack only
    (which stops at the first image that flips the decision); None: the arg-max.
    ``multilabel``: ``y`` is the multi-hot target (N, L) and the loss BCE with logits."""
    if eps == 0:
        return x.clone()
    e = float(eps) * (math.sqrt(x.shape[-1] * x.shape[-2]) * l2_scale if name.endswith("l2") else 1.0)
    model = model.float().eval()
    n_classes = 2
    if name.startswith("autoattack") and len(x) and not multilabel:
        with torch.no_grad(), torch.autocast(device_type=torch.device(device).type, enabled=False):
            n_classes = int(model(x[:1].to(device).float()).shape[1])
        if threshold is not None and n_classes == 2:
            model = _DecisionLogits(model, threshold).to(device).eval()
    atk = _BCEAttack(model, name, e, steps, random_start) if multilabel else \
        _attack(model, name, e, steps, random_start, seed=seed, n_classes=n_classes)
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


def auc_se(task: str, y: np.ndarray, prob: np.ndarray) -> float | None:
    """DeLong standard error of a binary run's AUC on these images: the sampling error of an AUC
    measured on a subset of the test set (None for multi-class runs or too few cases)."""
    if task != "binary":
        return None
    from ..stats.delong import delong_covariance

    try:
        _, cov = delong_covariance(y, prob[:, 1])
    except ValueError:
        return None
    return float(np.sqrt(max(float(cov[0, 0]), 0.0)))


def compute_adversarial(run: ProbeRun, *, eps=DEFAULT_EPS, attacks=ATTACKS, steps: int = 10,
                        random_start: bool = True, l2_scale: float = 1.0, n_images: int | None = None,
                        seed: int = 0, batch_size: int = 128, source: ProbeRun | None = None,
                        plots: bool = True, record: int = 2) -> dict:
    check_positive("steps", steps, 1)
    eps = sorted(float(e) for e in eps)
    if any(e < 0 or e > 1 for e in eps):
        raise ConfigError(f"eps values must lie in [0, 1] (pixel units), got {eps}")
    for a in attacks:
        if a not in KNOWN_ATTACKS:
            raise ConfigError(f"attacks: unknown attack {a!r}; use one of {', '.join(KNOWN_ATTACKS)}")
    if run.multilabel:
        _check_multilabel_attacks(run, attacks)
    elif any(e > 0 for e in eps) and attacks:
        _torchattacks()  # fail before any work where torchattacks is missing
    crafter = run if source is None else source
    if source is not None:
        if source.images.shape != run.images.shape or list(source.ids) != list(run.ids):
            raise ConfigError(f"source run {source.path}: its test set differs from {run.path}'s "
                              "(transfer needs the same test images)")
        if source.multilabel != run.multilabel or (run.multilabel and source.classes != run.classes):
            raise ConfigError(f"source run {source.path}: its task or labels differ from {run.path}'s "
                              "(transfer needs the same outputs)")
    t0 = time.time()
    idx = sample_indices(len(run.labels), n_images, seed, run.labels)
    x = run.x(idx)
    y_np = run.labels[idx]
    y = torch.from_numpy(y_np)
    clean_prob = run.proba(x, batch_size)
    clean_dec, clean_correct = _decisions(run, clean_prob, y_np)
    prefix = "" if source is None else "transfer_"
    out: dict = {"n_images": int(len(idx)), "n_test": int(len(run.labels)), "index": idx.tolist(),
                 "y": y_np.tolist(), "mode": "white-box" if source is None else "black-box transfer",
                 "source": None if source is None else str(source.path), "attacks": {}}
    n_grad = 0
    for a in attacks:
        rows = []
        for k, e in enumerate(eps):
            xa = craft(crafter.model, x, y, a, e, steps=steps, random_start=random_start, l2_scale=l2_scale,
                       seed=seed * 1009 + k, batch_size=batch_size, device=crafter.device,
                       threshold=crafter.threshold if crafter.task == "binary" else None,
                       multilabel=crafter.multilabel)
            n_grad += 0 if e == 0 else _gradient_images(a, len(x), steps)
            prob = clean_prob if e == 0 else run.proba(xa, batch_size)
            s = scores(run, y_np, prob)
            dec, pred_ok = _decisions(run, prob, y_np)
            success = float(np.mean(~pred_ok[clean_correct])) if clean_correct.any() else float("nan")
            linf = float((xa - x).abs().amax()) if len(x) else 0.0
            l2 = float((xa - x).flatten(1).norm(dim=1).max()) if len(x) else 0.0
            rows.append({"eps": e, "eps_255": e * 255, "auc": s["auc"], "acc": s["acc"], "success_rate": success,
                         "max_linf": linf, "max_l2": l2, "auc_se": auc_se(run.task, y_np, prob),
                         # per-image P(positive): the attacked AUC's case variance in the report (binary)
                         "p": np.round(prob[:, 1], 7).tolist() if run.task == "binary" else None})
            if run.multilabel:
                rows[-1] |= {"auc_per_label": s["auc_per_label"], "bce": bce(y_np, prob),
                             "flip_rate": float(changed(dec, clean_dec, run.task).mean()) if len(x) else float("nan")}
        out["attacks"][prefix + a] = rows
    out["clean"] = scores(run, y_np, clean_prob)
    out |= decision_facts(run)
    if run.multilabel:
        out["loss"] = "binary cross-entropy with logits on the multi-hot target"
    out["seconds"] = time.time() - t0
    out["gradient_images_per_s"] = n_grad / max(out["seconds"], 1e-9)
    if plots:
        out["plots"] = {"auc_vs_eps": _plot(run, out, prefix)}
    return out


def _decisions(run: ProbeRun, prob: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The decisions of ``prob`` and where they are right (multi-label: the whole label vector)."""
    if run.multilabel:
        dec = decide(prob, run.task, run.threshold)
        return dec, (dec == y).all(1)
    dec = np.argmax(prob, 1) if run.task != "binary" else (prob[:, 1] >= run.threshold).astype(int)
    return dec, dec == y


def _check_multilabel_attacks(run: ProbeRun, attacks) -> None:
    """A multi-label run's attacks are medtl's BCE FGSM / PGD: AutoAttack is refused in one line."""
    other = [a for a in attacks if a not in ATTACKS]
    if other:
        raise ConfigError(f"{run.path}: {', '.join(other)} needs single-label decisions (AutoAttack's success "
                          f"test is an arg-max over classes); multi-label runs support {', '.join(ATTACKS)}")


def bce(y: np.ndarray, prob: np.ndarray) -> float:
    """Mean binary cross-entropy of per-label probabilities ``prob`` against 0/1 ``y`` (n, L)."""
    if not len(y):
        return float("nan")
    p = np.clip(np.asarray(prob, np.float64), 1e-12, 1 - 1e-12)
    y = np.asarray(y, np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


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
    p["record"] = 2  # per-image probabilities kept (a new record layout recomputes older caches)
    if source is None:
        return cached_probe(run_dir, "adversarial", p, lambda run: compute_adversarial(run, plots=plots, **p),
                            force=force)
    src_dir = Path(source)
    src = load_run(src_dir)  # validates the folder (one-line error) before anything is computed
    return cached_probe(run_dir, "adversarial_transfer", p,
                        lambda run: compute_adversarial(run, source=src, plots=plots, **p), force=force,
                        extra_key=":" + src.checkpoint_sha256)


# ------------------------------------------------------------------------------------ registration

_ROW_KEYS = ("eps", "auc", "acc", "success_rate", "auc_se", "p")
_MULTILABEL_ROW_KEYS = ("auc_per_label", "flip_rate")  # in a multi-label run's rows only


def _rows(result: dict) -> dict:
    return {name: [{k: r.get(k) for k in _ROW_KEYS} | {k: r[k] for k in _MULTILABEL_ROW_KEYS if k in r}
                   for r in rows] for name, rows in result["attacks"].items()}


def _record(a: dict, run, transfer: dict | None = None) -> dict:
    """The attacks' rows (transfer attacks, prefixed ``transfer_``, beside the white-box ones), the
    attacked sample, and the clean AUC on that sample (fp32)."""
    adv = _rows(a) | (_rows(transfer) if transfer else {})
    return {"adversarial": adv,
            "adversarial_sample": {"index": a.get("index"), "y": a.get("y"), "n_test": a.get("n_test")},
            "clean": {"auc_fp32_probe_sample": a["clean"]["auc"], "n_probe_sample": a["n_images"]}}


def _scalars(rec) -> dict:
    """The (macro) AUC of every attack and ε; multi-label runs also: the flip rate at every ε and
    each label's AUC at the attack's largest ε (``adversarial.per_label.<label>.<attack>.auc@…``)."""
    out = {f"adversarial.{name}.auc@{r['eps'] * 255:g}/255": scalar(r["auc"])
           for name, rows in rec["adversarial"].items() for r in rows}
    for name, rows in rec["adversarial"].items():
        ml = [r for r in rows if "flip_rate" in r]
        out |= {f"adversarial.{name}.flip_rate@{r['eps'] * 255:g}/255": scalar(r["flip_rate"]) for r in ml}
        if ml:
            top = max(ml, key=lambda r: r["eps"])
            out |= {f"adversarial.per_label.{c}.{name}.auc@{top['eps'] * 255:g}/255": scalar(v)
                    for c, v in (top.get("auc_per_label") or {}).items()}
    return out


def _headline(keys, records) -> list:
    """The AUC at the largest ε of one attack (PGD L∞ where it ran), not of every attack: their
    AUCs are strongly correlated."""
    from ..stats.robustness import headline_attack

    attack = headline_attack([a for r in records for a in r["adversarial"]])
    eps = [k for k in keys if attack and k.startswith(f"adversarial.{attack}.auc@")]
    return [max(eps, key=lambda k: float(k.split("@")[1].split("/")[0]))] if eps else []


register(Probe(
    name="adversarial", order=20, run=adversarial_probe, defaults=DEFAULTS, transfer=True,
    summary="FGSM / PGD (L-inf, L2), optionally AutoAttack, eps sweep: AUC, accuracy, attack success rate",
    presets={"full": {"steps": 10, "n_images": 256, "batch_size": 512},
             "quick": {"steps": 5, "n_images": 128, "batch_size": 512}},
    record=_record, scalars=_scalars, headline=_headline))
