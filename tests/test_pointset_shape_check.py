"""The point-set cue-conflict of medtl/pretrain/shape_check.py: what each cue image keeps, and a
score that follows a model whose cue use is known by construction."""
import numpy as np
import pytest
import torch

from medtl.pretrain.shape_check import conflict, pointset_shape_bias, silhouette, texture_tiles


def _blob(h=32, w=32, box=(8, 24, 8, 24), points=True, seed=0):
    img = np.zeros((h, w), np.uint8)
    r0, r1, c0, c1 = box
    img[r0:r1, c0:c1] = 255
    if points:  # isolated points: texture, not shape
        img[np.arange(1, h, 4), 1 + seed % 2] = 255  # one per 2 px block
    return img


def test_silhouette_keeps_the_support_and_drops_isolated_points():
    x = torch.from_numpy(_blob()).float()[None, None] / 255
    s = silhouette(x, 1 / 16)[0, 0].numpy()
    assert s[8:24, 8:24].all()                  # the solid square survives the 2 px majority vote
    assert not s[:, :4].any()                   # single points in the left margin do not
    assert set(np.unique(s)) <= {0.0, 1.0}


def test_texture_tiles_are_crops_of_the_source_and_carry_no_layout():
    img = np.zeros((32, 32), np.uint8)
    img[::2, ::3] = 255                          # a point lattice
    img[:16] = 0                                 # only in the lower half
    t = texture_tiles(img, 1 / 4, np.random.default_rng(0))
    src = img.astype(np.float32) / 255
    crops = {src[i:i + 8, j:j + 8].tobytes() for i in range(25) for j in range(25)}
    for r in range(0, 32, 8):
        for c in range(0, 32, 8):
            assert t[r:r + 8, c:c + 8].tobytes() in crops
    assert t[:16].mean() > 0.05                  # the pattern now fills the upper half too


def test_conflict_is_zero_outside_the_shape_source():
    imgs = np.stack([_blob(box=(4, 12, 4, 28)), _blob(box=(8, 28, 12, 20), seed=1)])
    c = conflict(imgs, np.array([[0, 1]]), 1 / 16, 1 / 4, 0)[0, 0].numpy()
    assert not c[16:].any() and c[4:12, 4:28].any()


def test_a_model_that_reads_only_the_silhouette_scores_one():
    """A nearest-silhouette classifier follows shape by construction: every decision that follows
    a source follows A, and the silhouette alone is read perfectly."""
    boxes = [(2, 30, 12, 20), (12, 20, 2, 30), (4, 14, 4, 14), (18, 30, 18, 30)]
    images = np.stack([_blob(box=b, seed=s) for b in boxes for s in range(5)])
    labels = np.repeat(np.arange(4), 5)
    proto = torch.stack([silhouette(torch.from_numpy(_blob(box=b, points=False)).float()[None, None] / 255, 1 / 16)[0]
                         for b in boxes])

    def proba(x):
        sil = (silhouette(x, 1 / 16) > 0).float()
        d = ((sil[:, None] - proto[None]) ** 2).flatten(2).sum(-1)
        return torch.softmax(-d, 1).numpy()

    r = pointset_shape_bias(proba, images, labels, ["v", "h", "tl", "br"], n_pairs=120)
    assert r["shape_only"]["balanced_acc"] == pytest.approx(1.0)
    assert r["unconditioned"]["shape_bias"] > 0.9 and r["unconditioned"]["n_follow_either"] > 60
    assert r["conditioned"]["interpretable"] is False  # the texture cue alone is not read: ungated


def test_the_textured_cue_conflict_follows_a_model_of_known_cue_use():
    """On textured fractals (texture: class) a model that reads only the stripes' orientation
    scores near 0, one that reads only the figure near 1: the rendered conflict carries A's figure
    and B's stripes and nothing else."""
    from medtl.data import fractaldb as F
    from medtl.pretrain.shape_check import textured_shape_bias

    k, size = 4, 32
    pts, y = F.generate(k, {"test": 5}, size, seed=0)["test"]
    figs = F.support(pts).astype(float)
    protos = np.stack([figs[y == c].mean(0) for c in range(k)])
    grating = np.stack([F.stripes(*F.class_texture(c, size), 0.0, size) - 0.5 for c in range(k)])

    def one_hot(idx):
        out = np.full((len(idx), k), 1e-3)
        out[np.arange(len(idx)), idx] = 1.0
        return out / out.sum(1, keepdims=True)

    def by_figure(x):  # the figure: brighter than the dim ground's brightest, closed over a stripe period
        from scipy import ndimage

        bright = x[:, 0].numpy() > F.GROUND + 0.02
        fig = np.stack([ndimage.binary_closing(b, np.ones((5, 5)), border_value=0) for b in bright]).astype(float)
        return one_hot(((fig[:, None] - protos[None]) ** 2).sum((2, 3)).argmin(1))

    def by_stripes(x):  # the class whose grating (any phase) carries the most energy
        img = x[:, 0].numpy() - x[:, 0].numpy().mean((1, 2), keepdims=True)
        spec = np.abs(np.fft.fft2(img))
        ref = np.abs(np.fft.fft2(grating))
        return one_hot((spec[:, None] * ref[None]).sum((2, 3)).argmax(1))

    classes = [f"c{c}" for c in range(k)]
    shape = textured_shape_bias(by_figure, pts, y, classes, n_pairs=120)
    texture = textured_shape_bias(by_stripes, pts, y, classes, n_pairs=120)
    assert texture["texture_only"]["balanced_acc"] == pytest.approx(1.0)
    assert texture["unconditioned"]["shape_bias"] < 0.05 and texture["unconditioned"]["n_follow_either"] > 100
    assert shape["shape_only"]["balanced_acc"] > 0.9
    assert shape["unconditioned"]["shape_bias"] > 0.8
