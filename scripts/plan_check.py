"""Check `medtl plan` against a many-seed study: plan from a few pilot seeds, then draw random seed
subsets of the planned size from the whole study and count how often medtl's conclusion rule
reaches the planned conclusion (target: about the planned power, 0.7-0.9 at power 0.8).

    python scripts/plan_check.py runs/study-warmup/runs --arm-a warmup --arm-b no_warmup \
        --metric test.auc --pilot-seeds 5 --difference auto --reps 2000 --out reports/plan_check.json

``--difference auto`` plans for the difference the whole study estimates (the best available
guess of the truth; the check is whether power at that effect is what the plan says).  Each
subset is concluded exactly as ``medtl compare`` concludes a primary pair on one test set:
the t test over seeds and test cases, at alpha over a family of ``--tests`` tests.
Subsets of m from n seeds overlap (m/n of their seeds on average), so the fractions are only
a check where m is well below n; the script prints the overlap.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medtl.runs import discover_arms  # noqa: E402
from medtl.stats.comparison import run_predictions  # noqa: E402
from medtl.stats.hierarchical import diff_ci  # noqa: E402
from medtl.stats.pilot import plan_runs  # noqa: E402


def _random_pilots(args, pa, pb, seeds, delta, name, frac, sign) -> dict:
    """Many random pilots: each plans from its own seeds (same rule as above) and is checked on
    random subsets of the planned size drawn from the seeds it did not use."""
    from medtl.stats.plan import seeds_needed, ucl_variance

    rng = np.random.default_rng(args.seed + 1)
    n_pilot = args.pilot_seeds
    planned, reached = [], []
    for _ in range(args.pilots):
        pilot = sorted(rng.choice(seeds, n_pilot, replace=False).tolist())
        rest = [s for s in seeds if s not in pilot]
        r = diff_ci([pa[s] for s in pilot], [pb[s] for s in pilot], name, fraction=frac)
        s2 = r["var_seed_term"] * n_pilot
        s2 = ucl_variance(s2, n_pilot, args.confidence if args.confidence > 0 else None)
        m = seeds_needed(s2, r["var_case_term"], len(pa[pilot[0]].y), goal="difference", effect=delta,
                         alpha=args.alpha, k=args.tests, power=args.power)["seeds_needed"]
        planned.append(m)
        if m is None or m > len(rest):
            continue
        hits = 0
        for _ in range(50):
            sub = rng.choice(rest, m, replace=False).tolist()
            d = diff_ci([pa[s] for s in sub], [pb[s] for s in sub], name, fraction=frac)
            hits += bool(d["p"] < args.alpha / args.tests and np.sign(d["estimate"]) == sign)
        reached.append(hits / 50)
    ok = [m for m in planned if m is not None and m <= len(seeds) - n_pilot]
    out = {"pilots": args.pilots, "planned_counts": planned, "n_checkable": len(reached),
           "mean_fraction_reaching": float(np.mean(reached)) if reached else None,
           "median_planned": float(np.median([m for m in planned if m is not None])) if ok else None}
    print(f"{args.pilots} random {n_pilot}-seed pilots: planned counts median {out['median_planned']}, "
          f"{len(reached)} checkable on the other {len(seeds) - n_pilot} seeds; mean fraction reaching 'differs' "
          f"there {out['mean_fraction_reaching']}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs")
    ap.add_argument("--arm-a", required=True)
    ap.add_argument("--arm-b", required=True)
    ap.add_argument("--metric", default="test.auc")
    ap.add_argument("--pilot-seeds", type=int, default=5)
    ap.add_argument("--difference", default="auto")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--power", type=float, default=0.8)
    ap.add_argument("--tests", type=int, default=1)
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--confidence", type=float, default=0.8,
                    help="plan on this upper confidence limit of the pilot seed variance (0: point estimate)")
    ap.add_argument("--pilots", type=int, default=0,
                    help="also: this many random 5-seed pilots, each planned and checked on the other seeds")
    ap.add_argument("--scope", choices=["patients", "test_set"], default="patients",
                    help="conclude as medtl compare --scope does: over seeds and test cases, or over seeds only")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    arms = discover_arms([args.runs])
    name = args.metric.split(".", 1)[1]
    pa, pb = run_predictions(arms[args.arm_a]), run_predictions(arms[args.arm_b])
    seeds = sorted(set(pa) & set(pb))
    frac = 1.0 if args.scope == "patients" else 0.0
    full = diff_ci([pa[s] for s in seeds], [pb[s] for s in seeds], name, fraction=frac)
    delta = abs(full["estimate"]) if args.difference == "auto" else float(args.difference)
    pilot = seeds[:args.pilot_seeds]
    plan = plan_runs([args.runs], [args.metric], difference=delta, alpha=args.alpha, power=args.power,
                     family_size=args.tests, seeds=pilot, scope=args.scope,
                     confidence=args.confidence if args.confidence > 0 else None)
    row = next(r for r in plan["pairs"] if {r["a"], r["b"]} == {args.arm_a, args.arm_b})
    g = row["plans"]["difference"]
    m = g["seeds_needed"]
    print(f"{len(seeds)} seeds; whole study: difference {full['estimate']:+.5f} (95% CI {full['ci_low']:+.5f} to "
          f"{full['ci_high']:+.5f}, p={full['p']:.3g})")
    print(f"plan from pilot seeds {pilot}: detect {delta:.5f} with power {args.power} -> {m} seeds per arm "
          f"(pilot seed sd {np.sqrt(row['seed_var']):.5f}, case se {np.sqrt(row['case_var']):.5f})")
    rec = {"kind": "medtl.plan_check", "scope": args.scope, "runs": args.runs, "arms": [args.arm_a, args.arm_b], "metric": args.metric,
           "n_seeds": len(seeds), "whole_study": full, "difference": delta, "pilot_seeds": pilot, "plan": row,
           "planned_seeds": m}
    ok = False
    if m is not None and m <= len(seeds):
        rng = np.random.default_rng(args.seed)
        sign = np.sign(full["estimate"])
        hits = 0
        for _ in range(args.reps):
            sub = sorted(rng.choice(seeds, m, replace=False).tolist())
            r = diff_ci([pa[s] for s in sub], [pb[s] for s in sub], name, fraction=frac)
            hits += bool(r["p"] < args.alpha / args.tests and np.sign(r["estimate"]) == sign)
        reach = hits / args.reps
        ok = 0.7 <= reach <= 0.9
        rec.update(fraction_reaching=reach, reps=args.reps, mean_overlap=m / len(seeds))
        print(f"{args.reps} random subsets of {m} of the {len(seeds)} seeds (mean overlap {m / len(seeds):.2f}): "
              f"{reach:.3f} reach 'differs' in the study's direction ({'PASS' if ok else 'outside 0.7-0.9'})")
    else:
        print("the planned count exceeds the study's seeds: no subsampling check possible")
    if args.pilots:
        rec["random_pilots"] = _random_pilots(args, pa, pb, seeds, delta, name, frac, np.sign(full["estimate"]))
    rec["pass"] = ok
    if args.out:
        Path(args.out).write_text(json.dumps(rec, indent=1, default=float))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
