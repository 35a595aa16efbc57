"""Reliability diagrams: one run's (its test set or an external set, before and after
temperature scaling) and the mean diagram of each arm for the robustness report.

Rendering only: the per-bin data come from :func:`medtl.stats.calibration.reliability`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import numpy as np

from ..figures import new_figure, png_bytes, write_png


def _mid(rel: Mapping) -> np.ndarray:
    return (np.asarray(rel["bin_lower"], float) + np.asarray(rel["bin_upper"], float)) / 2


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


def mean_reliability_png(arms: Mapping[str, Mapping]) -> bytes:
    """Per arm, the mean over seeds of the observed frequency per equal-width bin (band: 95% CI over
    seeds where there are enough), from ``arms[arm] = {"bin_mid", "mean_predicted", "observed",
    "ci_low", "ci_high"}`` (:func:`medtl.stats.robustness.mean_reliability`)."""
    fig = new_figure(4.8, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    for j, (arm, d) in enumerate(arms.items()):
        x = np.asarray(d["mean_predicted"], float)
        m = np.asarray(d["observed"], float)
        ok = np.isfinite(x) & np.isfinite(m)
        ax.plot(x[ok], m[ok], marker="o", ms=3, color=f"C{j}", label=arm)
        lo, hi = np.asarray(d["ci_low"], float), np.asarray(d["ci_high"], float)
        band = ok & np.isfinite(lo) & np.isfinite(hi)
        if band.any():
            ax.fill_between(x[band], lo[band], hi[band], color=f"C{j}", alpha=0.2)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability (equal-width bins)")
    ax.set_ylabel("observed frequency")
    ax.set_title("Mean reliability diagram per arm (test set; band = 95% CI over seeds)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return png_bytes(fig)


__all__ = ["mean_reliability_png", "reliability_figure", "write_reliability_png"]
