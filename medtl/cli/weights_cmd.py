"""``medtl weights list|fetch``: the pretrained-weight registry and the local cache."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="List and fetch pretrained weights.")


@app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """List registered weights: name, arch, family, format, ImageNet top-1, cache, URL."""
    from medtl.models.weights import cached_file, get_weights, list_weights

    rows = []
    for name in list_weights():
        s = get_weights(name)
        p = cached_file(s)
        rows.append({"name": s.name, "arch": s.arch, "family": s.family, "format": s.format,
                     "top1": s.top1, "cached": str(p) if p else None, "url": s.url,
                     "sha256": s.sha256, "sha256_prefix": s.sha256_prefix,
                     "citation": s.citation, "notes": s.notes})
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    head = ("name", "arch", "family", "format", "top1", "cached")
    table = [head] + [(r["name"], r["arch"], r["family"], r["format"],
                       f"{r['top1']:.2f}" if r["top1"] is not None else "-",
                       r["cached"] or "-") for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
    for row in table:
        typer.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    typer.echo("")
    for r in rows:
        typer.echo(f"{r['name']}: {r['url']}")


@app.command("fetch")
def fetch_cmd(
    name: str = typer.Argument(..., help="registered weight name (see `medtl weights list`)"),
    from_path: Optional[Path] = typer.Option(None, "--from",
                                             help="verify and copy this local file instead of "
                                                  "downloading"),
) -> None:
    """Download weights into the cache, or verify and copy a local file there."""
    from medtl.models.weights import fetch_weights

    path = fetch_weights(name, from_path=from_path)
    typer.echo(str(path))
