"""Matplotlib figures without pyplot state (thread- and process-safe), as PNG bytes or files."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import numpy as np

from .io import atomic_path


def new_figure(w: float, h: float):
    """A Figure with the Agg canvas, ``w`` x ``h`` inches at 100 dpi."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_png(path: str | Path, fig) -> None:
    """Save a Figure as PNG atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


# ------------------------------------------------------------------------------ a run's reliability diagram

def _fmt(x) -> str:
    return "n/a" if x is None or not math.isfinite(float(x)) else f"{float(x):.3f}"


def reliability_figure(section: Mapping, title: str = ""):
    """A Figure: observed frequency against mean predicted probability per equal-width bin (the
    diagonal is perfect calibration), after temperature scaling too where the section has it,
    and the number of cases per bin below."""
    rel = section.get("reliability") or {}
    fig = new_figure(4.6, 5.0)
    ax = fig.add_axes((0.14, 0.36, 0.8, 0.56))
    hist = fig.add_axes((0.14, 0.09, 0.8, 0.17), sharex=ax)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    if rel.get("count"):
        ax.plot(np.asarray(rel["mean_predicted"], float), np.asarray(rel["observed"], float), marker="o",
                color="C0", label=f"model (ECE {_fmt(section.get('ece'))})")
        lo = np.asarray(rel["bin_lower"], float)
        hist.bar(lo, np.asarray(rel["count"], float), width=np.asarray(rel["bin_upper"], float) - lo, align="edge",
                 color="C0", alpha=0.6, edgecolor="white")
    ts = section.get("temp_scaled") or {}
    trel = ts.get("reliability") or {}
    if trel.get("count"):
        ax.plot(np.asarray(trel["mean_predicted"], float), np.asarray(trel["observed"], float), marker="s", ms=4,
                color="C1", label=f"T = {_fmt(ts.get('temperature'))} (ECE {_fmt(ts.get('ece'))})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("observed frequency")
    ax.set_title(title or "reliability diagram", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    hist.set_xlabel("mean predicted probability (equal-width bins)")
    hist.set_ylabel("cases", fontsize=8)
    return fig


def write_reliability_png(path: str | Path, section: Mapping, title: str = "") -> None:
    """The reliability diagram of one metrics section (``test`` or an external result), atomically."""
    write_png(path, reliability_figure(section, title))
