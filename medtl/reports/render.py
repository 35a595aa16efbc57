"""One renderer for every medtl page: Jinja2 templates in ``templates/`` sharing one
stylesheet, HTML autoescaped, pictures embedded as base64 data URIs so each page is a single
self-contained file that works offline.  Markdown pages come from the same data through
``*.md.j2`` templates (no escaping; table cells escape ``|``).

Also the small shared pieces: number formatting, table rows, figures as PNG bytes, and
writing a page's files atomically.
"""
from __future__ import annotations

import base64
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError
from ..io import atomic_path, write_text_atomic


def num(x: Any, digits: int = 4) -> str:
    """A number for a table: fixed digits in a readable range, else significant digits; n/a if missing."""
    if x is None:
        return "n/a"
    x = float(x)
    if not math.isfinite(x):
        return "n/a"
    if x == 0 or 1e-2 <= abs(x) < 1e4:
        return f"{x:.{digits}f}"
    return f"{x:.{digits - 1}g}"


def ci(lo: Any, hi: Any, digits: int = 4) -> str:
    """``lo to hi``, or n/a where either end is missing."""
    if lo is None or hi is None or not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
        return "n/a"
    return f"{num(lo, digits)} to {num(hi, digits)}"


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


@lru_cache(maxsize=2)
def _env(markdown: bool):
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("medtl.reports", "templates"),
                      autoescape=False if markdown else select_autoescape(["html", "j2"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(num=num, ci=ci, data_uri=data_uri, md=md_cell)
    return env


def render(template: str, **context: Any) -> str:
    """Render ``templates/<template>`` (``.html.j2`` autoescaped, ``.md.j2`` plain)."""
    return _env(template.endswith(".md.j2")).get_template(template).render(**context)


def file_stem(key: str) -> str:
    """A safe file name stem for a figure or metric key."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key)


def prepare_out(out: str | Path) -> Path:
    """The output folder, created; one-line error where it cannot be one."""
    out = Path(out)
    blocked = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise ConfigError(f"{out}: cannot be an output folder: {blocked} is a file")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    return out


def write_pngs(out: Path, pngs: Mapping[str, bytes], prefix: str = "") -> dict[str, str]:
    """Write each PNG atomically as ``OUT/<prefix><key>.png``; returns ``{key: file name}``."""
    names = {}
    for key, data in pngs.items():
        name = f"{prefix}{file_stem(key)}.png"
        with atomic_path(out / name) as tmp:
            tmp.write_bytes(data)
        names[key] = name
    return names


def write_page(out: Path, stem: str, template: str, **context: Any) -> dict[str, Path]:
    """``OUT/<stem>.html`` and ``OUT/<stem>.md`` from ``<template>.html.j2`` / ``.md.j2``."""
    html_path, md_path = out / f"{stem}.html", out / f"{stem}.md"
    write_text_atomic(md_path, render(f"{template}.md.j2", **context))
    write_text_atomic(html_path, render(f"{template}.html.j2", **context))
    return {"html": html_path, "md": md_path}
