"""check_dataset, render_preview and the `medtl data` CLI."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medtl.config import DataConfig
from medtl.data import check_dataset, render_preview
from medtl.data.preview import preview_images, tile_box
from medtl.errors import DataError
from _data_helpers import gradient, make_class_folder, make_dicom, write_png


def _leaky_folder(tmp_path):
    root = make_class_folder(tmp_path / "ds", n_per_class=10, split_layout=True)
    # a byte duplicate inside train, the same bytes again in test, and a patient in both splits
    src = root / "train" / "a" / "person0_a_0.png"
    shutil.copy(src, root / "train" / "a" / "dup.png")
    shutil.copy(src, root / "test" / "a" / "copy_in_test.png")
    write_png(root / "test" / "b" / "person1_b_extra.png", 200, seed=999)
    return root


def test_check_reports_counts_duplicates_and_leaks(tmp_path):
    root = _leaky_folder(tmp_path)
    r = check_dataset(str(root))
    json.dumps(r)  # JSON-serialisable
    assert r["format"] == "folder" and r["classes"] == ["a", "b"]
    total = sum(c["total"] for c in r["counts"].values())
    assert total == 40 + 3
    assert r["counts"]["test"]["by_class"] == {"a": 11, "b": 11}
    assert r["duplicates"]["groups"] == 1 and r["duplicates"]["examples"][0]["n"] == 3
    assert r["leaks"]["bytes"]["count"] == 1
    assert r["leaks"]["patient"]["count"] == 1  # person1 (the copied file has no patient id)
    assert "person1" in [e["patient"] for e in r["leaks"]["patient"]["examples"]]
    assert r["image_size"]["most_common_hw"] == [16, 20]
    assert set(r["patients"]) == {"train", "val", "test"}


def test_check_synthetic_and_npz(tmp_path):
    r = check_dataset("builtin:synthetic", DataConfig(synthetic_n={"train": 40, "val": 10, "test": 10}))
    assert r["synthetic"] and "SYNTHETIC" in r["name"] and r["counts"]["val"]["total"] == 10
    p = tmp_path / "x.npz"
    imgs = np.zeros((6, 8, 8), np.uint8)
    imgs[1] = 5
    np.savez(p, train_images=imgs, train_labels=np.array([[0], [1], [0], [1], [0], [1]]),
             test_images=imgs[:2], test_labels=np.array([[0], [1]]))
    r = check_dataset(str(p))
    assert r["duplicates"]["groups"] == 2           # four all-zero images in train(+val) and test, etc.
    assert r["leaks"]["bytes"]["count"] == 2        # both distinct arrays also occur in test


def test_preview_grid_labels_and_upscale(tmp_path):
    cfg = DataConfig(synthetic_n={"train": 20, "val": 4, "test": 4}, image_size=24, cache=False)
    imgs, caps, title = preview_images(cfg, n=9)
    assert imgs.shape == (9, 24, 24) and set(caps) <= {"normal", "opacity"} and "SYNTHETIC" in title
    out = render_preview(cfg, tmp_path / "grid.png", n=9)
    im = Image.open(out)
    assert im.width >= 3 * 96 and im.format == "PNG"
    # the first tile is the first image upscaled with nearest neighbour (factor 4)
    tile = np.asarray(im)[tile_box(0, 9, 24)[1]:tile_box(0, 9, 24)[3], tile_box(0, 9, 24)[0]:tile_box(0, 9, 24)[2]]
    np.testing.assert_array_equal(tile[::4, ::4], imgs[0])
    aug, _, atitle = preview_images(cfg, n=9, augment=True)
    assert "augmented" in atitle and not np.array_equal(aug, imgs)


def test_preview_single_dicom_is_inverted_monochrome1(tmp_path):
    arr = gradient(32, 32)
    p = make_dicom(tmp_path / "one.dcm", arr, "MONOCHROME1")
    out = render_preview(DataConfig(path=str(p), image_size=32), tmp_path / "one.png")
    png = np.asarray(Image.open(out)).astype(float)
    x0, y0, x1, y1 = tile_box(0, 1, 32)
    tile = png[y0:y1:3, x0:x1:3]  # 96 px tile, nearest upscale of 32
    assert np.corrcoef(tile.ravel(), arr.astype(float).ravel())[0, 1] < -0.95


def test_preview_errors(tmp_path):
    with pytest.raises(DataError, match="split"):
        render_preview(DataConfig(synthetic_n={"train": 4, "val": 2, "test": 2}, cache=False),
                       tmp_path / "x.png", split="holdout")


def test_cli_check_and_preview(tmp_path):
    from medtl.cli.data_cmd import app

    root = _leaky_folder(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["check", str(root), "--json"])
    assert res.exit_code == 1, res.output  # training refuses it under the default leak policy
    assert json.loads(res.output)["duplicates"]["groups"] == 1
    res = runner.invoke(app, ["check", str(root), "--set", "data.split_seed=3", "--set", "data.on_leak=drop_train"])
    assert res.exit_code == 0 and "duplicates  1 groups" in res.output and "leaks (bytes)  1" in res.output
    out = tmp_path / "p.png"
    res = runner.invoke(app, ["preview", str(root), "--out", str(out), "--n", "4", "--image-size", "32",
                              "--augment", "--set", "data.cache=false"])
    assert res.exit_code == 0, res.output
    assert Image.open(out).size[0] >= 2 * 96
    res = runner.invoke(app, ["check", str(tmp_path / "nope")])
    assert isinstance(res.exception, DataError) and "no such file" in str(res.exception)


def test_main_cli_reports_data_errors_as_one_line(tmp_path, capsys):
    from medtl.cli import run

    assert run(["data", "check", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medtl: error:") and "no such file" in err and "\n" not in err


# ---------------------------------------------------------------- check agrees with training (issue 20)

def _leaky_manifest(tmp_path):
    """A CSV manifest whose test split holds an image of train patient p3."""
    import csv

    root = tmp_path / "csvds"
    rows = []
    for i in range(40):
        write_png(root / f"{i}.png", 40 + 5 * i, size=(12, 12), seed=i)
        rows.append({"path": f"{i}.png", "label": "ab"[i % 2], "split": "train" if i < 28 else "test",
                     "patient": "p3" if i == 30 else f"p{i}"})
    with open(root / "m.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root / "m.csv"


def test_check_exits_1_where_training_refuses_a_leak(tmp_path, data_cache):
    from medtl.cli.data_cmd import app
    from medtl.data import load_dataset

    manifest = _leaky_manifest(tmp_path)
    with pytest.raises(DataError, match="the test split shares 1 patients"):  # what training does
        load_dataset(DataConfig(path=str(manifest), image_size=8), cache_dir=data_cache)
    r = check_dataset(str(manifest), DataConfig(image_size=8))
    assert not r["ok"] and r["refused_by_leak_policy"] and r["leak_policy"]["status"] == "refused"
    res = CliRunner().invoke(app, ["check", str(manifest), "--set", "data.image_size=8"])
    assert res.exit_code == 1, res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("result   REFUSED by training under the default leak policy (data.on_leak: error): "
                           "the test split shares 1 patients (train-test 1"), last
    ok = check_dataset(str(manifest), DataConfig(image_size=8, on_leak="drop_train"))
    assert ok["ok"] and ok["leak_policy"]["status"] == "dropped"
    assert any("training would record leak status 'dropped'" in w for w in ok["warnings"])


def test_check_warns_where_the_leak_status_would_be_unchecked(tmp_path, monkeypatch):
    from medtl.data.registry import env_var

    p = tmp_path / "p.npz"
    rng = np.random.default_rng(0)
    np.savez(p, **{f"{s}_images": rng.integers(0, 256, (k, 8, 8), dtype=np.uint8) for s, k in
                   (("train", 20), ("val", 6), ("test", 6))},
             **{f"{s}_labels": np.arange(k) % 2 for s, k in (("train", 20), ("val", 6), ("test", 6))})
    r = check_dataset(str(p))
    assert r["ok"] and r["leak_policy"]["status"] == "unchecked"
    assert any(w.startswith("UNCHECKED: 32 of 32 images name no patient") for w in r["warnings"])
    monkeypatch.setenv(env_var("medmnist:pneumoniamnist"), str(p))
    named = check_dataset("medmnist:pneumoniamnist")
    assert named["ok"] and any(w.startswith("KNOWN OVERLAP: PneumoniaMNIST") for w in named["warnings"])


@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL", "PALETTE COLOR"])
def test_check_refuses_the_dicom_that_preview_refuses(tmp_path, photometric):
    """PhotometricInterpretation contradicting SamplesPerPixel = 1 (or a colour table medtl does
    not read): preview and training refuse it, so check (full and --fast) lists it as bad."""
    from medtl.cli.data_cmd import app

    p = make_dicom(tmp_path / "one.dcm", gradient(), photometric=photometric, bits=8)
    with pytest.raises(DataError, match="PhotometricInterpretation"):
        render_preview(DataConfig(path=str(p), image_size=16), tmp_path / "x.png")
    for extra in ([], ["--fast"]):
        res = CliRunner().invoke(app, ["check", str(p), *extra])
        assert res.exit_code == 1, res.output
        assert "bad files  1 of 1" in res.output and "one.dcm: DICOM PhotometricInterpretation" in res.output
    good = make_dicom(tmp_path / "good.dcm", gradient(), photometric="MONOCHROME2")
    assert CliRunner().invoke(app, ["check", str(good), "--fast"]).exit_code == 0
