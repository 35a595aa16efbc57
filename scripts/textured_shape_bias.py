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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from _cue_check import Check, parse_args, write_folder  # noqa: E402
from medtl.pretrain.shape_check import textured_cues, textured_shape_bias  # noqa: E402

ARMS = ("in", "sin", "control-shape", "control-texture")


def control_images(kind: str, points: np.ndarray, labels: np.ndarray, split: str) -> np.ndarray:
    """Float (n, H, W): the textured fractals with one cue only (``shape``: the figure, no stripes;
    ``texture``: the class's stripes over the whole frame, no figure)."""
    shape_x, texture_x, _ = textured_cues(points, labels, np.zeros((0, 2), np.int64), seed=7 + (split == "test"))
    return (shape_x if kind == "shape" else texture_x)[:, 0].numpy()


def main() -> int:
    from medtl.data.fractaldb import class_names, generate

    args = parse_args("runs/pretrain-textured")
    points = generate(args.classes, {"train": args.instances, "test": 10}, args.image_size, seed=0)
    classes = class_names(args.classes)
    test_pts, test_y = points["test"]
    check = Check(args, ARMS, classes,
                  lambda proba: textured_shape_bias(proba, test_pts, test_y, classes, n_pairs=args.n_pairs))
    for seed in range(args.seeds):
        for arm in ("in", "sin"):
            check.run(arm, seed, check.fractal() + ["pretrain.fractal_texture=class", f"pretrain.recipe={arm}",
                                                    f"pretrain.name=tfdb{args.classes}-{arm}-s{seed}"], arm, arm)
    for kind in ("shape", "texture"):
        arm = f"control-{kind}"
        folder = write_folder(check.out / f"{arm}-data", lambda: {
            s: (control_images(kind, *points[s], s), points[s][1]) for s in ("train", "test")}, classes)
        for seed in range(args.control_seeds):
            # texture-only images of one class differ only in phase, so a few repeat byte for byte
            # across splits: drop those from train/val (the published test split stays whole)
            check.run(arm, seed, [f"pretrain.source={folder.resolve()}", "pretrain.recipe=in",
                                  "data.on_leak=drop_train", f"pretrain.name=tfdb{args.classes}-{arm}-s{seed}"],
                      arm, "in")
    return check.finish("medtl.textured_shape_bias_check",
                        {"sin_minus_in": ("sin", "in"), "control_shape_minus_in": ("control-shape", "in")})


if __name__ == "__main__":
    raise SystemExit(main())
