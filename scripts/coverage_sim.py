"""Coverage of medtl's seed intervals by simulation (medtl/stats/coverage.py documents the model).

    python scripts/coverage_sim.py [--reps 2000] [--seeds 5 10 30] [--out reports/coverage.json]

Realistic settings: AUC about 0.96, 624 test cases (390 positive), two arms with their own
per-case errors, seeds 5, 10 and 30; with 2,000 replicates the coverage estimate's own standard
error is at most 0.005 at a true coverage of 0.95.  Prints one line per seed count and writes the
JSON record; exits 1 when a coverage lies outside 0.93-0.97.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medtl.stats.coverage import coverage  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[5, 10, 30])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows, ok = [], True
    for m in args.seeds:
        t0 = time.time()
        r = coverage(m, args.reps, seed=2026)
        r["seconds"] = round(time.time() - t0, 1)
        rows.append(r)
        cov = r["coverage"]
        ok &= all(0.93 <= c <= 0.97 for c in cov.values())
        print(f"seeds={m:>2} reps={args.reps} " + " ".join(f"{k}={v:.3f}(se {r['se'][k]:.4f}, width "
                                                        f"{r['mean_width'][k]:.4f})" for k, v in cov.items())
              + f" [{r['seconds']} s]", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"kind": "medtl.coverage", "rows": rows, "pass": bool(ok)}, indent=1))
    print("PASS" if ok else "FAIL: a coverage lies outside 0.93-0.97")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
