"""``medtl export --format monai-bundle``: MONAI's own bundle runner, given the exported bundle and
image files, writes the probabilities medtl computes for the same files; bad input is one line and
leaves nothing behind."""
from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medtl.cli import run as cli
from medtl.export import export_monai_bundle

TOL = 1e-4
TINY = {"data": {"synthetic_n": {"train": 32, "val": 16, "test": 16}, "image_size": 16},
        "train": {"epochs": 1, "batch_size": 16, "num_threads": 1}}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread for this module's tiny networks: faster than two on 2 shared cores, where
    OpenMP threads wait for each other (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One real finished run (synthetic, 16 px, one epoch: a few seconds), shared by the tests;
    its metrics carry the val-chosen threshold and the val-fitted temperature."""
    from medtl.config import build_config
    from medtl.train import finetune

    root = tmp_path_factory.mktemp("export-run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDTL_CACHE", str(root / "cache"))
        finetune(build_config(TINY), root / "run", progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def bundle(finished_run, tmp_path_factory):
    return export_monai_bundle(finished_run, tmp_path_factory.mktemp("export") / "bundle")


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _odd_images(folder: Path) -> list[Path]:
    """Files of every kind medtl's reader treats differently, none of them 16 px square but one."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    u8 = lambda *shape: rng.integers(0, 256, shape, dtype=np.uint8)  # noqa: E731
    Image.fromarray(u8(30, 41), "L").save(folder / "gray.png")
    Image.fromarray(u8(150, 200, 3), "RGB").save(folder / "rgb_large.png")  # >= 6x: Pillow's reduce first
    Image.fromarray(u8(50, 50, 4), "RGBA").save(folder / "rgba.png")  # transparency over black
    Image.fromarray(u8(20, 20, 2), "LA").save(folder / "la.png")
    Image.fromarray(rng.integers(0, 65535, (33, 21), dtype=np.uint16)).save(folder / "deep16.png")  # min-max
    Image.fromarray(rng.random((24, 28), dtype=np.float32) * 7 - 2, "F").save(folder / "float.tif")
    Image.fromarray(u8(80, 64, 3), "RGB").save(folder / "photo.jpg", quality=90)  # JPEG draft decode
    pal = Image.fromarray(u8(18, 22), "L").convert("P")
    pal.info["transparency"] = 0
    pal.save(folder / "palette.png", transparency=0)
    Image.fromarray(u8(10, 12), "L").save(folder / "small.bmp")  # upscaled
    Image.fromarray(u8(16, 16), "L").save(folder / "exact.png")
    return sorted(folder.iterdir())


def _run_bundle(bundle_dir: Path, images: Path, out: Path, monkeypatch) -> dict[str, np.ndarray]:
    """MONAI's bundle runner on ``images``; {file name: probabilities} from its CSV."""
    import monai.bundle

    monkeypatch.setattr(sys, "path", list(sys.path))  # the runner puts the bundle root on sys.path
    monai.bundle.run(config_file=str(bundle_dir / "configs" / "inference.json"),
                     meta_file=str(bundle_dir / "configs" / "metadata.json"), bundle_root=str(bundle_dir),
                     dataset_dir=str(images), output_dir=str(out), logging_file=False)
    with open(out / "predictions.csv", newline="") as f:
        return {Path(row[0]).name: np.array([float(v) for v in row[1:]]) for row in csv.reader(f)}


def _medtl_probs(run_dir: Path, paths: list[Path]) -> dict[str, np.ndarray]:
    """medtl's inference path: the run's network and best checkpoint (fast convolutions as the run
    trained), each file decoded and resized by medtl's reader, fp32 softmax."""
    from medtl.data.images import load_image_resized
    from medtl.models import model_for_run
    from medtl.models.inference import predict_proba
    from medtl.runs import Run

    run = Run(run_dir)
    cfg = run.config()
    model, _ = model_for_run(cfg, len(_metrics(run_dir)["classes"]))
    model.load_state_dict(run.load_checkpoint()["model"])
    x = np.stack([load_image_resized(p, cfg.data.image_size, cfg.data.resize) for p in paths])
    prob = predict_proba(model.eval(), torch.from_numpy(x).unsqueeze(1))
    return {p.name: prob[i] for i, p in enumerate(paths)}


def _own_test_split_as_pngs(run_dir: Path, folder: Path, cache: Path) -> list[str]:
    """The run's test images (already 16 px uint8) as PNG files, in the order of its predictions."""
    from medtl.data import load_dataset
    from medtl.runs import Run

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDTL_CACHE", str(cache))
        images = load_dataset(Run(run_dir).config().data).splits["test"].images
    names = [f"test_{i:03d}.png" for i in range(len(images))]
    for name, im in zip(names, images):
        Image.fromarray(im, "L").save(folder / name)
    return names


def test_monai_runner_reproduces_medtl_probabilities(finished_run, bundle, tmp_path, monkeypatch):
    from medtl.runs import read_predictions

    images = tmp_path / "images"
    odd = _odd_images(images)
    own = _own_test_split_as_pngs(finished_run, images, tmp_path / "cache")
    (images / "notes.txt").write_text("not an image\n")  # not an image suffix: not scored
    got = _run_bundle(bundle, images, tmp_path / "eval", monkeypatch)
    assert sorted(got) == sorted([p.name for p in odd] + own)
    for p in got.values():
        assert p.shape == (2,) and abs(p.sum() - 1) < 1e-6
    ref = _medtl_probs(finished_run, odd)
    diffs = {name: float(np.abs(got[name] - ref[name]).max()) for name in ref}
    assert max(diffs.values()) < TOL, diffs
    # the reference varies across these files: a preprocessing slip (a transposed or unscaled image,
    # another resize) would show as a difference far above the tolerance
    assert np.ptp([r[1] for r in ref.values()]) > 100 * TOL
    # the run's own test split through the bundle: the probabilities finetune stored for it
    stored = read_predictions(finished_run)["p"]
    assert len(stored) == len(own)
    np.testing.assert_allclose([got[n][1] for n in own], stored, atol=TOL, rtol=0)


def test_metadata_readme_and_torchscript(finished_run, bundle):
    from monai.data import load_net_with_metadata

    m = _metrics(finished_run)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    # the MONAI bundle specification's mandatory keys and tensor format keys
    for key, kind in {"version": str, "monai_version": str, "pytorch_version": str, "numpy_version": str,
                      "optional_packages_version": dict, "task": str, "description": str, "authors": str,
                      "copyright": str, "network_data_format": dict, "changelog": dict, "schema": str}.items():
        assert isinstance(meta.get(key), kind), key
    fmt = meta["network_data_format"]
    for spec in (fmt["inputs"]["image"], fmt["outputs"]["pred"]):
        assert {"type", "format", "num_channels", "spatial_shape", "dtype", "value_range", "is_patch_data",
                "channel_def"} <= set(spec)
    assert fmt["inputs"]["image"]["spatial_shape"] == [16, 16] and fmt["inputs"]["image"]["num_channels"] == 1
    assert fmt["outputs"]["pred"]["channel_def"] == {"0": m["classes"][0], "1": m["classes"][1]}
    facts = meta["medtl"]
    assert facts["backbone"] == "resnet18" and facts["input_size"] == 16 and facts["classes"] == m["classes"]
    assert facts["threshold"]["value"] == m["threshold"]["value"] and facts["threshold"]["chosen_on"] == "val"
    assert facts["temperature"]["value"] == m["calibration"]["temperature"]
    assert facts["temperature"]["applied_in_bundle"] is False
    assert meta["eval_metrics"]["test_auc"] == m["test"]["auc"]
    # no patient or image identifier anywhere in the bundle's text
    text = "".join((bundle / f).read_text() for f in ("configs/metadata.json", "configs/inference.json",
                                                      "docs/README.md"))
    assert "synth-" not in text and "synthetic:test" not in text and "synthetic:val" not in text
    readme = (bundle / "docs" / "README.md").read_text()
    assert f"**{m['threshold']['value']!r}**" in readme and f"{m['calibration']['temperature']:.6g}" in readme
    assert "not applied" in readme
    # the TorchScript file carries the same metadata (MONAI's reader) and the run's weights
    net, embedded, _ = load_net_with_metadata(str(bundle / "models" / "model.ts"))
    assert embedded == meta
    state = torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    ckpt = torch.load(finished_run / "checkpoint_best.pt", map_location="cpu", weights_only=True)["model"]
    assert state.keys() == ckpt.keys() and all(torch.equal(state[k], ckpt[k]) for k in state)
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert net(x).shape == (2, 2)


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("medtl: error:") and "\n" not in err and "Traceback" not in err, err
    return err


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: (size, modification time)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cli_export_refusals_and_force(finished_run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "sub" / "bundle"
    args = ["export", str(finished_run), "--format", "monai-bundle", "--out", str(out)]
    assert cli(args) == 0
    assert f"MONAI bundle: {out}" in capsys.readouterr().out
    first = _tree(out)
    assert {"configs/metadata.json", "configs/inference.json", "docs/README.md", "models/model.pt",
            "models/model.ts"} <= set(first)
    # an existing bundle: refused without --force, untouched
    assert cli(args) == 2
    assert "--force" in _one_error(capsys) and _tree(out) == first
    # a folder holding anything else: refused even with --force
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.txt").write_text("mine\n")
    assert cli(["export", str(finished_run), "--format", "monai-bundle", "--out", str(other), "--force"]) == 2
    assert "not a bundle medtl exported" in _one_error(capsys)
    assert [p.name for p in other.iterdir()] == ["thesis.txt"] and (other / "thesis.txt").read_text() == "mine\n"
    # not a finished run (no metrics.json, no checkpoint), a missing folder, the run folder itself, bad options
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(finished_run / "config.yaml", half)
    run_before = _tree(finished_run)
    for bad, words in [([str(half)], "not a finished medtl run folder"), ([str(tmp_path / "nope")], "no such"),
                       ([str(finished_run), "--model-format", "onnx"], "--model-format"),
                       ([str(finished_run), "--format", "onnx"], "--format")]:
        new_out = tmp_path / "new" / "b"
        fmt = [] if "--format" in bad else ["--format", "monai-bundle"]
        assert cli(["export", *bad, *fmt, "--out", str(new_out)]) == 2
        assert words in _one_error(capsys)
        assert not (tmp_path / "new").exists()
    assert cli(["export", str(finished_run), "--format", "monai-bundle", "--out", str(finished_run / "b")]) == 2
    assert "inside the run folder" in _one_error(capsys) and _tree(finished_run) == run_before
    # --force replaces medtl's bundle, here with the state-dict form, which MONAI's runner also runs
    assert cli(args + ["--force", "--model-format", "state_dict", "-q"]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["bundle"]  # no temporary folder left
    assert not (out / "models" / "model.ts").exists()
    assert json.loads((out / "configs" / "metadata.json").read_text())["medtl"]["model_format"] == "state_dict"
    images = tmp_path / "images"
    odd = _odd_images(images)
    got = _run_bundle(out, images, tmp_path / "eval", monkeypatch)
    ref = _medtl_probs(finished_run, odd)
    assert max(float(np.abs(got[n] - ref[n]).max()) for n in ref) < TOL


@pytest.mark.parametrize("resize, sr", [("squash", None), ("crop", None), ("pad", None), ("squash", "bicubic")])
def test_bundle_preprocessing_is_medtls_pixel_for_pixel(tmp_path, resize, sr):
    """The config's preprocessing chain, evaluated by MONAI's config parser, gives exactly the pixels
    medtl's reader (and its plain super-resolution resize) gives, for every resize mode."""
    from monai.bundle import ConfigParser

    from medtl.data.images import load_image_resized
    from medtl.export.bundle_files import IMPORTS, preprocessing_items
    from medtl.sr.apply import upscale_resize

    size, side = 16, (40 if sr else 16)
    parser = ConfigParser({"imports": IMPORTS, **preprocessing_items(size, resize, side, sr)})
    chain = parser.get_parsed_content("preprocessing")
    for path in _odd_images(tmp_path / "images"):
        x = chain({"image": str(path)})["image"]
        assert x.dtype == torch.float32 and tuple(x.shape) == (1, side, side), path.name
        ref = load_image_resized(path, size, resize)
        if sr:
            ref = upscale_resize(ref[None], (side, side), sr)[0]
        expected = torch.from_numpy(ref).float().div(255.0)  # as medtl feeds its network
        assert torch.equal(x.as_tensor()[0], expected), path.name


@pytest.mark.e2e
def test_the_documented_shell_command_runs_the_bundle(finished_run, bundle, tmp_path, monkeypatch):
    """`python -m monai.bundle run ...` as the bundle's README gives it (a fresh process, MONAI's
    own command line through python-fire) writes the probabilities the in-process runner writes."""
    import subprocess

    images = tmp_path / "images"
    odd = _odd_images(images)
    want = _run_bundle(bundle, images, tmp_path / "in-process", monkeypatch)
    out = tmp_path / "shell"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
           "--meta_file", str(bundle / "configs" / "metadata.json"), "--bundle_root", str(bundle),
           "--dataset_dir", str(images), "--output_dir", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    with open(out / "predictions.csv", newline="") as f:
        got = {Path(row[0]).name: np.array([float(v) for v in row[1:]]) for row in csv.reader(f)}
    assert sorted(got) == sorted(p.name for p in odd) == sorted(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-6, rtol=0)
