"""data.train_fraction: stratified, patient-level, seeded, nested subsample of the train split."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medtl.config import build_config
from medtl.data.fraction import subsample_train
from medtl.data.load import load_dataset
from medtl.data.types import DatasetBundle, Split
from medtl.errors import ConfigError, DataError
from medtl.record import MISSING

FRACTIONS = (0.05, 0.1, 0.2, 0.5, 0.8)


def _split(labels, patients, prefix="x"):
    labels = np.asarray(labels)
    n = len(labels)
    return Split(images=np.arange(n, dtype=np.uint8).reshape(n, 1, 1).repeat(2, 1), labels=labels,
                 patients=np.asarray(patients, dtype=object), ids=[f"{prefix}:{i}" for i in range(n)],
                 hashes=np.array([f"{prefix}{i}" for i in range(n)]),
                 groups={"sex": np.array(["F", "M"] * (n // 2) + ["F"] * (n % 2), dtype=object)})


def _bundle(train: Split, classes=("a", "b", "c"), multilabel=False) -> DatasetBundle:
    k = len(classes)
    ev = np.eye(k, dtype=np.float32)[np.arange(8) % k] if multilabel else np.arange(8) % k
    return DatasetBundle(name="toy", format="csv", source="toy.csv", classes=list(classes), multilabel=multilabel,
                         synthetic=False, splits={"train": train, "val": _split(ev, [f"v{i}" for i in range(8)], "v"),
                                                  "test": _split(ev, [f"t{i}" for i in range(8)], "t")},
                         notes=[], leaks={"n_without_patient": {"train": 0, "val": 0, "test": 0}})


def _single_label_train(rng_seed=0):
    """300 patients of 1-3 images: 162 'a', 100 'b', 30 'c', 8 with images of 'a' and 'b'."""
    rng = np.random.default_rng(rng_seed)
    labels, patients = [], []
    plan = [[0]] * 162 + [[1]] * 100 + [[2]] * 30 + [[0, 1]] * 8
    for p, classes in enumerate(plan):
        for j in range(max(len(classes), int(rng.integers(1, 4)))):
            labels.append(classes[j % len(classes)])
            patients.append(f"P{p:03d}")
    order = rng.permutation(len(labels))  # images of a patient need not be adjacent
    return _split(np.asarray(labels)[order], np.asarray(patients, dtype=object)[order])


def _kept_patients(b):
    return set(b.splits["train"].patients.tolist())


def test_patient_level_and_stratified():
    full = _bundle(_single_label_train())
    tr = full.splits["train"]
    per_patient = {p: np.flatnonzero(tr.patients == p) for p in set(tr.patients.tolist())}
    for f in FRACTIONS:
        b = subsample_train(full, f, seed=3)
        sub = b.splits["train"]
        kept = set(sub.ids)
        for p, idx in per_patient.items():  # a patient's images are all in or all out
            inside = {tr.ids[i] in kept for i in idx}
            assert len(inside) == 1, (f, p)
        pats = _kept_patients(b)
        # per stratum (class set of a patient): round(f * n), at least the class anchors
        for cls, n in (((0,), 162), ((1,), 100), ((2,), 30), ((0, 1), 8)):
            members = {p for p in per_patient if tuple(sorted(set(tr.labels[per_patient[p]].tolist()))) == cls}
            assert len(members) == n
            assert len(members & pats) in (int(np.floor(f * n + 0.5)), max(1, int(np.floor(f * n + 0.5))))
        assert set(sub.labels.tolist()) == {0, 1, 2}  # every class keeps a patient
        facts = b.train_fraction
        assert facts["level"] == "patient" and facts["fraction"] == f
        assert facts["n_train_before"] == len(tr) and facts["n_train_after"] == len(sub)
        assert facts["patients_before"] == 300 and facts["patients_after"] == len(pats)
        assert sum(facts["per_class_after"].values()) == len(sub)
        assert set(sub.groups["sex"].tolist()) <= {"F", "M"} and len(sub.groups["sex"]) == len(sub)
        assert len(sub.hashes) == len(sub) and sub.images.shape[0] == len(sub)
        # kept images keep their order, labels, patients and hashes aligned
        pos = [tr.ids.index(i) for i in sub.ids]
        assert pos == sorted(pos)
        assert (tr.labels[pos] == sub.labels).all() and (tr.hashes[pos] == sub.hashes).all()
        assert any(n.startswith(f"data.train_fraction {f:g}:") for n in b.notes)


def test_nested_across_fractions_and_seeded():
    full = _bundle(_single_label_train())
    for seed in (0, 1, 7):
        subsets = [_kept_patients(subsample_train(full, f, seed)) for f in FRACTIONS]
        for small, large in zip(subsets, subsets[1:]):
            assert small <= large  # the 5% subset lies inside the 10% subset, ...
        assert subsets[-1] < _kept_patients(full)
    a = subsample_train(full, 0.1, 5).splits["train"]
    b = subsample_train(full, 0.1, 5).splits["train"]
    c = subsample_train(full, 0.1, 6).splits["train"]
    assert a.ids == b.ids and (a.images == b.images).all()
    assert set(a.patients.tolist()) != set(c.patients.tolist())
    # the subset depends on the patients and the seed, not on the order of the images
    tr = full.splits["train"]
    rev = np.arange(len(tr))[::-1]
    shuffled = _bundle(Split(images=tr.images[rev], labels=tr.labels[rev], patients=tr.patients[rev],
                             ids=[tr.ids[i] for i in rev], hashes=tr.hashes[rev]))
    assert set(subsample_train(shuffled, 0.1, 5).splits["train"].ids) == set(a.ids)


def test_val_and_test_untouched_and_full_fraction_is_identity():
    full = _bundle(_single_label_train())
    b = subsample_train(full, 0.1, 0)
    for s in ("val", "test"):
        assert b.splits[s] is full.splits[s]
    assert subsample_train(full, 1.0, 0) is full and full.train_fraction is None


def test_refused_when_a_class_ends_below_two_images():
    # class 'c': two patients of one image each; at 10% only its anchor patient stays
    labels = [0] * 40 + [1] * 40 + [2, 2]
    patients = [f"P{i}" for i in range(82)]
    full = _bundle(_split(labels, patients))
    with pytest.raises(DataError) as e:
        subsample_train(full, 0.1, 0)
    msg = str(e.value)
    assert "\n" not in msg and "data.train_fraction=0.1" in msg and "'c'" in msg
    assert "a 4 of 40" in msg and "c 1 of 2" in msg
    assert len(subsample_train(full, 0.9, 0).splits["train"]) >= 74  # enough data: fine


def test_image_level_without_patient_ids():
    labels = np.arange(200) % 2
    full = _bundle(_split(labels, [f"npz:train:{i}" for i in range(200)]), classes=("n", "p"))
    full.leaks["n_without_patient"] = {"train": 200, "val": 0, "test": 0}
    b = subsample_train(full, 0.1, 0)
    facts = b.train_fraction
    assert facts["level"] == "image" and facts["n_train_after"] == 20 == facts["patients_after"]
    assert facts["per_class_after"] == {"n": 10, "p": 10}
    assert b.leaks["n_without_patient"]["train"] == 20  # the count of the split trained on
    assert any("image-level" in n for n in b.notes)


def test_multilabel_keeps_a_positive_per_label():
    """Multi-label: strata on 'any positive'; every label keeps its first patient (in the seeded
    order) with a positive; a label left with one positive image is refused like a class."""
    rng = np.random.default_rng(0)
    y = (rng.random((400, 5)) < [0.4, 0.3, 0.2, 0.15, 0.0]).astype(np.float32)
    patients = [f"P{i // 2}" for i in range(400)]
    rare = y.copy()
    rare[[11, 12], 4] = 1.0  # label 'e': two positive images of two patients (P5, P6)
    with pytest.raises(DataError, match=r"fewer than 2 positive images of 'e' \(.*e 1 of 2\)"):
        subsample_train(_bundle(_split(rare, patients), classes=tuple("abcde"), multilabel=True), 0.2, 0)
    rare = y.copy()
    rare[[12, 13], 4] = 1.0  # both positives of 'e' from one patient (P6): kept whole at every fraction
    full = _bundle(_split(rare, patients), classes=tuple("abcde"), multilabel=True)
    subsets = []
    for f in (0.05, 0.1, 0.3, 0.7):
        b = subsample_train(full, f, 0)
        sub = b.splits["train"]
        assert (sub.labels.sum(axis=0) >= 1).all(), f  # every label keeps a positive
        assert "P6" in set(sub.patients.tolist())
        assert b.train_fraction["per_class_after"]["e"] == 2
        subsets.append(set(sub.patients.tolist()))
    assert all(a <= b for a, b in zip(subsets, subsets[1:]))


def test_config_key_range():
    assert build_config({}).data.train_fraction == 1.0 and build_config({}).data.fraction_seed is None
    for bad in ("0", "1.5", "-0.1"):
        with pytest.raises(ConfigError):
            build_config({}, [f"data.train_fraction={bad}"])
    assert build_config({}, ["data.train_fraction=0.05", "data.fraction_seed=3"]).data.fraction_seed == 3


SYN = ["data.path=builtin:synthetic", "data.image_size=16", "data.synthetic_n={train: 120, val: 24, test: 24}"]


def test_load_dataset_subsamples_synthetic_and_shares_the_decode_cache(tmp_path):
    cache = tmp_path / "cache"
    full = load_dataset(build_config({}, SYN).data, cache_dir=cache)
    files = sorted(p.relative_to(cache) for p in cache.rglob("*") if p.is_file())
    half = load_dataset(build_config({}, SYN + ["data.train_fraction=0.5"]).data, cache_dir=cache)
    assert sorted(p.relative_to(cache) for p in cache.rglob("*") if p.is_file()) == files  # one decode, shared
    facts = half.train_fraction
    assert facts["level"] == "patient" and facts["patients_before"] == 60 and facts["n_train_before"] == 120
    assert len(half.splits["train"]) == facts["n_train_after"] < 120
    assert set(half.splits["train"].ids) < set(full.splits["train"].ids)
    for s in ("val", "test"):
        assert half.splits[s].ids == full.splits[s].ids and (half.splits[s].images == full.splits[s].images).all()
    other = load_dataset(build_config({}, SYN + ["data.train_fraction=0.5", "data.fraction_seed=9"]).data,
                         cache_dir=cache)
    assert other.train_fraction["seed"] == 9 and half.train_fraction["seed"] == 0
    assert set(other.splits["train"].ids) != set(half.splits["train"].ids)


def test_recorded_in_metrics_json_and_sweep_arms(tmp_path, monkeypatch):
    from medtl.runs import discover_arms
    from medtl.sweep import load_sweep
    from medtl.train import finetune

    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    tiny = SYN + ["model.backbone=resnet18", "model.weights=none", "train.epochs=1", "train.batch_size=32",
                  "train.num_threads=1"]
    sweep_dir = tmp_path / "sweep"
    (tmp_path / "s.yaml").write_text("name: curve\nseeds: 1\narms:\n  f0.25: {data.train_fraction: 0.25}\n"
                                     "  full: {}\n")
    _, arms, _ = load_sweep(tmp_path / "s.yaml")
    assert arms["f0.25"].data.train_fraction == 0.25 and arms["full"].data.train_fraction == 1.0
    rec = finetune(build_config({}, tiny + ["data.train_fraction=0.25"]), sweep_dir / "f0.25" / "seed-0",
                   progress=False)
    saved = json.loads((sweep_dir / "f0.25" / "seed-0" / "metrics.json").read_text())
    tf = saved["data"]["train_fraction"]
    assert tf["fraction"] == 0.25 and tf["level"] == "patient" and tf["n_train_before"] == 120
    assert saved["data"]["n"] == {"train": tf["n_train_after"], "val": 24, "test": 24}
    assert tf["patients_after"] < tf["patients_before"] == 60
    assert rec.data.at("train_fraction.n_train_after") == tf["n_train_after"]
    assert any(n.startswith("data.train_fraction 0.25:") for n in saved["run"]["data_notes"])
    # an arm per fraction: compare groups runs by arm folder
    (sweep_dir / "full" / "seed-0").mkdir(parents=True)
    full_data = {"source": saved["data"]["source"], "leaks": saved["data"]["leaks"],
                 "n": {"train": 120, "val": 24, "test": 24}}
    (sweep_dir / "full" / "seed-0" / "metrics.json").write_text(json.dumps({**saved, "data": full_data}))
    found = discover_arms([sweep_dir])
    assert sorted(found) == ["f0.25", "full"] and all(list(a.runs) == [0] for a in found.values())
    assert found["f0.25"].runs[0].data.at("train_fraction.fraction") == 0.25
    assert found["full"].runs[0].data.at("train_fraction") is MISSING  # fraction 1: nothing recorded


def test_data_check_says_its_counts_are_before_the_label_fraction():
    from medtl.config import DataConfig
    from medtl.data.check import check_dataset

    plain = check_dataset("builtin:synthetic", DataConfig(synthetic_n={"train": 40, "val": 10, "test": 10}))
    part = check_dataset("builtin:synthetic", DataConfig(synthetic_n={"train": 40, "val": 10, "test": 10},
                                                          train_fraction=0.25))
    assert not any("train_fraction" in n for n in plain["notes"])
    assert any("data.train_fraction=0.25" in n and "25%" in n for n in part["notes"])
