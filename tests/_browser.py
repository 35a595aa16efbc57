"""Render a medtl page in headless Chromium (skips where Chromium is absent): the DOM and a screenshot."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")


def render_page(page: Path, tmp_path: Path, min_images: int) -> str:
    """Assert that ``page`` is self-contained, renders with at least ``min_images`` embedded PNGs
    and is not blank; returns the DOM."""
    html = page.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html), "page loads something from the network"
    assert "<style>" in html and "border-collapse" in html  # the shared stylesheet is inlined
    flags = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'prof'}"]
    url = page.resolve().as_uri()
    dom = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-500:]
    imgs = re.findall(r"<img [^>]*src=\"data:image/png;base64,", dom.stdout)
    assert len(imgs) >= min_images
    shot = tmp_path / f"{page.stem}.png"
    r = subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1200,2000", url], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and shot.is_file(), r.stderr[-500:]
    from PIL import Image

    a = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert a.std() > 5  # not blank
    assert (a < 128).mean() > 0.005  # some dark pixels: text and plots rendered
    return dom.stdout
