"""Wall time of a many-seed study: `medtl sweep` against sequential plain PyTorch runs.

Plain baseline: S sequential runs of a plain PyTorch loop as a researcher would write it:
fp32, NCHW, torch's default threads (all cores), a DataLoader over in-memory tensors, SGD
with Nesterov and the same cosine/warmup LR, val evaluation every epoch, test evaluation at
the end.  medtl: the same S seeds as one sweep (`run_sweep`, local executor, default
workers/threads, the recipe's default precision).  Both train ResNet-18 on the same images
(PneumoniaMNIST 28 px from ../shared when present, else the synthetic set at 28 px) for the
same epochs, batch and LR, augmentation off in both so that both do the same work.

Last line: ``speedup=<plain sequential time / medtl sweep time>``.

    python scripts/bench_sweep.py                 # 30 seeds x 3 epochs (the study size), ~11 min
    python scripts/bench_sweep.py --seeds 6       # a quicker look (worker start-up weighs more)
"""
from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_NPZ = ROOT.parent / "shared" / "data" / "pneumoniamnist" / "pneumoniamnist_reconstructed.npz"
NO_AUG = {"translate": 0, "scale": 0, "rotate": 0, "hflip": False, "brightness": 0, "contrast": 0}


def plain_run(seed, data, epochs, batch, lr, warmup_epochs):
    """One plain fine-tuning run; returns test AUC (so the work is not optimised away)."""
    from sklearn.metrics import roc_auc_score
    from torch.utils.data import DataLoader, TensorDataset

    from medtl._compat import import_torchvision

    tv = import_torchvision()
    torch.manual_seed(seed)
    (xtr, ytr), (xva, yva), (xte, yte) = data
    net = tv.models.resnet18(num_classes=2)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def fwd(x):
        return net((x.expand(-1, 3, -1, -1) - mean) / std)

    loader = DataLoader(TensorDataset(xtr, ytr), batch_size=batch, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in net.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 1e-4}, {"params": no_decay, "weight_decay": 0}],
                          lr=lr, momentum=0.9, nesterov=True)
    steps = len(loader) * epochs
    warm = int(warmup_epochs * len(loader))

    def factor(s):
        if s < warm:
            return 0.01 + 0.99 * s / warm
        return 0.5 * (1 + math.cos(math.pi * (s - warm) / max(steps - warm, 1)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    best, best_state = -1.0, None

    def evaluate(x, y):
        net.eval()
        with torch.no_grad():
            p = torch.cat([torch.softmax(fwd(x[i:i + 256]), 1)[:, 1] for i in range(0, len(x), 256)])
        return roc_auc_score(y.numpy(), p.numpy())

    for _ in range(epochs):
        net.train()
        for x, y in loader:
            loss = F.cross_entropy(fwd(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        auc = evaluate(xva, yva)
        if auc > best:
            best, best_state = auc, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)
    return evaluate(xte, yte)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--workers", type=int, default=None, help="medtl sweep workers (default: one per core)")
    args = ap.parse_args()

    from medtl.config import build_config
    from medtl.data import load_dataset
    from medtl.sweep import run_sweep
    from medtl.sweep.worker import available_cores

    tmp = Path(tempfile.mkdtemp(prefix="medtl-bench-sweep-"))
    import os

    os.environ.setdefault("MEDTL_CACHE", str(tmp / "cache"))
    data_path = str(SHARED_NPZ) if SHARED_NPZ.is_file() else "builtin:synthetic"
    base = {
        "name": "bench", "data": {"path": data_path, "image_size": 28, "augment": NO_AUG},
        "model": {"backbone": "resnet18", "weights": "none"},
        "train": {"epochs": args.epochs, "batch_size": args.batch, "lr": args.lr, "warmup_epochs": 1,
                  "label_smoothing": 0.0},
    }
    cfg = build_config(base)
    bundle = load_dataset(cfg.data)  # decode once (cached for both)

    def t(split):
        s = bundle.splits[split]
        return torch.from_numpy(s.images).float().div_(255).unsqueeze(1), torch.as_tensor(s.labels)

    data = (t("train"), t("val"), t("test"))
    print(f"data={bundle.name} train={len(data[0][1])} seeds={args.seeds} epochs={args.epochs} "
          f"batch={args.batch} cores={available_cores()}", flush=True)

    t0 = time.perf_counter()
    plain_aucs = [plain_run(s, data, args.epochs, args.batch, args.lr, 1) for s in range(args.seeds)]
    plain_s = time.perf_counter() - t0
    print(f"plain sequential: {plain_s:.1f} s ({plain_s / args.seeds:.1f} s/run, fp32, "
          f"{torch.get_num_threads()} threads); mean test AUC {np.mean(plain_aucs):.4f}", flush=True)

    sweep_file = tmp / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({"name": "bench", "seeds": args.seeds, "arms": {"a": {}},
                                          "set": {"data": base["data"], "model": base["model"],
                                                  "train": base["train"]}}))
    t0 = time.perf_counter()
    summary = run_sweep(sweep_file, tmp / "sweep", workers=args.workers, progress=False)
    medtl_s = time.perf_counter() - t0
    aucs = [r["test_auc"] for r in summary["runs"] if r["test_auc"] is not None]
    print(f"medtl sweep: {medtl_s:.1f} s ({summary['workers']} workers x {summary['threads_per_run']} "
          f"thread(s), {summary['counts']}); mean test AUC {np.mean(aucs):.4f}", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"speedup={plain_s / medtl_s:.3f}")


if __name__ == "__main__":
    main()
