"""One resolution of a data argument for every command, and caches keyed on file contents."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from _data_helpers import make_class_folder
from medtl.cli import run as cli
from medtl.config import SYNTHETIC, DataConfig
from medtl.data import load_dataset
from medtl.data.registry import data_fingerprint, locate
from medtl.errors import DataError


def test_every_form_of_data_argument_resolves_once(tmp_path, monkeypatch):
    from medtl.data.registry import env_var

    assert locate(SYNTHETIC).builtin and locate(SYNTHETIC).path is None
    folder = make_class_folder(tmp_path / "ds", n_per_class=4)
    assert locate(str(folder)).path == folder and locate(str(folder)).dataset is None
    npz = tmp_path / "p.npz"
    np.savez(npz, train_images=np.zeros((4, 8, 8), np.uint8), train_labels=np.zeros((4, 1), np.uint8))
    monkeypatch.setenv(env_var("medmnist:pneumoniamnist"), str(npz))
    named = locate("medmnist:pneumoniamnist")
    assert named.path == npz and named.dataset.name == "medmnist:pneumoniamnist"
    with pytest.raises(DataError, match="builtin:nope: unknown built-in dataset"):
        locate("builtin:nope")
    with pytest.raises(DataError, match="no such file or directory"):
        locate(str(tmp_path / "missing"))
    assert data_fingerprint(SYNTHETIC).startswith(f"{SYNTHETIC}:v")
    assert data_fingerprint(str(npz)) == data_fingerprint("medmnist:pneumoniamnist")  # same bytes, same key
    moved = tmp_path / "elsewhere"
    shutil.copytree(folder, moved)
    assert data_fingerprint(str(moved)) == data_fingerprint(str(folder))  # where it lives does not matter


def test_an_image_edited_in_place_with_the_same_size_and_time_is_not_served_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))
    folder = make_class_folder(tmp_path / "ds", n_per_class=8)
    # an uncompressed BMP: other pixels, the same byte count
    from PIL import Image

    victim = folder / "a" / "person99_a_edit.bmp"
    Image.fromarray(np.full((16, 20), 40, np.uint8), "L").save(victim)
    cfg = DataConfig(path=str(folder), image_size=16)
    before = load_dataset(cfg)
    st = victim.stat()
    Image.fromarray(np.full((16, 20), 250, np.uint8), "L").save(victim)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))   # and the old modification time
    assert victim.stat().st_size == st.st_size and victim.stat().st_mtime_ns == st.st_mtime_ns
    after = load_dataset(cfg)
    old = np.concatenate([s.images for s in before.splits.values()])
    new = np.concatenate([s.images for s in after.splits.values()])
    assert not np.array_equal(old, new)              # decoded again: the new pixels, not the cached ones


def test_evaluate_scores_a_run_on_the_builtin_dataset_by_name(tmp_path, monkeypatch, capsys):
    from medtl.config import build_config
    from medtl.train import finetune

    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "arm" / "seed-0"
    finetune(build_config({}, ["data.path=builtin:synthetic", "data.image_size=16", "train.epochs=1",
                               "data.synthetic_n={train: 32, val: 16, test: 16}", "train.batch_size=16",
                               "train.num_threads=1", "train.precision=fp32"]), run, progress=False)
    assert cli(["evaluate", str(run), "--data", SYNTHETIC, "--name", "synthetic-again", "-q"]) == 0
    capsys.readouterr()
    assert (run / "external" / "synthetic-again" / "metrics.json").is_file()
    assert cli(["evaluate", str(run), "--data", "builtin:nope", "-q"]) == 2
    assert "builtin:nope: unknown built-in dataset" in capsys.readouterr().err
