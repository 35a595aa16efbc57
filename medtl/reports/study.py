"""The one page of a study (``medtl study``): comparison, robustness, calibration, external data.

``OUT/study.html`` is self-contained (figures inlined); ``study.md`` links the PNGs written beside
it; ``study.json`` holds the study record with the compare, robustness and external results.
The compare and robustness parts are the same templates as their own pages (one level down).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from ..io import json_safe, write_json_atomic
from ..runs import STUDY_PAGE
from . import compare as compare_page
from . import robustness as robustness_page
from .render import ci, num, prepare_out, write_page, write_pngs


def _stage_rows(record: Mapping) -> list[list[str]]:
    return [[k, f"{v:.1f}"] for k, v in record["stage_seconds"].items()] + [["total", f"{record['seconds']:.1f}"]]


def _external_rows(external: Sequence[Mapping]) -> list[list[str]]:
    rows = []
    for e in external:
        for arm, info in (e["evaluate"].get("arms") or {}).items():
            auc = info.get("auc") or {}
            ece = info.get("ece") or {}
            rows.append([e["name"], arm, str(auc.get("n", "")), num(auc.get("mean")),
                         ci(auc.get("ci_seeds_cases_low"), auc.get("ci_seeds_cases_high")),
                         ci(auc.get("ci_low"), auc.get("ci_high")), num(ece.get("mean"))])
    return rows


def _conclusion_rows(compare: Mapping, robustness: Mapping | None) -> list[list[str]]:
    """Every pair of the study with its family and word, primary first."""
    pairs = list(compare.get("pairs") or []) + list((robustness or {}).get("pairs") or [])
    pairs.sort(key=lambda p: p.get("family") != "primary")
    return [[p["a"], p["b"], p["metric"], f"{p.get('family')} ({p.get('family_size')})",
             compare_page.conclusion_word(p)] for p in pairs]


def write_study(record: Mapping, compare: Mapping, robustness: Mapping | None, external: Sequence[Mapping],
                out: str | Path) -> dict[str, Path]:
    """Write OUT/study.json, study.md (PNGs beside it) and a self-contained study.html."""
    out = prepare_out(out)
    c_clean = json_safe(compare)
    c_pngs = {m: compare_page.plot_metric(c_clean, m) for m in c_clean["metrics"]}
    c_images = write_pngs(out, c_pngs, prefix="study_compare_")
    c_ctx = compare_page.page_context(c_clean, c_pngs, c_images)
    r_ctx = None
    r_clean = json_safe(robustness) if robustness is not None else None
    if r_clean is not None:
        r_pngs = robustness_page.robustness_pngs(r_clean)
        r_ctx = robustness_page.page_context(r_clean, r_pngs, write_pngs(out, r_pngs, prefix="study_robustness_"))
    ext = [{"name": e["name"], "data": e["data"], "ive": compare_page.ive_context(json_safe(e["compare"]))}
           for e in external]
    doc = json_safe({"study": dict(record), "compare": c_clean, "robustness": r_clean,
                     "external": [{"name": e["name"], "data": e["data"], "evaluate": e["evaluate"],
                                   "internal_vs_external": e["compare"].get("internal_vs_external")}
                                  for e in external]})
    write_json_atomic(out / f"{STUDY_PAGE}.json", doc)
    rec = json_safe(record)
    fam = rec.get("families")
    plan = rec.get("plan") or {}
    margin = (fam or {}).get("margin")
    margin_text = (", ".join(f"{k} ±{v:g}" for k, v in margin.items()) if isinstance(margin, dict)
                   else (f"±{margin:g} on every metric" if margin else None))
    paths = write_page(out, STUDY_PAGE, "study", study=rec, stage_rows=_stage_rows(record), families=fam,
                       margin_text=margin_text,
                       conclusion_rows=_conclusion_rows(c_clean, r_clean),
                       plan_lines=[s for row in plan.get("pairs") or [] for s in row["sentences"]],
                       plan_source=plan.get("source"),
                       compare_ctx=c_ctx, robustness_ctx=r_ctx, external=ext,
                       external_rows=_external_rows(external),
                       external_header=["external set", "arm", "n", "mean AUC", "95% CI over seeds + cases",
                                        "95% CI over seeds", "mean ECE"])
    return {"json": out / f"{STUDY_PAGE}.json", **paths}
