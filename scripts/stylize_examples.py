"""A picture of ``data.augment.stylize``: training images, their style partners, the scrambled image, the result.

    python scripts/stylize_examples.py --config configs/pneumoniamnist28.yaml --out reports/shape_shift/stylize_examples.png

Uses the epoch-0 plan of seed 0 with p = 1 (every image stylized), so the partners shown are the
ones training would use; images are named by their train-split index only.
"""
from __future__ import annotations

import argparse

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/pneumoniamnist28.yaml")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=6)
    a = ap.parse_args()
    from medtl.config import load_config
    from medtl.data import load_dataset
    from medtl.data.stylize import match_histograms, stylize_batch, stylize_plan
    from medtl.figures import new_figure, write_png

    cfg = load_config(a.config, [])
    bundle = load_dataset(cfg.data)
    train = bundle.splits["train"]
    images = torch.from_numpy(train.images).unsqueeze(1)
    plan = stylize_plan(len(images), 1.0, seed=0, epoch=0)
    window = cfg.data.augment.stylize_window
    idx = torch.arange(a.n)
    x = images[idx].float() / 255
    y = stylize_batch(x, idx, images, plan, window)
    # the scramble alone: the same plan with the image as its own style (the histogram map is then the identity)
    plan.partner[:a.n] = idx.numpy()
    scrambled = stylize_batch(x, idx, images, plan, window)
    partner = stylize_plan(len(images), 1.0, seed=0, epoch=0).partner
    assert torch.equal(match_histograms(scrambled[:1], x[:1]), scrambled[:1])
    fig = new_figure(2.0 * a.n, 8.4)
    for j in range(a.n):
        rows = [(x[j, 0], f"#{j} {bundle.classes[int(train.labels[j])]}"),
                (images[partner[j], 0].float() / 255, f"style #{partner[j]}"),
                (scrambled[j, 0], f"scrambled ({window:g} x side)"), (y[j, 0], "stylized")]
        for r, (img, title) in enumerate(rows):
            ax = fig.add_subplot(len(rows), a.n, r * a.n + j + 1)
            ax.imshow(img.numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.suptitle("stylize: pixels permuted within windows (texture gone, layout kept), then the partner's "
                 "intensity histogram", fontsize=8)
    fig.tight_layout()
    write_png(a.out, fig)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
