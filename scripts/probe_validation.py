"""Validate the shape-bias and shortcut probes on models whose cue use is known by construction.

    python scripts/probe_validation.py shape runs/shape-validation-pmnist [--expect shape>texture]
    python scripts/probe_validation.py shortcut runs/shortcut-validation [--n-images 128]
    ... [--out reports/probe_validation/NAME.json]

shape: probes every run of the sweep (``medtl probe shape-bias``, cached per run), and per arm
gives the runs whose score is interpretable, the mean shape bias with its t interval over those
seeds, the per-run scores with their CIs and both cue-only balanced accuracies.  Passes when the
arm named first in --expect has a higher mean than the second with non-overlapping intervals.

shortcut: probes every run (``medtl probe shortcut``) and counts flagged / not flagged /
undetermined seeds per arm.  Passes when every seed of ``marker_label`` is flagged and no seed of
``marker_random`` is.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medtl.io import json_safe  # noqa: E402
from medtl.runs import discover_arms  # noqa: E402
from medtl.stats.compare import describe  # noqa: E402


def _shape(arms, args) -> dict:
    from medtl.probes.shape_bias import shape_bias_probe

    out = {}
    for arm, a in arms.items():
        rows = []
        for seed, d in sorted(a.run_dirs.items()):
            r = shape_bias_probe(d, plots=False, **({"sigma": args.sigma} if args.sigma else {}))
            rows.append({"seed": seed, "interpretable": r.get("interpretable"), "shape_bias": r.get("shape_bias"),
                         "ci_low": r.get("ci_low"), "ci_high": r.get("ci_high"), "reason": r.get("reason"),
                         "shape_only_bacc": (r.get("shape_only") or {}).get("balanced_acc"),
                         "texture_only_bacc": (r.get("texture_only") or {}).get("balanced_acc"),
                         "n_qualified": r.get("n_qualified")})
        vals = [x["shape_bias"] for x in rows if x["interpretable"]]
        out[arm] = {"runs": rows, "n_interpretable": len(vals), "summary": describe(vals)}
        s = out[arm]["summary"]
        print(f"{arm}: {len(vals)}/{len(rows)} interpretable; shape bias {s['mean']:.3f} "
              f"(95% CI over seeds {s['ci_low']:.3f}-{s['ci_high']:.3f}); texture-only bacc "
              f"{np.mean([x['texture_only_bacc'] for x in rows]):.3f}, shape-only "
              f"{np.mean([x['shape_only_bacc'] for x in rows]):.3f}")
    hi, lo = args.expect.split(">")
    a, b = out[hi]["summary"], out[lo]["summary"]
    ok = bool(a["mean"] > b["mean"] and a["ci_low"] > b["ci_high"])
    print(f"expect {hi} > {lo} with non-overlapping CIs: {'PASS' if ok else 'FAIL'}")
    return {"arms": out, "expect": args.expect, "pass": ok}


def _shortcut(arms, args) -> dict:
    from medtl.probes.shortcut import shortcut_probe

    out = {}
    for arm, a in arms.items():
        rows = []
        for seed, d in sorted(a.run_dirs.items()):
            r = shortcut_probe(d, n_images=args.n_images, plots=False)
            rows.append({"seed": seed, "flag_state": r.get("flag_state"), "flagged": r.get("flagged"),
                         "retention": r.get("masked_retention"), "ci_low": r.get("retention_ci_low"),
                         "ci_high": r.get("retention_ci_high"), "auc_full": r["variants"]["full"]["auc"],
                         "auc_lung_masked": r["variants"]["lung_masked"]["auc"],
                         "auc_border_only": r["variants"]["border_only"]["auc"],
                         "mask_fallback": r.get("mask_fallback"), "n_images": r.get("n_images")})
        states = [x["flag_state"] for x in rows]
        out[arm] = {"runs": rows, "counts": {s: states.count(s) for s in ("flagged", "not flagged", "undetermined")}}
        print(f"{arm}: {out[arm]['counts']}; retention " + ", ".join(
            f"{x['retention']:.2f} [{x['ci_low']:.2f}, {x['ci_high']:.2f}]" for x in rows))
    lab, ran = out.get("marker_label"), out.get("marker_random")
    ok = bool(lab and ran and lab["counts"]["flagged"] == len(lab["runs"]) and ran["counts"]["flagged"] == 0)
    print(f"marker_label flagged in every seed and marker_random in none: {'PASS' if ok else 'FAIL'}")
    return {"arms": out, "pass": ok}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("probe", choices=["shape", "shortcut"])
    ap.add_argument("runs")
    ap.add_argument("--expect", default="shape>texture")
    ap.add_argument("--sigma", type=float, default=None)
    ap.add_argument("--n-images", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    arms = discover_arms([args.runs])
    res = _shape(arms, args) if args.probe == "shape" else _shortcut(arms, args)
    res.update(runs=args.runs, probe=args.probe)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(json_safe(res), indent=1))
    return 0 if res["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
