"""Would training K seeds of one arm as one batched model be faster than training them one by one?

Issue 24 proposes seed batching: the K seeds' weights stacked (torch.func.stack_module_state) and
one vmapped forward/backward (vmap turns every convolution into a grouped one) in place of K small
models.  Before building that path into medtl, this measures the only thing that decides whether it
pays: training-step throughput, both ways, in one process, on the same threads and batch shapes.

* sequential: K medtl models (the run's model exactly: fast_conv, channels_last and the precision
  medtl picks on this CPU), one SGD step each per round;
* batched: the same K initial weights stacked, one vmapped step per round (fast_conv off: its
  kernels cannot run under vmap; channels_last off for the same reason).

Each way runs ``--rounds`` rounds after ``--warmup`` rounds, the two interleaved ``--repeats``
times; the median round time of each is compared.  ``speedup=`` is sequential / batched (> 1:
batching is faster).  Images are random (the kernels do not care); the config gives the shapes.

    python scripts/bench_seed_batch.py --config configs/pneumoniamnist28.yaml --seeds 8
    python scripts/bench_seed_batch.py --config configs/kermany64.yaml --seeds 8
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/pneumoniamnist28.yaml")
    ap.add_argument("--seeds", type=int, default=8, help="K seeds of one arm")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a sweep worker's share of the cores)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=None, help="default: the config's train.batch_size")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. train.precision=fp32 (repeatable)")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, stack_module_state, vmap

    from medtl.config import load_config
    from medtl.models import model_for_run
    from medtl.train.runtime import resolve_runtime

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, ["model.weights=none", *args.set])
    rt = resolve_runtime(cfg.train)
    side, bs, k = cfg.data.image_size, args.batch_size or cfg.train.batch_size, args.seeds
    dev = rt.device
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(rt.precision)

    def autocast():
        return torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def build(fast: bool):
        c = cfg.model_copy(update={"train": cfg.train.model_copy(update={"fast_conv": fast})})
        out = []
        for s in range(k):
            torch.manual_seed(s)
            m, _ = model_for_run(c, 2, weights="none")
            out.append(m.to(dev).train())
        return out

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(k, bs, 1, side, side, generator=gen).to(dev)
    y = torch.randint(0, 2, (k, bs), generator=gen).to(dev)

    seq = build(True)
    if rt.channels_last:
        seq = [m.to(memory_format=torch.channels_last) for m in seq]
    seq_opt = [torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for m in seq]
    xs = [x[i].contiguous(memory_format=torch.channels_last) if rt.channels_last else x[i] for i in range(k)]

    def seq_round():
        for i, (m, o) in enumerate(zip(seq, seq_opt)):
            with autocast():
                out = m(xs[i])
            loss = F.cross_entropy(out.float(), y[i])
            o.zero_grad(set_to_none=True)
            loss.backward()
            o.step()

    plain = build(False)
    params, buffers = stack_module_state(plain)
    params = {n: p.detach().requires_grad_() for n, p in params.items()}
    base = copy.deepcopy(plain[0]).to("meta")
    opt = torch.optim.SGD(params.values(), lr=0.01, momentum=0.9)
    fwd = vmap(lambda p, b, xx: functional_call(base, (p, b), (xx,)), randomness="different")

    def batched_round():
        with autocast():
            out = fwd(params, buffers, x)
        loss = F.cross_entropy(out.float().reshape(k * bs, -1), y.reshape(-1), reduction="sum") / bs
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def timed(fn) -> list[float]:
        for _ in range(args.warmup):
            fn()
        out = []
        for _ in range(args.rounds):
            sync()
            t = time.perf_counter()
            fn()
            sync()
            out.append(time.perf_counter() - t)
        return out

    seq_t, bat_t = [], []
    for _ in range(args.repeats):
        seq_t += timed(seq_round)
        bat_t += timed(batched_round)
    s, b = statistics.median(seq_t), statistics.median(bat_t)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name()
    print(f"device: {dev} ({where}); torch {torch.__version__}; threads {args.threads}; precision {rt.precision}; "
          f"channels_last {rt.channels_last}")
    print(f"config {args.config}: {side} px, batch {bs}, {k} seeds of {cfg.model.backbone}")
    print(f"sequential: {s:.3f} s per round ({k * bs / s:.0f} images/s); batched (vmap): {b:.3f} s per round "
          f"({k * bs / b:.0f} images/s)")
    print(f"speedup={s / b:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
