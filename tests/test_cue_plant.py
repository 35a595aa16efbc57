"""data.augment.cue (training inputs with one cue) and data.plant (a planted marker): the training
options that make models whose cue use is known, for validating the shape-bias and shortcut probes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medtl.config import CueConfig, PlantConfig, build_config
from medtl.data import load_dataset
from medtl.data.cues import cue_batch, cue_plan, highpass, lowpass, patch_shuffle
from medtl.data.plant import burn_marker, marker_box, marker_mask, plant_cue, random_marked
from medtl.data.types import DatasetBundle, Split
from medtl.errors import ConfigError, MedtlError
from medtl.train import finetune

TINY = ["data.path=builtin:synthetic", "data.image_size=32", "data.synthetic_n={train: 64, val: 32, test: 32}",
        "train.epochs=1", "train.batch_size=32", "train.lr=0.05", "train.warmup_epochs=1", "train.num_threads=1",
        "train.precision=fp32"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # train.num_threads is the entry point's job; tiny runs are fastest on one
    yield
    torch.set_num_threads(threads)


def _strip(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


# ------------------------------------------------------------------------------ cue plan

def test_cue_plan_is_a_function_of_seed_epoch_and_index():
    cue = CueConfig(kind="patch_shuffle", p=0.5, grid=4)
    a, b = cue_plan(1000, cue, seed=3, epoch=2), cue_plan(1000, cue, seed=3, epoch=2)
    assert np.array_equal(a.apply, b.apply) and np.array_equal(a.perm, b.perm)
    assert not np.array_equal(a.apply, cue_plan(1000, cue, seed=3, epoch=3).apply)
    assert not np.array_equal(a.apply, cue_plan(1000, cue, seed=4, epoch=2).apply)
    assert 0.44 < a.apply.mean() < 0.56
    assert (np.sort(a.perm, axis=1) == np.arange(16)).all()  # every row a permutation of the 16 tiles
    assert not cue_plan(50, cue.model_copy(update={"p": 0.0}), 0, 0).apply.any()
    assert cue_plan(50, cue.model_copy(update={"p": 1.0}), 0, 0).apply.all()
    assert cue_plan(50, CueConfig(kind="lowpass"), 0, 0).perm is None
    # its own stream: not the stylize plan's draws
    from medtl.data.stylize import stylize_plan

    assert not np.array_equal(stylize_plan(1000, 0.5, 3, 2).apply, a.apply)


def test_cue_batch_depends_on_the_image_index_not_the_batch():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 1, 16, 16), generator=g, dtype=torch.uint8)
    plan = cue_plan(12, CueConfig(kind="patch_shuffle", p=0.5, grid=4), seed=1, epoch=0)
    full = cue_batch(images.float() / 255, torch.arange(12), plan)
    for order in (torch.tensor([5, 2, 11, 0]), torch.tensor([11, 7, 3, 2, 9, 6, 1, 10, 0, 8, 4, 5])):
        part = cue_batch(images[order].float() / 255, order, plan)
        assert torch.equal(part, full[order])
    assert torch.equal(full[~torch.from_numpy(plan.apply)], images[~torch.from_numpy(plan.apply)].float() / 255)
    none = cue_plan(12, CueConfig(kind="lowpass", p=0.0), 0, 0)
    x = images.float() / 255
    assert cue_batch(x, torch.arange(12), none) is x


# ------------------------------------------------------------------------------ the transforms

def _power(x: torch.Tensor) -> tuple[float, float]:
    """(low, high) spectral power of (B,1,H,W), mean removed: radial frequency below 0.04 / above 0.5 of Nyquist."""
    h, w = x.shape[-2:]
    hann = torch.outer(torch.hann_window(h, periodic=False), torch.hann_window(w, periodic=False))  # no edge leak
    f = torch.fft.fftshift(torch.fft.fft2((x - x.mean(dim=(-2, -1), keepdim=True)) * hann), dim=(-2, -1)).abs() ** 2
    yy, xx = torch.meshgrid(torch.arange(h) - h // 2, torch.arange(w) - w // 2, indexing="ij")
    r = torch.sqrt(yy.float() ** 2 + xx.float() ** 2) / (h / 2)
    return float(f[..., r < 0.04].sum()), float(f[..., r > 0.5].sum())


def test_lowpass_removes_high_frequencies_and_matches_the_probes_blur():
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(4, 1, 64, 64, generator=g)
    smooth = torch.nn.functional.interpolate(torch.rand(4, 1, 8, 8, generator=g), size=64, mode="bicubic",
                                             align_corners=False).clamp(0, 1)
    x = 0.5 * smooth + 0.5 * noise
    y = lowpass(x, 0.08)
    lo_x, hi_x = _power(x)
    lo_y, hi_y = _power(y)
    assert hi_y < 1e-4 * hi_x            # fine texture gone
    assert lo_y > 0.5 * lo_x             # layout kept
    assert torch.allclose(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=0.02)
    from medtl.probes.corruptions import blur

    assert torch.allclose(y, blur(x, 0.08 * 64), atol=1e-6)  # the probes' filter, written in medtl/data


def test_highpass_keeps_the_mean_and_removes_the_layout():
    g = torch.Generator().manual_seed(1)
    ramp = torch.linspace(0.3, 0.7, 64).view(1, 1, 1, 64).expand(3, 1, 64, 64)
    x = ramp + 0.05 * torch.randn(3, 1, 64, 64, generator=g)     # stays in [0, 1]: no clamping
    y = highpass(x, 0.08)
    assert torch.allclose(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=2e-3)
    lo_x, hi_x = _power(x)
    lo_y, hi_y = _power(y)
    assert lo_y < 0.05 * lo_x and hi_y > 0.9 * hi_x
    assert 0 <= float(highpass(torch.rand(2, 1, 16, 16, generator=g), 0.08).min()) <= 1


@pytest.mark.parametrize("side", [16, 18, 28])
def test_patch_shuffle_permutes_whole_tiles(side):
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 1, side, side, generator=g)
    grid = 4
    t = side // grid
    perm = torch.stack([torch.randperm(grid * grid, generator=g) for _ in range(3)])
    y = patch_shuffle(x, perm, grid)

    def tiles(img):
        return [img[0, r * t:(r + 1) * t, c * t:(c + 1) * t] for r in range(grid) for c in range(grid)]

    for b in range(3):
        tx, ty = tiles(x[b]), tiles(y[b])
        for k in range(grid * grid):
            assert torch.equal(ty[k], tx[int(perm[b, k])])
        key = lambda ts: sorted(tuple(tt.flatten().tolist()) for tt in ts)  # noqa: E731
        assert key(tx) == key(ty)  # the multiset of tiles is kept
    # the remainder rows / columns (side not a multiple of grid) stay in place
    assert torch.equal(y[..., grid * t:, :], x[..., grid * t:, :]) and torch.equal(y[..., grid * t:], x[..., grid * t:])
    ident = torch.arange(grid * grid).expand(3, -1)
    assert torch.equal(patch_shuffle(x, ident, grid), x)


def test_cue_grid_larger_than_the_input_is_one_line_error(tmp_path):
    with pytest.raises(MedtlError, match="cue.grid"):
        finetune(build_config({}, TINY + ["data.image_size=8", "data.augment.cue.kind=patch_shuffle",
                                          "data.augment.cue.grid=9"]), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="cue.kind"):
        build_config({}, ["data.augment.cue.kind=blur"])
    with pytest.raises(ConfigError, match="plant.splits"):
        build_config({}, ["data.plant.splits=[train, train]"])


# ------------------------------------------------------------------------------ planted marker

@pytest.mark.parametrize("side", [24, 28, 32, 64, 128, 224, 512])
def test_marker_lies_in_the_border_band_and_outside_the_lung_prior(side):
    from medtl.probes.lungmask import border_band, prior_mask

    m = marker_mask(side, side, PlantConfig().size)
    assert m.sum() >= 9
    assert not (m & ~border_band(side, side, 0.125)).any()
    assert not (m & prior_mask(side, side)).any()
    top, left, s = marker_box(side, side, PlantConfig().size)
    if side >= 28:
        assert top >= 1 and left >= 1  # inset from the edge
    img = burn_marker(np.full((1, side, side), 100, np.uint8), PlantConfig().size, 255)[0]
    assert (img[m] == 255).mean() > 0.6 and (img[m] == 0).any()   # bright with a dark "L" inside
    assert (img[~m] == 100).all()


def _bundle(labels, classes=("normal", "pneumonia"), side=28):
    splits = {}
    for k, s in enumerate(("train", "val", "test")):
        y = np.asarray(labels, dtype=np.int64)
        splits[s] = Split(images=np.full((len(y), side, side), 60, np.uint8), labels=y,
                          patients=np.array([f"p{i}" for i in range(len(y))], dtype=object),
                          ids=[f"{s}/img{i}.png" for i in range(len(y))])
    return DatasetBundle(name="t", format="folder", source="t", classes=list(classes), multilabel=False,
                         synthetic=False, splits=splits)


def test_label_marker_is_on_exactly_the_positive_images():
    rng = np.random.default_rng(0)
    b = _bundle(rng.integers(0, 2, 200))
    out = plant_cue(b, PlantConfig(kind="marker", correlate="label", splits=["train", "test"]), split_seed=0)
    m = marker_mask(28, 28, PlantConfig().size)
    for s in ("train", "test"):
        has = (out.splits[s].images[:, m] != 60).any(1)
        assert np.array_equal(has, out.splits[s].labels == 1)
    assert np.array_equal(out.splits["val"].images, b.splits["val"].images)  # not listed: untouched
    assert (b.splits["train"].images == 60).all()  # the input bundle (a cache's arrays) is not modified
    assert any(n.startswith("PLANTED CUE:") for n in out.notes)
    with pytest.raises(ConfigError, match="binary"):
        plant_cue(_bundle([0, 1, 2] * 5, classes=("a", "b", "c")), PlantConfig(kind="marker"), 0)
    assert plant_cue(b, PlantConfig(), 0) is b


def test_random_marker_is_independent_of_label_position_and_training_seed():
    ids = [f"train/x{i}.png" for i in range(4000)]
    on = random_marked(ids, "train", split_seed=0, p=0.3)
    labels = np.random.default_rng(5).integers(0, 2, 4000)
    assert 0.27 < on.mean() < 0.33
    assert abs(on[labels == 1].mean() - on[labels == 0].mean()) < 0.05
    # a function of the image id: any order, any subset (a leak policy dropping images) agrees
    order = np.random.default_rng(1).permutation(4000)
    assert np.array_equal(random_marked([ids[i] for i in order], "train", 0, 0.3), on[order])
    assert not np.array_equal(random_marked(ids, "train", 1, 0.3), on)   # data.split_seed changes it
    assert not np.array_equal(random_marked(ids, "test", 0, 0.3), on)    # and so does the split


def test_plant_leaves_the_cache_clean_and_lies_outside_the_lung_masks():
    from medtl.probes.lungmask import lung_masks

    base = TINY + ["data.plant.kind=marker"]
    planted = load_dataset(build_config({}, base).data)
    clean = load_dataset(build_config({}, TINY).data)  # the same cache entry, after the planted load
    m = marker_mask(32, 32, PlantConfig().size)
    mark = burn_marker(np.zeros((1, 32, 32), np.uint8), PlantConfig().size, 255)[0][m]
    for s in ("train", "val", "test"):
        pos = planted.splits[s].labels == 1
        assert (planted.splits[s].images[pos][:, m] == mark).all()
        assert np.array_equal(planted.splits[s].images[~pos], clean.splits[s].images[~pos])
        assert not (clean.splits[s].images[:, m] == mark).all(1).any()
    test = planted.splits["test"].images
    assert not (lung_masks(test).masks & m).any()  # the classical lung masks never cover it


# ------------------------------------------------------------------------------ end to end

def test_planted_and_cue_runs_train_and_record_it(tmp_path):
    from medtl.probes.runs import load_run

    plant = ["data.plant.kind=marker", "data.plant.correlate=random", "data.plant.p=0.5"]
    a = finetune(build_config({}, TINY + plant + ["data.augment.cue.kind=highpass"]), tmp_path / "a", progress=False)
    b = finetune(build_config({}, TINY + plant + ["seed=1"]), tmp_path / "b", progress=False)
    assert a.run.cue == "highpass" and b.run.cue == "none"
    notes = [n for n in a.run.data_notes if n.startswith("PLANTED CUE")]
    assert len(notes) == 1 and notes == [n for n in b.run.data_notes if n.startswith("PLANTED CUE")]
    ra, rb = load_run(tmp_path / "a"), load_run(tmp_path / "b")  # the probes see the planted test split
    assert np.array_equal(ra.images, rb.images)
    m = marker_mask(32, 32, PlantConfig().size)
    mark = burn_marker(np.zeros((1, 32, 32), np.uint8), PlantConfig().size, 255)[0][m]
    assert 0 < (ra.images[:, m] == mark).all(1).sum() < len(ra.images)


def test_cue_training_resumes_identically(tmp_path, stop_at_epoch):
    cfg = build_config({}, TINY + ["train.epochs=2", "data.augment.cue.kind=patch_shuffle", "data.augment.cue.p=0.5"])
    ref = finetune(cfg, tmp_path / "ref", progress=False)
    plain = finetune(build_config({}, TINY + ["train.epochs=2"]), tmp_path / "plain", progress=False)
    assert [h["train_loss"] for h in ref.history] != [h["train_loss"] for h in plain.history]
    stop_at_epoch(1)
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg, tmp_path / "run", progress=False)
    stop_at_epoch(None)
    resumed = finetune(cfg, tmp_path / "run", progress=False)
    assert "resuming after epoch 1" in (tmp_path / "run" / "train.log").read_text()
    assert resumed.test == ref.test and resumed.val == ref.val
    assert _strip(resumed.history) == _strip(ref.history)
    with pytest.raises(ConfigError, match="data.augment.cue"):  # another cue is another run
        finetune(build_config({}, TINY + ["train.epochs=2", "data.augment.cue.kind=lowpass"]), tmp_path / "run",
                 progress=False)
