"""Patient-level splits and the decoded-array cache."""
from __future__ import annotations

import os

import numpy as np
import pytest

from medtl.config import DataConfig
from medtl.data import images as images_mod
from medtl.data import load_dataset
from medtl.data.split import holdout
from medtl.errors import DataError
from _data_helpers import make_class_folder, write_png


def _toy(n=1200, n_patients=400, seed=0):
    rng = np.random.default_rng(seed)
    patients = np.array([f"p{k}" for k in rng.integers(0, n_patients, n)], dtype=object)
    labels = (rng.random(n) < 0.3).astype(np.int64)
    return labels, patients


def test_holdout_is_patient_level_stratified_and_seeded():
    labels, patients = _toy()
    keep, held = holdout(labels, patients, 0.1, seed=3)
    assert len(np.intersect1d(keep, held)) == 0 and len(keep) + len(held) == len(labels)
    assert not set(patients[keep]) & set(patients[held])
    assert 0.06 < len(held) / len(labels) < 0.14
    assert abs(labels[held].mean() - labels.mean()) < 0.04  # stratified
    k2, h2 = holdout(labels, patients, 0.1, seed=3)
    np.testing.assert_array_equal(held, h2)                  # deterministic
    _, h3 = holdout(labels, patients, 0.1, seed=4)
    assert not np.array_equal(held, h3)                      # the seed matters


def test_holdout_multilabel_stratifies_on_any_positive():
    rng = np.random.default_rng(1)
    labels = (rng.random((800, 3)) < 0.15).astype(np.float32)
    patients = np.array([f"p{i // 2}" for i in range(800)], dtype=object)
    keep, held = holdout(labels, patients, 0.2, seed=0)
    anypos = labels.any(axis=1)
    assert abs(anypos[held].mean() - anypos.mean()) < 0.05
    assert not set(patients[keep]) & set(patients[held])


def test_holdout_refuses_a_single_patient():
    with pytest.raises(DataError, match="patient"):
        holdout(np.array([0, 1, 0, 1]), np.array(["x"] * 4, dtype=object), 0.25, 0)


def test_split_seed_changes_val_but_not_test_folder(tmp_path, data_cache):
    root = make_class_folder(tmp_path / "ds", n_per_class=30, split_layout=True)
    a = load_dataset(DataConfig(path=str(root), image_size=8, split_seed=0), cache_dir=data_cache)
    b = load_dataset(DataConfig(path=str(root), image_size=8, split_seed=0), cache_dir=data_cache)
    c = load_dataset(DataConfig(path=str(root), image_size=8, split_seed=5), cache_dir=data_cache)
    assert a.splits["val"].ids == b.splits["val"].ids
    assert a.splits["val"].ids != c.splits["val"].ids
    assert a.splits["test"].ids == c.splits["test"].ids


def test_cache_hit_skips_decoding(tmp_path, data_cache, monkeypatch):
    root = make_class_folder(tmp_path / "ds", n_per_class=8)
    cfg = DataConfig(path=str(root), image_size=16)
    first = load_dataset(cfg, cache_dir=data_cache)
    files = list(data_cache.glob("*.npz"))
    assert len(files) == 1

    def boom(*a, **k):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(images_mod, "load_image_resized", boom)
    second = load_dataset(cfg, cache_dir=data_cache)
    for s in ("train", "val", "test"):
        np.testing.assert_array_equal(first.splits[s].images, second.splits[s].images)
        assert first.splits[s].ids == second.splits[s].ids
    # another size, a changed file, or cache=False must decode again
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset(cfg.model_copy(update={"image_size": 8}), cache_dir=data_cache)
    f = sorted((root / "a").iterdir())[0]
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same bytes: still a hit (keyed on content)
    load_dataset(cfg, cache_dir=data_cache)
    write_png(f, 90, seed=12345)                                 # other bytes: decoded again
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset(cfg, cache_dir=data_cache)
    monkeypatch.undo()
    n_before = len(list(data_cache.glob("*.npz")))
    load_dataset(cfg.model_copy(update={"cache": False, "image_size": 12}), cache_dir=data_cache)
    assert len(list(data_cache.glob("*.npz"))) == n_before
    assert not list(data_cache.glob(".*.tmp"))  # atomic writes leave no temp files


def test_duplicates_are_kept_with_a_note(tmp_path, data_cache):
    root = make_class_folder(tmp_path / "ds", n_per_class=8)
    src = next((root / "a").iterdir())
    (root / "a" / "copy_of_it.png").write_bytes(src.read_bytes())
    b = load_dataset(DataConfig(path=str(root), image_size=8), cache_dir=data_cache)
    assert sum(len(s) for s in b.splits.values()) == 17
    assert any("1 groups of byte-identical images" in n for n in b.notes)


def test_atomic_writes_get_the_usual_file_permissions(tmp_path):
    import stat

    from medtl.io import _UMASK, write_text_atomic

    write_text_atomic(tmp_path / "a.txt", "x")
    mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    assert mode == 0o666 & ~_UMASK  # not mkstemp's private 0600 (under the usual umask 022)
