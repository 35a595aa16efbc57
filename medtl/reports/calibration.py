"""Reliability diagrams for reports: the mean diagram of each arm for the robustness report
(one run's own diagram, which training and evaluate write into run folders, is
:func:`medtl.figures.reliability_figure`).

Rendering only: the per-bin data come from :func:`medtl.stats.calibration.reliability`.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ..figures import new_figure, png_bytes, reliability_figure, write_reliability_png


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
