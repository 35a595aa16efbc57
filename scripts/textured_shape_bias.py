"""Is a `sin` source backbone more shape-biased than an `in` one on a source where texture predicts
the class too, as in natural images?  builtin:fractaldb with ``fractal_texture: class``: every class
is an attractor's figure *and* its own stripe texture (medtl/data/fractaldb.py).  The cue-conflict
images are rendered by the same generator: A's figure over B's stripes
(medtl/pretrain/shape_check.py: textured_shape_bias); the `sin` recipe's stylize (a within-window
pixel permutation and a histogram match) is another transform family.

1. For each seed, `medtl pretrain` the `in` and `sin` recipes on textured fractals at 32 px.
2. Controls of known cue use, pretrained with the `in` recipe on image folders: *shape only*
   (every image is its figure with no stripes) and *texture only* (every image is its class's
   stripes over the whole frame, no figure).  Expected: near 1 and near 0.
3. Every model is probed on the textured fractals' test split (200 images, 20 classes); the recipes
   are compared over seeds (mean, t CI; paired t over seeds).

    python scripts/textured_shape_bias.py --out runs/pretrain-textured --seeds 5 \
        --json reports/pretrain/shape_bias_textured.json
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
from medtl.pretrain.shape_check import textured_cues, textured_shape_bias  # noqa: E402
from medtl.stats.compare import compare_pair, describe  # noqa: E402

ARMS = ("in", "sin", "control-shape", "control-texture")
METRICS = ("unconditioned", "conditioned", "shape_only", "texture_only", "test_acc")


def _common(args, seed: int) -> list[str]:
    return [f"seed={seed}", f"pretrain.image_size={args.image_size}", f"pretrain.epochs={args.epochs}",
            f"train.num_threads={args.threads}", "train.precision=fp32"]


def _fractal(args) -> list[str]:
    return [f"pretrain.classes={args.classes}", f"pretrain.instances={args.instances}",
            "pretrain.fractal_texture=class"]


def write_control(root: Path, kind: str, points: dict, classes: list[str]) -> Path:
    """The textured fractals' train and test splits with one cue only (``shape``: the figure, no
    stripes; ``texture``: the class's stripes over the whole frame, no figure), as
    ROOT/{train,test}/CLASS/*.png (val is held out of train by the loader); written once,
    atomically by folder rename."""
    from PIL import Image

    if (root / ".complete").exists():
        return root
    tmp = root.with_name(root.name + ".tmp")
    for split in ("train", "test"):
        x, y = points[split]
        no_pairs = np.zeros((0, 2), np.int64)
        shape_x, texture_x, _ = textured_cues(x, y, no_pairs, seed=7 + (split == "test"))
        out = (shape_x if kind == "shape" else texture_x)[:, 0].numpy()
        for i, (img, lab) in enumerate(zip(out, y)):
            d = tmp / split / classes[lab]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray((img * 255).round().astype(np.uint8)).save(d / f"{split}{i:05d}.png")
    (tmp / ".complete").write_text("")
    tmp.rename(root)
    return root


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/pretrain-textured")
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
    points = generate(args.classes, {"train": args.instances, "test": 10}, args.image_size, seed=0)
    classes = class_names(args.classes)
    test_pts, test_y = points["test"]
    rows: dict[str, dict[int, dict]] = {a: {} for a in ARMS}
    t0 = time.time()

    def probe(arm: str, seed: int, res: dict, stage: str) -> None:
        fm = load_finished(Path(res["out"]) / stage)
        assert list(fm.classes) == classes, (arm, fm.classes)
        r = textured_shape_bias(lambda x: predict_proba(fm.model, x, fm.device, 512), test_pts, test_y, classes,
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
        for arm, recipe in (("in", "in"), ("sin", "sin")):
            tag = arm
            sets = _common(args, seed) + _fractal(args) + [
                f"pretrain.recipe={recipe}", f"pretrain.name=tfdb{args.classes}-{tag}-s{seed}"]
            probe(arm, seed, run_pretrain(sets, out_root / tag / f"seed-{seed}"), recipe)
    for kind in ("shape", "texture"):
        arm = f"control-{kind}"
        folder = write_control(out_root / f"{arm}-data", kind, points, classes)
        for seed in range(args.control_seeds):
            # texture-only images of one class differ only in phase, so a few repeat byte for byte
            # across splits: drop those from train/val (the published test split stays whole)
            sets = _common(args, seed) + [f"pretrain.source={folder.resolve()}", "pretrain.recipe=in",
                                          "data.on_leak=drop_train",
                                          f"pretrain.name=tfdb{args.classes}-{arm}-s{seed}"]
            probe(arm, seed, run_pretrain(sets, out_root / arm / f"seed-{seed}"), "in")

    summary: dict = {}
    for key in METRICS:
        vals = {a: {s: v[key] for s, v in rows[a].items() if v[key] is not None} for a in ARMS}
        summary[key] = {"by_arm": {a: describe(list(v.values())) | {"seeds": sorted(v)} for a, v in vals.items()},
                        "sin_minus_in": compare_pair(vals["sin"], vals["in"]),
                        "control_shape_minus_in": compare_pair(vals["control-shape"], vals["in"])}
    result = json_safe({"kind": "medtl.textured_shape_bias_check", "args": vars(args),
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
