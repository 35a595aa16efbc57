"""``medtl plan``: parse, then :func:`medtl.stats.pilot.plan_runs`; print the sentences, write plan.json."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def plan(
    dirs: List[Path] = typer.Argument(..., help="Pilot sweep or arm folders (at least 3 paired seeds per arm)."),
    metric: List[str] = typer.Option(["test.auc"], "--metric", "-m", help="Metric to plan for; repeat for several."),
    difference: Optional[float] = typer.Option(None, "--difference", help="The true difference to detect."),
    margin: Optional[float] = typer.Option(None, "--margin", help="Equivalence margin M to show |difference| < M."),
    theta: float = typer.Option(0.0, "--theta", help="The true difference assumed when planning equivalence."),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level of the family."),
    power: float = typer.Option(0.8, "--power", help="Target power."),
    tests: Optional[int] = typer.Option(None, "--tests", help="Holm family size (default: the pairs x metrics "
                                        "planned here)."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Seeds per arm the study is configured with: say "
                                        "whether that reaches the conclusion."),
    scope: str = typer.Option("patients", "--scope", help="As medtl compare will conclude: patients (the test set's "
                              "sampling counts) or test_set (it does not)."),
    confidence: float = typer.Option(0.8, "--confidence", help="Plan on this upper confidence limit of the pilot's "
                                     "seed variance (0 for the point estimate)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write plan.json here."),
) -> None:
    """Seeds needed per arm, from pilot runs: power of medtl's own conclusion rule (seed and test-set
    variance, Holm family), to detect a difference or to show equivalence within a margin."""
    from ..io import json_safe, write_json_atomic
    from ..stats.pilot import plan_runs

    res = plan_runs(dirs, metric, difference=difference, margin=margin, theta=theta, alpha=alpha, power=power,
                    family_size=tests, planned_seeds=seeds, scope=scope,
                    confidence=confidence if confidence > 0 else None)
    for row in res["pairs"]:
        for s in row["sentences"]:
            typer.echo(f"- {s}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "plan.json", json_safe(res))
        typer.echo(f"wrote {out / 'plan.json'}")
