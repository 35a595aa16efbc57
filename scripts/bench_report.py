"""Wall time of ``medtl robustness-report`` against a plain baseline, in one run on the same runs.

* **plain**: every probe of the default (full) preset as straightforward loops -- one run after
  another in one process with all cores, each probe loading its run, every attack and ε over
  *all* test images in batches of 128, every forward in fp32 with the default memory format --
  and nothing read from a cache (each variant works on its own fresh copy of the runs, so
  neither can reuse the other's results);
* **medtl**: :func:`medtl.probes.suite.run_probes` as the command runs it: the runs probed in
  parallel worker processes (cores // workers threads each), channels-last fp32 attacks in
  batches of 512 on the preset's seeded, stratified test subset (its size recorded, its sampling
  error in the attack CIs), translation and corruption forwards at the training precision (the
  agreement of their clean decisions with fp32 recorded per run).

The attack strength is the same in both (steps, step size, random start; no early stopping).
Prints both wall times and ``speedup=<plain / medtl>``.

    python scripts/bench_report.py --runs runs/sweep-shape/baseline      # runs of your own
    python scripts/bench_report.py                                       # 4 fresh synthetic runs
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path


def _fresh_runs(root: Path, n: int) -> Path:
    """``n`` one-epoch runs on the embedded synthetic set (28 px), the same layout as a sweep arm."""
    from medtl.config import build_config
    from medtl.train import finetune

    arm = root / "synthetic"
    for seed in range(n):
        cfg = build_config({}, ["data.path=builtin:synthetic", "data.image_size=28", f"seed={seed}",
                                "data.synthetic_n={train: 600, val: 200, test: 400}", "train.epochs=2"])
        finetune(cfg, arm / f"seed-{seed}", progress=False)
    return arm


def _copy(src: list[Path], dst: Path) -> list[Path]:
    out = []
    for i, d in enumerate(src):
        target = dst / f"{i}_{d.parent.name}" / d.name
        shutil.copytree(d, target, ignore=shutil.ignore_patterns("probes", "state"))
        out.append(target)
    return out


def plain_params(params: dict) -> dict:
    """The preset as a plain implementation runs it: all test images, fp32, batches of 128."""
    plain = {k: dict(v) for k, v in params.items()}
    plain["adversarial"].update(n_images=None, batch_size=128)
    plain["translation"]["precision"] = "fp32"
    plain["corruptions"]["precision"] = "fp32"
    return plain


def plain_report(run_dirs: list[Path], params: dict) -> float:
    from medtl.probes import runs as probe_runs
    from medtl.probes.suite import probe_run

    probe_runs.CHANNELS_LAST = False  # the default memory format
    try:
        t = time.perf_counter()
        for d in run_dirs:
            probe_run(d, plain_params(params), force=True)
        return time.perf_counter() - t
    finally:
        probe_runs.CHANNELS_LAST = True


def medtl_report(run_dirs: list[Path], params: dict, workers: int | None) -> tuple[float, int]:
    from medtl.probes.suite import run_probes

    t = time.perf_counter()
    res = run_probes([d.parent for d in run_dirs], params=params, workers=workers)
    return time.perf_counter() - t, res["workers"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="*", default=[], help="run or arm folders (default: fresh synthetic runs)")
    ap.add_argument("--max-runs", type=int, default=4)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="the quick preset instead of the default (full)")
    a = ap.parse_args()
    from medtl.probes.suite import probe_params
    from medtl.runs import discover_arms

    tmp = Path(tempfile.mkdtemp(prefix="medtl-bench-report-"))
    os.environ.setdefault("MEDTL_CACHE", str(tmp / "cache"))
    try:
        sources = [Path(r) for r in a.runs] or [_fresh_runs(tmp / "src", a.max_runs)]
        runs = [d for arm in discover_arms(sources).values() for _, d in sorted(arm.run_dirs.items())][:a.max_runs]
        params = probe_params(quick=a.quick)
        plain_t = plain_report(_copy(runs, tmp / "plain"), params)
        medtl_t, workers = medtl_report(_copy(runs, tmp / "medtl"), params, a.workers)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    import torch

    from bench_shape_shift import cpu_name

    print(f"cpu={cpu_name()!r} cores={os.cpu_count()} torch_threads={torch.get_num_threads()} runs={len(runs)} "
          f"preset={'quick' if a.quick else 'full'} attack_subset={params['adversarial']['n_images']} "
          f"workers={workers}")
    print(f"plain_s={plain_t:.1f} medtl_s={medtl_t:.1f}")
    print(f"speedup={plain_t / medtl_t:.2f}")


if __name__ == "__main__":
    main()
