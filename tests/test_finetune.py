"""End-to-end `medtl finetune` on tiny synthetic data: outputs, determinism, resume, errors."""
import csv
import json
import re

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from medtl.cli import run as cli
from medtl.config import build_config
from medtl.errors import ConfigError
from medtl.train import finetune

TINY = [
    "data.path=builtin:synthetic", "data.image_size=32",
    "data.synthetic_n={train: 96, val: 48, test: 48}",
    "model.backbone=resnet18", "model.weights=none",
    "train.epochs=3", "train.batch_size=32", "train.lr=0.05", "train.warmup_epochs=1",
    "train.num_threads=1", "train.bn_gamma={'layer4.*.bn2': 0.0}",
]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def _cfg(*extra):
    return build_config({}, TINY + list(extra))


def test_run_folder_contents(tmp_path):
    out = tmp_path / "run"
    m = finetune(_cfg(), out, progress=False).as_dict()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".medtl-run.json", "config.yaml", "metrics.json", "log.csv", "checkpoint_best.pt", "train.log",
         "predictions_test.npz", "predictions_val.npz", "reliability.png"])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == m
    for k in ("auc", "acc", "sensitivity", "specificity", "n"):
        assert k in saved["test"] and k in saved["val"]
    assert saved["test"]["n"] == 48
    for section in ("val", "test"):  # every single run carries its case CIs
        ci = saved[section]["ci"]
        assert ci["auc"]["method"] == "DeLong" and ci["auc"]["n"] == 48
        assert all(ci[k]["method"] == "Wilson" for k in ("acc", "sensitivity", "specificity"))
        assert all(ci[k]["low"] <= saved[section][k] <= ci[k]["high"] for k in ("auc", "acc", "sensitivity"))
    assert saved["data"]["leaks"]["status"] == "clean" and "leak_status" not in saved["run"]  # synthetic names patients
    assert saved["run"]["synthetic"] is True and "SYNTHETIC" in saved["run"]["dataset"]
    assert saved["threshold"]["chosen_on"] == "val"
    assert 0.0 <= saved["threshold"]["value"] <= 1.0
    # the resolved config reloads to the same config
    assert build_config(yaml.safe_load((out / "config.yaml").read_text())) == _cfg()
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"train_loss", "val_auc", "lr"} <= set(rows[0])
    log = (out / "train.log").read_text()
    assert "bn_gamma applied to 2 layers: layer4.0.bn2=0, layer4.1.bn2=0" in log
    assert "SYNTHETIC" in log
    ckpt = torch.load(out / "checkpoint_best.pt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == saved["run"]["best_epoch"]


def test_same_seed_same_metrics_other_seed_differs(tmp_path):
    a = finetune(_cfg(), tmp_path / "a", progress=False)
    b = finetune(_cfg(), tmp_path / "b", progress=False)
    c = finetune(_cfg("seed=1"), tmp_path / "c", progress=False)
    assert a.test == b.test and a.val == b.val
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    assert [h["train_loss"] for h in a.history] != [h["train_loss"] for h in c.history]


def test_resume_after_interrupt_gives_identical_metrics(tmp_path, stop_at_epoch):
    ref = finetune(_cfg(), tmp_path / "ref", progress=False)

    stop_at_epoch(2)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        finetune(_cfg(), out, progress=False)
    assert (out / "state" / "last.pt").is_file() and not (out / "metrics.json").exists()
    stop_at_epoch(None)
    resumed = finetune(_cfg(), out, progress=False)
    assert "resuming after epoch 2" in (out / "train.log").read_text()
    assert resumed.test == ref.test and resumed.val == ref.val
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(resumed.history) == strip(ref.history)
    assert not (out / "state").exists()  # resume state is dropped once the run finished
    # a finished run is not recomputed
    again = finetune(_cfg(), out, progress=False)
    assert again == resumed


def test_a_state_written_before_a_config_key_existed_still_resumes(tmp_path, stop_at_epoch):
    """A run interrupted under an older medtl: its state's settings lack keys added since (here
    data.train_fraction and model.weights_strict); with today's defaults it is the same run."""
    import torch

    stop_at_epoch(1)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        finetune(_cfg(), out, progress=False)
    state_file = out / "state" / "last.pt"
    state = torch.load(state_file, weights_only=True)
    del state["settings"]["data"]["train_fraction"], state["settings"]["model"]["weights_strict"]
    torch.save(state, state_file)
    stop_at_epoch(None)
    finetune(_cfg(), out, progress=False)
    assert "resuming after epoch 1" in (out / "train.log").read_text()
    # a key whose stored value differs from today's is still a different run
    stop_at_epoch(1)
    with pytest.raises(KeyboardInterrupt):
        finetune(_cfg(), tmp_path / "other", progress=False)
    state = torch.load(tmp_path / "other" / "state" / "last.pt", weights_only=True)
    state["settings"]["data"]["train_fraction"] = 0.5
    torch.save(state, tmp_path / "other" / "state" / "last.pt")
    stop_at_epoch(None)
    with pytest.raises(ConfigError, match="differs in: data.train_fraction"):
        finetune(_cfg(), tmp_path / "other", progress=False)


def test_existing_folder_with_other_config_is_refused(tmp_path):
    out = tmp_path / "run"
    finetune(_cfg(), out, progress=False)
    with pytest.raises(ConfigError, match="differs in: train.lr"):
        finetune(_cfg("train.lr=0.01"), out, progress=False)


def test_cli_finetune_and_errors(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["finetune", "--quiet", "--out", str(out)]
    for s in TINY:
        args += ["--set", s]
    assert cli(args) == 0
    printed = capsys.readouterr().out
    assert "test [SYNTHETIC data]:" in printed
    assert re.search(r"auc \d\.\d{2,4} \(95% CI \d\.\d+-\d\.\d+, DeLong, n=48\); acc ", printed), printed

    bad = tmp_path / "bad"
    assert cli(["finetune", "--quiet", "--out", str(bad), "--set", "train.epoch=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medtl: error:") and "unknown key 'train.epoch'" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not bad.exists()


def test_nan_loss_is_one_line_error_and_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "nan"
    args = ["finetune", "--quiet", "--out", str(out)]
    for s in TINY + ["train.lr=1e30", "train.warmup_epochs=0", "train.precision=fp32"]:
        args += ["--set", s]
    assert cli(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "loss became" in err and "Traceback" not in err
    assert not out.exists()


def test_corrupt_image_gives_one_line_error_and_no_folder(tmp_path, capsys):
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for cls in ("NORMAL", "PNEUMONIA"):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(root / cls / f"{i}.png")
    (root / "PNEUMONIA" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    out = tmp_path / "run"
    assert cli(["finetune", "--quiet", "--out", str(out), "--set", f"data.path={root}",
                "--set", "train.epochs=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "broken.png" in err and "Traceback" not in err
    assert not out.exists()


def test_csv_missing_label_column(tmp_path, capsys):
    d = tmp_path / "csvdata"
    d.mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(d / "a.png")
    (d / "labels.csv").write_text("path,patient\na.png,p1\n")
    out = tmp_path / "run"
    assert cli(["finetune", "--quiet", "--out", str(out), "--set", f"data.path={d / 'labels.csv'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "labels.csv" in err and "label" in err
    assert not out.exists()


def _nih_style_csv(tmp_path, n=48):
    rng = np.random.default_rng(1)
    d = tmp_path / "nih"
    (d / "images").mkdir(parents=True)
    rows = ["Image Index,Finding Labels,Patient ID"]
    for i in range(n):
        img = rng.integers(0, 255, (24, 24), dtype=np.uint8)
        labels = [c for c, on in zip(("Effusion", "Nodule"), (i % 2 == 0, i % 3 == 0)) if on]
        if "Effusion" in labels:
            img[4:12, 4:12] = 255  # learnable signal
        Image.fromarray(img).save(d / "images" / f"{i:05d}.png")
        rows.append(f"{i:05d}.png,{'|'.join(labels) or 'No Finding'},{i // 2}")
    (d / "labels.csv").write_text("\n".join(rows) + "\n")
    return d / "labels.csv"


def test_multilabel_csv_run_reports_per_class_auc(tmp_path):
    csv_path = _nih_style_csv(tmp_path)
    cfg = build_config({}, [f"data.path={csv_path}", "data.image_size=24", "train.epochs=1",
                            "train.batch_size=16", "train.num_threads=1", "data.val_fraction=0.25"])
    m = finetune(cfg, tmp_path / "run", progress=False)
    assert m.task == "multilabel" and set(m.classes) == {"Effusion", "Nodule"}
    assert set(m.test.at("auc_per_class")) == {"Effusion", "Nodule"}
    assert m.threshold.rule == "argmax"
    pred = np.load(tmp_path / "run" / "predictions_test.npz")
    assert pred["p"].shape == (m.test.n, 2)


def test_recipe_options_mixup_head_only_balanced(tmp_path):
    cfg = _cfg("train.mixup_alpha=0.4", "train.trainable=head", "train.class_weighting=balanced",
               "train.optimizer=adamw", "train.lr=0.001", "train.schedule=step", "train.epochs=2")
    torch.manual_seed(0)
    m = finetune(cfg, tmp_path / "run", progress=False)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "trainable: ['head']" in log
    # head-only fine-tuning leaves the backbone exactly as initialised, BN running stats too
    from medtl.models import create_model

    torch.manual_seed(cfg.seed)
    init, _ = create_model("resnet18", 2)
    from medtl.models import apply_bn_gamma

    apply_bn_gamma(init, cfg.train.bn_gamma)
    best = torch.load(tmp_path / "run" / "checkpoint_best.pt", weights_only=True)["model"]
    for k, v in init.state_dict().items():
        if k.startswith("backbone."):
            assert torch.equal(best[k], v), k
    assert not torch.equal(best["head.weight"], init.state_dict()["head.weight"])
    assert m.test.n == 48


def test_fast_conv_on_and_off_give_the_same_metrics(tmp_path):
    """train.fast_conv switches the exact tiny-map convolution paths; off is plain Conv2d.
    On a short fp32 run at 28 px (layer4 maps are 1x1, layer3 2x2: both fast paths engage) the
    two agree to float tolerance, and metrics.json records which one ran."""
    from medtl.models import create_model
    from medtl.models.fastconv import TrimmedConv2d

    on, off = create_model("resnet18", 2)[0], create_model("resnet18", 2, trim_convs=False)[0]
    assert any(isinstance(m, TrimmedConv2d) for m in on.modules())
    assert not any(isinstance(m, TrimmedConv2d) for m in off.modules())
    extra = ["data.image_size=28", "train.epochs=1", "train.precision=fp32", "train.bn_gamma={}", "train.lr=0.001"]
    a = finetune(_cfg(*extra, "train.fast_conv=true"), tmp_path / "on", progress=False)
    b = finetune(_cfg(*extra, "train.fast_conv=false"), tmp_path / "off", progress=False)
    assert a.run.fast_conv is True and b.run.fast_conv is False
    assert a.history[0]["train_loss"] == pytest.approx(b.history[0]["train_loss"], rel=1e-4)
    for split in ("val", "test"):
        assert getattr(a, split).auc == pytest.approx(getattr(b, split).auc, abs=2e-3)
        assert getattr(a, split).loss == pytest.approx(getattr(b, split).loss, rel=1e-3)


def test_truncated_resume_state_is_refused_cleanly_then_restart_works(tmp_path, stop_at_epoch):
    stop_at_epoch(1)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        finetune(_cfg(), out, progress=False)
    stop_at_epoch(None)
    state = out / "state" / "last.pt"
    state.write_bytes(state.read_bytes()[:300])  # a copy cut short by a full disk or a flaky share
    with pytest.raises(ConfigError, match=r"last.pt: unreadable training state .*restart to discard it"):
        finetune(_cfg(), out, progress=False)
    m = finetune(_cfg(), out, progress=False, restart=True)
    assert m.test.n == 48 and not state.exists()


def test_class_weighted_loss_follows_the_logits_device():
    """With train.class_weighting: balanced on CUDA, training logits are on the GPU and evaluation
    logits on the CPU; the weights must meet both.  'meta' stands in for the GPU here: the old
    code put the weights on the training device and failed on CPU logits."""
    from types import SimpleNamespace

    from medtl.train.loop import Task

    labels = np.array([0, 0, 0, 1])
    bundle = SimpleNamespace(classes=["a", "b"], multilabel=False, splits={"train": SimpleNamespace(labels=labels)})
    task = Task(bundle, 0.1, "balanced", torch.device("meta"))
    target = torch.tensor([0, 1, 1, 0])
    for dev in ("cpu", "meta"):
        logits = torch.zeros(4, 2, device=dev)
        loss = task.loss(logits, target.to(dev))
        assert loss.device.type == dev
    cpu = task.loss(torch.tensor([[2.0, 0.0]] * 4), target)
    plain = torch.nn.functional.cross_entropy(torch.tensor([[2.0, 0.0]] * 4), target,
                                              weight=torch.tensor([4 / 6, 2.0]), label_smoothing=0.1)
    assert float(cpu) == pytest.approx(float(plain))
    ml = Task(SimpleNamespace(classes=["x", "y"], multilabel=True,
                              splits={"train": SimpleNamespace(labels=np.array([[1, 0], [0, 0], [1, 1]]))}),
              0.0, "balanced", torch.device("meta"))
    assert ml.loss(torch.zeros(3, 2), torch.ones(3, 2)).device.type == "cpu"


def test_final_evaluation_is_fp32_after_bf16_training(tmp_path):
    from medtl.models import create_model
    from medtl.models.inference import predict_logits
    from medtl.data import load_dataset

    cfg = _cfg("train.precision=bf16", "train.epochs=2")
    m = finetune(cfg, tmp_path / "run", progress=False)
    assert m.run.precision == "bf16" and m.run.eval_precision == "fp32"
    assert m.threshold.precision == "fp32"
    saved = np.load(tmp_path / "run" / "predictions_test.npz")["p"]
    model, _ = create_model("resnet18", 2)
    model.load_state_dict(torch.load(tmp_path / "run" / "checkpoint_best.pt", weights_only=True)["model"])
    test = load_dataset(cfg.data).splits["test"]
    x = torch.from_numpy(test.images).unsqueeze(1)
    p32 = torch.softmax(predict_logits(model, x), 1)[:, 1].numpy()
    p16 = torch.softmax(predict_logits(model, x, amp_dtype=torch.bfloat16), 1)[:, 1].numpy()
    np.testing.assert_allclose(saved, p32, rtol=0, atol=1e-5)  # the fp32 forward, not bf16's
    assert np.abs(saved - p16).max() > 1e-4


def test_resume_refuses_another_precision_unless_allowed(tmp_path, monkeypatch, stop_at_epoch):
    from medtl.train import runtime

    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)  # precision auto -> bf16 here ...
    stop_at_epoch(1)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        finetune(_cfg("train.precision=auto"), out, progress=False)
    stop_at_epoch(None)
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)  # ... and fp32 on the "other machine"
    with pytest.raises(ConfigError, match=r"differs in: runtime.precision"):
        finetune(_cfg("train.precision=auto"), out, progress=False)
    m = finetune(_cfg("train.precision=auto"), out, progress=False, allow_runtime_change=True)
    assert m.run.precision == "fp32" and (out / "metrics.json").is_file()


def test_a_multiclass_run_records_one_vs_rest_operating_points(tmp_path, monkeypatch):
    """A 3-class run (formula-driven fractals) reads every class against the rest: sensitivity at
    fixed specificity and net benefit per class, and their macro means, in metrics.json."""
    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))
    cfg = build_config({}, ["data.path=builtin:fractaldb", "data.fractal.classes=3", "data.fractal.instances=20",
                            "data.fractal.eval_instances=10", "data.image_size=16", "train.epochs=1",
                            "train.batch_size=16", "train.num_threads=1", "train.precision=fp32"])
    m = finetune(cfg, tmp_path / "run", progress=False)
    assert m.task == "multiclass"
    raw = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    per = raw["operating_points_per_class"]
    assert set(per) == set(m.classes)
    assert raw["sens_at_spec95"] == pytest.approx(np.mean([per[c]["sens_at_spec95"] for c in m.classes]))
    assert all(-1 <= per[c]["net_benefit_10"] <= 1 for c in m.classes)
    # per-class AUC (one class against the rest) is in the record, and derived from the saved
    # predictions for a run whose metrics.json predates it
    from medtl.runs import Run
    from medtl.stats.comparison import metric_value

    per_auc = raw["auc_per_class"]
    assert set(per_auc) == set(m.classes)
    doc = json.loads((tmp_path / "run" / "metrics.json").read_text())
    del doc["test"]["auc_per_class"]
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(doc))
    old = Run(tmp_path / "run").record
    for c in m.classes:
        assert metric_value(old, tmp_path / "run", f"test.auc_per_class.{c}") == pytest.approx(per_auc[c], nan_ok=True)
