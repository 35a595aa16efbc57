"""Is a `sin` source backbone more shape-biased than an `in` one, on the source domain itself?

Pretrains ResNet-18 on builtin:fractaldb with the `in` and `sin` recipes for each seed (medtl
pretrain, deterministic), then runs the shape-bias probe (cue-conflict images: the low-pass shape
of one test image plus the high-pass texture of another's; medtl/probes/shape_bias.py) on each
pretrain run's own test split, and compares the recipes over seeds (t CI, paired t over seeds:
medtl.stats.compare).  The stylize that makes `sin` (windowed pixel permutation + histogram match)
is of another transform family than the probe's low-/high-pass split.

    python scripts/pretrain_shape_bias.py --out runs/pretrain-shape --seeds 5 \
        --json reports/pretrain/shape_bias_source.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medtl.io import json_safe, write_json_atomic  # noqa: E402
from medtl.pretrain import load_pretrain_config, pretrain  # noqa: E402
from medtl.probes.shape_bias import shape_bias_probe  # noqa: E402
from medtl.stats.compare import compare_pair, describe  # noqa: E402

RECIPES = ("in", "sin")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/pretrain-shape")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--source", default="builtin:fractaldb",
                    help="pretrain.source: builtin:fractaldb, or a labelled image folder (ROOT/CLASS/* or "
                         "ROOT/{train,test}/CLASS/*, e.g. a natural-image set, where the probe's frequency split is valid)")
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--instances", type=int, default=50)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--sigma", type=float, default=0.08, help="shape-bias probe low-pass sigma (fraction of side)")
    ap.add_argument("--n-pairs", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stylize-method", default="scramble", choices=["scramble", "fill"],
                    help="the sin recipe's stylize (data.augment.stylize_method); in is the same either way")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rows: dict[str, dict[int, dict]] = {r: {} for r in RECIPES}
    t0 = time.time()
    for seed in range(args.seeds):
        for recipe in RECIPES:
            tag = recipe if recipe == "in" or args.stylize_method == "scramble" else f"{recipe}-{args.stylize_method}"
            fractal = args.source == "builtin:fractaldb"
            prefix = f"fdb{args.classes}" if fractal else Path(args.source).name
            sets = [f"seed={seed}", f"pretrain.recipe={recipe}", f"pretrain.name={prefix}-{tag}-s{seed}",
                    f"data.augment.stylize_method={args.stylize_method if recipe != 'in' else 'scramble'}",
                    f"pretrain.source={args.source}",
                    f"pretrain.image_size={args.image_size}", f"pretrain.epochs={args.epochs}",
                    f"train.num_threads={args.threads}", "train.precision=fp32"]
            if fractal:
                sets += [f"pretrain.classes={args.classes}", f"pretrain.instances={args.instances}"]
            out = Path(args.out) / tag / f"seed-{seed}"
            res = pretrain(load_pretrain_config(None, sets), out, progress=False)
            sb = shape_bias_probe(out / recipe, n_pairs=args.n_pairs, sigma=args.sigma, seed=0, plots=False)
            rows[recipe][seed] = {"shape_bias": sb.get("shape_bias"), "interpretable": sb.get("interpretable"),
                                  "reason": sb.get("reason"), "ci_low": sb.get("ci_low"), "ci_high": sb.get("ci_high"),
                                  "shape_only_bacc": (sb.get("shape_only") or {}).get("balanced_acc"),
                                  "texture_only_bacc": (sb.get("texture_only") or {}).get("balanced_acc"),
                                  "n_qualified": sb.get("n_qualified"), "test_acc": res["stages"][-1]["test_acc"],
                                  "sha256": res["sha256"]}
            r = rows[recipe][seed]
            print(f"seed {seed} {recipe:3s}: test acc {r['test_acc']:.3f}; shape bias {r['shape_bias']} "
                  f"(interpretable {r['interpretable']}); shape-only bacc {r['shape_only_bacc']}, texture-only "
                  f"{r['texture_only_bacc']}  [{time.time() - t0:.0f}s]", flush=True)
    summary = {}
    for key in ("shape_bias", "test_acc", "shape_only_bacc", "texture_only_bacc"):
        vals = {rc: {s: v[key] for s, v in rows[rc].items() if v[key] is not None and
                     (key != "shape_bias" or v["interpretable"])} for rc in RECIPES}
        summary[key] = {"by_recipe": {rc: describe(list(v.values())) | {"seeds": sorted(v)} for rc, v in vals.items()},
                        "sin_minus_in": compare_pair(vals["sin"], vals["in"])}
    out = json_safe({"kind": "medtl.pretrain_shape_bias", "args": vars(args), "runs": rows, "summary": summary,
                     "wall_time_s": round(time.time() - t0, 1)})
    for key, s in summary.items():
        d = s["sin_minus_in"]
        print(f"{key}: in {s['by_recipe']['in']['mean']:.3f}, sin {s['by_recipe']['sin']['mean']:.3f}; sin - in "
              f"{d.get('diff', float('nan')):+.3f} (95% CI {d.get('diff_ci_low', float('nan')):+.3f} to "
              f"{d.get('diff_ci_high', float('nan')):+.3f}), p={d.get('p', float('nan')):.3g}, n={d.get('n_pairs')}")
    if args.json:
        write_json_atomic(Path(args.json), out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
