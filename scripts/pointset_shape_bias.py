"""Is a `sin` source backbone more shape-biased than an `in` one on its own fractal domain, read with
a point-set cue-conflict (silhouette of A filled with B's point pattern: medtl/pretrain/shape_check.py)
that is validated here on two models whose cue use is known by construction?

1. For each seed, `medtl pretrain` the `in` and `sin` recipes (and `sin` with the `fill` stylize,
   a positive control of this probe's own family) on builtin:fractaldb at 32 px.  Runs already in
   ``--out`` are reused (pretraining is deterministic; same commands as scripts/pretrain_shape_bias.py).
2. Controls: the same fractal classes rendered as *silhouettes only* (every training image is
   silhouette(x): no point pattern) and as *texture tiles only* (every training image is
   texture(x): no layout), written as image folders and pretrained with the `in` recipe.  By
   construction the first can only follow shape (expected score near 1), the second only
   texture (near 0).
3. Every model is probed on the fractal test split (200 images, 20 classes), and the recipes are
   compared over seeds (mean, t CI; paired t over seeds).

    python scripts/pointset_shape_bias.py --out runs/pretrain-shape --seeds 5 \
        --json reports/pretrain/shape_bias_pointset.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from medtl.io import json_safe, write_json_atomic  # noqa: E402
from medtl.pretrain import load_pretrain_config, pretrain  # noqa: E402
from medtl.pretrain.shape_check import DEFAULTS, pointset_shape_bias, silhouette, texture_tiles  # noqa: E402
from medtl.stats.compare import compare_pair, describe  # noqa: E402

ARMS = ("in", "sin", "sin-fill", "control-shape", "control-texture")
METRICS = ("unconditioned", "conditioned", "shape_only", "texture_only", "test_acc")


def _common(args, seed: int) -> list[str]:
    return [f"seed={seed}", f"pretrain.image_size={args.image_size}", f"pretrain.epochs={args.epochs}",
            f"train.num_threads={args.threads}", "train.precision=fp32"]


def _fractal(args) -> list[str]:
    return [f"pretrain.classes={args.classes}", f"pretrain.instances={args.instances}"]


def write_control(root: Path, kind: str, data: dict, classes: list[str], args) -> Path:
    """The fractal splits re-rendered as silhouettes or texture tiles, as ROOT/{train,test}/CLASS/*.png
    (val is held out of train by the loader); written once, atomically by folder rename."""
    from PIL import Image
    import torch

    if (root / ".complete").exists():
        return root
    tmp = root.with_name(root.name + ".tmp")
    for split in ("train", "test"):
        x, y = data[split]
        if kind == "shape":
            out = silhouette(torch.from_numpy(x).unsqueeze(1).float() / 255.0, DEFAULTS["cell_frac"])[:, 0].numpy()
        else:
            out = np.stack([texture_tiles(img, DEFAULTS["patch_frac"], np.random.default_rng([7, i, split == "test"]))
                            for i, img in enumerate(x)])
        for i, (img, lab) in enumerate(zip(out, y)):
            d = tmp / split / classes[lab]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray((img * 255).round().astype(np.uint8)).save(d / f"{split}{i:05d}.png")
    (tmp / ".complete").write_text("")
    tmp.rename(root)
    return root


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/pretrain-shape")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--control-seeds", type=int, default=3)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--instances", type=int, default=50)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--n-pairs", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import torch

    from medtl.data.fractaldb import class_names, generate
    from medtl.models.inference import load_finished, predict_proba

    torch.set_num_threads(args.threads)
    out_root = Path(args.out)
    data = generate(args.classes, {"train": args.instances, "test": 10}, args.image_size, seed=0)
    classes = class_names(args.classes)
    test_x, test_y = data["test"]
    rows: dict[str, dict[int, dict]] = {a: {} for a in ARMS}
    t0 = time.time()

    def probe(arm: str, seed: int, res: dict, stage: str) -> None:
        fm = load_finished(Path(res["out"]) / stage)
        assert list(fm.classes) == classes, (arm, fm.classes)
        r = pointset_shape_bias(lambda x: predict_proba(fm.model, x, fm.device, 512), test_x, test_y, classes,
                                n_pairs=args.n_pairs)
        rows[arm][seed] = {"unconditioned": r["unconditioned"]["shape_bias"],
                           "unconditioned_ci": [r["unconditioned"]["ci_low"], r["unconditioned"]["ci_high"]],
                           "follow_either_fraction": r["unconditioned"]["follow_either_fraction"],
                           "conditioned": r["conditioned"]["shape_bias"], "reason": r["conditioned"]["reason"],
                           "n_qualified": r["n_qualified"], "shape_only": r["shape_only"]["balanced_acc"],
                           "texture_only": r["texture_only"]["balanced_acc"], "test_acc": res["test_acc"],
                           "sha256": res["sha256"], "run": str(Path(res["out"]) / stage)}
        v = rows[arm][seed]
        print(f"{arm:15s} seed {seed}: own test acc {v['test_acc']:.3f}; shape-only {v['shape_only']:.2f}, "
              f"texture-only {v['texture_only']:.2f}; shape fraction {v['unconditioned']:.3f} (all pairs, "
              f"{v['follow_either_fraction']:.2f} follow a source), conditioned {v['conditioned']}  "
              f"[{time.time() - t0:.0f}s]", flush=True)

    def run_pretrain(sets: list[str], out: Path) -> dict:
        res = pretrain(load_pretrain_config(None, sets), out, progress=False)
        return {"out": str(out), "test_acc": res["stages"][-1]["test_acc"], "sha256": res["sha256"]}

    for seed in range(args.seeds):
        for arm, recipe, method in (("in", "in", "scramble"), ("sin", "sin", "scramble"), ("sin-fill", "sin", "fill")):
            tag = {"in": "in", "sin": "sin", "sin-fill": "sin-fill"}[arm]
            sets = _common(args, seed) + _fractal(args) + [
                f"pretrain.recipe={recipe}", f"pretrain.name=fdb{args.classes}-{tag}-s{seed}",
                f"data.augment.stylize_method={method}"]
            probe(arm, seed, run_pretrain(sets, out_root / tag / f"seed-{seed}"), recipe)
    for kind in ("shape", "texture"):
        arm = f"control-{kind}"
        folder = write_control(out_root / f"{arm}-data", kind, data, classes, args)
        for seed in range(args.control_seeds):
            sets = _common(args, seed) + [f"pretrain.source={folder.resolve()}", "pretrain.recipe=in",
                                          f"pretrain.name=fdb{args.classes}-{arm}-s{seed}"]
            probe(arm, seed, run_pretrain(sets, out_root / arm / f"seed-{seed}"), "in")

    summary: dict = {}
    for key in METRICS:
        vals = {a: {s: v[key] for s, v in rows[a].items() if v[key] is not None} for a in ARMS}
        summary[key] = {"by_arm": {a: describe(list(v.values())) | {"seeds": sorted(v)} for a, v in vals.items()},
                        "sin_minus_in": compare_pair(vals["sin"], vals["in"]),
                        "sin_fill_minus_in": compare_pair(vals["sin-fill"], vals["in"])}
    result = json_safe({"kind": "medtl.pointset_shape_bias_check", "args": vars(args), "probe": DEFAULTS,
                        "runs": rows, "summary": summary, "wall_time_s": round(time.time() - t0, 1)})
    for key in METRICS:
        s = summary[key]
        means = ", ".join(f"{a} {s['by_arm'][a]['mean']:.3f}" for a in ARMS)
        d = s["sin_minus_in"]
        print(f"{key}: {means}; sin - in {d.get('diff', float('nan')):+.3f} (95% CI "
              f"{d.get('diff_ci_low', float('nan')):+.3f} to {d.get('diff_ci_high', float('nan')):+.3f}), "
              f"p={d.get('p', float('nan')):.3g}, n={d.get('n_pairs')}")
    if args.json:
        write_json_atomic(Path(args.json), result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
