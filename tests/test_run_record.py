"""The typed run record (medtl.record via medtl.runs): every earlier metrics.json layout reads,
and a folder in each layout compares, probes and evaluates as the current layout does; no module
outside medtl/runs.py and medtl/record.py reads a run's metrics.json as a dict."""
from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest

from medtl.config import build_config
from medtl.errors import DataError
from medtl.record import MISSING, SCHEMA_VERSION, RecordError, layout_of, parse_record
from medtl.runs import METRICS, Run

TINY = ["data.path=builtin:synthetic", "data.image_size=16", "data.synthetic_n={train: 64, val: 32, test: 32}",
        "train.epochs=1", "train.batch_size=32", "train.num_threads=1", "train.precision=fp32"]

# The keys each earlier release wrote (git: eab7826 foundation -> layout 0; bb4d84a trust ->
# layout 1; e47b354 case CIs -> layout 2).  Older files are made from a current one by undoing
# what each release added, so the test covers exactly the differences between layouts.
LAYOUT0_RUN_KEYS = ("name", "seed", "dataset", "synthetic", "data_format", "backbone", "weights", "image_size",
                    "epochs", "best_epoch", "device", "precision", "medtl_version", "torch_version", "wall_time_s",
                    "bn_gamma_layers")


def as_layout(current: dict, layout: int) -> dict:
    """``current`` (layout 3) written as release ``layout`` wrote it."""
    m = json.loads(json.dumps(current))
    m.pop("schema_version")
    m["run"]["leak_status"] = m["data"]["leaks"]["status"]      # layouts 1-2 kept a copy in run
    if layout <= 1:
        for sec in ("val", "test"):
            m[sec].pop("ci")                                   # case CIs came with layout 2
        m["data"]["leaks"].pop("n_without_patient", None)
        m["data"]["leaks"]["status"] = m["run"]["leak_status"] = "clean"  # synthetic data names its patients
    if layout == 0:
        for k in ("data", "calibration"):
            m.pop(k)
        m["threshold"].pop("precision")
        m["run"] = {k: m["run"][k] for k in LAYOUT0_RUN_KEYS}
        for sec in ("val", "test"):
            for k in ("ece", "ece_equal_mass", "mce", "brier", "nll", "calibration_bins", "reliability", "temp_scaled"):
                m[sec].pop(k, None)
    return m


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("record")
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDTL_CACHE", str(root / "cache"))
    from medtl.train import finetune

    out = root / "current" / "seed-0"
    finetune(build_config({}, TINY), out, progress=False)
    yield out
    mp.undo()


def _copy(run_dir: Path, dest: Path, layout: int) -> Path:
    shutil.copytree(run_dir, dest)
    cur = json.loads((run_dir / METRICS).read_text())
    (dest / METRICS).write_text(json.dumps(as_layout(cur, layout)))
    return dest


def test_a_new_run_is_written_in_the_current_layout_once_per_fact(run_dir):
    raw = json.loads((run_dir / METRICS).read_text())
    assert raw["schema_version"] == SCHEMA_VERSION == layout_of(raw) == Run(run_dir).layout
    assert "leak_status" not in raw["run"] and raw["data"]["leaks"]["status"] == "clean"
    rec = Run(run_dir).record
    assert rec.as_dict() == raw                                 # reading and writing round-trip exactly
    assert rec.decision_threshold == raw["threshold"]["value"] and rec.temperature == raw["calibration"]["temperature"]
    assert rec.at("test.auc") == raw["test"]["auc"] and rec.at("test.no_such") is MISSING
    assert rec.test.at("temp_scaled.ece") == raw["test"]["temp_scaled"]["ece"]
    keys = rec.metric_keys()
    assert "test.auc" in keys and "test.temp_scaled.ece" in keys and "val.ece" in keys
    assert not any(k.startswith(("run.", "history")) or ".ci." in k for k in keys)


@pytest.mark.parametrize("layout", [0, 1, 2])
def test_each_earlier_layout_reads_as_the_current_record(run_dir, tmp_path, layout):
    old = _copy(run_dir, tmp_path / f"l{layout}" / "seed-0", layout)
    before = (old / METRICS).read_bytes()
    assert Run(old).layout == layout
    rec, cur = Run(old).record, Run(run_dir).record
    assert rec.test.auc == cur.test.auc and rec.decision_threshold == cur.decision_threshold
    assert rec.classes == cur.classes and rec.task == "binary" and rec.run.seed == 0
    assert "leak_status" not in rec.run.as_dict()               # the copy is dropped on read
    assert rec.leak_status == {0: "unknown", 1: "clean", 2: "clean"}[layout]
    assert (rec.temperature is None) == (layout == 0) and (rec.test.at("ci") is MISSING) == (layout < 2)
    assert (old / METRICS).read_bytes() == before               # reading never rewrites the file


@pytest.mark.parametrize("layout", [0, 1, 2])
def test_an_old_folder_compares_probes_and_evaluates_as_the_current_one(run_dir, tmp_path, layout):
    from medtl.evaluate import evaluate_runs
    from medtl.probes.translation import translation_probe
    from medtl.stats.comparison import compare_runs

    old = _copy(run_dir, tmp_path / "old" / "seed-0", layout)
    params = {"max_shift": 2, "n_images": 8, "n_pairs": 1, "protocols": ["crop"], "batch_size": 64}
    t_old = translation_probe(old, plots=False, **params)
    t_cur = translation_probe(run_dir, plots=False, **params)
    assert t_old["p_change_1px"] == t_cur["p_change_1px"] and t_old["key"] == t_cur["key"]
    a = compare_runs([old.parent], ["test.auc"])["by_metric"]["test.auc"]["arms"]["old"]
    b = compare_runs([run_dir.parent], ["test.auc"])["by_metric"]["test.auc"]["arms"]["current"]
    assert a["mean"] == b["mean"] and a["n"] == 1
    res = evaluate_runs([old])  # layout 0 predates calibration: evaluate adds it, in the current layout
    assert res["n_cached"] == (0 if layout == 0 else 1)
    row, = res["runs"]
    assert row["metrics"]["auc"] == Run(run_dir).record.test.auc
    if layout == 0:
        raw = json.loads((old / METRICS).read_text())
        assert raw["schema_version"] == SCHEMA_VERSION and raw["calibration"]["added_by"] == "medtl evaluate"
        assert raw["calibration"]["temperature"] == pytest.approx(Run(run_dir).record.temperature, rel=1e-4)


def test_bad_records_fail_in_one_line_naming_the_file(tmp_path, run_dir):
    bad = tmp_path / "bad" / "seed-0"
    shutil.copytree(run_dir, bad)
    raw = json.loads((bad / METRICS).read_text())
    (bad / METRICS).write_text(json.dumps(raw | {"schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(DataError, match=r"metrics\.json: written by a newer medtl"):
        _ = Run(bad).record
    (bad / METRICS).write_text(json.dumps(raw | {"task": "regression"}))
    with pytest.raises(DataError, match=r"metrics\.json: not a medtl run record: task"):
        _ = Run(bad).record
    (bad / METRICS).write_text(json.dumps(raw | {"surprise": 1}))
    with pytest.raises(DataError, match="surprise"):
        _ = Run(bad).record
    with pytest.raises(RecordError):
        parse_record({"schema_version": "3", "task": "binary"})


def _raw_metric_reads(path: Path) -> list[str]:
    """``X.get(...)`` / ``X[...]`` where X is named ``metrics``, or ``.metrics`` of a Run, in one module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    hits = []
    for node in ast.walk(tree):
        target = None
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and \
                isinstance(node.slice.value, str):
            target = node.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            target = node.func.value
        if isinstance(target, ast.Name) and target.id == "metrics":
            hits.append(f"{path}:{node.lineno}")
        if isinstance(node, ast.Attribute) and node.attr in ("metrics", "external_metrics") and \
                isinstance(node.value, ast.Name) and node.value.id == "run":
            hits.append(f"{path}:{node.lineno} ({node.attr})")
    return hits


def test_no_module_outside_runs_reads_metrics_json_as_a_dict():
    pkg = Path(__file__).resolve().parents[1] / "medtl"
    hits = [h for p in sorted(pkg.rglob("*.py")) if p.name not in ("runs.py", "record.py")
            for h in _raw_metric_reads(p)]
    assert hits == [], hits
