"""`data.sr`: upscaling after decoding (resize or a learned SR model), cached, fed at full size."""
import json

import numpy as np
import pytest
import yaml
from PIL import Image

from medtl.config import build_config
from medtl.data import load_dataset
from medtl.errors import ConfigError
from medtl.train import finetune

BASE = ["data.path=builtin:synthetic", "data.image_size=16",
        "data.synthetic_n={train: 40, val: 20, test: 20}"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))


def _data(*extra):
    return build_config({}, BASE + list(extra)).data


@pytest.mark.parametrize("sets,msg", [
    (["data.sr.scale=4"], "method is 'none'"),
    (["data.sr.method=resize"], "needs scale or size"),
    (["data.sr.method=learned"], "needs model"),
    (["data.sr.method=resize", "data.sr.scale=2", "data.sr.size=64"], "not both"),
    (["data.sr.method=resize", "data.sr.scale=0.5"], "greater than 1"),
    (["data.sr.method=cubic"], "data.sr.method"),
])
def test_inconsistent_sr_config_is_refused(sets, msg):
    with pytest.raises(ConfigError, match=msg):
        build_config({}, BASE + sets)


def test_resize_upscales_every_split_with_pillow_and_keeps_labels():
    low = load_dataset(_data())
    up = load_dataset(_data("data.sr.method=resize", "data.sr.scale=4"))
    for s in ("train", "val", "test"):
        a, b = low.splits[s], up.splits[s]
        assert b.images.shape == (len(a), 64, 64) and b.images.dtype == np.uint8
        assert np.array_equal(a.labels, b.labels) and a.ids == b.ids
    ref = np.asarray(Image.fromarray(low.splits["train"].images[3]).resize((64, 64), Image.BICUBIC))
    assert np.array_equal(up.splits["train"].images[3], ref)
    assert any("16 px -> 64 px" in n for n in up.notes)
    lanczos = load_dataset(_data("data.sr.method=resize", "data.sr.size=48", "data.sr.interpolation=lanczos"))
    ref = np.asarray(Image.fromarray(low.splits["val"].images[0]).resize((48, 48), Image.LANCZOS))
    assert np.array_equal(lanczos.splits["val"].images[0], ref)


def test_upscaled_dataset_is_computed_once_then_cached(monkeypatch, tmp_path):
    import medtl.sr as sr_mod

    first = load_dataset(_data("data.sr.method=resize", "data.sr.scale=2"))
    assert list((tmp_path / "cache").rglob("sr-*.npz"))

    def boom(*a, **k):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(sr_mod, "upscale_resize", boom)
    again = load_dataset(_data("data.sr.method=resize", "data.sr.scale=2"))
    assert np.array_equal(first.splits["test"].images, again.splits["test"].images)
    with pytest.raises(AssertionError, match="recomputed"):  # another scale is another cache entry
        load_dataset(_data("data.sr.method=resize", "data.sr.scale=3"))


def _sr_file(path, scale, seed=0):
    import torch

    from medtl.sr import build_sr_model, save_sr_model
    from medtl.sr.model import DEFAULT_ARCH

    torch.manual_seed(seed)
    arch = dict(DEFAULT_ARCH, scale=scale)
    save_sr_model(path, build_sr_model(arch), arch, {"note": "untrained, for tests"})
    return path


def test_learned_sr_uses_the_model_file_and_its_hash_keys_the_cache(tmp_path):
    from medtl.sr import load_sr_model, upscale_learned

    f = _sr_file(tmp_path / "sr_x2.pt", 2)
    up = load_dataset(_data("data.sr.method=learned", f"data.sr.model={f}"))
    low = load_dataset(_data())
    model, _ = load_sr_model(f)
    assert up.splits["train"].images.shape[1:] == (32, 32)
    assert np.array_equal(up.splits["test"].images, upscale_learned(low.splits["test"].images, model))
    _sr_file(f, 2, seed=1)  # same path, other weights: must not reuse the cached result
    up2 = load_dataset(_data("data.sr.method=learned", f"data.sr.model={f}"))
    assert not np.array_equal(up.splits["train"].images, up2.splits["train"].images)
    with pytest.raises(ConfigError, match="upscales x2"):
        load_dataset(_data("data.sr.method=learned", f"data.sr.model={f}", "data.sr.scale=4"))
    with pytest.raises(ConfigError, match="nope.pt"):
        load_dataset(_data("data.sr.method=learned", f"data.sr.model={tmp_path / 'nope.pt'}"))


@pytest.mark.slow
def test_finetune_feeds_the_upscaled_size_and_old_run_folders_still_resume(tmp_path):
    cfg = build_config({}, BASE + ["data.sr.method=resize", "data.sr.scale=2", "train.epochs=1",
                                   "train.batch_size=20", "train.num_threads=1"])
    m = finetune(cfg, tmp_path / "run", progress=False)
    assert m.run.image_size == 16 and m.run.input_size == 32 and m.run.sr == "resize"
    # a run folder written before data.sr existed: same config without the key still matches
    plain = build_config({}, BASE + ["train.epochs=1", "train.batch_size=20", "train.num_threads=1"])
    finetune(plain, tmp_path / "old", progress=False)
    cfg_file = tmp_path / "old" / "config.yaml"
    raw = yaml.safe_load(cfg_file.read_text())
    del raw["data"]["sr"]
    cfg_file.write_text(yaml.safe_dump(raw))
    again = finetune(plain, tmp_path / "old", progress=False)
    assert again.as_dict() == json.loads((tmp_path / "old" / "metrics.json").read_text())
    with pytest.raises(ConfigError, match="data.sr"):  # but a different sr setting is a different run
        finetune(cfg, tmp_path / "old", progress=False)
