"""The leak policy on planted leaks: counted per split pair, refused / dropped / marked."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medtl.config import DataConfig, build_config
from medtl.data import load_dataset
from medtl.data.plan import compile_patient_regex, patient_from_name
from medtl.errors import DataError


def _img(path, seed):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(path)


@pytest.fixture()
def leaky(tmp_path):
    """train/test folders; patient person7 and the bytes of one image occur in both."""
    root = tmp_path / "ds"
    k = 0
    for split, n in (("train", 24), ("test", 10)):
        for cls in ("PNEUMONIA", "NORMAL"):
            for i in range(n):
                base = 1000 * (1 + 2 * (split == "test") + (cls == "NORMAL"))
                _img(root / split / cls / f"person{base + i}_x.png", k)  # one image per patient
                k += 1
    _img(root / "train" / "PNEUMONIA" / "person7_extra.png", 999)   # person7 ...
    _img(root / "test" / "PNEUMONIA" / "person7_again.png", 998)    # ... is also in test
    _img(root / "test" / "NORMAL" / "person555_copy.png", 3)        # the bytes of train person1003's image
    return root


def test_planted_leak_is_refused_with_the_counts(leaky, data_cache):
    with pytest.raises(DataError) as e:
        load_dataset(DataConfig(path=str(leaky), image_size=8), cache_dir=data_cache)
    msg = str(e.value)
    assert "\n" not in msg and "data.on_leak: drop_train" in msg and "data.on_leak: warn" in msg
    # 1 patient (person7) and 1 image's bytes shared with test, wherever the val split put them
    assert "the test split shares 1 patients" in msg and "and 1 byte-identical images" in msg


def test_drop_train_keeps_the_test_split_and_removes_the_overlap(leaky, data_cache):
    warn = load_dataset(DataConfig(path=str(leaky), image_size=8, on_leak="warn"), cache_dir=data_cache)
    drop = load_dataset(DataConfig(path=str(leaky), image_size=8, on_leak="drop_train"), cache_dir=data_cache)
    assert drop.splits["test"].ids == warn.splits["test"].ids
    assert np.array_equal(drop.splits["test"].images, warn.splits["test"].images)
    dropped = drop.leaks["dropped"]["train"] + drop.leaks["dropped"]["val"]
    assert dropped == 2  # person7's train image and the train copy of the test image's bytes
    kept = set(drop.splits["train"].ids) | set(drop.splits["val"].ids)
    assert "train/PNEUMONIA/person7_extra.png" not in kept
    assert drop.leaks["status"] == "dropped" and warn.leaks["status"] == "leaky"
    assert any(n.startswith("LEAKY SPLIT") for n in warn.notes)


def test_finetune_records_leaks_in_metrics(leaky, tmp_path, monkeypatch):
    from medtl.train import finetune

    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))
    cfg = build_config({}, [f"data.path={leaky}", "data.image_size=16", "data.on_leak=drop_train",
                            "train.epochs=1", "train.batch_size=8", "train.bn_gamma={}", "data.val_fraction=0.2"])
    m = finetune(cfg, tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved == m
    leaks = m["data"]["leaks"]
    assert leaks["policy"] == "drop_train" and leaks["status"] == "dropped" and m["run"]["leak_status"] == "dropped"
    assert leaks["before"]["images"]["train-test"] + leaks["before"]["images"]["val-test"] == 1
    assert m["data"]["n"]["test"] == 22 and m["test"]["n"] == 22


@pytest.mark.parametrize("name, patient", [
    ("person1234_bacteria_3140.jpeg", "person1234"),
    ("IM-0115-0001.jpeg", "IM-0115"),
    ("IM-0011-0001-0002.jpeg", "IM-0011"),
    ("NORMAL2-IM-1427-0001.jpeg", "NORMAL2-IM-1427"),
    ("scan_17.png", "img:a/scan_17.png"),
])
def test_default_patient_regex_reads_kermany_names(name, patient):
    regex = compile_patient_regex(DataConfig().patient_regex)
    rid = name if patient != "img:a/scan_17.png" else "a/scan_17.png"
    assert patient_from_name(name, rid, regex) == patient


def test_splits_medtl_makes_keep_byte_identical_copies_together(tmp_path, data_cache):
    """A class-only folder (medtl makes val and test) with two copies of one image under other
    patients: medtl's own split never puts the copies on both sides, so there is nothing to refuse."""
    root = tmp_path / "ds"
    for cls in ("a", "b"):
        for i in range(15):
            _img(root / cls / f"person{(cls == 'b') * 100 + i}_x.png", (cls == "b") * 100 + i)
    for k in range(3):  # three more copies of one image, three other "patients"
        _img(root / "a" / f"person{500 + k}_copy.png", 0)
    b = load_dataset(DataConfig(path=str(root), image_size=8, split_seed=3), cache_dir=data_cache)
    assert b.leaks["status"] == "clean" and b.leaks["before"]["images"] == {"train-val": 0, "train-test": 0,
                                                                            "val-test": 0}
