"""Side-by-side figure for reports/sr.md: what the network sees with each preprocessing.

Row 1-3: PneumoniaMNIST test images at 28 px (nearest-neighbour enlarged for display), Pillow
bicubic x4 (112 px) and the learned SR model x4 (112 px).  Row 4-6: a Kermany test image at
224 px (HR), its 56 px degradation upscaled x4 with Pillow bicubic and with the model (crops).

    python scripts/sr_figure.py --model runs/sr/kermany_x4.pt --out reports/sr/sr_examples.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="runs/sr/kermany_x4.pt")
    ap.add_argument("--out", default="reports/sr/sr_examples.png")
    ap.add_argument("--n", type=int, default=4)
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.metrics import peak_signal_noise_ratio as psnr

    from medtl.config import DataConfig
    from medtl.data import load_dataset
    from medtl.sr import degrade, load_sr_model, upscale_learned, upscale_resize

    model, meta = load_sr_model(args.model)
    s = int(meta["arch"]["scale"])
    pm = load_dataset(DataConfig(path=str(SHARED / "pneumoniamnist" / "pneumoniamnist_reconstructed.npz"),
                                 image_size=28)).splits["test"]
    km = load_dataset(DataConfig(path=str(SHARED / "kermany_cxr224"), image_size=224)).splits["test"]
    rng = np.random.default_rng(0)
    pi = np.sort(rng.choice(len(pm), args.n, replace=False))
    ki = np.sort(rng.choice(len(km), args.n, replace=False))
    low = pm.images[pi]
    rows = [("PneumoniaMNIST 28 px", np.kron(low, np.ones((s, s), np.uint8))),
            (f"bicubic x{s} (112 px)", upscale_resize(low, (28 * s, 28 * s), "bicubic")),
            (f"learned SR x{s} (112 px)", upscale_learned(low, model))]
    hr = km.images[ki]
    lr = degrade(hr, s)
    bic = upscale_resize(lr, (224, 224), "bicubic")
    sr = upscale_learned(lr, model)
    crop = (slice(56, 168), slice(56, 168))
    rows += [("Kermany 224 px (HR), centre crop", hr[:, crop[0], crop[1]]),
             ("56 px -> bicubic x4", bic[:, crop[0], crop[1]]),
             ("56 px -> learned SR x4", sr[:, crop[0], crop[1]])]
    fig, axes = plt.subplots(len(rows), args.n, figsize=(2.2 * args.n, 2.3 * len(rows)))
    for r, (name, imgs) in enumerate(rows):
        for c in range(args.n):
            ax = axes[r, c]
            ax.imshow(imgs[c], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r >= 4:
                ax.set_title(f"PSNR {psnr(hr[c], (bic if r == 4 else sr)[c], data_range=255):.1f} dB", fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
