"""Regenerate the conclusion blocks of the recorded reports from their JSON (today's rules).

    python scripts/regenerate_conclusions.py [--check] [reports/*.md]

Without --check the blocks are rewritten in place; with it, the script lists the reports whose
blocks differ and exits 1 (tests/test_recorded_conclusions.py does the same).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medtl.reports.conclusions import rewrite  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    files = [Path(f) for f in args.files] or sorted((ROOT / "reports").glob("*.md"))
    stale = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        new = rewrite(text, ROOT)
        if new != text:
            stale.append(f)
            if not args.check:
                f.write_text(new, encoding="utf-8")
    for f in stale:
        print(("stale: " if args.check else "rewrote: ") + str(f))
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    raise SystemExit(main())
