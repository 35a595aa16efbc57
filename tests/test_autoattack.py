"""AutoAttack (APGD-CE, APGD-T, FAB-T, Square from torchattacks) in the adversarial probe, on a tiny
binary run. The standard budgets (100 iterations, 5000 queries) take minutes on 2 cores, so the
tests shrink them: what is checked is the wiring and the properties, not the attack strength."""
from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import torch

from test_probes_helpers import tiny_runs

pytest.importorskip("torchattacks", reason="torchattacks not installed (pip install --no-deps torchattacks==3.5.1)")

from medtl.errors import ConfigError  # noqa: E402
from medtl.probes import adversarial  # noqa: E402
from medtl.probes.adversarial import adversarial_probe, craft  # noqa: E402
from medtl.models.inference import predict_proba  # noqa: E402
from medtl.probes.runs import load_run  # noqa: E402

EPS = [0.0, 2 / 255, 16 / 255]
SMALL = {"apgd_steps": 5, "fab_steps": 5, "square_queries": 20}


@pytest.fixture()
def small_budget(monkeypatch):
    for k, v in SMALL.items():
        monkeypatch.setitem(adversarial.AUTOATTACK, k, v)


@pytest.fixture()
def run_dir(tmp_path):
    """A private copy of a tiny run (the probe caches its results inside the run folder)."""
    return shutil.copytree(tiny_runs()["a0"], tmp_path / "run")


def test_standard_budgets_and_opt_in():
    assert adversarial.AUTOATTACK == {"apgd_steps": 100, "fab_steps": 100, "square_queries": 5000, "max_targets": 9}
    assert "autoattack_linf" not in adversarial.DEFAULTS["attacks"]  # slow: only when asked for
    assert {"autoattack_linf", "autoattack_l2"} <= set(adversarial.KNOWN_ATTACKS)


def test_autoattack_probe_rows(run_dir, small_budget):
    run = load_run(run_dir)
    r = adversarial_probe(run_dir, eps=EPS, attacks=["autoattack_linf", "autoattack_l2"], n_images=12, plots=False)
    assert r["n_images"] == 12
    clean = r["clean"]
    for name in ("autoattack_linf", "autoattack_l2"):
        rows = r["attacks"][name]
        assert [row["eps"] for row in rows] == EPS                      # one row per ε, same layout
        assert {"eps", "auc", "acc", "success_rate"} <= set(rows[0])
        assert rows[0]["acc"] == clean["acc"] and rows[0]["auc"] == clean["auc"]  # ε = 0: the clean images
        assert rows[0]["success_rate"] == 0 and rows[0]["max_linf"] == 0
        for row in rows:
            assert row["acc"] <= clean["acc"]                            # a failed attack keeps the clean image
            assert 0 <= row["success_rate"] <= 1
        assert rows[-1]["success_rate"] > 0.5                            # 16/255 on a 16-px toy model
        assert rows[-1]["acc"] < clean["acc"]
    linf, l2 = r["attacks"]["autoattack_linf"], r["attacks"]["autoattack_l2"]
    assert all(row["max_linf"] <= row["eps"] + 1e-6 for row in linf)
    assert all(row["max_l2"] <= row["eps"] * 16 + 1e-4 for row in l2)   # ε_L2 = ε·sqrt(H·W)
    assert not run.model.training                                       # the attack left the model in eval


def test_binary_apgdt_one_target_and_threshold(small_budget):
    """APGD-T on a 2-class model: one target (the other class), the margin loss in place of the
    targeted DLR loss (which needs 4 classes); and AutoAttack flips the run's decision at its threshold."""
    import torchattacks

    run = load_run(tiny_runs()["a0"])
    x, y = run.x(np.arange(8)), torch.from_numpy(run.labels[:8])
    aa = adversarial._autoattack(torchattacks, run.model, "Linf", 16 / 255, 2, 0)
    apgdt = aa.attacks[1]
    assert apgdt.n_target_classes == 1 and aa.attacks[2].n_target_classes == 1  # APGD-T, FAB-T
    with torch.enable_grad():
        xa = apgdt(x, y)
    pred = run.model(xa).argmax(1)
    assert (xa - x).abs().max() <= 16 / 255 + 1e-6
    assert (pred != y).float().mean() > 0.5
    with pytest.raises(IndexError):  # why medtl replaces the loss: torchattacks' own needs 4 logits
        torchattacks.APGDT(run.model, eps=16 / 255, steps=2, n_classes=2)(x, y)

    # the decision logits: arg-max == (p(class 1) >= threshold)
    for t in (0.2, 0.5, 0.9):
        wrapped = adversarial._DecisionLogits(run.model, t).eval()
        with torch.no_grad():
            p1 = torch.softmax(run.model(xa), 1)[:, 1]
            assert torch.equal(wrapped(xa).argmax(1), (p1 >= t).long())
    # crafted at a threshold, the flipped images are wrong at that threshold
    for t in (0.2, 0.8):
        xt = craft(run.model, x, y, "autoattack_linf", 16 / 255, threshold=t)
        changed = (xt - x).flatten(1).abs().amax(1) > 0
        p = predict_proba(run.model, xt)[:, 1]
        assert changed.any() and np.all((p[changed.numpy()] >= t).astype(int) != y.numpy()[changed.numpy()])
        assert xt.dtype == torch.float32 and xt.min() >= 0 and xt.max() <= 1


def test_unknown_attack_and_missing_torchattacks(run_dir, monkeypatch):
    with pytest.raises(ConfigError, match="attacks: unknown attack 'autoattack'.*autoattack_linf"):
        adversarial_probe(run_dir, eps=EPS, attacks=["autoattack"], plots=False)
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # `import torchattacks` now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install --no-deps torchattacks==3\.5\.1") as e:
        adversarial_probe(run_dir, eps=EPS, attacks=["pgd_linf"], plots=False)
    assert "\n" not in str(e.value)


def test_cli_attack_option(run_dir, small_budget):
    import typer
    from typer.testing import CliRunner

    from medtl.cli import probe_cmd

    app = typer.Typer()
    app.add_typer(probe_cmd.app, name="probe")
    res = CliRunner().invoke(app, ["probe", "adversarial", str(run_dir), "--attack", "autoattack_linf",
                                   "--eps", "0,16/255", "--n-images", "8"])
    assert res.exit_code == 0, res.output
    assert "autoattack_linf: ε=0/255" in res.output and "ε=16/255" in res.output
    assert (run_dir / "probes" / "adversarial.json").is_file()
