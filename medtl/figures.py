"""Matplotlib figures without pyplot state (thread- and process-safe), as PNG bytes or files."""
from __future__ import annotations

from pathlib import Path

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
