"""to_tensor, augment_batch and the embedded synthetic dataset."""
from __future__ import annotations

import time

import numpy as np
import torch

from medtl.config import AugmentConfig, DataConfig
from medtl.data import augment_batch, load_dataset, to_tensor
from medtl.data import synthetic


def test_to_tensor():
    a = np.array([[[0, 255], [51, 102]]], np.uint8)
    t = to_tensor(a)
    assert t.shape == (1, 1, 2, 2) and t.dtype == torch.float32
    assert torch.allclose(t[0, 0], torch.tensor([[0.0, 1.0], [0.2, 0.4]]))


def _batch(n=6, size=24):
    g = torch.Generator().manual_seed(123)
    return torch.rand(n, 1, size, size, generator=g)


def test_augment_is_deterministic_per_generator_state():
    x = _batch()
    cfg = AugmentConfig(rotate=15, scale=0.2, translate=0.1, hflip=True, brightness=0.2, contrast=0.2)
    a = augment_batch(x, cfg, torch.Generator().manual_seed(7))
    b = augment_batch(x, cfg, torch.Generator().manual_seed(7))
    c = augment_batch(x, cfg, torch.Generator().manual_seed(8))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    # different images in a batch get different transforms
    same = augment_batch(x[:1].repeat(4, 1, 1, 1), cfg, torch.Generator().manual_seed(7))
    assert not torch.equal(same[0], same[1])


def test_augment_identity_and_flip():
    x = _batch()
    off = AugmentConfig(translate=0, scale=0, rotate=0, hflip=False, brightness=0, contrast=0)
    assert torch.allclose(augment_batch(x, off, torch.Generator().manual_seed(0)), x, atol=1e-5)
    flip = off.model_copy(update={"hflip": True})
    y = augment_batch(x, flip, torch.Generator().manual_seed(0))
    flipped = [torch.allclose(y[i], x[i].flip(-1), atol=1e-5) for i in range(len(x))]
    kept = [torch.allclose(y[i], x[i], atol=1e-5) for i in range(len(x))]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped)


def test_augment_translation_pads_with_zeros():
    x = torch.ones(4, 1, 16, 16)
    cfg = AugmentConfig(translate=0.25, scale=0, rotate=0, brightness=0, contrast=0)
    y = augment_batch(x, cfg, torch.Generator().manual_seed(1))
    assert (y == 0).any() and y.max() == 1.0


def test_synthetic_deterministic_by_index_and_size():
    a, la, pa = synthetic.generate("train", range(10), 32)
    b, lb, pb = synthetic.generate("train", range(6, 10), 32)
    np.testing.assert_array_equal(a[6:], b)
    np.testing.assert_array_equal(la[6:], lb)
    c, lc, _ = synthetic.generate("train", range(10), 48)
    np.testing.assert_array_equal(la, lc)                 # the label does not depend on size
    d, _, _ = synthetic.generate("val", range(10), 32)
    assert not np.array_equal(a, d)
    assert list(pa[:4]) == ["synth-0", "synth-0", "synth-1", "synth-1"]


def test_synthetic_bundle(data_cache):
    cfg = DataConfig(synthetic_n={"train": 300, "val": 60, "test": 100}, image_size=32)
    t = time.perf_counter()
    b = load_dataset(cfg, cache_dir=data_cache)
    assert time.perf_counter() - t < 10
    assert "SYNTHETIC" in b.name and b.synthetic and b.format == "synthetic"
    assert b.classes == ["normal", "opacity"]
    assert [len(b.splits[s]) for s in ("train", "val", "test")] == [300, 60, 100]
    assert 0.4 < b.splits["train"].labels.mean() < 0.6
    pats = {s: set(b.splits[s].patients.tolist()) for s in b.splits}
    assert not pats["train"] & pats["val"] and not pats["train"] & pats["test"]
    assert len(pats["train"]) == 150
    im = b.splits["train"].images
    assert im.dtype == np.uint8 and im.shape == (300, 32, 32) and im.std() > 20
    # the lesion class is brighter inside the lungs on average, but only slightly
    lab = b.splits["train"].labels
    diff = im[lab == 1].astype(float).mean() - im[lab == 0].astype(float).mean()
    assert 0 < diff < 10
    again = load_dataset(cfg, cache_dir=data_cache)
    np.testing.assert_array_equal(again.splits["test"].images, b.splits["test"].images)


def test_synthetic_speed():
    t = time.perf_counter()
    imgs, labels, _ = synthetic.generate("train", range(1000), 64)
    assert time.perf_counter() - t < 8
    assert imgs.shape == (1000, 64, 64) and set(np.unique(labels)) == {0, 1}
