"""Ray with a GPU share per run: scheduling on a local Ray that declares GPUs (no real GPU needed)."""
from __future__ import annotations

import json

import pytest
import yaml

pytestmark = pytest.mark.e2e  # Ray clusters in-process: run by .ci/run after the README's command

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


def test_probes_run_as_ray_tasks_give_the_local_result(tmp_path):
    """robustness-report's per-run unit (a run's probes) on Ray equals the local result."""
    import shutil

    from test_probes_helpers import tiny_runs

    from medtl.probes.suite import run_probes

    PARAMS = {"translation": {"max_shift": 1, "n_images": 12, "n_pairs": 1, "scale_pct": 1},
              "adversarial": {"steps": 1, "n_images": 16, "attacks": ["fgsm_linf"], "eps": [0.0, 8 / 255]},
              "corruptions": {"n_images": 16, "corruptions": ["gaussian_noise"]},
              "explain": {"n_samples": 1, "n_embed": 16}, "shape_bias": {"n_pairs": 16}, "shortcut": {"n_images": 16}}

    runs = tiny_runs()
    local = run_probes([runs["root"]], params=PARAMS, workers=1)
    copy = tmp_path / "runs"
    shutil.copytree(runs["root"], copy, ignore=shutil.ignore_patterns("probes"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_probes([copy], params=PARAMS, workers=2, executor="ray")
    finally:
        ray.shutdown()
    assert [(r["arm"], r["seed"]) for r in remote["runs"]] == [(r["arm"], r["seed"]) for r in local["runs"]]
    for a, b in zip(local["runs"], remote["runs"]):
        assert b["worker"]["cuda_visible_devices"] in (None, "")  # no GPU share asked: none assigned
        assert b["clean"]["auc_fp32_probe_sample"] == pytest.approx(a["clean"]["auc_fp32_probe_sample"], abs=1e-9)
        assert b["corruptions_mean_auc_drop"] == pytest.approx(a["corruptions_mean_auc_drop"], abs=0.01)
