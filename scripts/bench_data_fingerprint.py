"""Cost of the content fingerprint that keys medtl's decode cache and evaluate's cache, against the
(size, mtime) stat fingerprint it replaced, and against decoding the same files.

    python scripts/bench_data_fingerprint.py ../shared/data/kermany_cxr224 [--repeat 3]

Prints seconds per pass (best of --repeat) and the ratios, measured in one run on this machine.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medtl.data.cache import path_fingerprint  # noqa: E402
from medtl.data.load import decode_files  # noqa: E402


def _stat_pass(files: list[Path]) -> None:
    for p in files:
        st = os.stat(p)
        _ = (st.st_size, st.st_mtime_ns)


def _best(fn, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return min(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--size", type=int, default=64, help="decode size for the comparison")
    args = ap.parse_args()
    root = Path(args.folder)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    mb = sum(p.stat().st_size for p in files) / 1e6
    t_stat = _best(lambda: _stat_pass(files), args.repeat)
    t_content = _best(lambda: path_fingerprint(root), args.repeat)
    t_decode = _best(lambda: decode_files(files, args.size, "squash"), 1)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {len(files)} files, {mb:.1f} MB")
    print(f"stat fingerprint   {t_stat:.3f} s")
    print(f"content fingerprint {t_content:.3f} s  ({t_content / t_stat:.0f}x stat)")
    print(f"decode at {args.size} px  {t_decode:.2f} s  (content fingerprint = {t_content / t_decode:.3f} of a decode)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
