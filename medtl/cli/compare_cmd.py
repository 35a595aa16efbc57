"""``medtl compare``: parse, then :func:`medtl.stats.comparison.compare_runs` and
:func:`medtl.reports.write_compare`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import typer

from ..errors import ConfigError


def _parse_arm(spec: str) -> tuple[str, str]:
    name, sep, folder = spec.partition("=")
    if not sep or not name.strip() or not folder.strip():
        raise ConfigError(f"--arm expects NAME=DIR, got {spec!r}")
    return name.strip(), folder.strip()


def parse_margins(specs: List[str]):
    """``--margin`` values: None, one number, or ``{metric: number}``."""
    if not specs:
        return None
    out: dict[str, float] = {}
    for spec in specs:
        key, sep, val = spec.rpartition("=")
        try:
            num = float(val)
        except ValueError:
            raise ConfigError(f"--margin expects M or METRIC=M with a positive number M, got {spec!r}") from None
        if not num > 0:
            raise ConfigError(f"--margin must be positive, got {spec!r}")
        if not sep:
            if len(specs) > 1:
                raise ConfigError("--margin: give one number for every metric, or METRIC=M for each, not both")
            return num
        out[key.strip()] = num
    return out


def compare(
    dirs: Optional[List[Path]] = typer.Argument(
        None, help="Sweep folders (ARM/seed-K/), arm folders (seed-K/) or single run folders."),
    metric: List[str] = typer.Option(["test.auc"], "--metric", "-m",
                                     help="Dotted path into metrics.json; repeat for several."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for compare.json, compare.md, compare.html."),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level after Holm correction."),
    bootstrap: int = typer.Option(10000, "--bootstrap", "-B", help="Bootstrap resamples per CI."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap's numpy Generator."),
    ci: str = typer.Option("t", "--ci", help="Per-arm CI over seeds: t (default), or bootstrap bca / percentile."),
    margin: List[str] = typer.Option([], "--margin", help="Equivalence margin M (TOST): one number for every metric, "
                                     "or METRIC=M; repeat for several. Each pair then reads 'differs', "
                                     "'equivalent within ±M' or 'inconclusive'."),
    scope: str = typer.Option("patients", "--scope", help="patients (default): test-set metrics are tested over "
                              "seeds and test cases; test_set: conclusions about this test set only (a fixed "
                              "benchmark), tested over seeds."),
    primary: List[str] = typer.Option([], "--primary", help="A primary endpoint (one of the --metric values); "
                                      "repeat for several. They form one Holm family, the rest is exploratory."),
    arm: List[str] = typer.Option([], "--arm", help="An extra arm with an explicit name: NAME=DIR."),
    delong: Optional[Tuple[Path, Path]] = typer.Option(
        None, "--delong", help="RUN_A RUN_B: DeLong test on their predictions_test.npz."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Skip the PNG plots."),
    anchor: Optional[float] = typer.Option(None, "--anchor", help="An outside figure (a published baseline) "
                                           "to judge each arm's first metric against, with the wider CI."),
    internal_vs_external: Optional[str] = typer.Option(
        None, "--internal-vs-external", metavar="NAME", help="Per arm: test AUC, AUC on the external set NAME "
        "(medtl evaluate --name NAME) and the paired drop, with CIs; do the arms differ in their drop?"),
) -> None:
    """Compare arms over seeds.

    Per arm: mean, sd and t CI over seeds (and over seeds + test cases for test-set metrics).
    Every pair is tested (paired t over shared seeds, over seeds and test cases where predictions
    allow; else Welch), Holm-corrected within its family, and worded: differs, equivalent within
    the margin, or inconclusive.
    """
    from ..io import json_safe
    from ..reports import markdown_table, write_compare
    from ..stats.comparison import compare_runs

    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"--alpha must be between 0 and 1 (got {alpha})")
    if bootstrap < 100:
        raise ConfigError(f"--bootstrap must be at least 100 resamples (got {bootstrap})")
    if ci.lower() not in ("t", "bca", "percentile"):
        raise ConfigError(f"--ci must be 't', 'bca' or 'percentile' (got {ci!r})")
    margins = parse_margins(margin)
    named = [_parse_arm(a) for a in arm]
    folders = list(dirs or [])
    if not folders and not named:
        raise ConfigError("give at least one sweep, arm or run folder (or --arm NAME=DIR)")
    pair = (delong[0], delong[1]) if delong is not None and all(p is not None for p in delong) else None
    result = compare_runs(folders, metric, alpha=alpha, n_resamples=bootstrap, seed=seed, ci_method=ci,
                          named=named, delong=pair, anchor=anchor, internal_vs_external_name=internal_vs_external,
                          margin=margins, primary=primary or None, scope=scope)
    write_compare(result, out, plots=not no_plots)
    result = json_safe(result)
    typer.echo(f"{result['metrics'][0]}:")
    typer.echo(markdown_table(result))
    for p in result["pairs"]:
        if p["metric"] == result["metrics"][0]:
            typer.echo(f"- {p['sentence']}")
    for w in result["leak_warnings"].values():
        typer.echo(f"WARNING: {w}")
    for line in (result.get("anchor") or {}).get("statements", []):
        typer.echo(f"- {line}")
    if result.get("internal_vs_external"):
        from ..reports.compare import ive_markdown

        typer.echo(ive_markdown(result))
    if result["n_failed"]:
        typer.echo(f"{result['n_failed']} failed run(s) skipped (see compare.md)")
    if result.get("delong"):
        d = result["delong"]
        typer.echo(f"DeLong: AUC {d['auc_a']:.4f} vs {d['auc_b']:.4f}, z={d['z']:.2f}, p={d['p']:.3g}")
    typer.echo(f"wrote {Path(out) / 'compare.json'}, compare.md, compare.html")
