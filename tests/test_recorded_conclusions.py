"""Every conclusion block in the recorded reports is what its JSON gives by today's rules
(medtl.reports.conclusions); regenerate with scripts/regenerate_conclusions.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from medtl.reports.conclusions import blocks, render_block

ROOT = Path(__file__).resolve().parents[1]
REPORTS = sorted((ROOT / "reports").glob("*.md"))
CASES = [(r, opts, body) for r in REPORTS for opts, body in blocks(r.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("report,opts,body", CASES, ids=[f"{r.name}:{o['json']}" for r, o, _ in CASES])
def test_block_matches_its_json(report, opts, body):
    assert body == render_block(opts, ROOT), (
        f"{report.name}: the conclusions block for {opts['json']} is stale; run scripts/regenerate_conclusions.py")


def test_every_sentence_ends_in_one_of_the_three_words():
    for _, opts, _ in CASES:
        for line in render_block(opts, ROOT).splitlines():
            assert any(w in line for w in ("— differs at", "— equivalent within", "— inconclusive")), line
