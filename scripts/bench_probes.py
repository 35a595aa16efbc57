"""Throughput of each robustness probe beside the plain forward pass of the same model.

    python scripts/bench_probes.py [--size 28] [--n 256] [--run RUN_DIR]

Prints images/s: plain forward (fp32, eval, no grad); translation (shift + forward, per
shifted image); corruptions (corrupt + forward, per corrupted image); PGD (per image per
attack step, forward + backward); explain (Grad-CAM + saliency + occlusion, per image).
Without --run a random-init ResNet-18 on random images is used.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def _timeit(fn, n_items: int, repeat: int = 2) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n_items / best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--run", default=None)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from medtl.models import create_model
    from medtl.probes.adversarial import craft
    from medtl.probes.corruptions import corrupt
    from medtl.probes.explain import attributions
    from medtl.models.inference import predict_proba
    from medtl.probes.runs import ProbeRun, load_run
    from medtl.probes.translation import _forward_shifted, path_shifts

    if a.run:
        run = load_run(a.run)
    else:
        torch.manual_seed(0)
        model, _ = create_model("resnet18", 2)
        model.eval()
        rng = np.random.default_rng(0)
        run = ProbeRun(path=None, cfg=None, model=model, classes=["a", "b"], task="binary", threshold=0.5,
                       images=rng.integers(0, 256, (a.n, a.size, a.size), dtype=np.uint8),
                       labels=rng.integers(0, 2, a.n), ids=[str(i) for i in range(a.n)], device=torch.device("cpu"))
    idx = np.arange(min(a.n, len(run.labels)))
    x, y = run.x(idx), torch.from_numpy(run.labels[idx])
    n = len(x)
    rates = {}
    rates["forward"] = _timeit(lambda: predict_proba(run.model, x, run.device), n)
    shifts = path_shifts(2)[0]
    rates["translation"] = _timeit(lambda: _forward_shifted(run, x, shifts, "crop", 2, 512), n * len(shifts))
    g = torch.Generator().manual_seed(0)
    rates["corruptions"] = _timeit(lambda: predict_proba(run.model, corrupt(x, "jpeg", 3, g), run.device), n)
    steps = 5
    rates["pgd (per step)"] = _timeit(lambda: craft(run.model, x, y, "pgd_linf", 4 / 255, steps=steps), n * steps, 1)
    k = min(n, 16)
    tgt = np.zeros(k, dtype=np.int64)
    rates["explain"] = _timeit(lambda: attributions(run, x[:k], tgt), k, 1)
    print(f"ResNet-18, {a.size}px, {n} images, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, r in rates.items():
        print(f"{name:16s} {r:9.1f} images/s  ({r / rates['forward']:.2f}x forward)")


if __name__ == "__main__":
    main()
