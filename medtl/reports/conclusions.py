"""Generated conclusion blocks in hand-written reports (``reports/*.md``).

A write-up states its conclusions inside a block that names the JSON they come from::

    <!-- conclusions: json=reports/study_warmup/study.json margin=0.01 primary=test.auc -->
    - warmup vs no_warmup on test.auc: ... — differs at α=0.05: warmup higher.
    <!-- /conclusions -->

:func:`render_block` regenerates the lines from the JSON (:func:`medtl.stats.recorded.regenerate`,
today's rules), ``scripts/regenerate_conclusions.py`` rewrites the blocks, and
``tests/test_recorded_conclusions.py`` fails when a block differs from what its JSON gives.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..stats.recorded import regenerate

BLOCK = re.compile(r"<!-- conclusions: (?P<opts>[^>]*?) -->\n(?P<body>.*?)<!-- /conclusions -->", re.S)


def _options(text: str) -> dict:
    opts = dict(kv.split("=", 1) for kv in text.split())
    out: dict = {"json": opts["json"]}
    if "primary" in opts:
        out["primary"] = [m for m in opts["primary"].split(",") if m]
    if "margin" in opts:
        out["margin"] = float(opts["margin"])
    if "metrics" in opts:
        out["metrics"] = opts["metrics"].split(",")
    return out


def render_block(opts: dict, root: Path) -> str:
    """The block's lines: one sentence per pair (only ``metrics`` where given), primary first."""
    doc = json.loads((root / opts["json"]).read_text(encoding="utf-8"))
    from ..probes.registry import probe_metrics

    pairs = regenerate(doc, primary=opts.get("primary"), margin=opts.get("margin"), probe_metrics=probe_metrics())
    if opts.get("metrics"):
        pairs = [p for p in pairs if p["metric"] in opts["metrics"]]
    pairs.sort(key=lambda p: p.get("family") != "primary")
    return "".join(f"- ({p['family']}) {p['sentence']}\n" for p in pairs)


def blocks(text: str) -> list[tuple[dict, str]]:
    """``(options, current body)`` of every block in a report's text."""
    return [(_options(m.group("opts")), m.group("body")) for m in BLOCK.finditer(text)]


def rewrite(text: str, root: Path) -> str:
    """The report's text with every block regenerated."""
    return BLOCK.sub(lambda m: f"<!-- conclusions: {m.group('opts')} -->\n"
                               f"{render_block(_options(m.group('opts')), root)}<!-- /conclusions -->", text)
