"""MLflow tracking (medtl.tracking, `medtl track`, `finetune --mlflow`) on a real tiny run folder."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

from medtl.errors import ConfigError, DataError

mlflow = pytest.importorskip("mlflow", reason="mlflow not installed (pip install 'medtl[track]')")

from medtl import tracking  # noqa: E402

TINY = {"data": {"synthetic_n": {"train": 64, "val": 32, "test": 32}, "image_size": 16},
        "train": {"epochs": 2, "batch_size": 16, "num_threads": 1, "bn_gamma": {"layer4.*.bn2": 0.0}}}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One real finished run folder (about 2 s), shared by the tests: copy it before changing it."""
    from medtl.config import build_config
    from medtl.train import finetune

    root = tmp_path_factory.mktemp("tracking")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDTL_CACHE", str(root / "cache"))
        finetune(build_config(TINY), root / "run", progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    """An empty, initialised local store: MLflow creates a new SQLite database's tables in ~5 s,
    so each test starts from a copy of this one."""
    path = tmp_path_factory.mktemp("store") / "mlruns"
    tracking._client(str(path))
    assert (path / "mlflow.db").is_file()
    return path


@pytest.fixture()
def store(tmp_path, monkeypatch, empty_store):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copytree(empty_store, tmp_path / "mlruns")
    return tmp_path / "mlruns"


def _client(store):
    return mlflow.MlflowClient(tracking_uri=tracking.resolve_uri(str(store)))


def _cli():
    """medtl's in-process CLI."""
    from medtl.cli import run

    return run


def test_log_run_params_metrics_history_artifacts(finished_run, store):
    rid = tracking.log_run(finished_run, uri=str(store))  # a plain path is a local SQLite store
    assert rid
    cfg = yaml.safe_load((finished_run / "config.yaml").read_text())
    metrics = json.loads((finished_run / "metrics.json").read_text())
    c = _client(store)
    run = c.get_run(rid)
    assert c.get_experiment(run.info.experiment_id).name == cfg["name"]
    p = run.data.params
    assert p["seed"] == str(cfg["seed"]) and float(p["train.lr"]) == cfg["train"]["lr"]
    assert p["train.epochs"] == "2" and p["data.image_size"] == "16"
    assert json.loads(p["train.bn_gamma"]) == {"layer4.*.bn2": 0.0}  # a dict value is one JSON param
    m = run.data.metrics
    for section in ("val", "test"):
        for k, v in metrics[section].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                assert m[f"{section}.{k}"] == pytest.approx(v)
    assert m["test.auc"] == pytest.approx(metrics["test"]["auc"])
    assert m["run.wall_time_s"] == pytest.approx(metrics["run"]["wall_time_s"])
    for key in ("train_loss", "val_loss", "val_auc", "lr"):
        hist = c.get_metric_history(rid, key)
        assert [h.step for h in hist] == [1, 2]
        assert [h.value for h in hist] == pytest.approx([r[key] for r in metrics["history"]])
    t = run.data.tags
    assert t["medtl.run_dir"] == str(finished_run.resolve()) and t["medtl.seed"] == "0"
    assert t["medtl.synthetic"] == "True" and "SYNTHETIC" in t["medtl.dataset"]
    assert "medtl.arm" not in t and len(t["medtl.metrics_sha256"]) == 64
    assert run.info.status == "FINISHED"
    arts = {a.path for a in c.list_artifacts(rid)}
    assert arts == {"config.yaml", "metrics.json", "log.csv", "train.log", "predictions_test.npz"}
    # the store is one folder: the database and the artifacts beside it, whatever the current directory
    assert (store / "mlflow.db").is_file()
    assert (store / "mlflow-artifacts" / cfg["name"] / rid / "artifacts" / "config.yaml").is_file()

    # idempotent: the same finished folder is not logged twice
    assert tracking.log_run(finished_run, uri=str(store)) == rid
    assert len(c.search_runs([run.info.experiment_id])) == 1


def test_unfinished_folder_is_not_logged(finished_run, store, tmp_path):
    run_dir = tmp_path / "unfinished"
    run_dir.mkdir()
    shutil.copy(finished_run / "config.yaml", run_dir / "config.yaml")
    assert tracking.log_run(run_dir, uri=str(store)) is None
    counts = {}
    assert tracking.log_tree(run_dir, uri=str(store), counts=counts) == []
    assert counts == {"logged": 0, "existing": 0, "unfinished": 1}


def test_log_tree_sweep_and_cli(finished_run, store, tmp_path):
    sweep = tmp_path / "sweep"
    for arm in ("warmup", "none"):
        shutil.copytree(finished_run, sweep / arm / "seed-0")
    (sweep / "none" / "seed-1").mkdir()  # interrupted run: config only
    shutil.copy(finished_run / "config.yaml", sweep / "none" / "seed-1" / "config.yaml")
    (sweep / "sweep.json").write_text("{}")

    counts = {}
    ids = tracking.log_tree(sweep, uri=str(store), experiment="sweep-x", counts=counts, checkpoints=True)
    assert len(set(ids)) == 2 and counts == {"logged": 2, "existing": 0, "unfinished": 1}
    c = _client(store)
    runs = c.search_runs([c.get_experiment_by_name("sweep-x").experiment_id])
    assert sorted(r.data.tags["medtl.arm"] for r in runs) == ["none", "warmup"]
    assert "checkpoint_best.pt" in {a.path for a in c.list_artifacts(ids[0])}

    # the CLI on the folder holding both the sweep and the store: the store's artifact copies
    # of config.yaml/metrics.json are not run folders, and the two runs are logged already
    assert store.parent == tmp_path
    shutil.copytree(store, tmp_path / "store-2")  # a store by another name: known by its meta.yaml
    run = _cli()
    assert run(["track", str(tmp_path), "--uri", str(store), "--experiment", "sweep-x"]) == 0
    assert len(c.search_runs([c.get_experiment_by_name("sweep-x").experiment_id])) == 2
    assert tracking.find_run_folders(tmp_path) == sorted(
        [sweep / "none" / "seed-0", sweep / "none" / "seed-1", sweep / "warmup" / "seed-0"])


def test_finetune_mlflow_option(store, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))
    run = _cli()
    out = tmp_path / "ft"
    sets = ["data.synthetic_n={train: 32, val: 16, test: 16}", "data.image_size=16", "train.epochs=1",
            "train.batch_size=16", "train.num_threads=1", "name=ft-mlflow"]
    argv = ["finetune", "--out", str(out), "--quiet", "--mlflow", str(store)]
    for s in sets:
        argv += ["--set", s]
    assert run(argv) == 0
    c = _client(store)
    runs = c.search_runs([c.get_experiment_by_name("ft-mlflow").experiment_id])
    assert [r.data.tags["medtl.run_dir"] for r in runs] == [str(out.resolve())]


def test_default_store_is_local_mlruns(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    here = tmp_path.resolve()
    assert tracking.resolve_uri() == f"sqlite:///{here}/mlruns/mlflow.db"  # sqlite:////abs/...: absolute
    assert tracking.resolve_uri("./runs.db") == f"sqlite:///{here}/runs.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    assert tracking.resolve_uri() == "sqlite:///x.db"
    assert tracking.resolve_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_old_file_store_is_reported_with_its_migration(finished_run, tmp_path, monkeypatch):
    old = tmp_path / "mlruns"
    (old / "0").mkdir(parents=True)
    (old / "0" / "meta.yaml").write_text("name: Default\n")  # the layout MLflow 2's file store wrote
    with pytest.raises(ConfigError, match="mlflow migrate-filestore --source") as e:
        tracking.log_run(finished_run, uri=str(old))
    assert "\n" not in str(e.value)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(ConfigError, match="mlflow migrate-filestore --source"):
        tracking.log_run(finished_run, uri=old.as_uri())  # an explicit file: URI, refused by MLflow 3


def test_missing_path_and_missing_mlflow(finished_run, tmp_path, monkeypatch):
    with pytest.raises(DataError, match="no such run or sweep folder"):
        tracking.log_tree(tmp_path / "nope")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'medtl\[track\]'"):
        tracking.log_run(finished_run, uri=str(tmp_path / "mlruns"))


def test_sweep_mlflow_option(finished_run, store, tmp_path, monkeypatch, capsys):
    import medtl.sweep

    def fake_run_sweep(config, out, **kw):  # the sweep itself is tested in test_sweep.py
        shutil.copytree(finished_run, out / "a" / "seed-0")
        (out / "sweep.json").write_text("{}")
        return {"name": "sw", "counts": {"done": 1, "skipped": 0, "failed": 0}, "wall_time_s": 1.0,
                "runs": [{"arm": "a", "seed": 0, "status": "done"}]}

    monkeypatch.setattr(medtl.sweep, "run_sweep", fake_run_sweep)
    out = tmp_path / "sweep"
    run = _cli()
    assert run(["sweep", "--config", str(tmp_path / "s.yaml"), "--out", str(out), "--quiet",
                "--mlflow", str(store)]) == 0
    assert "mlflow: 1 run(s) logged" in capsys.readouterr().out
    c = _client(store)
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()])
    assert [(r.data.tags["medtl.arm"], r.data.tags["medtl.seed"]) for r in runs] == [("a", "0")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


@pytest.mark.slow
@pytest.mark.e2e
def test_mlflow_ui_lists_logged_experiment(finished_run, store):
    """`mlflow ui` on the store medtl writes: it starts, answers, and lists what medtl logged."""
    rid = tracking.log_run(finished_run, uri=str(store))
    name = yaml.safe_load((finished_run / "config.yaml").read_text())["name"]
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job workers: starts in seconds
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking.resolve_uri(str(store)),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own process group: uvicorn's workers go with it
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")[-2000:]
            try:
                status, body = _get(base + "/health", timeout=2)
                if status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow ui did not answer /health within 60 s"
            time.sleep(0.25)
        assert body.strip() == b"OK"
        status, body = _get(base + "/api/2.0/mlflow/experiments/search?max_results=100")
        exps = {e["name"]: e["experiment_id"] for e in json.loads(body)["experiments"]}
        assert status == 200 and name in exps
        req = urllib.request.Request(base + "/api/2.0/mlflow/runs/search", method="POST",
                                     data=json.dumps({"experiment_ids": [exps[name]]}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            runs = json.loads(r.read())["runs"]
        assert [r["info"]["run_id"] for r in runs] == [rid]
        assert _get(base + "/")[0] == 200  # the UI page itself
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)
        proc.stdout.close()
