"""Ray with a GPU share per run: scheduling on a local Ray that declares GPUs (no real GPU needed)."""
from __future__ import annotations

import json

import pytest
import yaml

ray = pytest.importorskip("ray", reason="ray is not installed")


@pytest.fixture()
def ray_with_a_gpu():
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_quarter_gpu_per_run_is_scheduled_on_the_declared_device(ray_with_a_gpu):
    from medtl.errors import MedtlError
    from medtl.sweep.executors import ray_map

    def _where(task: dict) -> dict:  # defined here: Ray ships it by value (tests are not importable there)
        import os

        import ray as _ray

        return {"i": task["i"], "visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "gpu_ids": _ray.get_gpu_ids()}

    seen = []
    res = ray_map(_where, [{"i": i} for i in range(4)], address=None, cpus_per_task=0, gpus_per_task=0.25,
                  on_result=seen.append)
    assert sorted(r["i"] for r in res) == [0, 1, 2, 3] and len(seen) == 4
    for r in res:  # each task was given the one GPU (as a share) and sees only it
        assert r["visible"] == "0" and [str(g) for g in r["gpu_ids"]] == ["0"]
    cpu_only = ray_map(_where, [{"i": 0}], address=None, cpus_per_task=1, gpus_per_task=0.0)
    assert cpu_only[0]["gpu_ids"] == []
    with pytest.raises(MedtlError, match="GPU"):
        ray_map(_where, [{"i": 0}], address=None, cpus_per_task=1, gpus_per_task=2.0)


def test_sweep_runs_given_a_gpu_share_train_on_cuda_in_their_worker(ray_with_a_gpu, tmp_path, monkeypatch):
    """The per-run device setting travels with the run: on this GPU-less machine each run's worker
    is scheduled on the declared GPU and then refuses cuda, which failed.json records."""
    from medtl.sweep import run_sweep

    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"name": "g", "seeds": 2, "set": {
        "data.path": "builtin:synthetic", "data.image_size": 24, "train.epochs": 1,
        "data.synthetic_n": {"train": 32, "val": 16, "test": 16}}, "arms": {"a": {}}}))
    s = run_sweep(sweep, tmp_path / "out", executor="ray", workers=2, progress=False, gpus_per_run=0.5)
    assert s["gpus_per_run"] == 0.5 and s["counts"]["failed"] == 2
    for seed in (0, 1):
        rec = json.loads((tmp_path / "out" / "a" / f"seed-{seed}" / "failed.json").read_text())
        assert "cuda" in rec["error"].lower()
    from medtl.errors import MedtlError

    with pytest.raises(MedtlError, match="ray"):
        run_sweep(sweep, tmp_path / "out2", executor="local", gpus_per_run=0.5, progress=False)
