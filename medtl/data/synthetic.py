"""An embedded, procedurally generated chest-radiograph-like dataset ("builtin:synthetic").

Each image is a deterministic function of (split, index, image_size): anatomy is drawn in
resolution-independent coordinates (u, v in [-1, 1], v pointing down), so the same scene is
rendered at any size.  Two images share one synthetic patient ("synth-<k>", same body
shape, different pose/exposure).  Class 1 ("opacity") adds 1-3 faint, patchy, blurred
consolidations inside a lung field whose contrast ranges down to near-invisible; both
classes carry confounders (normal-variant calcified spots, smooth round overlap
shadows), so a classifier must learn texture/shape rather than "anything bright".
Everything is vectorised over the batch (rendered in chunks).
"""
from __future__ import annotations

import numpy as np

GENERATOR_VERSION = 3
CLASSES = ["normal", "opacity"]
NAME = "synthetic-cxr (SYNTHETIC)"
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
_PATIENT_OFFSET = 1_000_000  # patient ids never repeat across splits
_CHUNK = 256
_N_LESION, _N_SPOT, _N_RIB, _N_WAVE = 3, 3, 10, 4


def _rng_image(split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([GENERATOR_VERSION, 11, _SPLIT_CODE[split], int(index)])


def _rng_patient(k: int) -> np.random.Generator:
    return np.random.default_rng([GENERATOR_VERSION, 23, int(k)])


def patient_index(split: str, index: int) -> int:
    return _SPLIT_CODE[split] * _PATIENT_OFFSET + int(index) // 2


def _label(rng: np.random.Generator) -> int:
    return int(rng.random() < 0.5)  # the first draw of every image stream


def labels_and_patients(split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and patient ids without rendering (for `check`)."""
    labels = np.array([_label(_rng_image(split, i)) for i in range(n)], dtype=np.int64)
    patients = np.array([f"synth-{patient_index(split, i)}" for i in range(n)], dtype=object)
    return labels, patients


def _params(split: str, indices: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """Draw every random number of every image from its own seeded stream."""
    rows: list[dict] = []
    for i in indices:
        r = _rng_image(split, int(i))
        label = _label(r)
        p = _rng_patient(patient_index(split, int(i)))
        d = {
            "label": label,
            # patient anatomy
            "body_w": p.uniform(0.78, 0.93), "body_h": p.uniform(1.0, 1.25), "body_cy": p.uniform(0.1, 0.25),
            "lung_w": p.uniform(0.26, 0.32), "lung_h": p.uniform(0.55, 0.68), "lung_dx": p.uniform(0.33, 0.40),
            "lung_cy": p.uniform(-0.12, 0.0), "heart_w": p.uniform(0.24, 0.32), "heart_h": p.uniform(0.2, 0.27),
            "heart_dx": p.uniform(0.08, 0.16), "rib_space": p.uniform(0.13, 0.17), "rib_k": p.uniform(0.6, 1.1),
            "tissue": p.uniform(0.5, 0.62), "lung_dark": p.uniform(0.26, 0.36),
            # pose and exposure of this image
            "rot": np.deg2rad(r.uniform(-7, 7)), "scale": r.uniform(0.86, 1.1),
            "tx": r.uniform(-0.08, 0.08), "ty": r.uniform(-0.08, 0.08),
            "gamma": np.exp(r.uniform(np.log(0.7), np.log(1.4))), "contrast": r.uniform(0.8, 1.15),
            "offset": r.uniform(-0.06, 0.06), "noise": r.uniform(0.012, 0.045),
            "rib_amp": r.uniform(0.05, 0.12), "rib_th": r.uniform(0.016, 0.026),
        }
        # lesions (class 1 only; slots unused otherwise): position inside a lung, patchy texture
        n_les = int(r.choice([1, 2, 3], p=[0.55, 0.3, 0.15])) if label else 0
        for j in range(_N_LESION):
            side = r.choice([-1.0, 1.0])
            ang, rad = r.uniform(0, 2 * np.pi), np.sqrt(r.uniform(0, 1)) * 0.7
            d[f"les{j}_side"] = side
            d[f"les{j}_x"], d[f"les{j}_y"] = rad * np.cos(ang), rad * np.sin(ang)
            d[f"les{j}_r"] = r.uniform(0.12, 0.32)
            d[f"les{j}_ecc"] = r.uniform(0.6, 1.4)
            # contrast log-uniform from near-invisible to clearly visible
            d[f"les{j}_amp"] = np.exp(r.uniform(np.log(0.06), np.log(0.5))) if j < n_les else 0.0
            for w in range(_N_WAVE):
                f, th = r.uniform(9, 26), r.uniform(0, np.pi)
                d[f"les{j}_fx{w}"], d[f"les{j}_fy{w}"] = f * np.cos(th), f * np.sin(th)
                d[f"les{j}_ph{w}"] = r.uniform(0, 2 * np.pi)
        # confounders in both classes: small calcified spots and one smooth round shadow
        n_spot = int(r.choice([0, 1, 2, 3], p=[0.35, 0.3, 0.2, 0.15]))
        for j in range(_N_SPOT):
            d[f"spot{j}_side"] = r.choice([-1.0, 1.0])
            ang, rad = r.uniform(0, 2 * np.pi), np.sqrt(r.uniform(0, 1)) * 0.8
            d[f"spot{j}_x"], d[f"spot{j}_y"] = rad * np.cos(ang), rad * np.sin(ang)
            d[f"spot{j}_r"] = r.uniform(0.015, 0.04)
            d[f"spot{j}_amp"] = r.uniform(0.05, 0.2) if j < n_spot else 0.0
        d["blob_side"] = r.choice([-1.0, 1.0])
        ang, rad = r.uniform(0, 2 * np.pi), np.sqrt(r.uniform(0, 1)) * 0.6
        d["blob_x"], d["blob_y"] = rad * np.cos(ang), rad * np.sin(ang)
        d["blob_r"] = r.uniform(0.08, 0.18)
        d["blob_amp"] = r.uniform(0.02, 0.08) if r.random() < 0.5 else 0.0
        d["noise_field"] = r.standard_normal((size, size), dtype=np.float32)
        rows.append(d)
    return {k: np.array([row[k] for row in rows]) for k in rows[0]}


def _soft(x: np.ndarray, width: float) -> np.ndarray:
    """Smooth step: ~1 where x > 0, ~0 where x < 0."""
    return 0.5 * (1.0 + np.tanh(x / width))


def _render(P: dict[str, np.ndarray], size: int) -> np.ndarray:
    c = lambda k: P[k].astype(np.float32)[:, None, None]  # noqa: E731  (N,1,1) for broadcasting
    g = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    V, U = np.meshgrid(g, g, indexing="ij")
    U, V = U[None], V[None]
    # pose: anatomical coordinates (u, v) of each pixel
    cos, sin, s = np.cos(c("rot")), np.sin(c("rot")), c("scale")
    du, dv = U - c("tx"), V - c("ty")
    u = (cos * du + sin * dv) / s
    v = (-sin * du + cos * dv) / s
    au = np.abs(u)

    img = np.full(u.shape, 0.04, np.float32)
    body = _soft(1 - np.abs(u / c("body_w")) ** 3 - ((v - c("body_cy")) / c("body_h")) ** 2, 0.06)
    img += (c("tissue") - 0.04) * body * (1 - 0.15 * np.clip(v, -1, 1))  # thicker toward abdomen
    # lungs: two ellipses; q < 1 inside; dark with a vertical gradient
    lung_q = []
    for side in (-1.0, 1.0):
        # narrower at the apex, wider at the base
        width = c("lung_w") * (0.8 + 0.25 * np.clip((v - c("lung_cy")) / c("lung_h"), -1, 1))
        q = ((u - side * c("lung_dx")) / width) ** 2 + ((v - c("lung_cy")) / c("lung_h")) ** 2
        lung_q.append(q)
    lungs = np.maximum(_soft(1 - lung_q[0], 0.12), _soft(1 - lung_q[1], 0.12)) * body
    img -= c("lung_dark") * lungs * (0.85 + 0.15 * np.clip(-v, -1, 1))
    # mediastinum and spine (with vertebral bodies), heart to the image right (patient's left)
    img += 0.10 * _soft(0.13 - au, 0.03) * _soft(0.55 - np.abs(v + 0.1), 0.05)
    img += (0.12 + 0.03 * np.cos(2 * np.pi * v / 0.12)) * _soft(0.055 - au, 0.012) * body
    heart = _soft(1 - ((u - c("heart_dx")) / c("heart_w")) ** 2 - ((v - c("lung_cy") - 0.36) / c("heart_h")) ** 2, 0.18)
    img += 0.17 * heart
    # clavicles
    for side in (-1.0, 1.0):
        cv = -0.72 + c("lung_cy") - 0.25 * (side * u - 0.1) + 0.3 * (side * u - 0.35) ** 2
        img += 0.08 * np.exp(-((v - cv) / 0.025) ** 2) * _soft(side * u - 0.06, 0.02) * _soft(0.62 - side * u, 0.03)
    # ribs: arcs bowing upward, brighter over the lungs
    top = c("lung_cy") - c("lung_h") - 0.02
    ribs = np.zeros_like(img)
    for j in range(_N_RIB):
        curve = top + j * c("rib_space") + c("rib_k") * (au - 0.33) ** 2 - 0.05
        ribs += np.exp(-((v - curve) / c("rib_th")) ** 2)
    img += c("rib_amp") * ribs * _soft(au - 0.06, 0.015) * body * (0.35 + 0.65 * lungs)

    # confounders: calcified spots and a smooth round shadow, inside the lungs, both classes
    def in_lung(prefix: str):
        side = c(prefix + "_side")
        cx = side * c("lung_dx") + c(prefix + "_x") * c("lung_w")
        cy = c("lung_cy") + c(prefix + "_y") * c("lung_h")
        return cx, cy

    extra = np.zeros_like(img)
    for j in range(_N_SPOT):
        cx, cy = in_lung(f"spot{j}")
        extra += c(f"spot{j}_amp") * np.exp(-((u - cx) ** 2 + (v - cy) ** 2) / c(f"spot{j}_r") ** 2)
    cx, cy = in_lung("blob")
    extra += c("blob_amp") * np.exp(-((u - cx) ** 2 + (v - cy) ** 2) / c("blob_r") ** 2)
    # lesions: patchy (sum of random waves), blurred envelope, clipped to the lung fields
    for j in range(_N_LESION):
        cx, cy = in_lung(f"les{j}")
        r, e = c(f"les{j}_r"), c(f"les{j}_ecc")
        env = np.exp(-(((u - cx) / (r * e)) ** 2 + ((v - cy) * e / r) ** 2))
        tex = sum(np.cos(c(f"les{j}_fx{w}") * u + c(f"les{j}_fy{w}") * v + c(f"les{j}_ph{w}"))
                  for w in range(_N_WAVE)) / _N_WAVE
        patch = np.clip(0.45 + 0.9 * tex, 0, 1)
        extra += c(f"les{j}_amp") * env * (0.35 + 0.65 * patch) * 1.6
    img += extra * lungs

    img = np.clip(img, 0, 1) ** c("gamma")
    img = (img - 0.5) * c("contrast") + 0.5 + c("offset")
    img += c("noise") * P["noise_field"].astype(np.float32)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def generate(split: str, indices, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images uint8 (N, size, size), labels int64 (N,), patient ids (N,) for the given indices."""
    indices = np.asarray(list(indices), dtype=np.int64)
    n = len(indices)
    images = np.empty((n, size, size), np.uint8)
    labels = np.empty(n, np.int64)
    chunk = max(1, min(_CHUNK, (1 << 22) // (size * size)))
    for a in range(0, n, chunk):
        P = _params(split, indices[a:a + chunk], size)
        images[a:a + chunk] = _render(P, size)
        labels[a:a + chunk] = P["label"]
    patients = np.array([f"synth-{patient_index(split, i)}" for i in indices], dtype=object)
    return images, labels, patients
