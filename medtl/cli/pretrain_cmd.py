"""``medtl pretrain``: parse, resolve the config, call :func:`medtl.pretrain.pretrain`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import setup_logging, training_process


def pretrain(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config: data, model, train, pretrain."),
    set_: List[str] = typer.Option([], "--set", "-s", help="Override a config key: --set pretrain.epochs=5"),
    source: Optional[str] = typer.Option(None, "--source", help="builtin:fractaldb (default) or a labelled image "
                                                                "folder ROOT/CLASS/* (pretrain.source)."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="in, sin, sin+in, sin+in->in or tricks "
                                                                "(pretrain.recipe)."),
    name: Optional[str] = typer.Option(None, "--name", help="Registry name of the weights made (pretrain.name; "
                                                            "default: the config's name)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Pretrain folder (default runs/pretrain/NAME)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for init, data order and augmentation."),
    restart: bool = typer.Option(False, "--restart", help="Discard an existing pretrain in --out first."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, warnings only."),
) -> None:
    """Pretrain a source backbone and register it as a weight source (`model.weights: NAME`).

    Re-running the same command resumes an interrupted pretrain.
    """
    from ..pretrain import load_pretrain_config
    from ..pretrain import pretrain as run_pretrain

    setup_logging(quiet)
    overrides = list(set_) + [f"pretrain.{k}={v}" for k, v in (("source", source), ("recipe", recipe),
                                                                 ("name", name)) if v is not None]
    overrides += [f"seed={seed}"] if seed is not None else []
    cfg = load_pretrain_config(config, overrides)
    weight_name = cfg.pretrain.name or cfg.name
    out_dir = out or Path("runs") / "pretrain" / weight_name
    main = training_process(cfg.train.num_threads, distributed=True)
    res = run_pretrain(cfg, out_dir, progress=not quiet, restart=restart)
    if not main:
        return
    for st in res["stages"]:
        typer.echo(f"stage {st['stage']}: val accuracy {st['val_acc']:.3f}, test accuracy {st['test_acc']:.3f} "
                   f"(best epoch {st['best_epoch']} of {st['epochs']})")
    typer.echo(f"registered weights {res['name']} ({res['family']}, {res['backbone']}, sha256 {res['sha256'][:12]}...): "
               f"use model.weights={res['name']}")
    typer.echo(f"pretrain folder: {out_dir}")
