"""Data-parallel pretraining (torchrun, 2 CPU processes on gloo) equals the one-process run at the
same global batch, up to float summation order."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medtl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TOY = ["--set", "pretrain.classes=6", "--set", "pretrain.instances=16", "--set", "pretrain.eval_instances=3",
       "--set", "pretrain.image_size=24", "--set", "pretrain.epochs=2", "--set", "train.batch_size=32",
       "--set", "train.num_threads=1", "--set", "train.precision=fp32"]


def _env(tmp_path):
    env = dict(os.environ, MEDTL_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("WORLD_SIZE", None)
    return env


def _run(cmd, tmp_path):
    r = subprocess.run(cmd, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


@pytest.mark.e2e
@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_two_process_pretrain_equals_one_process(tmp_path):
    # tricks: mixup, label smoothing, warmup, zero-gamma and BN statistics all cross the shard boundary
    _run([sys.executable, "-m", "medtl", "pretrain", "--recipe", "tricks", "--name", "one", "--out", "one", "-q",
          *TOY], tmp_path)
    r = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "medtl",
              "pretrain", "--recipe", "tricks", "--name", "two", "--out", "two", "-q", *TOY], tmp_path)
    assert r.stdout.count("registered weights two") == 1                          # rank 0 speaks, once
    one = torch.load(tmp_path / "one" / "backbone.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "backbone.pt", weights_only=True)
    assert one.keys() == two.keys() and len(one) > 100
    for k in one:
        assert torch.allclose(one[k].float(), two[k].float(), rtol=1e-3, atol=1e-4), k
    moved = max(float((one[k].float() - torch.load(tmp_path / "one" / "tricks" / "checkpoint_best.pt",
                                                   weights_only=True)["model"]["backbone." + k].float()).abs().max())
                for k in one)
    assert moved == 0.0                                                            # the export is the checkpoint
    h1, h2 = (json.loads((tmp_path / d / "tricks" / "metrics.json").read_text()) for d in ("one", "two"))
    for a, b in zip(h1["history"], h2["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)      # the global batch's loss
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
    assert h2["run"]["data_parallel"] == {"world_size": 2, "backend": "gloo", "global_batch": 32}
    assert "data_parallel" not in h1["run"]
    # a global batch that does not split over the processes: one line, non-zero exit
    bad = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "medtl", "pretrain", "--out", "bad", "-q", *TOY, "--set", "train.batch_size=31"],
                         cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "does not split evenly over 2 processes" in bad.stderr


def test_sync_batchnorm_is_batchnorm_in_one_process_and_in_eval():
    from medtl.train.distributed import GlooSyncBatchNorm, _to_gloo_sync, check_config

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    ref = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    ref.load_state_dict(net.state_dict())
    keys = list(net.state_dict())
    net = _to_gloo_sync(net)
    assert isinstance(net[1], GlooSyncBatchNorm) and list(net.state_dict()) == keys  # checkpoints interchangeable
    x = torch.randn(8, 1, 10, 10)
    assert torch.equal(net(x), ref(x))                                             # no process group: BatchNorm
    net.eval(), ref.eval()
    assert torch.equal(net(x), ref(x))

    class Cfg:  # the settings check_config reads
        class train:
            batch_size, class_weighting = 30, "none"

    from medtl.train.distributed import Dist

    check_config(Cfg, Dist(0, 1))
    check_config(Cfg, Dist(0, 2))
    with pytest.raises(ConfigError, match="does not split evenly over 4"):
        check_config(Cfg, Dist(0, 4))
    Cfg.train.class_weighting = "balanced"
    with pytest.raises(ConfigError, match="balanced"):
        check_config(Cfg, Dist(1, 2))
