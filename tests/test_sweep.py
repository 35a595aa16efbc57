"""`medtl sweep`: arms x seeds, skip/resume, failures recorded, executors agree."""
import json
import shutil

import pytest
import yaml

from medtl.cli import run as cli
from medtl.errors import ConfigError
from medtl.sweep import load_sweep, run_sweep
from medtl.sweep import execute_run, plan_runs

TINY_SET = {
    "data.image_size": 32,
    "data.synthetic_n": {"train": 64, "val": 32, "test": 32},
    "train.epochs": 2, "train.batch_size": 32,
}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))


def _sweep(tmp_path, arms=None, seeds=2, name="tiny"):
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump({"name": name, "seeds": seeds, "set": TINY_SET,
                                 "arms": arms or {"a": {}, "b": {"train.warmup_epochs": 0}}}))
    return p


def _metrics(out):
    return {(p.parent.parent.name, p.parent.name): json.loads(p.read_text())["test"]
            for p in sorted(out.glob("*/seed-*/metrics.json"))}


def test_load_sweep_resolves_arms_and_validates(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"train": {"epochs": 5, "lr": 0.2}, "data": {"image_size": 40}}))
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"name": "s", "base": "base.yaml", "seeds": [3, 7],
                                 "set": {"train.epochs": 2},
                                 "arms": {"zero": {"train": {"bn_gamma": {"layer4.*.bn2": 0.0}}},
                                          "plain": {"train.bn_gamma": {}}}}, sort_keys=False))
    sweep, arms, seeds = load_sweep(p)
    assert seeds == [3, 7] and list(arms) == ["zero", "plain"]
    assert arms["zero"].train.bn_gamma == {"layer4.*.bn2": 0.0}
    assert arms["zero"].train.epochs == 2 and arms["zero"].train.lr == 0.2  # set + base
    assert arms["plain"].data.image_size == 40 and arms["plain"].name == "s/plain"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"arms": {"a": {"train.epoch": 2}}}))
    with pytest.raises(ConfigError, match=r"arm a.*unknown key 'train.epoch'"):
        load_sweep(bad)
    with pytest.raises(ConfigError, match="unknown arm"):
        load_sweep(p, arms=["nope"])


def test_sweep_runs_skips_and_records_failures(tmp_path):
    arms = {"a": {}, "bad": {"train.lr": 1e30, "train.warmup_epochs": 0, "train.precision": "fp32"}}
    out = tmp_path / "sw"
    s = run_sweep(_sweep(tmp_path, arms), out, workers=1, progress=False)
    assert s["counts"] == {"done": 2, "skipped": 0, "failed": 2}
    fail = json.loads((out / "bad" / "seed-0" / "failed.json").read_text())
    assert "loss became" in fail["error"] and fail["error_type"] == "TrainingError"
    assert not (out / "bad" / "seed-0" / "metrics.json").exists()
    first = _metrics(out)
    assert set(first) == {("a", "seed-0"), ("a", "seed-1")}
    assert (out / "sweep.json").is_file() and (out / "sweep_config.yaml").is_file()
    again = run_sweep(_sweep(tmp_path, arms), out, workers=1, progress=False)
    assert again["counts"]["skipped"] == 2 and again["counts"]["done"] == 0
    assert _metrics(out) == first


def test_interrupted_sweep_resumes_with_same_numbers(tmp_path, monkeypatch):
    ref_out = tmp_path / "ref"
    run_sweep(_sweep(tmp_path), ref_out, workers=1, progress=False)
    ref = _metrics(ref_out)

    out = tmp_path / "sw"
    real = execute_run
    calls = {"n": 0}

    def flaky(spec):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the sweep is killed part-way
        return real(spec)

    monkeypatch.setattr("medtl.sweep.executors.execute_run", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(_sweep(tmp_path), out, workers=1, progress=False)
    assert len(_metrics(out)) == 2
    monkeypatch.setattr("medtl.sweep.executors.execute_run", real)
    s = run_sweep(_sweep(tmp_path), out, workers=1, progress=False)
    assert s["counts"]["skipped"] == 2 and s["counts"]["done"] == 2
    assert _metrics(out) == ref


@pytest.mark.e2e
def test_process_pool_gives_the_same_numbers(tmp_path):
    one = tmp_path / "one"
    run_sweep(_sweep(tmp_path), one, workers=1, progress=False)
    two = tmp_path / "two"
    # two workers of one thread each vs one worker: only equal if the plan pins threads
    s = run_sweep(_sweep(tmp_path), two, workers=2, progress=False)
    assert s["threads_per_run"] == 1
    shutil.rmtree(one)
    # re-run the sequential one with the same thread count as the pool
    import torch

    before = torch.get_num_threads()
    try:
        _, arms, seeds = load_sweep(_sweep(tmp_path))
        for r in plan_runs(arms, seeds, one, threads=1):
            execute_run(r)  # in this process, 1 thread, sequentially
    finally:
        torch.set_num_threads(before)
    assert _metrics(one) == _metrics(two)


@pytest.mark.e2e
def test_ray_executor_matches_local(tmp_path):
    ray = pytest.importorskip("ray", reason="ray is not installed")
    local = tmp_path / "local"
    run_sweep(_sweep(tmp_path, seeds=1), local, workers=2, progress=False)
    remote = tmp_path / "ray"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        s = run_sweep(_sweep(tmp_path, seeds=1), remote, executor="ray", workers=2, progress=False)
    finally:
        ray.shutdown()
    assert s["executor"] == "ray" and s["counts"]["done"] == 2
    assert _metrics(remote) == _metrics(local)


def test_cli_sweep_and_errors(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli(["sweep", "--config", str(_sweep(tmp_path, seeds=1)), "--out", str(out), "--workers", "1",
                "--quiet", "--arm", "a"]) == 0
    printed = capsys.readouterr().out
    assert "1 run, 0 already finished, 0 failed" in printed
    assert (out / "a" / "seed-0" / "metrics.json").is_file() and not (out / "b").exists()
    assert cli(["sweep", "--config", str(tmp_path / "missing.yaml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing.yaml: sweep config not found" in err and len(err.splitlines()) == 1


def test_an_arm_names_its_own_base_and_seeds(tmp_path):
    """One sweep can hold arms on different datasets (an arm's own base) and an expensive arm
    with fewer seeds; the runs are planned seed-major over the union of seeds."""
    (tmp_path / "b1.yaml").write_text(yaml.safe_dump({"data": {"image_size": 28}, "train": {"lr": 0.1}}))
    (tmp_path / "b2.yaml").write_text(yaml.safe_dump({"data": {"image_size": 64}, "train": {"lr": 0.05}}))
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"name": "s", "base": "b1.yaml", "seeds": 3, "set": {"train.epochs": 2},
                                 "arms": {"a": {}, "k": {"base": "b2.yaml", "seeds": [0, 2], "train.epochs": 4}}}))
    sweep, arms, seeds = load_sweep(p)
    assert arms["a"].data.image_size == 28 and arms["a"].train.lr == 0.1 and arms["a"].train.epochs == 2
    assert arms["k"].data.image_size == 64 and arms["k"].train.lr == 0.05 and arms["k"].train.epochs == 4
    assert seeds == [0, 1, 2] and sweep.arm_seeds("a") == [0, 1, 2] and sweep.arm_seeds("k") == [0, 2]
    assert sweep.arm_seeds("k", [1, 2]) == [2] and sweep.arm_seeds("a", [1, 2]) == [1, 2]
    specs = plan_runs(arms, {a: sweep.arm_seeds(a) for a in arms}, tmp_path / "o", 1)
    assert [(s.arm, s.seed) for s in specs] == [("a", 0), ("k", 0), ("a", 1), ("a", 2), ("k", 2)]
    for bad in ({"base": "nope.yaml"}, {"base": 3}, {"seeds": 0}, {"seeds": [1, 1]}, {"seeds": True}):
        q = tmp_path / "bad.yaml"
        q.write_text(yaml.safe_dump({"base": "b1.yaml", "arms": {"x": bad}}))
        with pytest.raises(ConfigError, match="nope.yaml|base must be|seeds must be"):
            load_sweep(q)
