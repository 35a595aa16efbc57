"""``medtl evaluate``: parse, then :func:`medtl.evaluate.evaluate_runs`; print one table per arm."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import ConfigError


def _parse_map(items: List[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        src, sep, dst = item.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise ConfigError(f"--label-map expects SRC=DST (a data class = a run class, or SRC=- to drop it), "
                              f"got {item!r}")
        if src.strip() in out:
            raise ConfigError(f"--label-map maps {src.strip()!r} twice")
        out[src.strip()] = dst.strip()
    return out


def _table(result: dict) -> list[str]:
    from ..reports.render import ci, num

    head = ["arm", "n", "AUC (95% CI over seeds + cases)", "AUC (95% CI over seeds)", "sensitivity", "specificity",
            "ECE", "ECE after T", "ECE change (95% CI; runs lower; paired t p)", "Brier"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, st in result["arms"].items():
        def cell(k):
            d = st[k]
            return f"{num(d['mean'])} ({ci(d['ci_low'], d['ci_high'])})" if k == "auc" else num(d["mean"])
        a = st["auc"]
        both = f"{num(a['mean'])} ({ci(a.get('ci_seeds_cases_low'), a.get('ci_seeds_cases_high'))})"
        lines.append("| " + " | ".join([arm, str(st["auc"]["n"]), both, cell("auc"), cell("sensitivity"),
                                         cell("specificity"), cell("ece"), cell("temp_scaled.ece"),
                                         _t_cell(st["ece_change_after_T"]), cell("brier")]) + " |")
    return lines


def _data_options(items: List[str]) -> dict:
    """``--set data.KEY=VALUE`` items as ``{KEY: value}`` (values parsed as finetune parses them)."""
    from ..config import parse_value

    out = {}
    for item in items:
        key, eq, val = item.partition("=")
        key = key.strip()
        if not eq or not key.startswith("data.") or "." in key[5:] or not key[5:]:
            raise ConfigError(f"--set {item!r}: expected data.KEY=VALUE, e.g. data.label_columns=[covid]")
        out[key[5:]] = parse_value(val)
    return out


def _t_cell(eff: dict) -> str:
    from ..reports.render import ci, num

    c = eff["change"]
    p = eff.get("p", eff.get("wilcoxon_p"))
    p_txt = "n/a" if p is None or p != p else f"{p:.2g}"
    return f"{num(c['mean'])} ({ci(c['ci_low'], c['ci_high'])}; {eff['n_lower']}/{eff['n']}; p {p_txt})"


def evaluate(
    dirs: List[Path] = typer.Argument(..., help="Sweep folders (ARM/seed-K/), arm folders (seed-K/) or run folders."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Another dataset (any format medtl reads, or a "
                                       "dataset name). Without it: add calibration to runs that predate it."),
    name: Optional[str] = typer.Option(None, "--name", help="Results go to RUN/external/NAME/ (default: from --data)."),
    label_map: List[str] = typer.Option([], "--label-map", help="SRC=DST: a class of the data = a class of the run "
                                        "(SRC=- drops it); repeat for each class whose names differ."),
    positive: Optional[str] = typer.Option(None, "--positive", help="The run's positive class (default: its second)."),
    split: str = typer.Option("test", "--split", help="Split of --data to score: test, val, train or all."),
    group: List[str] = typer.Option([], "--group", help="A CSV manifest column of --data that defines subgroups; "
                                    "repeat for several."),
    data_format: str = typer.Option("auto", "--format", help="Read --data as auto, folder, csv, npz."),
    set_: List[str] = typer.Option([], "--set", "-s", help="How to read --data, as finetune's data keys: "
                                   "--set data.label_columns=[covid] (also path_column, patient_column, "
                                   "split_column, uncertain, patient_regex, val_fraction, split_seed)."),
    force: bool = typer.Option(False, "--force", help="Recompute even where a cached result matches."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the tables."),
) -> None:
    """Score finished runs on another dataset (external validation) with their own preprocessing,
    checkpoint, threshold and temperature; calibration and subgroups included.

    Writes RUN/external/NAME/metrics.json, predictions.npz and reliability.png (cached: a second
    call computes nothing). Compare with: medtl compare DIRS --internal-vs-external NAME.
    """
    from ..evaluate import evaluate_runs
    from .common import setup_logging, training_process

    setup_logging(quiet)
    if data_format not in ("auto", "folder", "csv", "npz"):
        raise ConfigError(f"--format must be auto, folder, csv or npz (got {data_format!r})")
    options = _data_options(set_)
    training_process(None)
    say = None if quiet else (lambda msg: typer.echo(msg, err=True))
    result = evaluate_runs(dirs, data, name=name, label_map=_parse_map(label_map), positive=positive, split=split,
                           group_columns=group or None, data_format=data_format, force=force, progress=say,
                           data_options=options)
    info = result.get("data") or {}
    where = f"{result['name']} ({info.get('source')}, split {info.get('split')}, n={(info.get('n'))})" \
        if result["name"] else "own test split (calibration)"
    typer.echo(f"evaluated {len(result['runs'])} run(s) on {where}; {result['n_cached']} from cache")
    if info.get("label_map"):
        typer.echo("label map: " + ", ".join(f"{k}={v}" for k, v in info["label_map"].items()))
    for line in _table(result):
        typer.echo(line)
    if len(result["runs"]) == 1:  # one run: its own case CIs (the table's CIs are over seeds)
        from ..stats.case_ci import summary_line

        row = result["runs"][0]
        typer.echo(f"{row['arm']}/seed {row['seed']}: {summary_line(row['metrics'])} (n={row['metrics'].get('n')})")
    for w in (result.get("leak_warnings") or {}).values():
        typer.echo(f"WARNING: {w}")
    if result["name"]:
        typer.echo(f"compare: medtl compare {' '.join(map(str, dirs))} --internal-vs-external {result['name']} "
                   f"--out OUT")
