"""`medtl robustness-report`: run (or reuse) the probes of every run, aggregate per arm over
seeds (mean and bootstrap 95% CI, :func:`medtl.stats.compare.describe`), write
OUT/robustness.json, OUT/report.md (with relative PNGs in OUT) and a self-contained
OUT/report.html (PNGs as base64 data URIs).

Runs are found as ``medtl compare`` finds them (sweep, arm or run folders; the arm is the
parent folder of ``seed-K``).  Probe results are cached per run in RUN/probes/<probe>.json,
keyed by the probe parameters, so a second report is fast and a change of parameters
recomputes.  Images are identified only by their test-set index.
"""
from __future__ import annotations

import base64
import html
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import ConfigError
from ..io import atomic_path, write_json_atomic, write_text_atomic
from ..probes.runs import json_clean
from ..stats.compare import describe
from .compare_report import discover_arms

PRESETS = {
    "full": {
        "translation": {"max_shift": 8, "n_images": 500, "n_pairs": 4, "scale_pct": 8},
        "adversarial": {"steps": 10, "n_images": None},
        "corruptions": {"n_images": None},
        "explain": {"n_samples": 8, "n_embed": 2000},
    },
    "quick": {
        "translation": {"max_shift": 4, "n_images": 128, "n_pairs": 2, "scale_pct": 4},
        "adversarial": {"steps": 5, "n_images": 128},
        "corruptions": {"n_images": 256},
        "explain": {"n_samples": 4, "n_embed": 500},
    },
}


def probe_params(quick: bool = False, n_images: int | None = None) -> dict:
    p = {k: dict(v) for k, v in PRESETS["quick" if quick else "full"].items()}
    if n_images:
        for k in ("translation", "adversarial", "corruptions"):
            p[k]["n_images"] = n_images
    return p


def probe_run(run_dir: Path, params: Mapping, *, source: Path | None = None, force: bool = False) -> dict:
    """All probes of one run (cached); the per-run record of robustness.json."""
    import json

    from ..probes.adversarial import adversarial_probe
    from ..probes.corruptions import corruptions_probe
    from ..probes.explain import explain_probe
    from ..probes.translation import translation_probe

    t = translation_probe(run_dir, force=force, **params["translation"])
    a = adversarial_probe(run_dir, force=force, **params["adversarial"])
    c = corruptions_probe(run_dir, force=force, **params["corruptions"])
    e = explain_probe(run_dir, force=force, **params["explain"])
    adv = {name: [{"eps": r["eps"], "auc": r["auc"], "acc": r["acc"], "success_rate": r["success_rate"]}
                  for r in rows] for name, rows in a["attacks"].items()}
    if source is not None and Path(source).resolve() != Path(run_dir).resolve():
        tr = adversarial_probe(run_dir, source=source, force=force, **params["adversarial"])
        adv.update({name: [{"eps": r["eps"], "auc": r["auc"], "acc": r["acc"], "success_rate": r["success_rate"]}
                           for r in rows] for name, rows in tr["attacks"].items()})
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text(encoding="utf-8"))
    test = metrics.get("test") or {}
    return {
        "clean": {"auc": test.get("auc"), "acc": test.get("acc"),
                  "auc_fp32_probe_sample": a["clean"]["auc"], "n_probe_sample": a["n_images"]},
        "translation": {k: t[k] for k in ("p_change_1px", "consistency", "jaggedness", "mean_abs_dp_per_px")}
        | {"main_protocol": t["main_protocol"], "scale_p_change_max": t["scale"]["p_change_max"],
           "p_change_by_shift": t["protocols"][t["main_protocol"]]["p_change_by_shift"],
           "protocols": t["protocols"]},
        "adversarial": adv,
        "corruptions": {name: [{"severity": r["severity"], "auc": r["auc"]} for r in rows]
                        for name, rows in c["corruptions"].items()},
        "corruptions_mean_auc_drop": c["mean_auc_drop"],
        "explain": {"gradcam_layer": e.get("gradcam_layer"), "map_agreement": e.get("map_agreement"),
                    "panel": str(Path(run_dir) / "probes" / e["plots"]["panel"]) if e.get("plots") else None,
                    "embedding": str(Path(run_dir) / "probes" / e["plots"]["embedding"]) if e.get("plots") else None},
        "seconds": {"translation": t.get("seconds"), "adversarial": a.get("seconds"),
                    "corruptions": c.get("seconds"), "explain": e.get("seconds")},
    }


def _scalar_metrics(rec: Mapping) -> dict[str, float]:
    """Flat scalar metrics of one run record, for per-arm aggregation."""
    f = lambda v: float("nan") if v is None else float(v)  # noqa: E731
    out = {"clean.auc": f(rec["clean"]["auc"])}
    for k in ("p_change_1px", "consistency", "jaggedness", "mean_abs_dp_per_px", "scale_p_change_max"):
        out[f"translation.{k}"] = f(rec["translation"][k])
    for s, v in enumerate(rec["translation"]["p_change_by_shift"]):
        out[f"translation.p_change@{s}px"] = f(v)
    for name, rows in rec["adversarial"].items():
        for r in rows:
            out[f"adversarial.{name}.auc@{r['eps'] * 255:g}/255"] = f(r["auc"])
    for name, rows in rec["corruptions"].items():
        out[f"corruptions.{name}.mean_auc"] = float(np.nanmean([f(r["auc"]) for r in rows]))
    out["corruptions.mean_auc_drop"] = f(rec["corruptions_mean_auc_drop"])
    return out


def aggregate(runs: Sequence[Mapping], n_resamples: int = 2000) -> dict:
    by_arm: dict[str, list[Mapping]] = {}
    for r in runs:
        by_arm.setdefault(r["arm"], []).append(r)
    arms = {}
    for arm, recs in by_arm.items():
        flat = [_scalar_metrics(r) for r in recs]
        keys = list(dict.fromkeys(k for f in flat for k in f))
        arms[arm] = {"seeds": [r["seed"] for r in recs],
                     "metrics": {k: describe([f.get(k, float("nan")) for f in flat], n_resamples=n_resamples)
                                 | {"values": [f.get(k) for f in flat]} for k in keys}}
    return arms


# ------------------------------------------------------------------------------------------ plots

def _fig(w, h):
    from ..probes.runs import new_figure

    return new_figure(w, h)


def _png(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


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
    fig = _fig(3.6 * ncol, 3.0 * nrow)
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
    return _png(fig)


def plot_translation(result: Mapping) -> bytes:
    fig = _fig(5.0, 3.6)
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
    return _png(fig)


def plot_corruptions(result: Mapping) -> bytes:
    names = list(dict.fromkeys(c for r in result["runs"] for c in r["corruptions"]))
    arms = list(result["arms"])
    fig = _fig(max(5.5, 1.0 * len(names) + 2), 3.8)
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
    return _png(fig)


# ------------------------------------------------------------------------------------------ tables

SUMMARY_KEYS = ["clean.auc", "translation.p_change_1px", "translation.consistency", "translation.jaggedness",
                "translation.mean_abs_dp_per_px", "translation.scale_p_change_max", "corruptions.mean_auc_drop"]


def _fmt(x: Any, d: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{d}f}"


def summary_rows(result: Mapping) -> list[list[str]]:
    rows = []
    for arm, info in result["arms"].items():
        keys = SUMMARY_KEYS + [k for k in info["metrics"] if k.startswith("adversarial.") and k.endswith("@8/255")]
        for k in keys:
            d = info["metrics"].get(k)
            if d is None:
                continue
            rows.append([arm, k, str(d["n"]), _fmt(d["mean"]), f"[{_fmt(d['ci_low'])}, {_fmt(d['ci_high'])}]",
                         ", ".join(_fmt(v) for v in d["values"])])
    return rows


HEADER = ["arm", "metric", "n", "mean", "95% CI", "per seed"]


def render_markdown(result: Mapping, images: Mapping[str, str]) -> str:
    out = ["# medtl robustness report", "", f"Runs: {len(result['runs'])}; arms: {', '.join(result['arms'])}.", ""]
    out += ["## Summary (mean and bootstrap 95% CI over seeds)", "",
            "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(r) + " |" for r in summary_rows(result)] + [""]
    for title, key in (("Adversarial: AUC vs ε", "adversarial"), ("Translation: P(change) vs shift", "translation"),
                       ("Corruptions", "corruptions")):
        out += [f"## {title}", "", f"![{key}]({images[key]})", ""]
    out += ["## Explanations (first seed of each arm)", ""]
    for k, v in images.items():
        if k.startswith("explain:"):
            out += [f"### {k[8:]}", "", f"![{k}]({v})", ""]
    out += ["## Methods", ""] + [f"- {m}" for m in result["methods"]] + [""]
    return "\n".join(out)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:90%}th,td{border:1px solid #ccc;padding:.2em .5em}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}.row{display:flex;gap:1em;flex-wrap:wrap}"""


def render_html(result: Mapping, pngs: Mapping[str, bytes]) -> str:
    e = html.escape

    def img(key: str, alt: str) -> str:
        return f'<img src="data:image/png;base64,{base64.b64encode(pngs[key]).decode()}" alt="{e(alt)}">'

    rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in summary_rows(result))
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>medtl robustness report</title>',
             f"<style>{_CSS}</style></head><body>", "<h1>medtl robustness report</h1>",
             f"<p>Runs: {len(result['runs'])}; arms: {e(', '.join(result['arms']))}.</p>",
             "<h2>Summary (mean and bootstrap 95% CI over seeds)</h2>",
             "<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in HEADER) + f"</tr></thead><tbody>{rows}</tbody></table>",
             "<h2>Adversarial: AUC vs ε</h2>", img("adversarial", "AUC vs epsilon"),
             "<h2>Translation: P(change) vs shift</h2>", img("translation", "P(change) vs shift"),
             "<h2>Corruptions</h2>", img("corruptions", "corruption AUC"),
             "<h2>Explanations (first seed of each arm)</h2>"]
    for k in pngs:
        if k.startswith("explain:"):
            parts += [f"<h3>{e(k[8:])}</h3>", img(k, k[8:])]
    parts += ["<h2>Methods</h2>", "<ul>"] + [f"<li>{e(m)}</li>" for m in result["methods"]] + ["</ul>", "</body></html>"]
    return "\n".join(parts) + "\n"


METHODS = [
    "Decisions: p(positive) ≥ the run's operating threshold (chosen on val) for binary runs, argmax otherwise; "
    "all probes run the model in fp32, eval mode.",
    "Translation: shifts of ±1..k px along x, y and the diagonal; main protocol 'crop' = reflect-pad by k and crop "
    "(no black border); also 'black' (black canvas) and 'circular' (torch.roll). Consistency = agreement of "
    "decisions under random shift pairs (Zhang 2019); jaggedness = decision flips per 1-px step along a path.",
    "Adversarial: torchattacks FGSM / PGD (step 2.5ε/steps, random start), L∞ ε in pixel units of [0,1] images; "
    "L2 budget ε·sqrt(H·W); success rate = fraction of clean-correct images made wrong; transfer attacks "
    "(prefix transfer_) are crafted on the --source run.",
    "Corruptions: Gaussian and Poisson noise, Gaussian blur, contrast, gamma, JPEG, down-up sampling; 5 severities "
    "each; mean AUC drop = clean AUC − mean AUC over corruptions and severities (same image sample).",
    "Explanations: Grad-CAM (captum, deepest ResNet stage with ≥4 px maps), |gradient| saliency, occlusion; "
    "PCA of penultimate features. Images are named only by their test-set index.",
    "Per-arm statistics: mean over seeds and bootstrap 95% CI (medtl.stats.compare.describe; BCa, falling back to "
    "percentile); with n < 2 seeds no CI is given.",
]


def run_report(dirs: Sequence[str | Path], out: str | Path, *, quick: bool = False, n_images: int | None = None,
               source: str | Path | None = None, force: bool = False,
               progress: Callable[[str], None] | None = None, params: Mapping | None = None) -> dict:
    """Discover runs, probe each (cached), aggregate per arm, write the report files."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    arms = discover_arms(list(dirs))
    params = dict(params) if params is not None else probe_params(quick, n_images)
    runs = []
    t0 = time.time()
    for arm_name, arm in arms.items():
        for seed, run_dir in sorted(arm.run_dirs.items()):
            t = time.time()
            rec = probe_run(run_dir, params, source=Path(source) if source else None, force=force)
            runs.append({"arm": arm_name, "seed": seed, "run_dir": str(run_dir)} | rec)
            if progress:
                progress(f"{arm_name}/seed-{seed}: probed in {time.time() - t:.1f}s")
    result = {"runs": runs, "arms": aggregate(runs), "params": params, "methods": METHODS,
              "n_failed": sum(len(a.failed) for a in arms.values()),
              "n_incomplete": sum(len(a.incomplete) for a in arms.values())}
    pngs = {"adversarial": plot_adversarial(result), "translation": plot_translation(result),
            "corruptions": plot_corruptions(result)}
    for r in runs:
        if r["seed"] != min(x["seed"] for x in runs if x["arm"] == r["arm"]):
            continue
        for what in ("panel", "embedding"):
            p = r["explain"].get(what)
            if p and Path(p).is_file():
                pngs[f"explain:{r['arm']} seed-{r['seed']} {what}"] = Path(p).read_bytes()
    out.mkdir(parents=True, exist_ok=True)
    images = {}
    for k, data in pngs.items():
        fname = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in k.replace(":", "_")) + ".png"
        with atomic_path(out / fname) as tmp:
            tmp.write_bytes(data)
        images[k] = fname
    result["seconds"] = time.time() - t0
    clean = json_clean(result)
    write_json_atomic(out / "robustness.json", clean)
    write_text_atomic(out / "report.md", render_markdown(clean, images))
    write_text_atomic(out / "report.html", render_html(clean, pngs))
    return clean
