"""A multi-label chest X-ray fixture on real radiographs, in the NIH ChestX-ray14 manifest layout,
whose labels are known by construction (issue 23: a multi-label run through the whole pipeline).

Images: PneumoniaMNIST (28 px, real pediatric chest X-rays; ../shared/data/pneumoniamnist), its
official train/val/test splits.  Three labels, written as NIH writes them ("Finding Labels" joined
by '|', "No Finding" for none):

* ``Pneumonia``: the dataset's own label (real, as annotated);
* ``Nodule``: a faint round opacity planted at a random place inside the central lung region
  (a Gaussian bump of +``--nodule-contrast`` grey levels, σ 1.2 px) on a random 30% of images;
* ``Support Devices``: a burned-in corner marker (medtl.data.plant's lead marker) on a random 25%.

The planted labels are drawn independently of the pneumonia label and of each other, from
``--seed`` and the image index only, so every run of the fixture gives the same bytes.  Each image
is its own patient (PneumoniaMNIST names none; the manifest says so with a "Patient ID" per image).

    python scripts/make_multilabel_fixture.py --out runs/multilabel-fixture
    # then: medtl finetune --set data.path=runs/multilabel-fixture/Data_Entry.csv ...
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

LABELS = ("Pneumonia", "Nodule", "Support Devices")


def plant_nodule(img: np.ndarray, rng: np.random.Generator, contrast: float) -> np.ndarray:
    h, w = img.shape
    cy, cx = rng.uniform(0.35 * h, 0.7 * h), rng.uniform(0.25 * w, 0.75 * w)
    yy, xx = np.mgrid[0:h, 0:w]
    bump = contrast * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.2 ** 2))
    return np.clip(img.astype(np.float64) + bump, 0, 255).round().astype(np.uint8)


def main() -> int:
    from PIL import Image

    from medtl.data.plant import burn_marker
    from medtl.io import atomic_path

    ap = argparse.ArgumentParser()
    ap.add_argument("--npz", default=os.environ.get("MEDTL_DATASET_MEDMNIST_PNEUMONIAMNIST",
                                                    "../shared/data/pneumoniamnist/pneumoniamnist_reconstructed.npz"))
    ap.add_argument("--out", default="runs/multilabel-fixture")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nodule-contrast", type=float, default=45.0)
    args = ap.parse_args()
    npz = Path(args.npz)
    if not npz.is_file():
        print(f"error: {npz}: PneumoniaMNIST npz not found (set --npz or MEDTL_DATASET_MEDMNIST_PNEUMONIAMNIST)",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    data = np.load(npz)
    rows, k = [], 0
    counts = {s: dict.fromkeys(LABELS, 0) | {"n": 0} for s in ("train", "val", "test")}
    for split in ("train", "val", "test"):
        images, labels = data[f"{split}_images"], np.asarray(data[f"{split}_labels"]).ravel()
        for img, y in zip(images, labels):
            rng = np.random.default_rng([args.seed, k])
            nodule, device = rng.random() < 0.30, rng.random() < 0.25
            if nodule:
                img = plant_nodule(img, rng, args.nodule_contrast)
            if device:
                img = burn_marker(img[None], 0.12, 255)[0]
            on = [name for name, yes in zip(LABELS, (bool(y), nodule, device)) if yes]
            name = f"{k:06d}.png"
            Image.fromarray(img).save(out / "images" / name)
            rows.append({"Image Index": f"images/{name}", "Finding Labels": "|".join(on) or "No Finding",
                         "Patient ID": f"p{k:06d}", "split": split})
            counts[split]["n"] += 1
            for lab in on:
                counts[split][lab] += 1
            k += 1
    with atomic_path(out / "Data_Entry.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    for split, c in counts.items():
        print(f"{split}: {c['n']} images; " + ", ".join(f"{lab} {c[lab]}" for lab in LABELS))
    print(f"wrote {out / 'Data_Entry.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
