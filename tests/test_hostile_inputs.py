"""Hostile inputs through the CLI, as a user would meet them (issue 12): no tracebacks, no silent
garbage, never a user's file deleted.  Each case named in the issue is here (usage errors are
in test_cli.py, the truncated resume state's library refusal in test_finetune.py); a seeded
sample of ``scripts/fuzz_inputs.py`` runs at the end."""
from __future__ import annotations

import importlib.util
import io
import json
import pickle
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medtl.cli import run as cli
from _data_helpers import SECRET_ID, SECRET_NAME, gradient, make_class_folder, make_dicom, write_png

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
TINY = ["data.image_size=16", "train.epochs=1", "train.batch_size=8", "train.num_threads=1", "train.warmup_epochs=0"]
SYNTH = ["data.path=builtin:synthetic", "data.synthetic_n={train: 16, val: 8, test: 8}"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("MEDTL_OFFLINE", "1")


def sets(*items):
    return [a for s in items for a in ("--set", s)]


def one_error(capsys, rc_expected: int = 2) -> str:
    """The single ``medtl: error:`` line of the last command (and nothing like a traceback)."""
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err + cap.out
    lines = [ln for ln in cap.err.splitlines() if ln.startswith("medtl: error:")]
    assert len(lines) == 1, cap.err
    return lines[0]


def tree(path: Path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def finetune_args(out: Path, *more: str, data: list[str] = SYNTH) -> list[str]:
    return ["finetune", "-q", "--out", str(out)] + sets(*data, *TINY, *more)


# ------------------------------------------------------------------ 1. no command loses data

def test_restart_refuses_a_user_folder_with_a_lookalike_config(tmp_path, capsys):
    """The issue's data loss: DIR/config.yaml with a name: key and DIR/sub/thesis.txt."""
    user = tmp_path / "mine"
    (user / "sub").mkdir(parents=True)
    (user / "sub" / "thesis.txt").write_text("chapter 1\n")
    (user / "config.yaml").write_text("name: mine\n")
    before = tree(user)
    for extra in (["--restart"], []):
        assert cli(finetune_args(user) + extra) == 2
        line = one_error(capsys)
        assert str(user) in line and "not a medtl run folder" in line and ".medtl-run.json" in line
        assert tree(user) == before


def test_restart_removes_only_what_medtl_wrote(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(finetune_args(out)) == 0
    marker = json.loads((out / ".medtl-run.json").read_text())
    assert marker["medtl_version"] and len(marker["run_id"]) == 32
    (out / "notes.txt").write_text("my notes\n")
    before = tree(out)
    assert cli(finetune_args(out, "train.lr=0.01") + ["--restart"]) == 2
    assert "notes.txt" in one_error(capsys) and tree(out) == before  # refused whole: nothing removed
    (out / "notes.txt").unlink()
    assert cli(finetune_args(out, "train.lr=0.01") + ["--restart"]) == 0
    assert json.loads((out / ".medtl-run.json").read_text())["run_id"] != marker["run_id"]  # a new run


def test_legacy_run_folder_without_marker_still_reads_and_restarts(tmp_path, capsys):
    """Run folders written before the marker existed: resumed/reused; restart removes only
    medtl's files, and refuses while a user's file is inside."""
    out = tmp_path / "old"
    assert cli(finetune_args(out)) == 0
    (out / ".medtl-run.json").unlink()
    metrics = (out / "metrics.json").read_text()
    assert cli(finetune_args(out)) == 0  # finished: reused as it is
    assert (out / "metrics.json").read_text() == metrics
    (out / "sub").mkdir()
    (out / "sub" / "thesis.txt").write_text("mine\n")
    assert cli(finetune_args(out) + ["--restart"]) == 2
    assert "sub" in one_error(capsys) and (out / "sub" / "thesis.txt").read_text() == "mine\n"
    assert (out / "metrics.json").read_text() == metrics


@pytest.mark.parametrize("kind", ["existing file", "under a file", "proc"])
def test_finetune_out_that_cannot_be_a_folder(tmp_path, capsys, kind):
    afile = tmp_path / "afile.txt"
    afile.write_text("a user's file\n")
    out = {"existing file": afile, "under a file": afile / "sub", "proc": Path("/proc/medtl-no-such")}[kind]
    for extra in ([], ["--restart"]):
        assert cli(finetune_args(out) + extra) == 2
        line = one_error(capsys)
        assert (str(afile) if kind != "proc" else "/proc") in line
        assert afile.read_text() == "a user's file\n"


def _finished_run(tmp_path: Path) -> Path:
    out = tmp_path / "good"
    assert cli(finetune_args(out)) == 0
    return out


def test_every_command_that_writes_spares_a_planted_user_file(tmp_path, capsys):
    """A user's file where each writing command would write: refused in one line, untouched."""
    run = _finished_run(tmp_path)
    run_before = tree(run)
    afile = tmp_path / "thesis.txt"
    afile.write_text("my thesis\n")
    sweep_cfg = tmp_path / "sweep.yaml"
    sweep_cfg.write_text("name: s\nseeds: 1\nset: {data.path: 'builtin:synthetic', data.image_size: 16, "
                         "data.synthetic_n: {train: 16, val: 8, test: 8}, train.epochs: 1}\narms: {a: {}}\n")
    commands = {
        "finetune": finetune_args(afile), "finetune --restart": finetune_args(afile) + ["--restart"],
        "sweep": ["sweep", "-q", "--config", str(sweep_cfg), "--out", str(afile)],
        "compare": ["compare", str(run), "--out", str(afile), "--no-plots", "-B", "200"],
        "robustness-report": ["robustness-report", str(run), "--out", str(afile / "report"), "--quick"],
        "data preview": ["data", "preview", "builtin:synthetic", "--out", str(afile)],
        "sr train": ["sr", "train", "--data", "builtin:synthetic", "--scale", "2", "--out", str(afile), "--steps", "2",
                     "--hr-size", "16", "-q"],
        "sr train --restart": ["sr", "train", "--data", "builtin:synthetic", "--scale", "2", "--out", str(afile),
                               "--steps", "2", "--hr-size", "16", "--restart", "-q"],
        "sr eval --out": ["sr", "eval", "--model", str(run / "checkpoint_best.pt"), "--data", "builtin:synthetic",
                          "--out", str(afile)],
        "probe": ["probe", "translation", str(tmp_path)],
        "track": ["track", str(run), "--uri", str(afile)],
        "weights fetch": ["weights", "fetch", "resnet18.tv_in1k", "--from", str(afile)],
        "data fetch": ["data", "fetch", "medmnist:pneumoniamnist", "--from", str(afile)],
    }
    for name, argv in commands.items():
        assert cli(argv) == 2, name
        line = one_error(capsys)
        assert str(afile if name != "probe" else tmp_path) in line, (name, line)
        assert afile.read_text() == "my thesis\n", name
    assert tree(run) == run_before


def test_preview_never_overwrites_a_file_that_is_not_a_png(tmp_path, capsys):
    target = tmp_path / "notes.png"
    target.write_text("not an image, my notes\n")
    argv = ["data", "preview", "builtin:synthetic", "--out", str(target)] + sets("data.synthetic_n={train: 4, val: 2, "
                                                                                  "test: 2}", "data.image_size=16")
    assert cli(argv) == 2 and "not a PNG" in one_error(capsys)
    assert target.read_text() == "not an image, my notes\n"
    png = tmp_path / "old.png"
    Image.new("L", (4, 4)).save(png)
    assert cli(argv[:3] + ["--out", str(png)] + argv[5:]) == 0  # an earlier preview is replaced
    assert Image.open(png).size != (4, 4)


# ------------------------------------------------------------------ 2. no tracebacks

@pytest.mark.parametrize("setting,key", [("train.device=tpu9", "train.device"),
                                         ("train.num_threads=100000", "train.num_threads")])
def test_schema_validates_device_and_threads(tmp_path, capsys, setting, key):
    assert cli(finetune_args(tmp_path / "r", setting)) == 2
    assert key in one_error(capsys) and not (tmp_path / "r").exists()


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _images(n=16, size=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (n, size, size), dtype=np.uint8), np.arange(n) % 2


def test_npz_string_labels_and_npy_renamed(tmp_path, capsys):
    imgs, lab = _images()
    strings = _npz(tmp_path / "strings.npz", train_images=imgs, train_labels=np.array(["a", "b"] * 8),
                   test_images=imgs[:4], test_labels=np.array(["a", "b"] * 2))
    npy = tmp_path / "renamed.npz"
    np.save(open(npy, "wb"), imgs)
    for f, what in ((strings, "labels must be integer class indices"), (npy, "not an .npz archive")):
        assert cli(["data", "check", str(f)]) == 1
        out = capsys.readouterr().out
        assert f.name in out and what in out
        assert cli(finetune_args(tmp_path / "r", data=[f"data.path={f}"])) == 2
        line = one_error(capsys)
        assert f.name in line and what in line and not (tmp_path / "r").exists()


def _png_header(w: int, h: int) -> bytes:
    def chunk(t, data):
        return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 8)) + chunk(b"IEND", b""))


def test_decompression_bomb_header_in_check_preview_and_finetune(tmp_path, capsys):
    root = make_class_folder(tmp_path / "ds", n_per_class=10)
    bomb = root / "a" / "huge.png"
    bomb.write_bytes(_png_header(20000, 20000))
    assert cli(["data", "check", str(root)]) == 1
    out = capsys.readouterr().out
    assert "a/huge.png" in out and "DecompressionBomb" in out
    assert cli(["data", "preview", str(bomb), "--out", str(tmp_path / "p.png")]) == 2
    assert "huge.png" in one_error(capsys) and not (tmp_path / "p.png").exists()
    assert cli(finetune_args(tmp_path / "r", data=[f"data.path={root}"])) == 2
    assert "huge.png" in one_error(capsys) and not (tmp_path / "r").exists()


def test_dicom_transfer_syntax_that_is_not_one(tmp_path, capsys):
    import pydicom

    p = make_dicom(tmp_path / "ts.dcm", gradient(32, 32))
    ds = pydicom.dcmread(p)
    ds.file_meta.TransferSyntaxUID = "1.2.3.4"
    ds.save_as(p, enforce_file_format=False)
    assert cli(["data", "check", str(p)]) == 1
    out = capsys.readouterr().out
    assert "ts.dcm: TransferSyntaxUID '1.2.3.4' is not a DICOM transfer syntax" in out
    assert cli(["data", "preview", str(p), "--out", str(tmp_path / "x.png")]) == 2
    assert "is not a DICOM transfer syntax" in one_error(capsys)


def test_truncated_resume_state_through_the_cli_refuses_then_restarts(tmp_path, capsys, stop_at_epoch):
    stop_at_epoch(1)
    out = tmp_path / "run"
    assert cli(finetune_args(out, "train.epochs=2")) == 130
    stop_at_epoch(None)
    state = out / "state" / "last.pt"
    state.write_bytes(state.read_bytes()[:500])
    capsys.readouterr()
    assert cli(finetune_args(out, "train.epochs=2")) == 2
    line = one_error(capsys)
    assert "last.pt: unreadable training state" in line and "restart" in line
    assert (out / "checkpoint_best.pt").is_file()  # the refusal removed nothing
    assert cli(finetune_args(out, "train.epochs=2") + ["--restart"]) == 0
    assert (out / "metrics.json").is_file() and not state.exists()


def test_raw_pickle_weights_are_refused_as_unsafe(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (print, ("payload ran",))

    w = tmp_path / "weights.pth"
    w.write_bytes(pickle.dumps({"model": Payload()}))
    assert cli(finetune_args(tmp_path / "r", f"model.weights={w}")) == 2
    line = one_error(capsys)
    assert "weights.pth: refused: unsafe: a raw Python pickle" in line and "pickled objects are not loaded" in line
    assert "corrupt or truncated" not in line


# ------------------------------------------------------------------ 3. data check is an integrity check

def _dicom_mutants(tmp_path: Path) -> dict[str, Path]:
    import pydicom

    good = make_dicom(tmp_path / "dcm" / "good.dcm", gradient(32, 32))
    data = good.read_bytes()
    out = {}

    def mutant(name, **kw):
        ds = pydicom.dcmread(good)
        for k, v in kw.items():
            if v is None:
                delattr(ds, k)
            else:
                setattr(ds, k, v)
        p = tmp_path / "dcm" / f"{name}.dcm"
        ds.save_as(p, enforce_file_format=False)
        out[name] = p

    (tmp_path / "dcm" / "trunc242.dcm").write_bytes(data[:242])
    (tmp_path / "dcm" / "trunc-pixels.dcm").write_bytes(data[:-300])
    out["trunc242"], out["trunc-pixels"] = tmp_path / "dcm" / "trunc242.dcm", tmp_path / "dcm" / "trunc-pixels.dcm"
    mutant("rows0", Rows=0)
    mutant("bits7", BitsAllocated=7)
    mutant("bits32", BitsAllocated=32)
    mutant("stored-gt-allocated", BitsStored=17)
    mutant("no-pixeldata", PixelData=None)
    mutant("frames-short", NumberOfFrames=3)
    mutant("slope0", RescaleSlope="0", RescaleIntercept="0")
    mutant("slope-nan", RescaleSlope="NaN", RescaleIntercept="0")
    return out


EXPECTED_REASON = {
    "trunc242": "no pixel data", "trunc-pixels": "pixel data holds", "rows0": "Rows=0", "bits7": "BitsAllocated 7",
    "bits32": "pixel data holds", "stored-gt-allocated": "BitsStored 17", "no-pixeldata": "no pixel data",
    "frames-short": "3 frame(s)", "slope0": "RescaleSlope", "slope-nan": "RescaleSlope",
}


def test_check_reports_each_bad_dicom_with_its_reason_and_exits_1(tmp_path, capsys):
    with pytest.warns(UserWarning):  # pydicom warns while the test writes the NaN slope
        files = _dicom_mutants(tmp_path)
    for name, p in files.items():
        assert cli(["data", "check", str(p)]) == 1, name
        out = capsys.readouterr().out
        assert f"{p.name}: " in out and EXPECTED_REASON[name] in out, (name, out)
        assert SECRET_NAME not in out and SECRET_ID not in out
    # a folder of them: every bad file listed, each with its reason
    assert cli(["data", "check", str(tmp_path / "dcm"), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    bad = {f["id"]: f["error"] for f in report["bad_files"]["files"]}
    assert set(bad) == {p.name for p in files.values()} and report["ok"] is False
    assert "good.dcm" not in bad


@pytest.mark.parametrize("name", ["slope0", "slope-nan"])
def test_unusable_dicom_rescale_is_refused_by_preview_and_training(tmp_path, capsys, name):
    with pytest.warns(UserWarning):
        p = _dicom_mutants(tmp_path)[name]
    assert cli(["data", "preview", str(p), "--out", str(tmp_path / "x.png")]) == 2
    line = one_error(capsys)
    assert "unusable DICOM rescale: RescaleSlope" in line and "fix the header" in line
    root = make_class_folder(tmp_path / "ds", n_per_class=10)
    shutil.copy(p, root / "a" / p.name)
    assert cli(finetune_args(tmp_path / "r", data=[f"data.path={root}"])) == 2
    assert p.name in one_error(capsys) and not (tmp_path / "r").exists()


def _folder_with(tmp_path: Path, name: str, data: bytes, n: int = 10) -> Path:
    root = make_class_folder(tmp_path / "ds", n_per_class=n)
    (root / "a" / name).write_bytes(data)
    return root


def _jpeg(seed=0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (64, 64), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _png_with_flipped_pixel_bit() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64), dtype=np.uint8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[data.find(b"IDAT") + 200] ^= 0x10  # inside the compressed pixel data (4 KB of noise)
    return bytes(data)


@pytest.mark.parametrize("name,data,reason", [
    ("cut.jpeg", _jpeg()[:700], "truncated"),
    ("flipped.png", _png_with_flipped_pixel_bit(), "corrupt PNG"),
    ("zero.png", b"", "empty file"),
    ("text.png", b"this is text, not a picture\n" * 4, "cannot decode image"),
    ("header-only.png", _png_header(16, 16)[:33], "corrupt PNG: UnidentifiedImageError: cannot identify image "
                                                   "file)"),
], ids=["truncated-jpeg", "png-pixel-bit", "zero-bytes", "text-as-png", "png-header-only"])
def test_check_decodes_every_image_and_exits_1_naming_the_file(tmp_path, capsys, name, data, reason):
    root = _folder_with(tmp_path, name, data)
    assert cli(["data", "check", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"a/{name}: " in out and reason in out and "PROBLEMS FOUND" in out
    assert cli(finetune_args(tmp_path / "r", data=[f"data.path={root}"])) == 2  # training refuses it too
    assert name in one_error(capsys)


def test_check_fast_is_the_header_pass(tmp_path, capsys):
    root = _folder_with(tmp_path, "cut.jpeg", _jpeg()[:700])
    assert cli(["data", "check", str(root), "--fast"]) == 0  # headers only: the truncation is not seen
    assert "fast (headers only)" in capsys.readouterr().out
    (root / "b" / "zero.png").write_bytes(b"")
    assert cli(["data", "check", str(root), "--fast"]) == 1  # ... but an unreadable header is
    assert "b/zero.png: empty file" in capsys.readouterr().out


def test_check_verifies_in_worker_processes(tmp_path):
    from medtl.data import check_dataset
    from medtl.data.check import PARALLEL_MIN

    root = make_class_folder(tmp_path / "ds", n_per_class=PARALLEL_MIN // 2 + 4)
    (root / "b" / "cut.jpeg").write_bytes(_jpeg(1)[:500])
    r = check_dataset(str(root), workers=2)
    assert r["check"]["workers"] == 2 and r["check"]["mode"].startswith("full")
    assert [f["id"] for f in r["bad_files"]["files"]] == ["b/cut.jpeg"]
    assert r["image_size"]["most_common_hw"] == [16, 20]  # sizes come from the verified files


def test_check_on_real_dicoms_and_a_truncated_real_one(shared_dir, tmp_path, capsys):
    d = shared_dir / "data" / "dicom"
    assert cli(["data", "check", str(d)]) == 0 and cli(["data", "check", str(d / "uncompressed")]) == 0
    capsys.readouterr()
    for src in (d / "CR_chest_PA_RG1_J2KI.dcm", d / "uncompressed" / "CR_chest_PA_RG1_uncompressed.dcm"):
        cut = tmp_path / f"cut-{src.name}"
        cut.write_bytes(src.read_bytes()[: src.stat().st_size * 2 // 3])
        assert cli(["data", "check", str(cut)]) == 1
        assert f"{cut.name}: " in capsys.readouterr().out


def test_check_reports_suspicious_but_legal_content(tmp_path, capsys):
    """A class with 3 images, a blank image, a test split with one class: warnings, exit 0."""
    root = tmp_path / "ds"
    for i in range(12):
        write_png(root / "train" / "a" / f"a{i}.png", 60, seed=i)
        write_png(root / "train" / "b" / f"b{i}.png", 190, seed=100 + i)
    for i in range(4):
        write_png(root / "test" / "a" / f"t{i}.png", 60, seed=300 + i)
    for i in range(3):
        write_png(root / "train" / "rare" / f"r{i}.png", 250, seed=400 + i)
    Image.new("L", (20, 16), 9).save(root / "train" / "a" / "blank.png")
    assert cli(["data", "check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "warning: class 'rare' has only 3 images" in out
    assert "warning: the test split holds one class only ('a')" in out
    assert "blank image" in out and "a/blank.png" in out and "result   OK" in out


# ------------------------------------------------------------------ 4. training refuses what cannot be meant

def test_mixed_label_types_in_a_csv_column(tmp_path, capsys):
    d = tmp_path / "csv"
    d.mkdir()
    rows = ["path,label"]
    for i, lab in enumerate(["0", "1", "2.5", "NORMAL", "PNEUMONIA"] * 6):
        write_png(d / f"{i}.png", 40 + 5 * i, seed=i)
        rows.append(f"{i}.png,{lab}")
    (d / "labels.csv").write_text("\n".join(rows) + "\n")
    assert cli(finetune_args(tmp_path / "r", data=[f"data.path={d / 'labels.csv'}"])) == 2
    line = one_error(capsys)
    assert "labels.csv: the label column mixes kinds of labels" in line and "make every label a class name" in line
    assert not (tmp_path / "r").exists()
    assert cli(["data", "check", str(d / "labels.csv")]) == 1
    assert "training refuses: " in capsys.readouterr().out


def test_npz_stray_label_one_class_train_and_nan_pixels(tmp_path, capsys):
    imgs, lab = _images()
    stray = lab.copy()
    stray[3] = 7
    f32 = imgs.astype(np.float32) / 255
    f32[1, 2, 2] = np.nan
    cases = {
        "stray.npz": (dict(train_images=imgs, train_labels=stray, test_images=imgs[:4], test_labels=lab[:4]),
                      "classes 2, 3, 4, 5, 6 have no images"),
        "pneumoniamnist_stray.npz": (dict(train_images=imgs[::-1], train_labels=stray, test_images=imgs[:4],
                                          test_labels=lab[:4]), "labels outside the 2 classes of pneumoniamnist"),
        "oneclass.npz": (dict(train_images=imgs, train_labels=np.zeros(16, int), val_images=imgs[:4],
                              val_labels=lab[:4], test_images=imgs[4:8], test_labels=lab[4:8]),
                         "the train split holds one class only"),
        "nan.npz": (dict(train_images=f32, train_labels=lab, test_images=f32[4:8], test_labels=lab[:4]),
                    "NaN or infinite pixel values"),
    }
    for name, (arrays, reason) in cases.items():
        f = _npz(tmp_path / name, **arrays)
        assert cli(finetune_args(tmp_path / "r", data=[f"data.path={f}", "data.on_leak=warn"])) == 2, name
        line = one_error(capsys)
        assert name in line and reason in line, line
        assert cli(["data", "check", str(f)]) == 1, name
        assert reason in capsys.readouterr().out


def test_a_class_with_three_images_warns_in_the_log_and_metrics(tmp_path):
    import logging

    root = tmp_path / "ds"
    k = 0
    for split, n_a, n_b in (("train", 14, 2), ("val", 4, 0), ("test", 4, 1)):
        for i in range(n_a + n_b):
            cls, value = ("common", 60) if i < n_a else ("rare", 200)
            write_png(root / split / cls / f"{split}{i}.png", value, seed=k)
            k += 1
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logging.getLogger("medtl").addHandler(handler)
    try:
        out = tmp_path / "run"
        assert cli(finetune_args(out, data=[f"data.path={root}"])) == 0
    finally:
        logging.getLogger("medtl").removeHandler(handler)
    assert any("class 'rare' has only 3 images" in r.getMessage() for r in records)  # a warning: shown with -q
    assert "class 'rare' has only 3 images" in (out / "train.log").read_text()
    notes = json.loads((out / "metrics.json").read_text())["run"]["data_notes"]
    assert any(n.startswith("WARNING: class 'rare' has only 3 images") for n in notes)
    assert any("the val split holds one class only" in n for n in notes)


# ------------------------------------------------------------------ 5. the fuzz suite, a seeded sample

@pytest.mark.e2e
def test_fuzz_suite_sample(tmp_path):
    spec = importlib.util.spec_from_file_location("fuzz_inputs", REPO / "scripts" / "fuzz_inputs.py")
    fuzz = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_inputs"] = fuzz  # its dataclasses look their module up
    spec.loader.exec_module(fuzz)
    lines = []
    summary = fuzz.fuzz(list(fuzz.FAMILIES), seed=1, per=1, keep=tmp_path / "fuzz", report=lines.append, sample=5)
    assert summary["cases"] >= 40 and set(summary["by_family"]) == set(fuzz.FAMILIES)
    assert summary["ok"], "\n".join(lines)
    assert f"cases={summary['cases']} clean={summary['cases']} traceback=0 silent=0 lost=0" in lines


def test_an_unusable_mlflow_store_is_refused_before_training(tmp_path, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    for store in (blocker, blocker / "mlruns"):  # a plain file; a store folder under a file
        out = tmp_path / f"run-{store.name}"
        assert cli(finetune_args(out) + ["--mlflow", str(store)]) == 2
        assert str(blocker) in one_error(capsys) and not out.exists()
        assert cli(["sweep", "--config", str(tmp_path / "none.yaml"), "--out", str(out), "--mlflow", str(store)]) == 2
        assert str(blocker) in one_error(capsys) and not out.exists()
    assert blocker.read_text() == "mine"
