"""Is one grouped convolution (K groups) faster than K separate ones on this CPU? The kernel that
vmapped seed batching turns every convolution into (reports/seed_batch.md).

For the four ResNet-18 stages of a 28 px input (64 ch at 7x7 ... 512 ch at 1x1), batch 128, a 3x3
convolution forward + backward: K separate ``conv2d`` calls against one call with ``groups=K``
on the concatenated channels, plain and channels-last memory format.  Prints the ratio
separate / grouped (> 1: grouped is faster).

    python scripts/bench_grouped_conv.py --groups 8
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    k, b = args.groups, args.batch
    for c, s in ((64, 7), (128, 4), (256, 2), (512, 1)):
        for channels_last in (False, True):
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            xs = [torch.rand(b, c, s, s).contiguous(memory_format=fmt).requires_grad_() for _ in range(k)]
            ws = [torch.rand(c, c, 3, 3, requires_grad=True) for _ in range(k)]
            xg = torch.cat([x.detach() for x in xs], 1).contiguous(memory_format=fmt).requires_grad_()
            wg = torch.cat([w.detach() for w in ws], 0).requires_grad_()

            def separate():
                for x, w in zip(xs, ws):
                    F.conv2d(x, w, padding=1).sum().backward()

            def grouped():
                F.conv2d(xg, wg, padding=1, groups=k).sum().backward()

            def timed(fn):
                fn()
                t = time.perf_counter()
                for _ in range(args.repeats):
                    fn()
                return (time.perf_counter() - t) / args.repeats

            a, g = timed(separate), timed(grouped)
            print(f"{c} ch at {s}x{s}, channels_last={channels_last}: {k} separate {a * 1e3:.1f} ms, grouped "
                  f"{g * 1e3:.1f} ms, ratio {a / g:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
