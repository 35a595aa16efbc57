"""One markdown row per arm of a recorded study (or compare) JSON: each metric's seed mean with its
95% CI over seeds and test cases and over seeds only, and n.

    python scripts/study_table.py reports/pretrained_study/study.json --metric test.auc \
        --arms scratch,fdb32-in,fdb32-sin
    python scripts/study_table.py STUDY.json --robustness --metric shape_bias.shape_bias --arms scratch,fdb32-in

Reads only the JSON (what the report may say); prints the table on stdout.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def _f(x, d=3):
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{d}f}"


def _ci(lo, hi, d=3):
    return "n/a" if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)) else \
        f"{_f(lo, d)} to {_f(hi, d)}"


def compare_rows(doc: dict, metrics: list[str], arms: list[str] | None, d: int) -> list[str]:
    by = doc["by_metric"]
    names = arms or list(by[metrics[0]]["arms"])
    head = "| arm | n | " + " | ".join(f"{m} mean | 95% CI seeds + cases | 95% CI seeds" for m in metrics) + " |"
    out = [head, "|" + "---|" * (2 + 3 * len(metrics))]
    for a in names:
        cells = []
        n = None
        for m in metrics:
            st = by[m]["arms"].get(a)
            if st is None:
                cells += ["–"] * 3
                continue
            n = st["n"]
            cells += [_f(st["mean"], d), _ci(st.get("ci_seeds_cases_low"), st.get("ci_seeds_cases_high"), d),
                      _ci(st["ci_low"], st["ci_high"], d)]
        out.append(f"| {a} | {n} | " + " | ".join(cells) + " |")
    return out


def robustness_rows(doc: dict, metrics: list[str], arms: list[str] | None, d: int) -> list[str]:
    arms_doc = doc["arms"]
    names = arms or list(arms_doc)
    out = ["| arm | " + " | ".join(f"{m} mean | 95% CI seeds" for m in metrics) + " |",
           "|" + "---|" * (1 + 2 * len(metrics))]
    for a in names:
        cells = []
        for m in metrics:
            st = ((arms_doc.get(a) or {}).get("metrics") or {}).get(m)
            if not isinstance(st, dict):
                cells += ["–", "–"]
                continue
            cells += [_f(st.get("mean"), d), _ci(st.get("ci_low"), st.get("ci_high"), d)]
        out.append(f"| {a} | " + " | ".join(cells) + " |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", type=Path)
    ap.add_argument("--metric", action="append", required=True)
    ap.add_argument("--arms", default=None, help="comma-separated arms, in this order")
    ap.add_argument("--robustness", action="store_true", help="robustness headline metrics (per-arm summary)")
    ap.add_argument("--digits", type=int, default=3)
    a = ap.parse_args()
    doc = json.loads(a.json.read_text(encoding="utf-8"))
    arms = a.arms.split(",") if a.arms else None
    if a.robustness:
        rows = robustness_rows(doc.get("robustness") or doc, a.metric, arms, a.digits)
    else:
        rows = compare_rows(doc.get("compare") or doc, a.metric, arms, a.digits)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
