"""The robustness report page: per-arm summary table, AUC-vs-ε, P(change)-vs-shift and
corruption plots, each arm's first-seed explanation panels.

Rendering only: the result comes from :func:`medtl.probes.suite.run_probes`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..figures import new_figure, png_bytes
from ..io import json_safe, write_json_atomic
from ..runs import seed_dirname
from .compare import PAIR_HEADER, pair_rows
from .render import prepare_out, write_page, write_pngs

HEADER = ["arm", "metric", "n", "mean", "95% CI", "per seed"]


def _fmt(x: Any, d: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{d}f}"


def _band(ax, x, m, arm, ci_lo, ci_hi, color):
    ax.plot(x, m, marker="o", ms=3, label=arm, color=color)
    lo, hi = np.asarray(ci_lo, float), np.asarray(ci_hi, float)
    ok = np.isfinite(lo) & np.isfinite(hi)
    if ok.any():
        ax.fill_between(np.asarray(x)[ok], lo[ok], hi[ok], alpha=0.2, color=color)


def plot_adversarial(result: Mapping) -> bytes:
    attacks = list(dict.fromkeys(a for r in result["runs"] for a in r["adversarial"]))
    ncol = min(4, len(attacks))
    nrow = -(-len(attacks) // ncol)
    fig = new_figure(3.6 * ncol, 3.0 * nrow)
    for i, a in enumerate(attacks):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        for j, (arm, info) in enumerate(result["arms"].items()):
            keys = [k for k in info["metrics"] if k.startswith(f"adversarial.{a}.auc@")]
            eps = [float(k.split("@")[1].split("/")[0]) for k in keys]
            m = [info["metrics"][k] for k in keys]
            _band(ax, eps, [d["mean"] for d in m], arm, [d["ci_low"] for d in m], [d["ci_high"] for d in m], f"C{j}")
        ax.set_title(a, fontsize=9)
        ax.set_xlabel("ε ×1/255")
        ax.set_ylabel("AUC")
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7)
    fig.suptitle("AUC vs ε (mean over seeds, band = 95% CI)", fontsize=10)
    fig.tight_layout()
    return png_bytes(fig)


def plot_translation(result: Mapping) -> bytes:
    fig = new_figure(5.0, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for j, (arm, info) in enumerate(result["arms"].items()):
        keys = sorted((k for k in info["metrics"] if k.startswith("translation.p_change@")),
                      key=lambda k: int(k.split("@")[1][:-2]))
        s = [int(k.split("@")[1][:-2]) for k in keys]
        m = [info["metrics"][k] for k in keys]
        _band(ax, s, [d["mean"] for d in m], arm, [d["ci_low"] for d in m], [d["ci_high"] for d in m], f"C{j}")
    ax.set_xlabel("shift (px)")
    ax.set_ylabel("P(decision changes)")
    ax.set_title("P(change) vs shift (crop protocol; band = 95% CI)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return png_bytes(fig)


def plot_corruptions(result: Mapping) -> bytes:
    names = list(dict.fromkeys(c for r in result["runs"] for c in r["corruptions"]))
    arms = list(result["arms"])
    fig = new_figure(max(5.5, 1.0 * len(names) + 2), 3.8)
    ax = fig.add_subplot(1, 1, 1)
    w = 0.8 / max(len(arms), 1)
    for j, arm in enumerate(arms):
        mets = result["arms"][arm]["metrics"]
        d = [mets.get(f"corruptions.{n}.mean_auc", {}) for n in names]
        mean = np.array([x.get("mean", np.nan) for x in d], float)
        lo = np.array([x.get("ci_low", np.nan) for x in d], float)
        hi = np.array([x.get("ci_high", np.nan) for x in d], float)
        err = np.where(np.isfinite(lo), np.vstack([mean - lo, hi - mean]), 0)
        ax.bar(np.arange(len(names)) + (j - (len(arms) - 1) / 2) * w, np.nan_to_num(mean), width=w, label=arm,
               yerr=np.clip(err, 0, None), capsize=2, color=f"C{j}")
        clean = result["arms"][arm]["metrics"]["clean.auc"]["mean"]
        if clean is not None and math.isfinite(clean):
            ax.axhline(clean, color=f"C{j}", ls="--", lw=1)
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("AUC (mean over 5 severities)")
    ax.set_ylim(0, 1.05)
    ax.set_title("Corruptions (bars: mean over seeds ± 95% CI; dashed: clean AUC)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return png_bytes(fig)


# ------------------------------------------------------------------------------------------ tables

SUMMARY_KEYS = ["clean.auc", "translation.p_change_1px", "translation.consistency", "translation.jaggedness",
                "translation.mean_abs_dp_per_px", "translation.scale_p_change_max", "corruptions.mean_auc_drop"]


CALIBRATION_ROWS = ["calibration.ece", "calibration.ece_equal_mass", "calibration.brier", "calibration.nll",
                    "calibration.ece_after_temperature"]


def calibration_pngs(result: Mapping) -> dict[str, bytes]:
    """The mean reliability diagram of every arm that has the data (one picture)."""
    from .calibration import mean_reliability_png

    arms = {a: info["reliability"] for a, info in result["arms"].items() if info.get("reliability")}
    return {"calibration": mean_reliability_png(arms)} if arms else {}


def calibration_rows(result: Mapping) -> list[list[str]]:
    """Per arm: mean test ECE (and the other calibration figures) with the CI over seeds."""
    return metric_rows(result, CALIBRATION_ROWS)


def _ci_cell(d: Mapping) -> str:
    if d.get("ci_low") is None or d.get("ci_high") is None:
        return f"n = {d['n']}: too few seeds for a CI" if d["n"] < 3 else "n/a"
    cell = f"[{_fmt(d['ci_low'])}, {_fmt(d['ci_high'])}]"
    if d.get("ci_seeds_cases_low") is not None:  # the test AUC: over seeds and test cases first
        cell = (f"over seeds + test cases [{_fmt(d['ci_seeds_cases_low'])}, {_fmt(d['ci_seeds_cases_high'])}]; "
                f"over seeds {cell}")
    if d.get("ci_low_subset") is not None:  # attacks on a test subset: its sampling error too
        cell += f"; for the whole test set (subset sampling, FPC) [{_fmt(d['ci_low_subset'])}, {_fmt(d['ci_high_subset'])}]"
    return cell


def summary_rows(result: Mapping) -> list[list[str]]:
    rows = []
    for arm, info in result["arms"].items():
        keys = list(dict.fromkeys(SUMMARY_KEYS + list(result.get("headline") or []) + [
            k for k in info["metrics"] if k.startswith("adversarial.") and k.endswith("@8/255")
            and ".per_label." not in k]))
        for k in keys:
            d = info["metrics"].get(k)
            if d is None:
                continue
            rows.append([arm, k, str(d["n"]), _fmt(d["mean"]), _ci_cell(d), ", ".join(_fmt(v) for v in d["values"])])
    return rows


def pair_sections(result: Mapping) -> list[dict]:
    """Per headline metric: the pair table rows (compare's layout) and the sentences."""
    out = []
    for m in result.get("headline") or []:
        rows = pair_rows(result, m)
        if rows:
            out.append({"metric": m, "rows": rows,
                        "sentences": [p["sentence"] for p in result["pairs"] if p["metric"] == m]})
    return out


def units_note(result: Mapping) -> str | None:
    """One sentence on probe units where some arms run at another input size than their images."""
    scales = {r["arm"]: (r.get("units") or {}).get("input_px_per_native_px", 1.0) for r in result["runs"]}
    if all(v == 1.0 for v in scales.values()):
        return None
    parts = ", ".join(f"{a}: {v:g} input px per native px" for a, v in scales.items())
    return (f"Arms differ in input size ({parts}). Shifts in the plots and in translation.p_change@Kpx are in "
            f"input pixels; translation.p_change_1native_px (used in the tests) is one native pixel for every arm. "
            f"ε: L∞ bounds each pixel's change (the same unit in native and input pixels); the L2 budget "
            f"ε·sqrt(H·W) equals an ε-per-native-pixel perturbation upscaled to the input.")


def first_seed_pngs(result: Mapping, section: str, whats: tuple[str, ...]) -> dict[str, bytes]:
    """The figures ``whats`` of ``section`` of each arm's first seed, read from the runs' probe
    folders, keyed ``"<section>:<arm> seed-<k> <what>"``."""
    out: dict[str, bytes] = {}
    for r in result["runs"]:
        if r["seed"] != min(x["seed"] for x in result["runs"] if x["arm"] == r["arm"]):
            continue
        for what in whats:
            p = (r.get(section) or {}).get(what)
            if p and Path(p).is_file():
                out[f"{section}:{r['arm']} {seed_dirname(r['seed'])} {what}"] = Path(p).read_bytes()
    return out


def precision_note(result: Mapping) -> str | None:
    """One sentence on the forward precision of translation and corruptions, with the worst
    clean-decision agreement with fp32 over the runs; None when every forward ran in fp32."""
    parts = []
    for probe in ("translation", "corruptions"):
        recs = [(r.get("precision") or {}).get(probe) or {} for r in result["runs"]]
        kinds = sorted({x.get("forward") for x in recs if x.get("forward")})
        agree = [x["clean_decision_agreement_with_fp32"] for x in recs
                 if x.get("clean_decision_agreement_with_fp32") is not None]
        if kinds and kinds != ["fp32"]:
            parts.append(f"{probe} forwards in {'/'.join(kinds)}" + (
                f" (clean decisions agree with fp32 on {min(agree):.2%} of images or more, over {len(agree)} runs)"
                if agree else ""))
    return "; ".join(parts) + "." if parts else None


def explain_pngs(result: Mapping) -> dict[str, bytes]:
    """The explanation panels of each arm's first seed."""
    return first_seed_pngs(result, "explain", ("panel", "embedding"))


SHAPE_ROWS = ["shape_bias.shape_bias", "shape_bias.shape_only_bacc", "shape_bias.texture_only_bacc"]
SHORTCUT_ROWS = ["shortcut.auc_full", "shortcut.auc_lung_masked", "shortcut.auc_lung_only", "shortcut.auc_border_only",
                 "shortcut.masked_retention"]
SHORTCUT_SEED_HEADER = ["arm", "seed", "retention", "95% CI", "state", "prior masks"]


def metric_rows(result: Mapping, keys: list[str]) -> list[list[str]]:
    """Per arm and metric of ``keys``: n, mean, CI over seeds, the per-seed values."""
    rows = []
    for arm, info in result["arms"].items():
        for k in keys:
            d = info["metrics"].get(k)
            if d is not None:
                rows.append([arm, k, str(d["n"]), _fmt(d["mean"]), _ci_cell(d),
                             ", ".join(_fmt(v) for v in d["values"])])
    return rows


def _arm_recs(result: Mapping, arm: str, section: str) -> list[Mapping]:
    return [r.get(section) or {} for r in result["runs"] if r["arm"] == arm]


def _mean_ci(d: Mapping | None) -> str:
    if not d or d.get("mean") is None or not math.isfinite(d["mean"]):
        return "–"
    ci = (f" (95% CI {_fmt(d['ci_low'], 3)}–{_fmt(d['ci_high'], 3)} over seeds)" if d.get("ci_low") is not None
          else "")
    return f"{_fmt(d['mean'], 3)}{ci}"


def shape_summary(result: Mapping) -> list[str]:
    """One sentence per arm: how many seeds gave an interpretable shape bias, its mean with the CI
    over those seeds, the mean cue-only balanced accuracies; the reason where no seed did."""
    out = []
    for arm, info in result["arms"].items():
        recs = _arm_recs(result, arm, "shape_bias")
        if not recs or not all("interpretable" in r for r in recs):
            continue
        k = sum(bool(r["interpretable"]) for r in recs)
        m = info["metrics"]
        cues = (f"balanced accuracy on the shape cue alone {_mean_ci(m.get('shape_bias.shape_only_bacc'))}, "
                f"on the texture cue alone {_mean_ci(m.get('shape_bias.texture_only_bacc'))}")
        if k:
            out.append(f"{arm}: shape bias interpretable for {k} of {len(recs)} seeds; mean "
                       f"{_mean_ci(m.get('shape_bias.shape_bias'))} over those seeds; {cues}.")
        else:
            reason = str(recs[0].get("reason") or "not interpretable at this setting")
            out.append(f"{arm}: no seed's shape bias is interpretable (0 of {len(recs)}); {cues}. First seed: "
                       f"{reason}.")
    return out


def shortcut_flags(result: Mapping) -> list[str]:
    """One sentence per arm: its seeds flagged / not flagged / undetermined, the mean retention with
    the CI over seeds, and how many lung masks were the fixed prior (a warning where most were)."""
    out = []
    for arm, info in result["arms"].items():
        recs = _arm_recs(result, arm, "shortcut")
        if not recs or not all("flag_state" in r for r in recs):
            continue
        counts = {s: sum(r["flag_state"] == s for r in recs) for s in ("flagged", "not flagged", "undetermined")}
        fb = sum(int(r.get("mask_fallback") or 0) for r in recs)
        n_img = sum(int(r.get("n_images") or 0) for r in recs)
        line = (f"{arm}: of {len(recs)} seeds, {counts['flagged']} flagged (retention CI wholly above the cut), "
                f"{counts['not flagged']} not flagged, {counts['undetermined']} undetermined; retention "
                f"{_mean_ci(info['metrics'].get('shortcut.masked_retention'))}; lung mask: fixed prior for {fb} "
                f"of {n_img} image masks")
        if n_img and fb > n_img / 2:
            line += f". Caution: {recs[0].get('mask_warning') or 'most lung masks are the fixed prior'}"
        out.append(line + ".")
    return out


def shortcut_seed_rows(result: Mapping) -> list[list[str]]:
    """Per run: retention, its bootstrap CI over test images, the flag state and the prior-mask count."""
    rows = []
    for r in result["runs"]:
        sc = r.get("shortcut") or {}
        if "flag_state" not in sc:
            continue
        lo, hi = sc.get("retention_ci_low"), sc.get("retention_ci_high")
        ci = f"[{'-∞' if lo is None else _fmt(lo, 3)}, {'∞' if hi is None else _fmt(hi, 3)}]"
        rows.append([r["arm"], str(r["seed"]), _fmt(sc.get("masked_retention"), 3),
                     ci if sc.get("masked_retention") is not None else "–", sc["flag_state"],
                     f"{sc.get('mask_fallback')} of {sc.get('n_images')}"])
    return rows


def _section_figures(pngs: Mapping, images: Mapping, section: str) -> list[dict]:
    return [{"title": k[len(section) + 1:], "png": v, "image": images[k]} for k, v in pngs.items()
            if k.startswith(section + ":")]


def robustness_pngs(clean: Mapping) -> dict[str, bytes]:
    """Every figure of the robustness page, keyed by name."""
    return {"adversarial": plot_adversarial(clean), "translation": plot_translation(clean),
            "corruptions": plot_corruptions(clean)} | calibration_pngs(clean) | explain_pngs(clean) | (
        first_seed_pngs(clean, "shape_bias", ("examples",)) | first_seed_pngs(clean, "shortcut", ("masks",)))


def probe_sections(result: Mapping) -> list[dict]:
    """The page sections of registered probes beyond the built-in ones (whose sections the page
    lays out itself): the probe's own template where it declares one (``section``), else a table
    of its metrics per arm (mean, t CI over seeds, per-seed values)."""
    from ..probes.registry import BUILTIN, probes

    out = []
    for p in probes():
        if p.name in BUILTIN or not any(p.name in r for r in result["runs"]):
            continue
        keys = list(dict.fromkeys(k for info in result["arms"].values() for k in info["metrics"]
                                  if k.startswith(f"{p.name}.")))
        out.append({"name": p.name, "title": f"{p.name}: {p.summary}" if p.summary else p.name,
                    "template": p.section, "rows": metric_rows(result, keys)})
    return out


# ------------------------------------------------------------------------------------ multi-label

MULTILABEL_HEADER = ["label", "clean AUC", "P(change, 1 px)", "corruptions: mean AUC drop"]


def _seed_mean(info: Mapping, key: str) -> float | None:
    d = info["metrics"].get(key)
    return d["mean"] if d and d.get("mean") is not None and math.isfinite(d["mean"]) else None


def _mean_of(values) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _attack_column(result: Mapping) -> tuple[str, str] | None:
    """(attack, "@<ε>/255") of the headline attack metric, whose per-label AUCs the table shows."""
    key = next((k for k in result.get("headline") or [] if k.startswith("adversarial.")), None)
    if key is None:
        return None
    _, attack, rest = key.split(".", 2)
    return attack, rest[len("auc"):]


def multilabel_tables(result: Mapping) -> list[dict]:
    """Per arm of multi-label runs: one compact table, a row per label (means over seeds of its
    clean AUC, P(change) at 1 px, mean corruption AUC drop and AUC under the headline attack at
    its largest ε), then the macro row (mean over labels with a value; the macro AUCs of the
    summary) and the any-label row (a decision vector changes when any label does)."""
    out = []
    att = _attack_column(result)
    for arm, info in result["arms"].items():
        labels = list(dict.fromkeys(c for r in result["runs"] if r["arm"] == arm
                                    for c in ((r.get("clean") or {}).get("auc_per_label") or {})))
        if not labels:
            continue
        cols = [("clean.per_label.{}.auc", "clean.auc"), ("translation.per_label.{}.p_change_1px", None),
                ("corruptions.per_label.{}.mean_auc_drop", "corruptions.mean_auc_drop")]
        if att:
            cols.append((f"adversarial.per_label.{{}}.{att[0]}.auc{att[1]}", f"adversarial.{att[0]}.auc{att[1]}"))
        per = {c: [_seed_mean(info, tpl.format(c)) for tpl, _ in cols] for c in labels}
        macro = [(_seed_mean(info, m) if m else _mean_of(v[j] for v in per.values()))
                 for j, (_, m) in enumerate(cols)]
        anyrow = [None, _seed_mean(info, "translation.p_change_1px"), None]
        if att:
            flip = _seed_mean(info, f"adversarial.{att[0]}.flip_rate{att[1]}")
            anyrow.append(None if flip is None else f"flip rate {_fmt(flip, 3)}")
        rows = [[c] + [_fmt(v, 3) for v in vals] for c, vals in per.items()]
        rows += [["macro"] + [_fmt(v, 3) for v in macro],
                 ["any label"] + [v if isinstance(v, str) else _fmt(v, 3) for v in anyrow]]
        n = max((d["n"] for d in info["metrics"].values()), default=0)
        header = MULTILABEL_HEADER + ([f"{att[0]} AUC {att[1].lstrip('@')}"] if att else [])
        out.append({"arm": arm, "n_seeds": n, "header": header, "rows": rows})
    return out


def skipped_notes(result: Mapping) -> list[str]:
    """One line per probe some runs skipped (multi-label runs: shape bias, shortcuts), with why."""
    seen: dict[str, tuple[str, list[str]]] = {}
    for r in result["runs"]:
        for name, why in (r.get("skipped") or {}).items():
            seen.setdefault(name, (why, []))[1].append(f"{r['arm']}/{seed_dirname(r['seed'])}")
    return [f"{name}: skipped for {len(runs)} multi-label run{'s' if len(runs) != 1 else ''} ({', '.join(runs)}): "
            f"{why}." for name, (why, runs) in seen.items()]


def page_context(clean: Mapping, pngs: Mapping[str, bytes], images: Mapping[str, str]) -> dict:
    """What the robustness templates (the page, and the robustness part of a study page) show."""
    return {"result": clean, "header": HEADER, "rows": summary_rows(clean), "pngs": pngs, "images": images,
            "explain": _section_figures(pngs, images, "explain"),
            "shape_rows": metric_rows(clean, SHAPE_ROWS), "shape_figures": _section_figures(pngs, images, "shape_bias"),
            "shape_summary": shape_summary(clean),
            "shortcut_rows": metric_rows(clean, SHORTCUT_ROWS), "shortcut_flags": shortcut_flags(clean),
            "shortcut_seed_header": SHORTCUT_SEED_HEADER, "shortcut_seed_rows": shortcut_seed_rows(clean),
            "shortcut_figures": _section_figures(pngs, images, "shortcut"), "methods": clean["methods"],
            "pair_header": PAIR_HEADER, "pair_sections": pair_sections(clean),
            "warnings": list((clean.get("leak_warnings") or {}).values()),
            "descriptive_only": bool(clean.get("descriptive_only")), "units": units_note(clean),
            "precision": precision_note(clean),
            "design_note": clean.get("design_note"), "calibration_rows": calibration_rows(clean),
            "probe_sections": probe_sections(clean), "multilabel": multilabel_tables(clean),
            "skipped": skipped_notes(clean)}


def write_robustness(result: Mapping, out: str | Path) -> dict[str, Path]:
    """Write OUT/robustness.json, report.md (PNGs beside it) and a self-contained report.html."""
    out = prepare_out(out)
    clean = json_safe(result)
    pngs = robustness_pngs(clean)
    images = write_pngs(out, pngs)
    write_json_atomic(out / "robustness.json", clean)
    ctx = page_context(clean, pngs, images)
    paths = write_page(out, "report", "robustness", c=ctx, lv=2, **ctx)
    return {"json": out / "robustness.json", **paths}
