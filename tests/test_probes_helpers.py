"""Tiny, fast, runnable run folders for the probe tests (built once per session).

A real ``medtl finetune`` takes ~20 s per run on 2 cores, too slow for the test budget, so
these folders are written the way finetune writes them (config.yaml, checkpoint_best.pt,
metrics.json, predictions_test.npz) from a ResNet-18 trained in-process for a few dozen
steps on an easy 16-px MedMNIST-style .npz (class 1 = a bright blob), so that the model is
well above chance and attacks have something to destroy.
"""
from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

SIZE = 16
_CACHE: dict[str, Path] = {}


def _images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = (rng.random(n) < 0.5).astype(np.int64)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    cy = rng.uniform(5, 11, n)[:, None, None]
    cx = rng.uniform(5, 11, n)[:, None, None]
    amp = rng.uniform(0.15, 0.45, n)[:, None, None] * y[:, None, None]
    blob = amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.0 ** 2))
    img = 0.35 + 0.1 * rng.standard_normal((n, SIZE, SIZE)) + blob
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8), y


def _write_npz(path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 256), ("val", 64), ("test", 96)):
        im, y = _images(n, rng)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = im, y[:, None]
    np.savez(path, **arrays)


def make_run(out: Path, npz: Path, seed: int, lr: float, steps: int, size: int = SIZE,
             overrides: tuple[str, ...] = (), val_threshold: bool = False) -> Path:
    """A finished run folder at ``out``: ResNet-18 trained in-process with Adam for ``steps``
    batches of 32 on ``npz`` (MedMNIST layout, images of side ``size``); ``overrides`` are extra
    ``key=value`` config settings written into its config.yaml (e.g. ``model.antialias=blurpool``);
    ``val_threshold``: the operating threshold is chosen on val (Youden), as finetune does, instead
    of 0.5 (a model trained for a few dozen steps can rank perfectly with a shifted threshold)."""
    from medtl.config import config_to_yaml, load_config
    from medtl.data import load_dataset
    from medtl.models import model_for_run
    from medtl.models.inference import predict_proba
    from medtl.stats import auc as auc_score

    cfg = load_config(None, [f"data.path={npz}", f"data.image_size={size}", f"seed={seed}", "train.precision=fp32",
                             f"train.lr={lr}", "train.device=cpu", *overrides])
    bundle = load_dataset(cfg.data)
    torch.manual_seed(seed)
    model, _ = model_for_run(cfg, 2)
    tr = bundle.splits["train"]
    x = torch.from_numpy(tr.images).unsqueeze(1).float() / 255
    y = torch.from_numpy(tr.labels)
    opt = torch.optim.Adam(model.parameters(), lr=lr, foreach=True)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (32,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    te = bundle.splits["test"]
    prob = predict_proba(model, torch.from_numpy(te.images).unsqueeze(1).float() / 255)
    thr, rule = 0.5, "fixed"
    if val_threshold:
        from medtl.stats.metrics import choose_threshold

        va = bundle.splits["val"]
        thr, rule = choose_threshold(va.labels, predict_proba(model, torch.from_numpy(va.images).unsqueeze(1))[:, 1]), "youden"
    auc = auc_score(te.labels, prob)
    acc = float(np.mean((prob[:, 1] >= thr) == te.labels))
    out.mkdir(parents=True)
    (out / "config.yaml").write_text(config_to_yaml(cfg))
    torch.save({"model": model.state_dict(), "epoch": 1, "classes": list(bundle.classes),
                "config": config_to_yaml(cfg)}, out / "checkpoint_best.pt")
    np.savez(out / "predictions_test.npz", y=te.labels, p=prob[:, 1], ids=np.asarray(te.ids, dtype=str))
    metrics = {"run": {"name": "tiny", "seed": seed}, "task": "binary", "classes": list(bundle.classes),
               "threshold": {"rule": rule, "value": float(thr), "chosen_on": "val"},
               "test": {"auc": auc, "acc": acc, "n": int(len(te.labels))},
               "data": {"leaks": {"status": "clean"}}}
    (out / "metrics.json").write_text(json.dumps(metrics))
    return out


def tiny_runs() -> dict[str, Path]:
    """{'root', 'a0', 'a1', 'b0'}: ROOT/armA/seed-{0,1}, ROOT/armB/seed-0 (made once per process)."""
    if not _CACHE:
        import os

        root = Path(tempfile.mkdtemp(prefix="medtl-probes-"))
        atexit.register(shutil.rmtree, root, True)
        os.environ.setdefault("MEDTL_CACHE", str(root / "cache"))
        npz = root / "easy16.npz"
        _write_npz(npz)
        torch.set_num_threads(min(2, torch.get_num_threads()))
        _CACHE["root"] = root / "runs"
        _CACHE["a0"] = make_run(root / "runs" / "armA" / "seed-0", npz, 0, 3e-3, 25)
        _CACHE["a1"] = make_run(root / "runs" / "armA" / "seed-1", npz, 1, 3e-3, 25)
        _CACHE["b0"] = make_run(root / "runs" / "armB" / "seed-0", npz, 0, 1e-3, 25)
    return dict(_CACHE)
