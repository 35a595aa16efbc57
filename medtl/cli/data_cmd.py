"""`medtl data check|preview`: inspect a dataset before training on it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..config import load_config

app = typer.Typer(no_args_is_help=True, help="Inspect datasets (check, preview); list and fetch public datasets by name.")


def _table_text(table, min_width: int = 80) -> str:
    """Render a rich table to plain text, wide enough that no column is squeezed."""
    import io

    from rich.console import Console

    probe = Console(file=io.StringIO(), width=10_000, color_system=None)
    width = max(min_width, probe.measure(table).maximum)
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None, highlight=False).print(table)
    return "\n".join(line.rstrip() for line in buf.getvalue().rstrip("\n").splitlines())


def _data_cfg(path: str, config: Optional[Path], overrides: list[str] | None, image_size: int | None = None):
    extra = list(overrides or [])
    if image_size is not None:
        extra.append(f"data.image_size={image_size}")
    cfg = load_config(config, extra)
    cfg.data.path = str(path)
    return cfg.data


def _format_report(r: dict) -> str:
    lines = [f"dataset  {r.get('name')}  ({r.get('format')})  {r.get('path')}"
             + (f"  [{r['dataset']}]" if r.get("dataset") else "")]
    if r.get("synthetic"):
        lines.append("SYNTHETIC data: not real images")
    if r.get("classes"):
        lines.append(f"classes  {', '.join(r['classes'])}" + ("  [multi-label]" if r.get("multilabel") else ""))
    counts = r.get("counts")
    if counts:
        lines += ["", _counts_table(r), ""]
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
    for note in r.get("notes", []):
        lines.append(f"note: {note}")
    lines += _verdict_lines(r)
    return "\n".join(lines)


def _verdict_lines(r: dict) -> list[str]:
    """Bad files (every one, with its reason), what training refuses, warnings, the verdict."""
    how = r.get("check") or {}
    bad = r.get("bad_files") or {"count": 0, "files": []}
    n = r.get("files") or sum(c["total"] for c in (r.get("counts") or {}).values()) or None
    lines = ["", f"check    {how.get('mode', '')}, {how.get('workers', 1)} worker(s), {how.get('seconds', 0):.1f} s"]
    lines.append(f"bad files  {bad['count']}" + (f" of {n}" if n else ""))
    lines += [f"    {f['id']}: {f['error']}" for f in bad["files"]]
    lines += [f"training refuses: {m}" for m in r.get("refused", [])]
    lines += [f"warning: {m}" for m in r.get("warnings", [])]
    lines.append(_result_line(r))
    return lines


def _result_line(r: dict) -> str:
    if r.get("ok"):
        return "result   OK"
    lp = r.get("leak_policy") or {}
    if r.get("refused_by_leak_policy"):
        policy = lp.get("policy", "error")
        which = "the default leak policy" if policy == "error" else "its leak policy"
        bad = (r.get("bad_files") or {}).get("count", 0)
        also = f"; also {bad} bad file(s)" if bad else ""
        return (f"result   REFUSED by training under {which} (data.on_leak: {policy}): the test split shares "
                f"{lp.get('refused')}{also} (exit status 1)")
    return "result   PROBLEMS FOUND (exit status 1)"


def _counts_table(r: dict) -> str:
    """Counts as a rich table: one row per class (readable with many classes), one column per split."""
    from rich import box
    from rich.table import Table

    counts = r["counts"]
    splits = list(counts)
    classes = list(next(iter(counts.values()))["by_class"])
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("class" + (" (positives)" if r.get("multilabel") else ""), no_wrap=True)
    for s in splits:
        table.add_column(s, justify="right", no_wrap=True)
    table.add_column("all", justify="right", no_wrap=True)
    for k in classes:
        per = [counts[s]["by_class"][k] for s in splits]
        table.add_row(k, *map(str, per), str(sum(per)))
    table.add_section()
    totals = [counts[s]["total"] for s in splits]
    table.add_row("images", *map(str, totals), str(sum(totals)))
    if r.get("patients"):
        table.add_row("patients", *(str(r["patients"].get(s, "")) for s in splits), "")
    return _table_text(table)


def _resolve_name(path: str):
    """(the local path to inspect, the registry resolution or None) for a path or dataset name."""
    from ..data.registry import locate

    loc = locate(path)
    return (path if loc.builtin else str(loc.path)), loc.dataset


@app.command()
def check(
    path: str = typer.Argument(..., help="folder, CSV manifest, .npz, .dcm, builtin:synthetic or a dataset "
                                         "name (medtl data list)"),
    json_out: bool = typer.Option(False, "--json", help="print the report as JSON"),
    fast: bool = typer.Option(False, "--fast", help="headers only: sizes and hashes, no decoding"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="processes verifying files "
                                                                       "(default: one per core)"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config file"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="override a config key: data.key=value"),
) -> None:
    """Verify every file (decode, or check uncompressed DICOM by its pixel-data length); counts per
    split and class, patients, sizes, duplicates, leaks; what training would refuse or warn about.

    Exit status 1 when a file is bad or training would refuse the data, 0 otherwise."""
    from ..data import check_dataset

    local, resolved = _resolve_name(path)
    cfg = _data_cfg(local, config, set_)
    if resolved is not None and resolved.reader is not None:
        local = path  # a published folder is read by its dataset's reader: check it by name
    report = check_dataset(local, cfg, fast=fast, workers=workers,
                           known_overlap=resolved.known_overlap if resolved is not None else "")
    if resolved is not None:
        report["dataset"] = resolved.name
        report["notes"] = list(resolved.notes) + list(report.get("notes", []))
    if json_out:
        typer.echo(json.dumps(report, indent=2))
    else:
        typer.echo(_format_report(report))
    if not report.get("ok", True):
        raise typer.Exit(1)


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


@app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Public datasets medtl knows by name: format, source, licence, checksum, cached copy."""
    from urllib.parse import urlparse

    from rich import box
    from rich.table import Table

    from ..data.registry import ACCESS_TEXT, dataset_rows

    rows = dataset_rows()
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in ("name", "format", "access", "source", "licence", "checksum", "cached", "copy"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        fmt = {"file": r["layout"], "folder": "local folder"}.get(r["archive"], f"{r['layout']} (from .{r['archive']})")
        checksum = (f"{r['checksum_algo']} {r['checksum'][:12]}…" if r["checksum"] else
                    f"{r['checksums_file']}" if r["checksums_file"] else "none published: pinned")
        if r["override"]:
            cached, copy = f"${r['env_var']}", "override (not verified here)"
        else:
            cached = "yes" if r["cached"] else "-"
            copy = {"official": "official (verified)", "pinned": "pinned at first fetch",
                    "unofficial": "UNOFFICIAL"}.get(r["status"] or "", "-")
        licence = r["licence"] if len(r["licence"]) <= 24 else r["licence"][:23] + "…"
        table.add_row(r["name"], fmt, r["access"], urlparse(r["url"]).netloc, licence, checksum, cached, copy)
    typer.echo(_table_text(table))
    typer.echo("")
    for r in rows:
        typer.echo(f"{r['name']}: {r['title']}")
        typer.echo(f"    source   {r['url']}")
        checksum = f"{r['checksum_algo']} {r['checksum']}" if r["checksum"] else "none published"
        typer.echo(f"    file     {r['filename']} ({r['archive']}), {r['licence']}; checksum {checksum}")
        typer.echo(f"    checksum source: {r['checksum_source']}")
        typer.echo(f"    access   {ACCESS_TEXT[r['access']]}" + (
            f"; local copy only: medtl data fetch {r['name']} --from DIR" if r["archive"] == "folder" else ""))
        if r["official_files"]:
            typer.echo(f"    layout   {', '.join(f.replace('|', ' or ') for f in r['official_files'])}")
        typer.echo(f"    cite     {r['citation']}")
        if r.get("known_overlap"):
            typer.echo(f"    KNOWN OVERLAP: {r['known_overlap']}")
        if r["cached"]:
            typer.echo(f"    cached   {r['cached']}" + (f" (from {r['origin']})" if r["status"] == "unofficial" else ""))
        typer.echo(f"    override ${r['env_var']}" + (f" = {r['override']}" if r["override"] else " (unset)"))


@app.command()
def fetch(
    name: str = typer.Argument(..., help="dataset name (see `medtl data list`)"),
    from_path: Optional[Path] = typer.Option(
        None, "--from", help="verify and copy this local file (the published .npz/.zip) or, for folder "
                             "datasets, an extracted folder, instead of downloading; for local-only datasets "
                             "(credentialed, registration) the published folder, verified and used in place"),
    unofficial: bool = typer.Option(
        False, "--unofficial", help="keep a copy whose checksum does not match the official release "
                                    "(a reconstruction, a resized copy, a folder), marked unofficial in "
                                    "the cache and in every run's data notes"),
) -> None:
    """Download a public dataset once into the cache ($MEDTL_CACHE/datasets), verified by checksum."""
    from ..data.registry import ChecksumMismatch, DownloadUnavailable, LayoutProblems, fetch_dataset
    from ..errors import DataError

    try:
        result = fetch_dataset(name, from_path=from_path, unofficial=unofficial)
    except LayoutProblems as exc:  # one line per problem category (missing files, files that differ)
        for line in exc.lines:
            typer.echo(f"medtl: error: {line}", err=True)
        raise typer.Exit(2) from None
    except ChecksumMismatch as exc:
        raise DataError(f"{exc.detail}; to keep it anyway as a marked unofficial copy, add --unofficial") from None
    except DownloadUnavailable as exc:
        raise DataError(f"{exc.detail}; download {exc.source.url} elsewhere, then run: medtl data fetch "
                        f"{exc.source.name} --from {exc.source.filename}") from None
    typer.echo(result.message)
