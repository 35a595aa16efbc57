"""The ``medtl compare`` page: per-arm and pairwise tables, one plot per metric, sentences.

Rendering only: the result comes from :func:`medtl.stats.comparison.compare_runs`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..figures import new_figure, png_bytes
from ..io import json_safe, write_json_atomic
from ..stats.compare import TEST_LABELS, format_p
from .render import ci, num, prepare_out, render, write_page, write_pngs

ARM_HEADER = ["arm", "n", "failed", "mean", "sd", "95% CI over seeds + test cases", "95% CI over seeds", "median",
              "min", "max", "CI method"]
PAIR_HEADER = ["a", "b", "design", "family", "test", "p", "Holm p", "diff (a−b)", "95% CI over seeds + test cases",
               "95% CI over seeds", "effect size", "conclusion"]
_EFFECT_LABELS = {"cohens_dz": "d_z", "cohens_d": "d"}


def arm_rows(result: Mapping, metric: str) -> list[list[str]]:
    rows = []
    for name, st in result["by_metric"][metric]["arms"].items():
        rows.append([name, str(st["n"]), str(st.get("n_failed", 0)), num(st["mean"]), num(st["sd"]),
                     ci(st.get("ci_seeds_cases_low"), st.get("ci_seeds_cases_high")), ci(st["ci_low"], st["ci_high"]),
                     num(st["median"]), num(st["min"]), num(st["max"]), st["ci_method"] or "n/a"])
    return rows


def _p_cell(p: Any) -> str:
    s = format_p(p)
    return s[1:] if s.startswith("p<") else s[2:]


def pair_rows(result: Mapping, metric: str) -> list[list[str]]:
    rows = []
    for p in result["pairs"]:
        if p["metric"] != metric:
            continue
        design = f"paired (n={p['n_pairs']})" if p["paired"] else f"unpaired ({p['n_a']} vs {p['n_b']})"
        dropped = (p.get("seeds_dropped") or {}).get("a", []) + (p.get("seeds_dropped") or {}).get("b", [])
        if dropped:
            design += f", seeds dropped: {', '.join(map(str, dropped))}"
        eff = f"{_EFFECT_LABELS.get(p['effect_size_name'], p['effect_size_name'])} = {num(p['effect_size'], 2)}"
        tested = p["p"] is not None
        family = f"{p.get('family', 'exploratory')} ({p.get('family_size', '?')})"
        rows.append([p["a"], p["b"], design, family, TEST_LABELS.get(p["test"], p["test"]) if tested else "not tested",
                     _p_cell(p["p"]), _p_cell(p["p_holm"]), num(p["diff"]),
                     ci(p.get("diff_ci_seeds_cases_low"), p.get("diff_ci_seeds_cases_high")),
                     ci(p.get("diff_ci_seeds_low", p["diff_ci_low"]), p.get("diff_ci_seeds_high", p["diff_ci_high"])),
                     eff, conclusion_word(p)])
    return rows


def conclusion_word(pair: Mapping) -> str:
    """The pair's word as a table cell: differs / equivalent within ±M / inconclusive."""
    word = pair.get("conclusion") or ("differs" if pair.get("significant") else "inconclusive")
    if word == "equivalent":
        return f"equivalent within ±{pair.get('margin'):g}"
    return word


def markdown_table(result: Mapping, metric: str | None = None) -> str:
    """The per-arm markdown table of one metric (default: the first)."""
    metric = metric or result["metrics"][0]
    return render("_table.md.j2", header=ARM_HEADER, rows=arm_rows(result, metric)).rstrip("\n")


IVE_HEADER = ["arm", "n", "internal (test) mean", "95% CI over seeds + test cases", "95% CI over seeds",
              "external mean", "95% CI over seeds + test cases", "95% CI over seeds", "drop (internal − external)",
              "95% CI of drop (seeds + both test sets' cases)", "95% CI of drop over seeds", "p (no drop)", "Holm p"]


def ive_rows(result: Mapping) -> list[list[str]]:
    """Per arm: internal and external means with both CIs, the paired drop with its CI over seeds
    and the test of no drop (the internal-vs-external view)."""
    ive = result["internal_vs_external"]
    by = result["by_metric"]
    rows = []
    for arm, r in ive["arms"].items():
        i_st = by.get(ive["internal_metric"], {}).get("arms", {}).get(arm, {})
        e_st = by.get(ive["external_metric"], {}).get("arms", {}).get(arm, {})
        i, e, d, t = r["internal"], r["external"], r["drop"], r["no_drop_test"]
        sc = t.get("inference") == "seeds+cases"
        rows.append([arm, str(d["n"]), num(i["mean"]), ci(i_st.get("ci_seeds_cases_low"), i_st.get("ci_seeds_cases_high")),
                     ci(i["ci_low"], i["ci_high"]), num(e["mean"]),
                     ci(e_st.get("ci_seeds_cases_low"), e_st.get("ci_seeds_cases_high")), ci(e["ci_low"], e["ci_high"]),
                     num(d["mean"]), ci(t["ci_low"], t["ci_high"]) if sc else "n/a", ci(d["ci_low"], d["ci_high"]),
                     _p_cell(t["p"]), _p_cell(t.get("p_holm"))])
    return rows


def ive_context(result: Mapping) -> dict | None:
    """The internal-vs-external section of the compare page (None when not asked for)."""
    ive = result.get("internal_vs_external")
    if not ive:
        return None
    view = {"internal_vs_external": ive, "pairs": ive["pairs"]}
    pairs = pair_rows(view, ive["drop_metric"])
    return {"name": ive["name"], "metric": ive["metric"], "internal": ive["internal_metric"],
            "external": ive["external_metric"], "header": IVE_HEADER, "rows": ive_rows(result),
            "pair_header": PAIR_HEADER, "pair_rows": pairs,
            "sentences": [p["sentence"] for p in ive["pairs"]],
            "missing_lines": [f"{a}: {n} run(s) not evaluated on {ive['name']} (left out of the drop)"
                              for a, n in ive["n_missing_external"].items() if n]}


def ive_markdown(result: Mapping) -> str:
    """The internal-vs-external view as markdown (the CLI prints it)."""
    return render("_ive.md.j2", ive=ive_context(result)).rstrip("\n")


def plot_metric(result: Mapping, metric: str) -> bytes:
    """PNG bytes: a box plot per arm with each seed overlaid as a jittered point."""
    arms = result["by_metric"][metric]["arms"]
    names = list(arms)
    data = [np.asarray(arms[n]["values"], dtype=float) for n in names]
    fig = new_figure(max(4.0, 1.2 * len(names) + 2.0), 4.0)
    ax = fig.add_subplot(1, 1, 1)
    pos = np.arange(1, len(names) + 1)
    boxed = [(i, d[np.isfinite(d)]) for i, d in zip(pos, data) if np.isfinite(d).any()]
    if boxed:
        ax.boxplot([d for _, d in boxed], positions=[i for i, _ in boxed], widths=0.5, showfliers=False,
                   medianprops={"color": "tab:orange"})
    rng = np.random.default_rng(0)  # jitter only; fixed so the picture is reproducible
    for i, d in zip(pos, data):
        if d.size:
            ax.scatter(i + rng.uniform(-0.12, 0.12, d.size), d, s=14, color="tab:blue", alpha=0.75, zorder=3)
        mean = arms[names[i - 1]]["mean"]
        if mean is not None and math.isfinite(mean):
            ax.scatter([i], [mean], marker="D", s=30, color="black", zorder=4)
    many = len(names) > 3
    ax.set_xticks(pos)
    ax.set_xticklabels(names, rotation=20 if many else 0, ha="right" if many else "center")
    ax.set_xlim(0.4, len(names) + 0.6)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}\none point per seed, diamond = mean", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return png_bytes(fig)


DC_MAX_ARMS = 10  # lines a decision-curve plot stays readable with


def plot_decision_curve(dc: Mapping) -> bytes:
    """PNG bytes: net benefit against threshold probability, per arm (seed mean, band: CI over
    seeds and test cases), with treat-all and treat-none."""
    pt = np.asarray(dc["pt"], dtype=float)
    fig = new_figure(6.5, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    for name, a in list(dc["arms"].items())[:DC_MAX_ARMS]:
        mean = np.asarray(a["mean"], dtype=float)
        line = ax.plot(pt, mean, lw=1.6, label=f"{name} (n={a['n']})")[0]
        lo, hi = np.asarray(a["ci_low"], dtype=float), np.asarray(a["ci_high"], dtype=float)
        ok = np.isfinite(lo) & np.isfinite(hi)
        if ok.any():
            ax.fill_between(pt[ok], lo[ok], hi[ok], color=line.get_color(), alpha=0.15, lw=0)
    ax.plot(pt, np.asarray(dc["treat_all"], dtype=float), color="grey", ls="--", lw=1.2, label="treat all")
    ax.axhline(0.0, color="black", lw=1.0, label="treat none")
    top = max([float(np.nanmax(np.asarray(a["ci_high"], dtype=float))) for a in dc["arms"].values()
               if np.isfinite(np.asarray(a["ci_high"], dtype=float)).any()] + [dc.get("prevalence") or 0.1])
    ax.set_ylim(-0.05, top * 1.1 + 0.01)
    ax.set_xlabel("threshold probability pt")
    ax.set_ylabel("net benefit")
    ax.set_title("decision curve (band: 95% CI over seeds and test cases)", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return png_bytes(fig)


def decision_rows(dc: Mapping, points=(0.06, 0.1, 0.2, 0.3, 0.5)) -> tuple[list[str], list[list[str]]]:
    """A table of the decision curve at a few threshold probabilities: one row per arm."""
    idx = [i for i, p in enumerate(dc["pt"]) if any(abs(p - q) < 1e-9 for q in points)]
    header = ["arm", "n"] + [f"NB at pt={dc['pt'][i]:g} [CI]" for i in idx]
    rows = [[name, str(a["n"])] + [f"{num(a['mean'][i])} [{ci(a['ci_low'][i], a['ci_high'][i])}]" for i in idx]
            for name, a in dc["arms"].items()]
    rows.append(["treat all", "–"] + [num(dc["treat_all"][i]) for i in idx])
    return header, rows


def delong_sentence(d: Mapping) -> str:
    return (f"{d['run_a']} (AUC {num(d['auc_a'])}) vs {d['run_b']} (AUC {num(d['auc_b'])}) on the same "
            f"{d['n']} test cases ({d['n_pos']} positive): AUC difference {num(d['diff'])} "
            f"(95% CI {ci(d['diff_ci_low'], d['diff_ci_high'])}), z={num(d['z'], 2)}, DeLong {format_p(d['p'])}.")


def method_notes(result: Mapping) -> list[str]:
    t = result["tests"]
    return [f"Confidence intervals over seeds and test cases: {t['ci_seeds_cases']}.",
            f"Confidence intervals over seeds: {t['ci']}.",
            f"Paired design: {t['paired']}.", f"Unpaired design: {t['unpaired']}.",
            f"Effect size: {t['effect_size']}.", f"Multiplicity: {t['multiplicity']}; α={result['alpha']:g}.",
            f"Conclusions: {t.get('conclusion', 'differs / inconclusive by the Holm-adjusted p')}.",
            "sd uses ddof=1. Failed and unfinished runs are excluded (counted in 'failed')."]


def page_context(result: Mapping, pngs: Mapping[str, bytes], images: Mapping[str, str]) -> dict:
    sections = [{"metric": m, "arm_rows": arm_rows(result, m), "pair_rows": pair_rows(result, m),
                 "sentences": [p["sentence"] for p in result["pairs"] if p["metric"] == m],
                 "png": pngs.get(m), "image": images.get(m)} for m in result["metrics"]]
    return {"result": result, "sections": sections, "arm_header": ARM_HEADER, "pair_header": PAIR_HEADER,
            "delong": delong_sentence(result["delong"]) if result.get("delong") else None,
            "warnings": list((result.get("leak_warnings") or {}).values()),
            "anchor": (result.get("anchor") or {}).get("statements", []),
            "anchor_value": (result.get("anchor") or {}).get("value"),
            "ive": ive_context(result), "decision": _decision_context(result, pngs, images),
            "notes": result["notes"], "methods": method_notes(result)}


def write_compare(result: Mapping, out: str | Path, *, plots: bool = True) -> dict[str, Path]:
    """Write OUT/compare.json, compare.md, compare.html and one PNG per metric, each atomically;
    returns their paths."""
    out = prepare_out(out)
    clean = json_safe(result)
    pngs = {m: plot_metric(clean, m) for m in clean["metrics"]} if plots else {}
    if plots and clean.get("decision_curves"):
        pngs["decision_curve"] = plot_decision_curve(clean["decision_curves"])
    images = write_pngs(out, pngs, prefix="compare_")
    write_json_atomic(out / "compare.json", clean)
    ctx = page_context(clean, pngs, images)
    paths = write_page(out, "compare", "compare", c=ctx, lv=2, **ctx)
    return {"json": out / "compare.json", **paths, **{f"png:{m}": out / f for m, f in images.items()}}


def _decision_context(result: Mapping, pngs: Mapping[str, bytes], images: Mapping[str, str]) -> dict | None:
    dc = result.get("decision_curves")
    if not dc:
        return None
    header, rows = decision_rows(dc)
    more = len(dc["arms"]) - DC_MAX_ARMS
    return {"header": header, "rows": rows, "note": dc["note"], "png": pngs.get("decision_curve"),
            "image": images.get("decision_curve"),
            "plot_note": f"the plot shows the first {DC_MAX_ARMS} arms; the table has all" if more > 0 else None}
