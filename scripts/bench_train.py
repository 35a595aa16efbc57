"""Training throughput of medtl's loop against a plain PyTorch loop, measured in one run.

Both loops train the same architecture from the same initial weights on the same in-memory
uint8 images, with the same batch size, optimiser, precision (bf16 autocast on CPU, fp16 on
CUDA) and memory format.  medtl's loop is :func:`medtl.train.loop._train_epoch`, the function
``medtl finetune`` runs every epoch (augmentation off for both, so both do the same work).
The two loops alternate for ``--repeats`` rounds; the medians are compared.

Last line: ``ratio=<medtl images/s / plain images/s>``.

    python scripts/bench_train.py                 # resnet18, 64 px, batch 64
    python scripts/bench_train.py --arch resnet50 --size 64 --steps 10
"""
from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20, help="optimisation steps per timed round")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from medtl.config import build_config
    from medtl.models import create_model, param_groups
    from medtl.train.loop import Task, _train_epoch
    from medtl.train.runtime import resolve_runtime

    cfg = build_config({}, [
        f"model.backbone={args.arch}", f"data.image_size={args.size}", f"train.batch_size={args.batch}",
        f"train.precision={args.precision}", "train.epochs=1", "train.warmup_epochs=0",
        "data.augment={translate: 0, scale: 0, rotate: 0, hflip: false, brightness: 0, contrast: 0}",
    ])
    rt = resolve_runtime(cfg.train)
    n = args.batch * args.steps
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (n, 1, args.size, args.size), dtype=np.uint8))
    labels = rng.integers(0, 2, n)
    targets = torch.as_tensor(labels, dtype=torch.long)

    # Task needs only the classes and the train labels of a DatasetBundle
    bundle = SimpleNamespace(classes=["a", "b"], multilabel=False,
                             splits={"train": SimpleNamespace(labels=labels)})
    task = Task(bundle, 0.0, "none", rt.device)

    def fresh_model():
        torch.manual_seed(0)
        m, _ = create_model(args.arch, 2, weights="none")
        m = m.to(rt.device)
        if rt.channels_last:
            m = m.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(param_groups(m, 1e-4, True), lr=0.01, momentum=0.9, nesterov=True)
        return m, opt

    def plain_round(model, opt) -> float:
        model.train()
        perm = torch.randperm(n)
        t0 = time.perf_counter()
        for i in range(args.steps):
            idx = perm[i * args.batch:(i + 1) * args.batch]
            x = images[idx].float().div_(255.0).to(rt.device)
            if rt.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = targets[idx].to(rt.device)
            with rt.autocast():
                out = model(x)
            loss = F.cross_entropy(out.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        return n / (time.perf_counter() - t0)

    def medtl_round(model, opt) -> float:
        t0 = time.perf_counter()
        setup = SimpleNamespace(model=model, opt=opt, scaler=None, task=task, rt=rt, bs=args.batch,
                                steps_per_epoch=args.steps, total_steps=args.steps, warmup_steps=0, milestones=[],
                                base_lr=0.01)
        _train_epoch(setup, cfg, 0, images, targets, progress=False)
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        return n / (time.perf_counter() - t0)

    m_plain, o_plain = fresh_model()
    m_medtl, o_medtl = fresh_model()
    plain_round(m_plain, o_plain)  # warm-up (allocator, oneDNN primitive caches)
    medtl_round(m_medtl, o_medtl)
    plain, medtl = [], []
    for r in range(args.repeats):
        # alternate the order so drift in machine load hits both loops alike
        if r % 2 == 0:
            plain.append(plain_round(m_plain, o_plain))
            medtl.append(medtl_round(m_medtl, o_medtl))
        else:
            medtl.append(medtl_round(m_medtl, o_medtl))
            plain.append(plain_round(m_plain, o_plain))
    p, m = statistics.median(plain), statistics.median(medtl)
    print(f"device={rt.device} precision={rt.precision} channels_last={rt.channels_last} "
          f"threads={torch.get_num_threads()} arch={args.arch} size={args.size} batch={args.batch} "
          f"steps={args.steps} repeats={args.repeats}")
    print("plain images/s per round: " + ", ".join(f"{v:.1f}" for v in plain))
    print("medtl images/s per round: " + ", ".join(f"{v:.1f}" for v in medtl))
    print(f"plain_median={p:.1f} medtl_median={m:.1f}")
    print(f"ratio={m / p:.3f}")


if __name__ == "__main__":
    main()
