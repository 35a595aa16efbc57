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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from _cue_check import Check, parse_args, write_folder  # noqa: E402
from medtl.pretrain.shape_check import DEFAULTS, pointset_shape_bias, silhouette, texture_tiles  # noqa: E402

ARMS = ("in", "sin", "sin-fill", "control-shape", "control-texture")


def control_images(kind: str, x: np.ndarray, split: str) -> np.ndarray:
    """Float (n, H, W): the fractals ``x`` as silhouettes (``shape``) or texture tiles (``texture``)."""
    import torch

    if kind == "shape":
        return silhouette(torch.from_numpy(x).unsqueeze(1).float() / 255.0, DEFAULTS["cell_frac"])[:, 0].numpy()
    return np.stack([texture_tiles(img, DEFAULTS["patch_frac"], np.random.default_rng([7, i, split == "test"]))
                     for i, img in enumerate(x)])


def main() -> int:
    from medtl.data.fractaldb import class_names, generate

    args = parse_args("runs/pretrain-shape")
    data = generate(args.classes, {"train": args.instances, "test": 10}, args.image_size, seed=0)
    classes = class_names(args.classes)
    test_x, test_y = data["test"]
    check = Check(args, ARMS, classes,
                  lambda proba: pointset_shape_bias(proba, test_x, test_y, classes, n_pairs=args.n_pairs))
    for seed in range(args.seeds):
        for arm, recipe, method in (("in", "in", "scramble"), ("sin", "sin", "scramble"), ("sin-fill", "sin", "fill")):
            check.run(arm, seed, check.fractal() + [f"pretrain.recipe={recipe}",
                                                    f"pretrain.name=fdb{args.classes}-{arm}-s{seed}",
                                                    f"data.augment.stylize_method={method}"], arm, recipe)
    for kind in ("shape", "texture"):
        arm = f"control-{kind}"
        folder = write_folder(check.out / f"{arm}-data", lambda: {
            s: (control_images(kind, data[s][0], s), data[s][1]) for s in ("train", "test")}, classes)
        for seed in range(args.control_seeds):
            check.run(arm, seed, [f"pretrain.source={folder.resolve()}", "pretrain.recipe=in",
                                  f"pretrain.name=fdb{args.classes}-{arm}-s{seed}"], arm, "in")
    return check.finish("medtl.pointset_shape_bias_check",
                        {"sin_minus_in": ("sin", "in"), "sin_fill_minus_in": ("sin-fill", "in")}, probe=DEFAULTS)


if __name__ == "__main__":
    raise SystemExit(main())
