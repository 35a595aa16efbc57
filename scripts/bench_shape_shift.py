"""Cost of ``model.antialias: blurpool``, ``data.augment.stylize`` and ``data.augment.cue`` per training epoch,
measured in one run.

Variants of medtl's own epoch (:func:`medtl.train.loop._train_epoch`, what ``medtl finetune``
runs) on the same in-memory uint8 images, batch size, optimiser, precision and memory format:

* ``baseline``: the plain ResNet, stylize off;
* ``blurpool``: the antialiased ResNet (BlurPool before every strided subsampling), stylize off;
* ``stylize``:  the plain ResNet with ``data.augment.stylize`` (window scramble + histogram matching);
* ``cue_<kind>``: the plain ResNet with ``data.augment.cue.kind: <kind>`` at p = 1 (every image), one
  per kind in ``--cue`` (default: lowpass, highpass, patch_shuffle; ``--cue`` with no kind: none).

Rounds alternate in a rotating order so drift in machine load hits all variants alike; medians
are compared.  The last lines print ``blurpool_ratio=``, ``stylize_ratio=`` and ``cue_<kind>_ratio=``
(seconds per epoch relative to the baseline; 1.0 = free).  ``--timm-blur`` adds timm's own ``BlurPool2d`` (depthwise
conv) for comparison with medtl's pooling form of the same filter.

    python scripts/bench_shape_shift.py                      # resnet18, 28 px, batch 128
    python scripts/bench_shape_shift.py --size 64 --batch 64 --timm-blur
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from types import SimpleNamespace

import numpy as np
import torch


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=12, help="optimisation steps per timed round")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--stylize", type=float, default=0.5)
    ap.add_argument("--cue", nargs="*", default=["lowpass", "highpass", "patch_shuffle"],
                    choices=["lowpass", "highpass", "patch_shuffle"], help="cue kinds to time (p = 1)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--timm-blur", action="store_true", help="also time timm's BlurPool2d")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from medtl.config import build_config
    from medtl.models import create_model, param_groups
    from medtl.train.loop import Task, _train_epoch
    from medtl.train.runtime import resolve_runtime

    def cfg_for(stylize: float, cue: str = "none"):
        return build_config({}, [
            f"model.backbone={args.arch}", f"data.image_size={args.size}", f"train.batch_size={args.batch}",
            f"train.precision={args.precision}", "train.epochs=1", "train.warmup_epochs=0",
            f"data.augment.stylize={stylize}", f"data.augment.cue.kind={cue}"])

    cfg0, cfg_st = cfg_for(0.0), cfg_for(args.stylize)
    rt = resolve_runtime(cfg0.train)
    n = args.batch * args.steps
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (n, 1, args.size, args.size), dtype=np.uint8))
    labels = rng.integers(0, 2, n)
    targets = torch.as_tensor(labels, dtype=torch.long)
    bundle = SimpleNamespace(classes=["a", "b"], multilabel=False, splits={"train": SimpleNamespace(labels=labels)})
    task = Task(bundle, 0.0, "none", rt.device)

    def setup(antialias: str):
        torch.manual_seed(0)
        m, _ = create_model(args.arch, 2, weights="none", antialias=antialias if antialias != "timm" else "none")
        if antialias == "timm":
            from medtl.models.archs import _torchvision

            _torchvision()
            import timm
            from timm.layers import BlurPool2d

            m.backbone = timm.create_model(args.arch, aa_layer=BlurPool2d, num_classes=0)
        m = m.to(rt.device)
        if rt.channels_last:
            m = m.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(param_groups(m, 1e-4, True), lr=0.01, momentum=0.9, nesterov=True)
        return SimpleNamespace(model=m, opt=opt, scaler=None, task=task, rt=rt, bs=args.batch,
                               steps_per_epoch=args.steps, total_steps=args.steps, warmup_steps=0, milestones=[],
                               base_lr=0.01)

    variants = {"baseline": (setup("none"), cfg0), "blurpool": (setup("blurpool"), cfg0),
                "stylize": (setup("none"), cfg_st)}
    for kind in args.cue:
        variants[f"cue_{kind}"] = (setup("none"), cfg_for(0.0, kind))
    if args.timm_blur:
        variants["timm_blurpool2d"] = (setup("timm"), cfg0)
    times: dict[str, list[float]] = {k: [] for k in variants}

    def epoch(name: str, r: int) -> float:
        s, cfg = variants[name]
        t0 = time.perf_counter()
        _train_epoch(s, cfg, r, images, targets, progress=False)
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    names = list(variants)
    for name in names:
        epoch(name, 0)  # warm-up (allocator, oneDNN primitive caches)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(epoch(name, r + 1))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"cpu={cpu_name()!r} device={rt.device} precision={rt.precision} "
          f"channels_last={rt.channels_last} threads={torch.get_num_threads()} arch={args.arch} size={args.size} "
          f"batch={args.batch} steps={args.steps} repeats={args.repeats} stylize_p={args.stylize}")
    for k, v in times.items():
        print(f"{k:16s} s/epoch per round: " + ", ".join(f"{x:.3f}" for x in v) + f"  median={med[k]:.3f}")
    if args.timm_blur:
        print(f"timm_blurpool2d_ratio={med['timm_blurpool2d'] / med['baseline']:.3f}")
    print(f"blurpool_ratio={med['blurpool'] / med['baseline']:.3f}")
    print(f"stylize_ratio={med['stylize'] / med['baseline']:.3f}")
    for kind in args.cue:
        print(f"cue_{kind}_ratio={med[f'cue_{kind}'] / med['baseline']:.3f}")


if __name__ == "__main__":
    main()
