"""`medtl pretrain` at toy size: formula-driven fractals, the recipes, the registered weight
that a fine-tuning config loads in full, provenance in metrics.json, resume and refusals."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medtl.cli import run as cli
from medtl.data import fractaldb as F
from medtl.errors import ConfigError, WeightsError

TOY = ["--set", "pretrain.classes=6", "--set", "pretrain.instances=12", "--set", "pretrain.eval_instances=3",
       "--set", "pretrain.image_size=24", "--set", "pretrain.epochs=2", "--set", "train.batch_size=24",
       "--set", "train.num_threads=1", "--set", "train.precision=fp32"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))


# ------------------------------------------------------------------ the source

def test_fractals_are_deterministic_distinct_per_class_and_varied_within():
    a = F.generate(4, {"train": 6, "val": 2}, 32, seed=3)
    b = F.generate(4, {"train": 6, "val": 2}, 32, seed=3)
    assert all(np.array_equal(a[s][0], b[s][0]) for s in a)                      # same seed, same bytes
    c = F.generate(4, {"train": 6}, 32, seed=4)["train"][0]
    assert not np.array_equal(a["train"][0], c)                                    # another seed, other codes
    x, y = a["train"]
    assert x.shape == (24, 32, 32) and x.dtype == np.uint8 and list(np.bincount(y)) == [6, 6, 6, 6]
    fill = (x > 0).mean(axis=(1, 2))
    assert fill.min() > 0.02 and fill.max() < 0.9                                  # an attractor, not empty or full
    means = np.stack([x[y == k].astype(float).mean(0) for k in range(4)])
    within = np.mean([np.abs(x[y == k].astype(float) - means[k]).mean() for k in range(4)])
    between = np.mean([np.abs(means[i] - means[j]).mean() for i in range(4) for j in range(i + 1, 4)])
    assert within > 1.0                                                            # instances vary
    assert not any(np.array_equal(x[i], x[j]) for i in range(len(x)) for j in range(i + 1, len(x)))
    assert between > 0                                                             # classes differ in mean shape
    for k in range(4):
        code = F.class_code(3, k)
        sv = [np.linalg.svd(m[:4].reshape(2, 2), compute_uv=False).max() for m in code]
        assert 2 <= len(code) <= 4 and max(sv) <= F.MAX_SINGULAR + 1e-9           # contractive maps


def test_the_fractal_source_loads_as_a_dataset(tmp_path):
    from medtl.config import build_config
    from medtl.data import load_dataset
    from medtl.data.registry import data_fingerprint, locate

    cfg = build_config({}, ["data.path=builtin:fractaldb", "data.image_size=16",
                            "data.fractal={classes: 5, instances: 4, eval_instances: 2}"])
    b = load_dataset(cfg.data)
    assert {s: len(v.labels) for s, v in b.splits.items()} == {"train": 20, "val": 10, "test": 10}
    assert b.classes == [f"ifs{k}" for k in range(5)] and b.synthetic and b.leaks["status"] == "clean"
    assert locate("builtin:fractaldb").builtin and data_fingerprint("builtin:fractaldb") == "builtin:fractaldb:v1"


def test_textured_fractals_carry_their_class_stripes_on_the_same_figures():
    """texture: class draws each image's figure (its attractor, dilated and closed) over its
    class's stripes, bright on the figure and dim on the ground; the figures are the plain
    attractors', and the stripes' orientation is the class's."""
    plain = F.generate(3, {"train": 4}, 32, seed=1)["train"]
    tex = F.generate(3, {"train": 4}, 32, seed=1, texture="class")["train"]
    assert np.array_equal(plain[1], tex[1])
    assert np.array_equal(F.generate(3, {"train": 4}, 32, seed=1, texture="none")["train"][0], plain[0])
    assert np.array_equal(F.generate(3, {"train": 4}, 32, seed=1, texture="class")["train"][0], tex[0])  # same bytes
    figs = F.support(plain[0])
    x = tex[0].astype(float)
    for i in range(len(x)):
        assert figs[i][plain[0][i] > 0].all()                                       # the figure covers its points
        assert x[i][figs[i]].mean() > 2 * x[i][~figs[i]].mean()                     # bright figure, dim ground
    for c in range(3):                                                              # the grating's orientation
        img = x[tex[1] == c][0] - x[tex[1] == c][0].mean()
        spec = np.abs(np.fft.fft2(img))
        spec[0, 0] = 0
        ky, kx = np.unravel_index(spec.argmax(), spec.shape)
        fy, fx = np.fft.fftfreq(32)[ky], np.fft.fftfreq(32)[kx]
        theta, period = F.class_texture(c, 32)
        assert abs(abs(np.cos(theta) * fx + np.sin(theta) * fy) - np.hypot(fx, fy)) < 0.03
        assert abs(1 / np.hypot(fx, fy) - period) < 1.0
    with pytest.raises(ValueError, match="texture"):
        F.generate(2, {"train": 2}, 16, texture="dots")


def test_pretrain_names_the_fractal_texture_and_refuses_it_for_a_folder(tmp_path):
    from medtl.pretrain import load_pretrain_config
    from medtl.pretrain.run import stage_config

    cfg = load_pretrain_config(None, ["pretrain.fractal_texture=class"])
    assert stage_config(cfg, 0, None).data.fractal.texture == "class"
    folder = load_pretrain_config(None, [f"pretrain.source={tmp_path}", "pretrain.fractal_texture=class"])
    with pytest.raises(ConfigError, match="fractal_texture"):
        stage_config(folder, 0, None)


# ------------------------------------------------------------------ recipes

def test_recipes_are_the_named_settings():
    from medtl.pretrain.run import load_pretrain_config, stage_config

    def cfg(recipe, *extra):
        return load_pretrain_config(None, [f"pretrain.recipe={recipe}", *extra])

    plain = stage_config(cfg("in"), 0, None)
    assert (plain.train.schedule, plain.train.warmup_epochs, plain.train.label_smoothing, plain.train.mixup_alpha,
            plain.train.no_bias_decay, plain.train.bn_gamma, plain.data.augment.stylize) == \
        ("step", 0.0, 0.0, 0.0, False, {}, 0.0)
    assert stage_config(cfg("sin"), 0, None).data.augment.stylize == 1.0
    assert stage_config(cfg("sin+in"), 0, None).data.augment.stylize == 0.5
    tricks = stage_config(cfg("tricks", "pretrain.epochs=40"), 0, None)
    assert (tricks.train.schedule, tricks.train.label_smoothing, tricks.train.mixup_alpha, tricks.train.no_bias_decay,
            tricks.train.warmup_epochs) == ("cosine", 0.1, 0.2, True, 2.0)
    assert tricks.train.bn_gamma == {"layer*.*.bn2": 0.0}                          # ResNet-18: BasicBlock's last BN
    two = cfg("sin+in->in", "pretrain.epochs=9", "train.lr=0.2")
    first, second = stage_config(two, 0, None), stage_config(two, 1, "/x/first.pt")
    assert first.data.augment.stylize == 0.5 and first.train.epochs == 9 and first.model.weights == "none"
    assert second.data.augment.stylize == 0.0 and second.train.epochs == 3 and second.model.weights == "/x/first.pt"
    assert second.train.lr == pytest.approx(0.02)
    assert first.data.path == "builtin:fractaldb" and first.data.fractal.classes == 100
    with pytest.raises(ConfigError, match="pretrain.classes/instances.*describe builtin:fractaldb"):
        stage_config(cfg("in", "pretrain.source=/some/folder", "pretrain.classes=10"), 0, None)
    with pytest.raises(ConfigError, match="pretrain.recipe"):
        cfg("imagenet")


# ------------------------------------------------------------------ the command

def test_pretrain_registers_a_weight_that_finetune_loads_in_full(tmp_path, capsys):
    out = tmp_path / "pt"
    assert cli(["pretrain", "--recipe", "sin", "--name", "toy_sin", "--out", str(out), "-q", *TOY]) == 0
    said = capsys.readouterr().out
    assert "registered weights toy_sin (SIN, resnet18" in said
    rec = json.loads((out / "pretrain.json").read_text())
    assert rec["recipe"] == "sin" and rec["family"] == "SIN" and rec["source"] == "builtin:fractaldb"
    assert rec["fractal"] == {"classes": 6, "instances": 12, "seed": 0} and rec["image_size"] == 24
    assert (out / "sin" / "metrics.json").is_file() and (out / "backbone.pt").is_file()
    assert cli(["weights", "list"]) == 0 and "toy_sin" in capsys.readouterr().out
    # a fine-tuning run names it: every backbone tensor loads, and the run records where it came from
    run = tmp_path / "ft"
    assert cli(["finetune", "--set", "model.weights=toy_sin", "--set", "data.image_size=24", "--set",
                "data.synthetic_n={train: 32, val: 16, test: 16}", "--set", "train.epochs=1", "--set",
                "train.num_threads=1", "--out", str(run), "-q"]) == 0
    assert "weights: toy_sin missing=[] unexpected=[]" in (run / "train.log").read_text()
    m = json.loads((run / "metrics.json").read_text())["run"]
    assert m["weights"] == "toy_sin" and m["weights_family"] == "SIN" and m["weights_sha256"] == rec["sha256"]
    assert m["weights_provenance"]["recipe"] == "sin" and m["weights_provenance"]["epochs"] == [2]
    # re-running the same command trains nothing and registers the same bytes
    capsys.readouterr()
    assert cli(["pretrain", "--recipe", "sin", "--name", "toy_sin", "--out", str(out), "-q", *TOY]) == 0
    assert json.loads((out / "pretrain.json").read_text())["sha256"] == rec["sha256"]
    # pretraining is deterministic: an independent run of the same settings gives the same bytes
    assert cli(["pretrain", "--recipe", "sin", "--name", "toy_sin_again", "--out", str(tmp_path / "again"), "-q",
                *TOY]) == 0
    assert json.loads((tmp_path / "again" / "pretrain.json").read_text())["sha256"] == rec["sha256"]


def test_weight_names_are_guarded(tmp_path):
    from medtl.models.local_weights import register_local

    f1, f2 = tmp_path / "a.pt", tmp_path / "b.pt"
    f1.write_bytes(b"one")
    f2.write_bytes(b"two")
    kw = dict(arch="resnet18", fmt="torchvision", family="IN", provenance={}, mean=(0.5,) * 3, std=(0.25,) * 3,
              input_size=(3, 32, 32))
    register_local("mine", f1, **kw)
    register_local("mine", f1, **kw)                                               # same bytes: a no-op
    with pytest.raises(WeightsError, match="mine: already names other locally made weights"):
        register_local("mine", f2, **kw)
    with pytest.raises(WeightsError, match="a published weight name"):
        register_local("resnet18.tv_in1k", f1, **kw)
    from medtl.models import get_weights

    assert get_weights("mine").sha256 == __import__("hashlib").sha256(b"one").hexdigest()


# ------------------------------------------------------------------ knowledge distillation (tricks)

def test_distill_loss_is_the_tempered_divergence():
    import torch

    from medtl.train.distill import distill_loss

    s = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]], requires_grad=True)
    assert float(distill_loss(s, s.detach(), 4.0).detach()) == pytest.approx(0.0, abs=1e-6)   # same outputs: nothing to learn
    t = torch.tensor([[0.0, 3.0, 0.0], [1.0, -1.0, 2.0]])
    T = 2.0
    p, q = torch.softmax(t / T, 1), torch.softmax(s.detach() / T, 1)
    want = float((p * (p.log() - q.log())).sum(1).mean() * T * T)
    loss = distill_loss(s, t, T)
    assert float(loss) == pytest.approx(want, rel=1e-5)
    loss.backward()                                                                # the gradient moves s toward t
    assert float(((s - 0.1 * s.grad).detach() / T).softmax(1).sub(p).abs().sum()) < float(q.sub(p).abs().sum())
    ml = distill_loss(torch.zeros(2, 3), torch.zeros(2, 3), 1.0, multilabel=True)
    assert float(ml) == pytest.approx(float(torch.nn.functional.binary_cross_entropy(torch.full((2, 3), 0.5),
                                                                                       torch.full((2, 3), 0.5))))


def test_tricks_distils_from_a_named_teacher(tmp_path):
    """pretrain.teacher (a pretrain output folder) changes what tricks learns, and the provenance
    names the teacher's checkpoint; a teacher on other classes or another recipe is refused."""
    teacher = tmp_path / "teacher"
    assert cli(["pretrain", "--recipe", "in", "--name", "toy_teacher", "--out", str(teacher), "-q", *TOY]) == 0
    t_sha = __import__("medtl.io", fromlist=["sha256_file"]).sha256_file(teacher / "in" / "checkpoint_best.pt")
    plain, kd = tmp_path / "plain", tmp_path / "kd"
    assert cli(["pretrain", "--recipe", "tricks", "--name", "toy_tricks", "--out", str(plain), "-q", *TOY]) == 0
    assert cli(["pretrain", "--recipe", "tricks", "--name", "toy_tricks_kd", "--out", str(kd), "-q", *TOY,
                "--set", f"pretrain.teacher={teacher}", "--set", "train.distill_alpha=0.7"]) == 0
    rec, rec_plain = (json.loads((d / "pretrain.json").read_text()) for d in (kd, plain))
    assert rec["teacher"] == {"run": str(teacher / "in"), "checkpoint_sha256": t_sha, "alpha": 0.7,
                              "temperature": 2.0}
    assert rec_plain["teacher"] is None and rec["sha256"] != rec_plain["sha256"]
    assert "distilling from" in (kd / "tricks" / "train.log").read_text()
    with pytest.raises(ConfigError, match="other classes"):
        from medtl.pretrain.run import load_pretrain_config, pretrain

        pretrain(load_pretrain_config(None, [a for a in TOY if a != "--set"] + [
            "pretrain.classes=5", "pretrain.recipe=tricks", f"pretrain.teacher={teacher}"]), tmp_path / "bad",
            progress=False)
    assert not (tmp_path / "bad" / "tricks" / "metrics.json").exists()
    assert cli(["pretrain", "--recipe", "sin", "--out", str(tmp_path / "x"), "-q", *TOY, "--set",
                f"pretrain.teacher={teacher}"]) == 2
