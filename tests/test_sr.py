"""medtl.sr: the SR model, its files, upscaling/degradation, training and evaluation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from medtl.errors import ConfigError
from medtl.sr import build_sr_model, degrade, load_sr_model, save_sr_model, upscale_learned, upscale_resize
from medtl.train import sr as sr_train
from medtl.train.sr import evaluate_sr, state_path, train_sr
from medtl.sr.io import FORMAT


@pytest.fixture(autouse=True)
def _one_thread():
    """Training is bit-for-bit reproducible at a fixed thread count; one keeps tests cheap."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def smooth_images(n: int, side: int = 48, seed: int = 0) -> np.ndarray:
    """Smooth random textures with a few soft-edged disks: structure an SR net learns fast."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    out = np.empty((n, side, side), np.uint8)
    for i in range(n):
        img = gaussian_filter(rng.normal(size=(side, side)), 2.0)
        img = (img - img.min()) / (np.ptp(img) + 1e-9)
        for _ in range(3):
            cy, cx = rng.uniform(0, side, 2)
            r = rng.uniform(4, 12)
            img += 0.5 * (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r)
        img = gaussian_filter(img, 0.7)
        out[i] = np.rint(255 * (img - img.min()) / (np.ptp(img) + 1e-9))
    return out


def _model(scale: int, seed: int = 0):
    torch.manual_seed(seed)
    return build_sr_model({"scale": scale}).eval()


# small, fast settings for the training tests
TINY = dict(steps=60, batch_size=8, patch=32, lr=1e-3, progress=False)


# ------------------------------------------------------------------ model


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_model_shapes_any_size(scale):
    m = _model(scale)
    x = torch.rand(2, 1, 13, 17)
    with torch.no_grad():
        y = m(x)
    assert y.shape == (2, 1, 13 * scale, 17 * scale)
    assert 0.0 <= float(y.min()) and float(y.max()) <= 1.0  # clamped in eval mode
    m.train()
    with torch.no_grad():
        assert m(x).shape == (2, 1, 13 * scale, 17 * scale)


def test_model_starts_close_to_bicubic():
    m = _model(4)
    x = torch.rand(3, 1, 20, 24)
    with torch.no_grad():
        base = torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
        diff = (m(x) - base).abs()
    assert float(diff.max()) < 1.0 / 255  # under one grey level everywhere


def test_bad_arch_is_config_error():
    with pytest.raises(ConfigError, match="scale"):
        build_sr_model({"scale": 5})
    with pytest.raises(ConfigError, match="unknown key"):
        build_sr_model({"scale": 2, "depth": 3})


# ------------------------------------------------------------------ files


def test_save_load_round_trip(tmp_path):
    m = _model(3, seed=1)
    with torch.no_grad():
        m.tail.weight.normal_(std=0.01)  # a non-trivial residual
    path = save_sr_model(tmp_path / "sr.pt", m, {"scale": 3, "s": 12}, {"steps": 5, "source": "x",
                                                                          "loss": np.float32(0.5)})
    m2, meta = load_sr_model(path)
    assert not m2.training and meta["arch"]["scale"] == 3 and meta["format"] == FORMAT
    assert len(meta["sha256"]) == 64 and meta["train"]["steps"] == 5 and meta["train"]["loss"] == 0.5
    imgs = smooth_images(2, 24)
    np.testing.assert_array_equal(upscale_learned(imgs, m), upscale_learned(imgs, m2))
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"format", "arch", "state_dict", "train", "medtl_version"}
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temporary left


def test_bad_model_files_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="missing.pt: SR model file not found"):
        load_sr_model(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_text("not a torch file")
    with pytest.raises(ConfigError, match="junk.pt: not a torch file"):
        load_sr_model(junk)
    nofmt = tmp_path / "nofmt.pt"
    torch.save({"arch": {}, "state_dict": {}}, nofmt)
    with pytest.raises(ConfigError, match="nofmt.pt: .*no 'format'"):
        load_sr_model(nofmt)
    wrong = tmp_path / "wrong.pt"
    torch.save({"format": "other-v9", "arch": {}, "state_dict": {}}, wrong)
    with pytest.raises(ConfigError, match="wrong.pt: unsupported SR model format 'other-v9'"):
        load_sr_model(wrong)
    mism = tmp_path / "mismatch.pt"
    save_sr_model(mism, _model(2), {"scale": 2})
    raw = torch.load(mism, weights_only=True)
    raw["arch"]["s"] = 16  # the weights are for s=12
    torch.save(raw, mism)
    with pytest.raises(ConfigError, match="mismatch.pt: SR model weights do not match"):
        load_sr_model(mism)


class _Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_pickled_objects_are_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "arch": {"scale": 2}, "state_dict": {}, "train": {"x": _Evil()}}, path)
    with pytest.raises(ConfigError, match="evil.pt: refused to load"):
        load_sr_model(path)
    assert "pickled code ran" not in capsys.readouterr().out


# ------------------------------------------------------------------ degrade and resize


def test_degrade_shapes_dtype_and_seeded_noise():
    hr = smooth_images(3, 50)
    lr = degrade(hr, 4)
    assert lr.dtype == np.uint8 and lr.shape == (3, 12, 12)
    # noise-free: Pillow's antialiased bicubic reduction of the top-left 48x48
    ref = np.asarray(Image.fromarray(hr[1, :48, :48]).resize((12, 12), Image.BICUBIC))
    np.testing.assert_array_equal(lr[1], ref)
    a = degrade(hr, 3, noise_std=5.0, rng=np.random.default_rng(7))
    b = degrade(hr, 3, noise_std=5.0, rng=np.random.default_rng(7))
    c = degrade(hr, 3, noise_std=5.0, rng=np.random.default_rng(8))
    assert a.shape == (3, 16, 16) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert 3.0 < np.std(a.astype(float) - degrade(hr, 3).astype(float)) < 7.0


@pytest.mark.parametrize("method,flag", [("bicubic", Image.BICUBIC), ("bilinear", Image.BILINEAR),
                                         ("lanczos", Image.LANCZOS)])
def test_upscale_resize_is_pillow(method, flag):
    imgs = smooth_images(2, 20)
    out = upscale_resize(imgs, (37, 41), method)
    assert out.shape == (2, 37, 41) and out.dtype == np.uint8
    for i in range(2):
        np.testing.assert_array_equal(out[i], np.asarray(Image.fromarray(imgs[i]).resize((41, 37), flag)))


# ------------------------------------------------------------------ training


def _state(path):
    return load_sr_model(path)[0].state_dict()


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_train_is_deterministic_and_cached(tmp_path, monkeypatch):
    hr = smooth_images(16)
    info = train_sr(hr, 4, tmp_path / "a.pt", seed=3, source="synthetic", **TINY)
    train_sr(hr, 4, tmp_path / "b.pt", seed=3, **TINY)
    _assert_same_weights(_state(tmp_path / "a.pt"), _state(tmp_path / "b.pt"))
    assert info["steps"] == 60 and info["seed"] == 3 and info["source"] == "synthetic"
    assert np.isfinite(info["final_loss"]) and not state_path(tmp_path / "a.pt").exists()
    # the same settings again: the stored info comes back without training
    monkeypatch.setattr(sr_train, "_batch", lambda *a, **k: pytest.fail("retrained a cached model"))
    again = train_sr(hr, 4, tmp_path / "a.pt", seed=3, source="elsewhere", **TINY)
    assert again["final_loss"] == info["final_loss"] and again["source"] == "synthetic"
    # other settings: a clear error that names --restart
    with pytest.raises(ConfigError, match=r"a.pt: .*differs in: seed.*restart"):
        train_sr(hr, 4, tmp_path / "a.pt", seed=4, **TINY)


def test_train_resumes_after_interrupt_bit_for_bit(tmp_path, monkeypatch):
    hr = smooth_images(16)
    train_sr(hr, 4, tmp_path / "full.pt", seed=1, **TINY)
    monkeypatch.setattr(sr_train, "STATE_EVERY", 20)
    real_batch = sr_train._batch

    def interrupt_at_37(*args):
        if args[6] == 37:  # the step argument: Ctrl-C after 37 finished steps
            raise KeyboardInterrupt
        return real_batch(*args)

    out = tmp_path / "part.pt"
    monkeypatch.setattr(sr_train, "_batch", interrupt_at_37)
    with pytest.raises(KeyboardInterrupt):
        train_sr(hr, 4, out, seed=1, **TINY)
    st = torch.load(state_path(out), weights_only=True)
    assert st["step"] == 37 and not out.exists()
    # a different setting is refused while the state is there
    monkeypatch.setattr(sr_train, "_batch", real_batch)
    with pytest.raises(ConfigError, match=r"part.state.pt: .*differs in: lr.*restart"):
        train_sr(hr, 4, out, seed=1, **{**TINY, "lr": 2e-3})
    steps_seen = []
    monkeypatch.setattr(sr_train, "_batch", lambda *a: steps_seen.append(a[6]) or real_batch(*a))
    info = train_sr(hr, 4, out, seed=1, **TINY)
    assert steps_seen[0] == 37 and info["resumed_from_step"] == 37
    assert not state_path(out).exists()
    _assert_same_weights(_state(tmp_path / "full.pt"), _state(out))


def test_training_beats_bicubic_on_smooth_images(tmp_path):
    hr = smooth_images(32, seed=0)
    held_out = smooth_images(8, seed=100)
    train_sr(hr, 4, tmp_path / "m.pt", seed=0, steps=200, batch_size=16, patch=32, progress=False)
    model, _ = load_sr_model(tmp_path / "m.pt")
    r = evaluate_sr(held_out, model, 4)
    r0 = evaluate_sr(held_out, _model(4), 4)  # untrained: about torch bicubic
    # measured over seeds 0-7: +0.8..1.7 dB over Pillow bicubic, +0.4..1.3 dB over the untrained model
    assert r["psnr"]["diff"] > 0.4 and r["psnr"]["diff_ci_low"] > 0
    assert r["psnr"]["learned"] > r0["psnr"]["learned"] + 0.2
    assert r["wins"] == 1.0 and r["ssim"]["diff"] > 0


def test_train_rejects_bad_settings(tmp_path):
    hr = smooth_images(4, 24)
    with pytest.raises(ConfigError, match="multiple of scale"):
        train_sr(hr, 4, tmp_path / "m.pt", patch=18, progress=False)
    with pytest.raises(ConfigError, match="larger than the HR images"):
        train_sr(hr, 2, tmp_path / "m.pt", patch=32, progress=False)
    with pytest.raises(ConfigError, match="scale"):
        train_sr(hr, 5, tmp_path / "m.pt", progress=False)
    (tmp_path / "notes.pt").write_text("mine")
    with pytest.raises(ConfigError, match="notes.pt: not a torch file.*write the model elsewhere"):
        train_sr(hr, 2, tmp_path / "notes.pt", steps=2, batch_size=2, patch=8, progress=False)


# ------------------------------------------------------------------ evaluation


def test_evaluate_matches_skimage_directly():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    m = _model(2, seed=5)
    with torch.no_grad():
        m.tail.weight.normal_(std=0.002)
    hr = smooth_images(5, 30, seed=9)
    r = evaluate_sr(hr, m, 2)
    assert r["n"] == 5 and r["scale"] == 2 and r["lr_shape"] == [15, 15]
    lr = degrade(hr[2:3], 2)
    learned, bic = upscale_learned(lr, m)[0], upscale_resize(lr, (30, 30), "bicubic")[0]
    per = r["per_image"]
    assert per["psnr_learned"][2] == pytest.approx(peak_signal_noise_ratio(hr[2], learned, data_range=255))
    assert per["psnr_bicubic"][2] == pytest.approx(peak_signal_noise_ratio(hr[2], bic, data_range=255))
    ssim = structural_similarity(hr[2], learned, data_range=255, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)
    assert per["ssim_learned"][2] == pytest.approx(ssim)
    d = np.array(per["psnr_learned"]) - np.array(per["psnr_bicubic"])
    assert r["psnr"]["diff"] == pytest.approx(d.mean())
    assert r["psnr"]["diff_ci_low"] <= r["psnr"]["diff"] <= r["psnr"]["diff_ci_high"]
    assert r["wins"] == pytest.approx(np.mean(d > 0))
    import json

    json.dumps(r, allow_nan=False)
    with pytest.raises(ConfigError, match="x2"):
        evaluate_sr(hr, m, 4)


# ------------------------------------------------------------------ CLI


def _cli():
    from medtl.cli import run

    return run


def test_cli_train_eval_on_npz(tmp_path, capsys, monkeypatch):
    import json

    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    npz = tmp_path / "tiny.npz"
    np.savez(npz, train_images=smooth_images(12, 32, seed=1), train_labels=rng.integers(0, 2, (12, 1)),
             val_images=smooth_images(4, 32, seed=2), val_labels=np.array([[0], [1], [0], [1]]),
             test_images=smooth_images(6, 32, seed=3), test_labels=np.array([[0], [1]] * 3))
    run = _cli()
    model = tmp_path / "sr.pt"
    code = run(["sr", "train", "--data", str(npz), "--scale", "2", "--out", str(model), "--hr-size", "32",
                "--steps", "20", "--batch", "4", "--patch", "16", "--quiet"])
    assert code == 0 and model.is_file()
    meta = load_sr_model(model)[1]
    assert meta["train"]["n_images"] == 16 and "train+val" in meta["train"]["source"]
    capsys.readouterr()
    code = run(["sr", "eval", "--model", str(model), "--data", str(npz), "--hr-size", "32",
                "--out", str(tmp_path / "eval.json")])
    text = capsys.readouterr().out
    assert code == 0 and "PSNR" in text and "SSIM" in text and "16x16 -> 32x32" in text
    r = json.loads((tmp_path / "eval.json").read_text())
    assert r["n"] == 6 and r["data"]["split"] == "test" and r["model"]["sha256"] == meta["sha256"]
    # user errors: one line, exit 2
    assert run(["sr", "eval", "--model", str(tmp_path / "nope.pt"), "--data", str(npz)]) == 2
    assert "nope.pt: SR model file not found" in capsys.readouterr().err
    assert run(["sr", "train", "--data", str(npz), "--scale", "5", "--out", str(tmp_path / "x.pt")]) == 2


# ------------------------------------------------------------------ real data


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.e2e
def test_kermany_x4_beats_bicubic(tmp_path):
    from pathlib import Path

    from medtl.data import load_image_resized

    root = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kermany_cxr224"
    if not root.is_dir():
        pytest.skip(f"{root} not present (real Kermany chest X-rays in ../shared)")

    def load(split: str, n: int) -> np.ndarray:  # n images spread over both classes, medtl's 224 px decode
        files = sorted((root / split).glob("*/*.jp*g"))
        return np.stack([load_image_resized(files[i], 224) for i in np.linspace(0, len(files) - 1, n).astype(int)])

    hr, test = load("train", 64), load("test", 8)
    torch.set_num_threads(2)
    train_sr(hr, 4, tmp_path / "k.pt", seed=0, steps=300, batch_size=16, progress=False)
    model, _ = load_sr_model(tmp_path / "k.pt")
    r = evaluate_sr(test, model, 4)
    # measured: +0.70 dB [0.60, 0.79] (the full default training: +1.68 dB on all 624 test images)
    assert r["psnr"]["learned"] > r["psnr"]["bicubic"], r["psnr"]
    assert r["psnr"]["diff_ci_low"] > 0, r["psnr"]


def test_restart_deletes_only_a_training_state(tmp_path):
    hr = smooth_images(16)
    out = tmp_path / "x4.pt"
    mine = state_path(out)
    mine.write_text("my notes, not a training state")
    with pytest.raises(ConfigError, match=r"x4.state.pt: not a .* training state, so restart does not delete it"):
        train_sr(hr, 4, out, seed=0, restart=True, **TINY)
    assert mine.read_text() == "my notes, not a training state" and not out.exists()
    # a truncated state (torch.save's zip archive cut short) is medtl's: restart removes it and trains
    torch.save({"format": "x", "pad": torch.zeros(4096)}, mine)
    mine.write_bytes(mine.read_bytes()[:2000])
    with pytest.raises(ConfigError, match="truncated or corrupt"):
        train_sr(hr, 4, out, seed=0, **TINY)
    train_sr(hr, 4, out, seed=0, restart=True, **TINY)
    assert out.is_file() and not mine.exists()
