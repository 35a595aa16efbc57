"""``medtl export``: parse, then :func:`medtl.export.export_monai_bundle`; say where the bundle is."""
from __future__ import annotations

from pathlib import Path

import typer

from ..errors import ConfigError

FORMATS = ("monai-bundle",)


def export(
    run: Path = typer.Argument(..., help="A finished run folder (RUN/seed-K or any folder finetune wrote)."),
    fmt: str = typer.Option(..., "--format", "-f", help="What to write: monai-bundle (a MONAI bundle folder)."),
    out: Path = typer.Option(..., "--out", "-o", help="The folder to write (new or empty)."),
    model_format: str = typer.Option("torchscript", "--model-format",
                                     help="torchscript: models/model.ts, the bundle runs without medtl; "
                                          "state_dict: models/model.pt loaded into medtl's network definition."),
    force: bool = typer.Option(False, "--force", help="Replace a bundle medtl exported into --out before."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the result line."),
) -> None:
    """Export a finished run's fine-tuned network: a MONAI bundle whose inference config decodes and
    resizes image files as medtl does and writes the same probabilities.

    The bundle's metadata carries the backbone, the input size, the operating threshold chosen on
    val and the run's temperature (reported, not applied); docs/README.md says how to run it.
    """
    from ..export import MODEL_FORMATS, BundleExistsError, export_monai_bundle
    from .common import setup_logging

    setup_logging(quiet)
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    if model_format not in MODEL_FORMATS:
        raise ConfigError(f"--model-format must be one of {', '.join(MODEL_FORMATS)} (got {model_format!r})")
    try:
        path = export_monai_bundle(run, out, format=model_format, force=force)
    except BundleExistsError as exc:
        raise ConfigError(f"{exc}, or add --force to replace it") from None
    typer.echo(f"MONAI bundle: {path}")
    if not quiet:
        typer.echo(f"run it: python -m monai.bundle run --config_file {path}/configs/inference.json "
                   f"--meta_file {path}/configs/metadata.json --bundle_root {path} --dataset_dir IMAGES "
                   f"--output_dir OUT")
