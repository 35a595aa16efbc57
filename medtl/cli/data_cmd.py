"""`medtl data check|preview`: inspect a dataset before training on it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..config import load_config

app = typer.Typer(no_args_is_help=True, help="Inspect datasets: check, preview.")


def _data_cfg(path: str, config: Optional[Path], overrides: list[str] | None, image_size: int | None = None):
    extra = list(overrides or [])
    if image_size is not None:
        extra.append(f"data.image_size={image_size}")
    cfg = load_config(config, extra)
    cfg.data.path = str(path)
    return cfg.data


def _format_report(r: dict) -> str:
    lines = [f"dataset  {r.get('name')}  ({r.get('format')})  {r.get('path')}"]
    if r.get("synthetic"):
        lines.append("SYNTHETIC data: not real images")
    if r.get("classes"):
        lines.append(f"classes  {', '.join(r['classes'])}" + ("  [multi-label]" if r.get("multilabel") else ""))
    counts = r.get("counts")
    if counts:
        classes = list(next(iter(counts.values()))["by_class"])
        w = max([8] + [len(c) for c in classes]) + 2
        lines.append("")
        lines.append("split".ljust(8) + "images".rjust(9) + "patients".rjust(10) + "".join(c.rjust(w) for c in classes))
        for s, c in counts.items():
            lines.append(s.ljust(8) + str(c["total"]).rjust(9) + str(r.get("patients", {}).get(s, "")).rjust(10)
                         + "".join(str(c["by_class"][k]).rjust(w) for k in classes))
        lines.append("")
    if r.get("files") is not None:
        lines.append(f"files    {r['files']}")
    for info in r.get("dicom", [])[:10]:
        lines.append("dicom    " + ", ".join(f"{k}={v}" for k, v in info.items()))
    sz = r.get("image_size") or {}
    if sz:
        lines.append(f"size     min {sz['min_hw'][0]}x{sz['min_hw'][1]}, max {sz['max_hw'][0]}x{sz['max_hw'][1]}, "
                     f"most common {sz['most_common_hw'][0]}x{sz['most_common_hw'][1]} (HxW)")
    d = r.get("duplicates")
    if d is not None:
        lines.append(f"duplicates  {d['groups']} groups of byte-identical images ({d['extra_copies']} extra copies)")
        for ex in d["examples"][:3]:
            lines.append(f"    {ex['sha256'][:12]}  {', '.join(ex['ids'])}")
    lk = r.get("leaks")
    if lk is not None:
        for kind in ("patient", "bytes"):
            x = lk[kind]
            pairs = ", ".join(f"{k}: {v}" for k, v in x["by_split_pair"].items())
            lines.append(f"leaks ({kind})  {x['count']}" + (f"  ({pairs})" if pairs else ""))
            for ex in x["examples"][:3]:
                key = ex.get("patient") or ex.get("id") or ex.get("sha256")
                lines.append(f"    {key}  in {', '.join(ex['splits'])}")
    u = r.get("unreadable")
    if u and u["count"]:
        lines.append(f"unreadable  {u['count']} files")
        for ex in u["examples"][:3]:
            lines.append(f"    {ex['id']}: {ex['error']}")
    for note in r.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


@app.command()
def check(
    path: str = typer.Argument(..., help="folder, CSV manifest, .npz, .dcm or builtin:synthetic"),
    json_out: bool = typer.Option(False, "--json", help="print the report as JSON"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config file"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="override a config key: data.key=value"),
) -> None:
    """Counts per split and class, patients, sizes, duplicates and leaks."""
    from ..data import check_dataset

    cfg = _data_cfg(path, config, set_)
    report = check_dataset(path, cfg)
    if json_out:
        typer.echo(json.dumps(report, indent=2))
    else:
        typer.echo(_format_report(report))


@app.command()
def preview(
    path: str = typer.Argument(..., help="dataset path, or a single .dcm/image file"),
    out: Path = typer.Option(..., "--out", help="PNG file to write"),
    n: int = typer.Option(16, "--n", help="number of images"),
    split: str = typer.Option("train", "--split", help="train, val or test"),
    augment: bool = typer.Option(False, "--augment", help="apply the training augmentation"),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="override data.image_size"),
    seed: int = typer.Option(0, "--seed", help="which images and augmentations"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config file"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="override a config key: data.key=value"),
) -> None:
    """Write a PNG grid of images exactly as the model receives them."""
    from ..data import render_preview

    cfg = _data_cfg(path, config, set_, image_size)
    written = render_preview(cfg, out, n=n, split=split, augment=augment, seed=seed)
    typer.echo(f"wrote {written}")
