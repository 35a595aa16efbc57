"""`medtl evaluate` (external validation, calibration of old runs, subgroups) and its views in
`medtl compare` (`external.<name>.*` metrics, `--internal-vs-external`), on one tiny trained run
and on fabricated run folders."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from _data_helpers import write_png
from medtl.cli import run as cli
from medtl.config import build_config
from medtl.runs import EXTERNAL_DIR, METRICS, PREDICTIONS, PREDICTIONS_VAL, RELIABILITY_PNG, Run, foreign_entries

TINY = ["data.path=builtin:synthetic", "data.image_size=16", "data.synthetic_n={train: 64, val: 32, test: 32}",
        "train.epochs=1", "train.batch_size=32", "train.num_threads=1", "train.precision=fp32"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One tiny finished run (synthetic classes normal/opacity) and a CSV dataset with other class
    names and a 'site' group column."""
    root = tmp_path_factory.mktemp("evaluate")
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDTL_CACHE", str(root / "cache"))
    from medtl.train import finetune

    run_dir = root / "arm" / "seed-0"
    finetune(build_config({}, TINY), run_dir, progress=False)
    data = root / "other"
    rows = []
    for i in range(48):
        split = "train" if i < 16 else ("val" if i < 24 else "test")
        label = ["NORMAL", "PNEUMONIA"][i % 2]
        rel = f"img/{i}.png"
        write_png(data / rel, 60 if label == "NORMAL" else 190, size=(16, 16), seed=i)
        rows.append({"path": rel, "label": label, "split": split, "site": ["A", "B"][(i // 2) % 2]})
    with open(data / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "split", "site"])
        w.writeheader()
        w.writerows(rows)
    yield {"root": root, "run": run_dir, "data": data / "manifest.csv"}
    mp.undo()


MAP = ["--label-map", "NORMAL=normal", "--label-map", "PNEUMONIA=opacity"]


def test_a_trained_run_carries_calibration_and_val_predictions(env):
    run = Run(env["run"])
    m = run.record.as_dict()
    for k in ("ece", "ece_equal_mass", "mce", "brier", "nll", "reliability"):
        assert k in m["test"] and k in m["val"]
    assert m["calibration"]["fitted_on"] == "val" and m["calibration"]["temperature"] > 0
    assert m["test"]["temp_scaled"]["temperature"] == m["calibration"]["temperature"]
    assert abs(m["test"]["temp_scaled"]["auc"] - m["test"]["auc"]) < 1e-6
    assert run.val_predictions_path.is_file() and run.reliability_path.is_file()
    with np.load(run.predictions_path) as z:
        assert {"y", "p", "logit", "ids"} <= set(z.files)


def test_class_name_mismatch_exits_2_with_one_line(env, capsys):
    rc = cli(["evaluate", str(env["run"]), "--data", str(env["data"]), "--name", "other", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "class names differ" in err[0] and "normal, opacity" in err[0] and "NORMAL, PNEUMONIA" in err[0]
    assert "NORMAL=normal PNEUMONIA=<normal|opacity|->" in err[0]  # the example maps same names up to case
    assert not Run(env["run"]).external_dir("other").exists()
    assert cli(["evaluate", str(env["run"]), "--data", str(env["data"]), "--label-map", "bogus"]) == 2


def test_external_evaluation_writes_its_folder_then_rerunning_recomputes_nothing(env, capsys, monkeypatch):
    args = ["evaluate", str(env["root"] / "arm"), "--data", str(env["data"]), "--name", "other", "--group", "site",
            "-q"] + MAP
    assert cli(args) == 0
    out = capsys.readouterr().out
    assert "evaluated 1 run(s) on other" in out and "0 from cache" in out and "| arm |" in out
    run = Run(env["run"])
    d = run.external_dir("other")
    assert sorted(p.name for p in d.iterdir()) == sorted([METRICS, "predictions.npz", RELIABILITY_PNG])
    rec = json.loads(run.external_metrics_path("other").read_text())
    m = rec["metrics"]
    assert rec["data"]["n"] == 24 and rec["data"]["label_map"] == {"NORMAL": "normal", "PNEUMONIA": "opacity"}
    for k in ("auc", "acc", "sensitivity", "specificity", "n", "ece", "ece_equal_mass", "mce", "brier", "nll"):
        assert k in m
    assert m["temp_scaled"]["temperature"] == pytest.approx(run.record.temperature)
    assert m["ci"]["auc"]["method"] == "DeLong" and m["ci"]["sensitivity"]["method"] == "Wilson"
    assert m["ci"]["acc"]["n"] == 24 and m["ci"]["acc"]["low"] <= m["acc"] <= m["ci"]["acc"]["high"]
    assert "arm/seed 0: auc " in out and "95% CI" in out  # one run: its case CIs are printed
    assert set(m["groups"]["site"]) == {"A", "B"} and m["groups"]["site"]["A"]["n"] == 12
    assert "auc" in m["group_gaps"]["site"]
    with np.load(run.external_predictions_path("other")) as z:
        assert {"y", "p", "logit", "ids", "group_site"} <= set(z.files)
        assert all(str(i).startswith("img/") for i in z["ids"])  # image paths, no patient ids
    assert foreign_entries(env["run"]) == []  # the external folder is medtl's
    # a second call reads the cache: no data is loaded and no model runs
    import medtl.data
    import medtl.evaluate as ev

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(ev, "_logits", boom)
    monkeypatch.setattr(medtl.data, "load_dataset", boom)
    before = run.external_metrics_path("other").stat().st_mtime_ns
    res = ev.evaluate_runs([env["root"] / "arm"], str(env["data"]), name="other", group_columns=["site"],
                           label_map={"NORMAL": "normal", "PNEUMONIA": "opacity"})
    assert res["n_cached"] == 1 and run.external_metrics_path("other").stat().st_mtime_ns == before
    # compare reads external.<name>.* and the calibration metrics like any other
    assert cli(["compare", str(env["root"] / "arm"), "--metric", "external.other.auc", "--metric", "test.ece",
                "--metric", "external.other.groups.site.A.sensitivity", "--out", str(env["root"] / "cmp"),
                "--no-plots", "-B", "200"]) == 0
    cmp = json.loads((env["root"] / "cmp" / "compare.json").read_text())
    assert cmp["by_metric"]["external.other.auc"]["arms"]["arm"]["mean"] == pytest.approx(m["auc"])


def test_an_old_run_gains_calibration_without_retraining(env):
    old = env["root"] / "old" / "seed-0"
    shutil.copytree(env["run"], old)
    shutil.rmtree(old / EXTERNAL_DIR, ignore_errors=True)
    m = json.loads((old / METRICS).read_text())
    want_t = m.pop("calibration")["temperature"]
    for sec in ("val", "test"):
        for k in ("ece", "ece_equal_mass", "mce", "brier", "nll", "calibration_bins", "reliability", "temp_scaled"):
            m[sec].pop(k, None)
    (old / METRICS).write_text(json.dumps(m))
    (old / PREDICTIONS_VAL).unlink()
    (old / RELIABILITY_PNG).unlink()
    from medtl.evaluate import evaluate_runs
    from medtl.probes.suite import calibration_record

    assert calibration_record(Run(old))["source"] == PREDICTIONS  # the report computes it from predictions
    res = evaluate_runs([old])
    assert res["n_cached"] == 0
    new = json.loads((old / METRICS).read_text())
    assert new["calibration"]["temperature"] == pytest.approx(want_t, rel=1e-4)
    assert new["calibration"]["max_abs_diff_p_vs_stored_test_predictions"] < 1e-5
    assert new["test"]["auc"] == m["test"]["auc"] and "ece" in new["test"] and "temp_scaled" in new["test"]
    assert (old / PREDICTIONS_VAL).is_file() and (old / RELIABILITY_PNG).is_file() and (old / PREDICTIONS).is_file()
    assert evaluate_runs([old])["n_cached"] == 1
    assert calibration_record(Run(old))["source"] == METRICS


def _fake_run(d: Path, seed: int, internal: float, external: float, rng) -> None:
    """A finished binary run with test and external predictions whose AUCs are about as given."""
    d.mkdir(parents=True)
    y = np.r_[np.zeros(60, int), np.ones(60, int)]

    def preds(target):
        # separation chosen so that the AUC is close to target (normal scores, equal variance)
        from scipy.stats import norm
        s = norm.ppf(target) * np.sqrt(2)
        return 1 / (1 + np.exp(-(rng.normal(0, 1, y.size) + s * y - s / 2)))

    pt, pe = preds(internal), preds(external)
    from medtl.stats.metrics import auc

    m = {"task": "binary", "classes": ["normal", "pneumonia"], "threshold": {"rule": "youden", "value": 0.5},
         "run": {"seed": seed}, "data": {"leaks": {"status": "clean"}},
         "test": {"auc": auc(y, pt), "ece": 0.1, "n": int(y.size)}}
    (d / METRICS).write_text(json.dumps(m))
    (d / "config.yaml").write_text(f"seed: {seed}\n")
    np.savez(d / PREDICTIONS, y=y, p=pt, ids=np.arange(y.size).astype(str))
    ext = d / EXTERNAL_DIR / "ext"
    ext.mkdir(parents=True)
    (ext / METRICS).write_text(json.dumps({"metrics": {"auc": auc(y, pe), "n": int(y.size)},
                                           "run": {"threshold": 0.5}}))
    np.savez(ext / "predictions.npz", y=y, p=pe, ids=np.arange(y.size).astype(str))


def test_compare_internal_vs_external_view(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for k in range(8):
        _fake_run(tmp_path / "sw" / "drops" / f"seed-{k}", k, 0.92, 0.80, rng)
        _fake_run(tmp_path / "sw" / "holds" / f"seed-{k}", k, 0.92, 0.92, rng)
    out = tmp_path / "cmp"
    assert cli(["compare", str(tmp_path / "sw"), "--internal-vs-external", "ext", "--out", str(out), "-B", "300",
                "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "Internal vs external: ext" in printed and "Do the arms differ in their drop?" in printed
    res = json.loads((out / "compare.json").read_text())
    ive = res["internal_vs_external"]
    assert ive["arms"]["drops"]["drop"]["mean"] == pytest.approx(0.12, abs=0.05)
    assert abs(ive["arms"]["holds"]["drop"]["mean"]) < 0.05
    assert ive["arms"]["drops"]["no_drop_test"]["significant"]
    for arm in ("drops", "holds"):  # the drop's test is over seeds and both test sets' cases, and matches its CI
        t = ive["arms"][arm]["no_drop_test"]
        assert t["inference"] == "seeds+cases" and t["test"] == "crossed_t"
        assert (t["p"] < 0.05) == (t["ci_low"] > 0 or t["ci_high"] < 0)
    assert ive["arms"]["holds"]["no_drop_test"]["ci_low"] < 0 < ive["arms"]["holds"]["no_drop_test"]["ci_high"]
    (pair,) = ive["pairs"]
    assert pair["paired"] and pair["n_pairs"] == 8 and pair["significant"] and pair["p_holm"] < 0.05
    # both AUCs also get the CI over seeds and test cases (the external one from predictions.npz)
    ext = res["by_metric"]["external.ext.auc"]["arms"]["drops"]
    assert ext["ci_seeds_cases_low"] < ext["mean"] < ext["ci_seeds_cases_high"]
    for f in ("compare.md", "compare.html"):
        assert "Internal vs external: ext" in (out / f).read_text()
    assert cli(["compare", str(tmp_path / "sw"), "--internal-vs-external", "nope", "--out", str(out)]) == 2


def test_group_columns_are_read_from_a_csv_and_guarded(env, tmp_path, monkeypatch):
    import medtl.data.groups
    from medtl.data import load_dataset
    from medtl.errors import DataError

    cfg = build_config({}, [f"data.path={env['data']}", "data.image_size=16", "data.group_columns=[site]",
                            "data.on_leak=warn"]).data
    test = load_dataset(cfg, cache_dir=tmp_path).splits["test"]
    assert list(test.groups) == ["site"] and len(test.groups["site"]) == len(test)
    monkeypatch.setattr(medtl.data.groups, "MAX_GROUP_VALUES", 10)  # 'path' has 48: an identifier, refused
    for bad, msg in (("[nope]", "missing group column 'nope'"), ("[path]", "48 distinct values")):
        with pytest.raises(DataError, match=msg):
            load_dataset(cfg.model_copy(update={"group_columns": [bad[1:-1]]}), cache_dir=tmp_path)
    syn = build_config({}, TINY + ["data.group_columns=[site]"]).data
    with pytest.raises(DataError, match="needs a CSV manifest"):
        load_dataset(syn, cache_dir=tmp_path)


def test_evaluate_warns_on_runs_whose_leak_status_is_not_clean(env, tmp_path, capsys):
    """Runs trained on data that names no patients (and on PneumoniaMNIST, with its known overlap)
    are flagged by evaluate as by compare."""
    arm = tmp_path / "npzarm"
    shutil.copytree(env["run"], arm / "seed-0")
    shutil.rmtree(arm / "seed-0" / EXTERNAL_DIR, ignore_errors=True)
    mp = arm / "seed-0" / METRICS
    m = json.loads(mp.read_text())
    n = m["data"]["n"]
    m["data"]["leaks"].update(status="unchecked", n_without_patient=n, known_overlap="PneumoniaMNIST is derived "
                              "from Kermany et al.'s chest X-rays")
    m["run"]["leak_status"] = "unchecked"
    mp.write_text(json.dumps(m))
    assert cli(["evaluate", str(arm), "-q"]) == 0
    out = capsys.readouterr().out
    assert "WARNING: UNCHECKED: the data of 1 of 1 runs of npzarm name no patients" in out
    assert "KNOWN OVERLAP: 1 of 1 runs of npzarm: PneumoniaMNIST is derived" in out


def test_evaluate_takes_data_options_and_records_operating_points(env, tmp_path, capsys):
    """Another hospital's manifest whose label is one of several columns: --set data.label_columns
    picks it (the keys finetune takes); the thresholds of the operating points come from the run's
    val and are read on the external set."""
    data = env["data"].parent
    rows = list(csv.DictReader(open(env["data"], newline="")))
    with open(data / "multi.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["img", "covid", "effusion", "pid", "split"])
        w.writeheader()
        for i, r in enumerate(rows):
            w.writerow({"img": r["path"], "covid": int(r["label"] == "PNEUMONIA"), "effusion": i % 3 == 0,
                        "pid": f"p{i // 2}", "split": r["split"]})
    args = ["evaluate", str(env["run"]), "--data", str(data / "multi.csv"), "--name", "covid", "-q",
            "--label-map", "0=normal", "--label-map", "1=opacity"]
    opts = ["--set", "data.path_column=img", "--set", "data.label_columns=[covid]", "--set",
            "data.patient_column=pid"]
    assert cli(args) == 2 and "path" in capsys.readouterr().err                  # without the options: no path column
    assert cli(args + opts) == 0
    rec = json.loads(Run(env["run"]).external_metrics_path("covid").read_text())
    assert rec["data"]["options"] == {"path_column": "img", "label_columns": ["covid"], "patient_column": "pid"}
    assert rec["data"]["n"] == 24 and "labels from column(s) covid" in " ".join(rec["data"]["notes"])
    m = rec["metrics"]
    from medtl.runs import read_predictions
    from medtl.stats.operating import op_thresholds, rates

    v = read_predictions(Run(env["run"]).val_predictions_path)
    e = read_predictions(Run(env["run"]).external_predictions_path("covid"))
    t = op_thresholds(v["y"], v["p"])["spec95"]
    assert m["operating_points"]["spec95"]["threshold"] == t
    assert m["sens_at_spec95"] == pytest.approx(rates(e["y"], e["p"], t)[0])
    assert "net_benefit_10" in m and "decision_curve" in m
    for bad, msg in ((["--set", "data.image_size=32"], "cannot be set for evaluate"),
                     (["--set", "label_columns=[x]"], "expected data.KEY=VALUE"),
                     (["--set", "data.uncertain=maybe"], "data.uncertain")):
        assert cli(args + bad) == 2 and msg in capsys.readouterr().err


def test_a_multilabel_run_is_scored_on_the_labels_another_dataset_shares(tmp_path, monkeypatch, capsys):
    """An NIH-style run (Finding Labels) scored on a CheXpert-style manifest (one column per
    observation): the pathology table pairs Effusion with Pleural Effusion and Cardiomegaly with
    itself, and the record says which labels were dropped and why; no hand map."""
    from medtl.data.pathologies import harmonise
    from medtl.train import finetune

    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))
    nih, chex = tmp_path / "nih", tmp_path / "chex"
    findings = ["Effusion", "Cardiomegaly", "Mass", "No Finding", "Effusion|Cardiomegaly"]
    nih.mkdir()
    with open(nih / "Data_Entry.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Image Index", "Finding Labels", "Patient ID", "split"])
        for i in range(60):
            lab = findings[i % 5]
            write_png(nih / f"{i}.png", 60 + 60 * ("Effusion" in lab) + 50 * ("Cardiomegaly" in lab), seed=i)
            w.writerow([f"{i}.png", lab, f"{i // 2}", "train" if i < 36 else ("val" if i < 46 else "test")])
    chex.mkdir()
    with open(chex / "valid.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Path", "Pleural Effusion", "Cardiomegaly", "Support Devices", "Lung Lesion"])
        for i in range(30):
            eff, card = i % 2, (i // 2) % 2
            write_png(chex / f"p{i}.png", 60 + 60 * eff + 50 * card, seed=100 + i)
            w.writerow([f"p{i}.png", eff, card, 1, ""])
    run = tmp_path / "nih-arm" / "seed-0"
    finetune(build_config({}, [f"data.path={nih / 'Data_Entry.csv'}", "data.image_size=16", "train.epochs=1",
                               "train.batch_size=12", "train.num_threads=1", "train.precision=fp32"]), run,
             progress=False)
    assert Run(run).record.task == "multilabel"
    assert cli(["evaluate", str(tmp_path / "nih-arm"), "--data", str(chex / "valid.csv"), "--name", "chex", "-q",
                "--split", "all", "--set", "data.label_columns=[Pleural Effusion, Cardiomegaly, Support Devices, Lung Lesion]"]) == 0
    rec = json.loads(Run(run).external_metrics_path("chex").read_text())
    labels = rec["data"]["labels"]
    assert sorted(labels["shared"]) == ["Cardiomegaly", "Effusion"]
    assert labels["dropped_run"] == {"Mass": "no counterpart in the data"}
    assert labels["dropped_data"]["Support Devices"] == "not a pathology (devices)"
    assert labels["dropped_data"]["Lung Lesion"] == "no counterpart in the run"
    m = rec["metrics"]
    assert set(m["auc_per_class"]) == {"Cardiomegaly", "Effusion"} and rec["data"]["n"] == 30
    assert m["auc"] == pytest.approx(np.mean(list(m["auc_per_class"].values())))
    # each shared label at the operating points fixed on the run's own val predictions of that label
    assert set(m["operating_points_per_class"]) == {"Cardiomegaly", "Effusion"}
    vals = [m["operating_points_per_class"][n]["net_benefit_10"] for n in ("Cardiomegaly", "Effusion")]
    assert m["net_benefit_10"] == pytest.approx(np.mean(vals))
    assert m["ci"]["auc_per_class"]["Effusion"]["method"] == "DeLong"
    with np.load(Run(run).external_predictions_path("chex")) as z:
        assert z["y"].shape == z["p"].shape == (30, 2) and list(z["labels"]) == labels["shared"]
    # compare reads the macro AUC like any external metric
    assert cli(["compare", str(tmp_path / "nih-arm"), "--metric", "external.chex.auc", "--out",
                str(tmp_path / "cmp"), "--no-plots", "-B", "200"]) == 0
    # a label map overrides the table; single-label data is refused in one line
    h = harmonise(["Mass", "Effusion"], ["Nodule/Mass", "Pleural Effusion"], {"Nodule/Mass": "Mass"})
    assert sorted(n for _, _, n in h["pairs"]) == ["Effusion", "Mass"]
    capsys.readouterr()
    assert cli(["evaluate", str(run), "--data", "builtin:synthetic", "--name", "syn", "-q"]) == 2
    assert "multi-label run" in capsys.readouterr().err


def test_an_external_manifest_that_holds_only_test_rows_is_scored_and_cannot_be_trained_on(env, capsys):
    """Another hospital's export is often its test cases only: the split column says test on
    every row.  evaluate scores it (noting an evaluation-only set); finetune refuses it."""
    from medtl.errors import ConfigError
    from medtl.train import finetune

    data = env["data"].parent
    rows = [r for r in csv.DictReader(open(env["data"], newline="")) if r["split"] == "test"]
    with open(data / "test_only.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    args = ["evaluate", str(env["run"]), "--data", str(data / "test_only.csv"), "--name", "testonly", "-q", *MAP,
            "--set", "data.split_column=split"]
    assert cli(args) == 0, capsys.readouterr().err
    rec = json.loads(Run(env["run"]).external_metrics_path("testonly").read_text())
    assert rec["data"]["n"] == len(rows) == 24
    assert any("evaluation-only set" in n for n in rec["data"]["notes"])
    with pytest.raises(ConfigError, match="train split is empty"):
        finetune(build_config({}, [f"data.path={data / 'test_only.csv'}", "data.split_column=split",
                                   "data.image_size=16"]), env["root"] / "never", progress=False)
    assert not (env["root"] / "never").exists()


def test_a_multiclass_run_is_scored_on_another_sites_data_one_class_against_the_rest(tmp_path, monkeypatch, capsys):
    """A 3-class run (normal / bacteria / virus) scored on another site's manifest that names its
    classes differently: the label map pairs them, the record holds macro and per-class AUC with
    case CIs, calibration, and each class against the rest at the run's val-fixed operating
    points."""
    from medtl.train import finetune

    monkeypatch.setenv("MEDTL_CACHE", str(tmp_path / "cache"))
    levels = {"normal": 40, "bacteria": 130, "virus": 220}
    for root, names, n in ((tmp_path / "own", list(levels), 16), (tmp_path / "site", ["NL", "BAC", "VIR"], 10)):
        rows = []
        for c, (cls, lv) in enumerate(zip(names, levels.values())):
            for i in range(n):
                write_png(root / "img" / f"{cls}{i}.png", lv, size=(16, 16), seed=100 * c + i)
                rows.append({"path": f"img/{cls}{i}.png", "label": cls, "pid": f"{cls}{i}"})
        with open(root / "m.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["path", "label", "pid"])
            w.writeheader()
            w.writerows(rows)
    run = tmp_path / "arm" / "seed-0"
    finetune(build_config({}, [f"data.path={tmp_path / 'own' / 'm.csv'}", "data.patient_column=pid",
                               "data.val_fraction=0.25", "data.image_size=16", "train.epochs=2",
                               "train.batch_size=8", "train.num_threads=1", "train.precision=fp32"]), run,
             progress=False)
    assert Run(run).record.task == "multiclass"
    args = ["evaluate", str(tmp_path / "arm"), "--data", str(tmp_path / "site" / "m.csv"), "--name", "site", "-q",
            "--split", "all", "--set", "data.patient_column=pid",
            "--label-map", "NL=normal", "--label-map", "BAC=bacteria", "--label-map", "VIR=virus"]
    assert cli(args) == 0, capsys.readouterr().err
    rec = json.loads(Run(run).external_metrics_path("site").read_text())
    m = rec["metrics"]
    assert rec["data"]["n"] == 30 and m["n_per_class"] == {"bacteria": 10, "normal": 10, "virus": 10}
    assert set(m["auc_per_class"]) == {"bacteria", "normal", "virus"}
    assert m["auc"] == pytest.approx(np.mean(list(m["auc_per_class"].values())))
    assert "ece" in m and set(m["operating_points_per_class"]) == {"bacteria", "normal", "virus"}
    pred = np.load(Run(run).external_predictions_path("site"))
    assert pred["p"].shape == (30, 3) and np.allclose(pred["p"].sum(1), 1)
