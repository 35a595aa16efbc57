"""``medtl probe ...``: parse, then call the probes of :mod:`medtl.probes` on one run."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import ConfigError

app = typer.Typer(help="Probes of a finished run: translation, adversarial, corruptions, explain, shape-bias, "
                       "shortcut, and any registered probe (list, run NAME).",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


def _parse_eps(values: List[str]) -> list[float]:
    out = []
    for v in values:
        for part in v.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                if "/" in part:
                    a, b = part.split("/", 1)
                    out.append(float(a) / float(b))
                else:
                    out.append(float(part))
            except (ValueError, ZeroDivisionError):
                raise ConfigError(f"--eps: cannot read {part!r} (use numbers like 0.0157 or 4/255)") from None
    return out


def _done(res: dict, run_dir: Path, probe: str) -> None:
    from ..runs import Run

    where = Run(run_dir).probe_path(probe)
    typer.echo(f"{'cached' if res.get('cached') else 'wrote'} {where}")


@app.command()
def translation(
    run_dir: Path = typer.Argument(..., help="A finished run folder."),
    max_shift: Optional[int] = typer.Option(None, "--max-shift", "-k", help="Largest shift in px."),
    n_images: Optional[int] = typer.Option(None, "--n-images", help="Seeded, stratified sample of test images "
                                                                    "(0: all)."),
    n_pairs: Optional[int] = typer.Option(None, "--n-pairs", help="Random shift pairs per image for consistency."),
    scale_pct: Optional[int] = typer.Option(None, "--scale-pct", help="Scale probe: ±1..N percent."),
    protocol: List[str] = typer.Option([], "--protocol", help="crop, black, circular (default: all three)."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    force: bool = typer.Option(False, "--force", help="Recompute even if cached."),
) -> None:
    """P(decision change) under 1..k px shifts (three protocols), jaggedness, consistency, scale.
    Options left out take the probe's defaults (`medtl probe list`)."""
    from ..probes.translation import translation_probe

    r = translation_probe(run_dir, max_shift=max_shift, n_images=n_images, n_pairs=n_pairs, scale_pct=scale_pct,
                          protocols=protocol or None, seed=seed, force=force)
    for p, m in r["protocols"].items():
        typer.echo(f"{p:9s} P(change,1px)={m['p_change_1px']:.4f} consistency={m['consistency']:.4f} "
                   f"jaggedness={m['jaggedness']:.4f} mean|Δp|/px={m['mean_abs_dp_per_px']:.4f}")
    typer.echo(f"scale ±{r['params']['scale_pct']}%: P(change)={r['scale']['p_change_max']:.4f}")
    if "per_label" in r:  # multi-label: the figures above are any-label ones
        typer.echo("per label P(change,1px): " + "  ".join(f"{c}={v['p_change_1px']:.4f}"
                                                          for c, v in r["per_label"].items()))
        typer.echo(f"decisions: {r['decision']['rule']}")
    _done(r, run_dir, "translation")


@app.command()
def adversarial(
    run_dir: Path = typer.Argument(..., help="A finished run folder."),
    eps: List[str] = typer.Option([], "--eps", help="ε values in [0,1] pixel units, e.g. 0,1/255,8/255."),
    attack: List[str] = typer.Option(["fgsm_linf", "pgd_linf", "fgsm_l2", "pgd_l2"], "--attack",
                                     help="Repeatable: fgsm_linf, pgd_linf, fgsm_l2, pgd_l2 (the default four); "
                                          "autoattack_linf, autoattack_l2: AutoAttack standard (APGD-CE, APGD-T, "
                                          "FAB-T, Square; RobustBench budgets, slow: opt-in)."),
    steps: int = typer.Option(10, "--steps", help="PGD steps (AutoAttack keeps its standard budgets)."),
    no_random_start: bool = typer.Option(False, "--no-random-start"),
    l2_scale: float = typer.Option(1.0, "--l2-scale", help="ε_L2 = ε·sqrt(H·W)·l2_scale."),
    n_images: int = typer.Option(0, "--n-images", help="Seeded, stratified sample (0: all test images)."),
    source: Optional[Path] = typer.Option(None, "--source", help="Craft on this run, evaluate on RUN_DIR (transfer)."),
    seed: int = typer.Option(0, "--seed"),
    force: bool = typer.Option(False, "--force"),
) -> None:
    """FGSM / PGD (L∞, L2), optionally AutoAttack, ε sweep: AUC, ACC, attack success rate; --source for
    black-box transfer."""
    from ..probes.adversarial import DEFAULT_EPS, adversarial_probe

    r = adversarial_probe(run_dir, source=source, eps=_parse_eps(eps) or DEFAULT_EPS, attacks=attack, steps=steps,
                          random_start=not no_random_start, l2_scale=l2_scale, n_images=n_images or None, seed=seed,
                          force=force)
    for a, rows in r["attacks"].items():
        typer.echo(f"{a}: " + "  ".join(f"ε={x['eps_255']:g}/255 AUC={x['auc']:.3f}"
                                        + (f" flips={x['flip_rate']:.3f}" if "flip_rate" in x else "") for x in rows))
    _done(r, run_dir, "adversarial" if source is None else "adversarial_transfer")


@app.command()
def corruptions(
    run_dir: Path = typer.Argument(..., help="A finished run folder."),
    corruption: List[str] = typer.Option([], "--corruption", help="Subset of corruptions (default: all)."),
    n_images: int = typer.Option(0, "--n-images", help="Seeded, stratified sample (0: all test images)."),
    seed: int = typer.Option(0, "--seed"),
    force: bool = typer.Option(False, "--force"),
) -> None:
    """AUC under 7 corruptions × 5 severities; mean AUC drop."""
    from ..probes.corruptions import CORRUPTIONS, corruptions_probe

    r = corruptions_probe(run_dir, corruptions=corruption or list(CORRUPTIONS), n_images=n_images or None, seed=seed,
                          force=force)
    for c, rows in r["corruptions"].items():
        typer.echo(f"{c:15s} " + " ".join(f"{x['auc']:.3f}" for x in rows))
    typer.echo(f"clean AUC {r['clean']['auc']:.4f}; mean AUC drop {r['mean_auc_drop']:.4f}")
    if "per_label" in r:  # multi-label: the AUCs above are macro means over labels
        typer.echo("per label mean AUC drop: " + "  ".join(
            f"{c}={'n/a' if v['mean_auc_drop'] is None else format(v['mean_auc_drop'], '.4f')}"
            for c, v in r["per_label"].items()))
    _done(r, run_dir, "corruptions")


@app.command()
def explain(
    run_dir: Path = typer.Argument(..., help="A finished run folder."),
    n_samples: int = typer.Option(8, "--n-samples"),
    embedding: str = typer.Option("pca", "--embedding", help="pca or tsne."),
    seed: int = typer.Option(0, "--seed"),
    force: bool = typer.Option(False, "--force"),
) -> None:
    """Grad-CAM, saliency and occlusion panels for a seeded sample; PCA/t-SNE of features."""
    from ..probes.explain import explain_probe

    r = explain_probe(run_dir, n_samples=n_samples, embedding=embedding, seed=seed, force=force)
    from ..runs import Run

    probes = Run(run_dir).probes_dir
    typer.echo(f"panels: {probes / r['plots']['panel']}, {probes / r['plots']['embedding']}")
    _done(r, run_dir, "explain")


@app.command()
def shortcut(
    run_dir: Path = typer.Argument(..., help="A finished run folder."),
    n_images: int = typer.Option(0, "--n-images", help="Seeded, stratified sample (0: all test images)."),
    band: float = typer.Option(0.125, "--band", help="Border band width, fraction of the side."),
    seed: int = typer.Option(0, "--seed"),
    source_data: Optional[str] = typer.Option(None, "--source-data",
                                              help="Another dataset: how well do the frozen features name the "
                                                   "source (run's test set vs this)?"),
    force: bool = typer.Option(False, "--force", help="Recompute even if cached."),
) -> None:
    """AUC with the lung fields removed, kept alone, or only the border band; flags a model that
    scores from outside the lungs; --source-data: "name the source" AUC against another dataset."""
    from ..probes.shortcut import VARIANTS, shortcut_probe, source_probe

    src = source_probe(run_dir, source_data, seed=seed, force=force) if source_data else None
    r = shortcut_probe(run_dir, n_images=n_images or None, band=band, seed=seed, force=force)
    typer.echo("  ".join(f"{v}: AUC={r['variants'][v]['auc']:.3f}" for v in VARIANTS))
    ret, lo, hi = r["masked_retention"], r.get("retention_ci_low"), r.get("retention_ci_high")
    ci = f" (95% CI {'-inf' if lo is None else f'{lo:.2f}'} to {'inf' if hi is None else f'{hi:.2f}'})"
    typer.echo(f"retention {'n/a' if ret is None else f'{ret:.2f}' + ci}; {r.get('flag_state')}; "
               f"flagged: {r['flagged']}; lung mask prior used for {r['mask_fallback']}/{r['n_images']} images")
    typer.echo(r["verdict"])
    _done(r, run_dir, "shortcut")
    if src is not None:
        typer.echo(f"source AUC {src['auc']:.3f} (95% CI {src['ci_low']:.3f}-{src['ci_high']:.3f}, "
                   f"n={src['n_per_source']} per source)")
        typer.echo(src["verdict"])
        _done(src, run_dir, "source")


@app.command("shape-bias")
def shape_bias(
    run_dir: Path = typer.Argument(..., help="A finished run folder."),
    n_pairs: Optional[int] = typer.Option(None, "--n-pairs", help="Cue-conflict images (pairs of correctly classified "
                                                                 "test images of different classes, balanced over "
                                                                 "class pairs)."),
    sigma: Optional[float] = typer.Option(None, "--sigma", help="Low-pass σ as a fraction of the image side (shape "
                                                                "below, texture above)."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    force: bool = typer.Option(False, "--force", help="Recompute even if cached."),
) -> None:
    """Shape vs texture bias on cue-conflict X-rays (low frequencies of one class's image, high
    frequencies of another's): the fraction of shape decisions (Geirhos et al. 2019)."""
    from ..probes.shape_bias import shape_bias_probe

    r = shape_bias_probe(run_dir, n_pairs=n_pairs, sigma=sigma, seed=seed, force=force)
    for cue in ("shape", "texture"):
        c = r[f"{cue}_only"]
        typer.echo(f"{cue} cue alone: balanced accuracy "
                   + ("n/a" if c["balanced_acc"] is None else
                      f"{c['balanced_acc']:.3f} (95% CI {c['ci_low']:.3f}-{c['ci_high']:.3f})"))
    typer.echo(f"{r['n_qualified']} of {r['n_pairs']} cue-conflict pairs qualified (both single-cue images "
               f"classified correctly), σ = {r['sigma_px']:.2f} px")
    for d, v in r["directions"].items():
        frac = v["shape_fraction"]
        typer.echo(f"  {d}: shape fraction {'n/a' if frac is None else f'{frac:.3f}'} (n={v['n_decided']})")
    if r.get("shape_bias") is None:
        typer.echo(f"no shape bias: {r.get('reason')}")
    else:
        typer.echo(f"shape bias {r['shape_bias']:.3f} (95% CI {r['ci_low']:.3f}-{r['ci_high']:.3f}; mean of the "
                   f"{len(r['directions'])} directions)")
    _done(r, run_dir, "shape_bias")


@app.command("list")
def list_probes() -> None:
    """The registered probes, with their parameters and defaults (the suite's presets beside)."""
    from ..probes import registry

    for p in registry.probes():
        typer.echo(f"{p.name}: {p.summary}")
        typer.echo("  parameters: " + ", ".join(f"{k}={v!r}" for k, v in p.defaults.items()))
        for preset, over in p.presets.items():
            typer.echo(f"  {preset} (robustness-report): " + ", ".join(f"{k}={v!r}" for k, v in over.items()))


@app.command("run")
def run_probe(
    name: str = typer.Argument(..., help="A registered probe (`medtl probe list`)."),
    run_dir: Path = typer.Argument(..., help="A finished run folder."),
    set_: List[str] = typer.Option([], "--set", help="KEY=VALUE: a probe parameter (the value is read as YAML)."),
    force: bool = typer.Option(False, "--force", help="Recompute even if cached."),
) -> None:
    """Any registered probe by name, with parameters as KEY=VALUE; prints its scalar results."""
    import yaml

    from ..probes import registry

    probe = registry.get(name)
    params = {}
    for item in set_:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set: expected KEY=VALUE, got {item!r}")
        params[key.strip()] = yaml.safe_load(value)
    probe.params(**params)  # unknown parameters: one line naming the probe's parameters
    r = probe.run(run_dir, force=force, **params)
    for k, v in r.items():
        if k not in ("key", "probe", "cached") and (isinstance(v, (int, float, str)) and not isinstance(v, bool)):
            typer.echo(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    _done(r, run_dir, name)
