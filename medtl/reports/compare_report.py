"""`medtl compare`: find finished runs, compute the statistics, write compare.json/.md/.html.

Input layouts (any mix, several folders allowed):

* a **sweep** folder: ``SWEEP/<arm>/seed-<k>/metrics.json`` -- one arm per sub-folder;
* an **arm** folder: ``ARM/seed-<k>/metrics.json`` -- arm named after the folder;
* a single **run** folder holding ``metrics.json`` -- an arm of n = 1 (named after the folder,
  or after its parent when the folder itself is called ``seed-<k>``).

A ``seed-<k>`` folder holding ``failed.json`` (and no ``metrics.json``) is a failed run: it is
skipped and counted.  A ``seed-<k>`` folder holding neither is unfinished: skipped and counted.
The seed of a run is the ``k`` of its folder name (``run.seed`` in metrics.json for a lone run
folder not named ``seed-<k>``).
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from ..io import atomic_path, json_safe, write_json_atomic, write_text_atomic
from ..stats.compare import TEST_LABELS, compare_arms, format_p
from ..stats.delong import delong_test

_SEED_RE = re.compile(r"^seed-(-?\d+)$")
PREDICTIONS_FILE = "predictions_test.npz"


# --------------------------------------------------------------------------------------------
# discovery


@dataclass
class Arm:
    """The runs of one arm: ``runs[seed]`` is the parsed metrics.json of a finished run."""

    name: str
    source: Path
    runs: dict[int, dict] = field(default_factory=dict)
    run_dirs: dict[int, Path] = field(default_factory=dict)
    failed: dict[int, Path] = field(default_factory=dict)
    incomplete: list[Path] = field(default_factory=list)


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a JSON object at the top level")
    return obj


def _seed_children(folder: Path) -> list[tuple[int, Path]]:
    out = []
    for child in sorted(folder.iterdir()):
        m = _SEED_RE.match(child.name)
        if m and child.is_dir():
            out.append((int(m.group(1)), child))
    return sorted(out)


def _is_run(folder: Path) -> bool:
    return (folder / "metrics.json").is_file() or (folder / "failed.json").is_file()


def _add_run(arm: Arm, seed: int, run_dir: Path) -> None:
    if seed in arm.runs or seed in arm.failed:
        raise ConfigError(f"arm {arm.name!r} has seed {seed} twice ({run_dir} and "
                          f"{arm.run_dirs.get(seed) or arm.failed.get(seed)}); use --arm NAME=DIR to separate them")
    if (run_dir / "metrics.json").is_file():
        arm.runs[seed] = _read_json(run_dir / "metrics.json")
        arm.run_dirs[seed] = run_dir
    elif (run_dir / "failed.json").is_file():
        arm.failed[seed] = run_dir / "failed.json"
    else:
        arm.incomplete.append(run_dir)


def _lone_run(folder: Path, name: str | None) -> Arm:
    m = _SEED_RE.match(folder.name)
    if m:
        seed = int(m.group(1))
        default_name = folder.resolve().parent.name
    else:
        seed = 0
        if (folder / "metrics.json").is_file():
            s = (_read_json(folder / "metrics.json").get("run") or {}).get("seed")
            if isinstance(s, int) and not isinstance(s, bool):
                seed = s
        default_name = folder.resolve().name
    arm = Arm(name=name or default_name, source=folder)
    _add_run(arm, seed, folder)
    return arm


def _arm_folder(folder: Path, name: str | None) -> Arm:
    arm = Arm(name=name or folder.resolve().name, source=folder)
    for seed, child in _seed_children(folder):
        _add_run(arm, seed, child)
    return arm


def _as_arm(d: Path, name: str | None) -> "Arm | None":
    """A single run folder or a folder of seed-* runs as an arm; None if it is neither."""
    if _is_run(d):
        return _lone_run(d, name)
    if _seed_children(d):
        return _arm_folder(d, name)
    return None


def discover_arms(dirs: Sequence[str | Path] = (), named: Sequence[tuple[str, str | Path]] = ()) -> dict[str, Arm]:
    """Arms found in ``dirs`` (sweep, arm or run folders) plus ``named`` ``(NAME, DIR)`` arms.

    Raises :class:`DataError` for a missing folder or when no runs at all are found, and
    :class:`ConfigError` for two arms with the same name.
    """
    found: list[Arm] = []
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise DataError(f"{d}: no such folder")
        arm = _as_arm(d, None)
        if arm is not None:
            found.append(arm)
        else:
            subs = [c for c in sorted(d.iterdir()) if c.is_dir() and _seed_children(c)]
            if not subs:
                raise DataError(f"{d}: no runs found (expected metrics.json, seed-*/metrics.json "
                                f"or ARM/seed-*/metrics.json)")
            found.extend(_arm_folder(c, None) for c in subs)
    for name, d in named:
        d = Path(d)
        if not name:
            raise ConfigError(f"--arm needs NAME=DIR, got '={d}'")
        if not d.is_dir():
            raise DataError(f"{d}: no such folder (--arm {name}={d})")
        arm = _as_arm(d, name)
        if arm is not None:
            found.append(arm)
        else:
            raise DataError(f"{d}: no runs found for --arm {name} (expected metrics.json or seed-*/metrics.json)")
    arms: dict[str, Arm] = {}
    for arm in found:
        if arm.name in arms:
            raise ConfigError(f"two arms are named {arm.name!r} ({arms[arm.name].source} and {arm.source}); "
                              f"name them with --arm NAME=DIR")
        arms[arm.name] = arm
    if not arms:
        raise DataError("no runs found: give sweep, arm or run folders (or --arm NAME=DIR)")
    if not any(a.runs for a in arms.values()):
        n_failed = sum(len(a.failed) for a in arms.values())
        where = ", ".join(str(Path(d)) for d in dirs) or ", ".join(str(d) for _, d in named)
        raise DataError(f"no finished runs (metrics.json) found in {where} ({n_failed} failed)")
    return arms


# --------------------------------------------------------------------------------------------
# metric lookup

_MISSING = object()


def lookup_metric(metrics: Mapping, path: str) -> Any:
    """Value at a dotted path such as ``test.auc`` (``_MISSING`` sentinel when absent)."""
    cur: Any = metrics
    for part in path.split("."):
        if isinstance(cur, Mapping) and part in cur:
            cur = cur[part]
        else:
            return _MISSING
    return cur


def available_metrics(metrics: Mapping, prefix: str = "") -> list[str]:
    """Dotted paths of every numeric leaf (``history`` and ``run`` are skipped)."""
    out: list[str] = []
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if not prefix and k in ("history", "run"):
            continue
        if isinstance(v, Mapping):
            out.extend(available_metrics(v, key + "."))
        elif v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)):
            out.append(key)
    return out


def collect_values(arms: Mapping[str, Arm], metric: str) -> dict[str, dict[int, float]]:
    """``{arm: {seed: value}}`` for one metric; null/missing values become NaN.

    Raises :class:`ConfigError` when no finished run has the metric, listing the keys that exist.
    """
    out: dict[str, dict[int, float]] = {}
    seen = False
    for name, arm in arms.items():
        vals: dict[int, float] = {}
        for seed, m in sorted(arm.runs.items()):
            v = lookup_metric(m, metric)
            if v is _MISSING:
                vals[seed] = float("nan")
                continue
            seen = True
            if v is None:
                vals[seed] = float("nan")
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                vals[seed] = float(v)
            else:
                kind = "an object" if isinstance(v, Mapping) else type(v).__name__
                path = arm.run_dirs[seed] / "metrics.json"
                raise ConfigError(f"metric {metric!r} is not a number in {path} (it is {kind}); "
                                  f"available: {', '.join(available_metrics(m))}")
        out[name] = vals
    if not seen:
        first = next(a for a in arms.values() if a.runs)
        seed = min(first.runs)
        keys = available_metrics(first.runs[seed])
        raise ConfigError(f"unknown metric {metric!r} (not in any metrics.json); available: {', '.join(keys)}")
    return out


# --------------------------------------------------------------------------------------------
# DeLong from two run folders


def load_predictions(run: str | Path) -> dict[str, np.ndarray]:
    """``y``, ``p`` (and ``ids`` when present) from ``RUN/predictions_test.npz`` (or the file itself)."""
    run = Path(run)
    path = run if run.suffix == ".npz" else run / PREDICTIONS_FILE
    if not path.is_file():
        raise DataError(f"{path}: not found (--delong needs {PREDICTIONS_FILE} in both run folders)")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: np.asarray(z[k]) for k in z.files}
    except Exception as exc:  # zipfile/pickle/format errors all mean "unreadable"
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc})".replace("\n", " ")) from None
    for k in ("y", "p"):
        if k not in data:
            raise DataError(f"{path}: missing array {k!r} (has {', '.join(sorted(data)) or 'nothing'})")
    y, p = data["y"].ravel(), data["p"]
    if p.ndim == 2 and p.shape[1] == 2:
        p = p[:, 1]
    p = p.ravel().astype(np.float64)
    if y.size != p.size:
        raise DataError(f"{path}: 'y' has {y.size} entries but 'p' has {p.size}")
    if not np.isin(y, (0, 1)).all():
        raise DataError(f"{path}: 'y' must be binary 0/1 labels for DeLong")
    if not np.isfinite(p).all():
        raise DataError(f"{path}: 'p' contains NaN or inf")
    out = {"y": y.astype(int), "p": p, "path": path}
    if "ids" in data:
        out["ids"] = data["ids"].ravel()
    return out


def delong_from_runs(run_a: str | Path, run_b: str | Path, confidence: float = 0.95) -> dict:
    """DeLong test between the test-set predictions of two runs (same cases, same labels)."""
    a, b = load_predictions(run_a), load_predictions(run_b)
    if a["y"].size != b["y"].size:
        raise DataError(f"{a['path']} and {b['path']} hold different numbers of cases ({a['y'].size} vs {b['y'].size})")
    if "ids" in a and "ids" in b:
        if not np.array_equal(a["ids"].astype(str), b["ids"].astype(str)):
            raise DataError(f"{a['path']} and {b['path']} have different 'ids' (not the same test cases in the same order)")
    if not np.array_equal(a["y"], b["y"]):
        raise DataError(f"{a['path']} and {b['path']} have different labels 'y'")
    try:
        res = delong_test(a["y"], a["p"], b["p"], confidence=confidence)
    except ValueError as exc:
        raise DataError(f"{a['path']}: {exc}") from None
    return {"run_a": str(run_a), "run_b": str(run_b), "ids_checked": bool("ids" in a and "ids" in b), **res}


# --------------------------------------------------------------------------------------------
# the comparison


def build_comparison(arms: Mapping[str, Arm], metrics: Sequence[str], *, alpha: float = 0.05,
                     n_resamples: int = 10000, seed: int = 0, ci_method: str = "bca",
                     confidence: float = 0.95) -> dict:
    """All statistics as one JSON-ready dict (NaN still present: see :func:`write_report`)."""
    if not metrics:
        raise ConfigError("give at least one --metric, e.g. --metric test.auc")
    metrics = list(dict.fromkeys(metrics))
    values = {m: collect_values(arms, m) for m in metrics}
    res = compare_arms(values, alpha=alpha, n_resamples=n_resamples, seed=seed, method=ci_method,
                       confidence=confidence)
    notes: list[str] = []
    for m in metrics:
        for name, st in res["by_metric"][m]["arms"].items():
            arm = arms[name]
            st["n_failed"] = len(arm.failed)
            st["n_incomplete"] = len(arm.incomplete)
            st["values"] = [values[m][name][s] for s in st["seeds"]]
            if st["n"] < 2:
                notes.append(f"{name} has {st['n']} value(s) of {m}: no CI and no tests involving it")
    runs = {
        name: {
            "source": str(arm.source),
            "n_finished": len(arm.runs),
            "n_failed": len(arm.failed),
            "failed_seeds": sorted(arm.failed),
            "n_incomplete": len(arm.incomplete),
            "incomplete": [str(p) for p in arm.incomplete],
            "seeds": sorted(arm.runs),
            "dirs": {str(s): str(p) for s, p in sorted(arm.run_dirs.items())},
        }
        for name, arm in arms.items()
    }
    n_failed = sum(r["n_failed"] for r in runs.values())
    n_incomplete = sum(r["n_incomplete"] for r in runs.values())
    if n_failed:
        notes.append(f"{n_failed} failed run(s) skipped: " + ", ".join(
            f"{n} seed {s}" for n, r in runs.items() for s in r["failed_seeds"]))
    if n_incomplete:
        notes.append(f"{n_incomplete} unfinished run folder(s) (no metrics.json or failed.json) skipped")
    unpaired = list(dict.fromkeys(f"{p['a']} vs {p['b']}" for p in res["pairs"] if p["seed_sets_differ"]))
    if unpaired:
        notes.append("unpaired tests (seed sets differ) for: " + "; ".join(unpaired))
    return {
        "kind": "medtl.compare",
        "version": 1,
        "metrics": metrics,
        "alpha": alpha,
        "ci_method": ci_method,
        "confidence": confidence,
        "bootstrap": int(n_resamples),
        "seed": int(seed),
        "tests": {
            "paired": "Wilcoxon signed-rank (primary, two-sided, zero_method='wilcox') and paired t-test; "
                      "used when both arms have exactly the same seeds (>= 2)",
            "unpaired": "Mann-Whitney U (primary, two-sided) and Welch t-test; used otherwise",
            "effect_size": "Cohen's d_z (paired) / Cohen's d with pooled sd (unpaired)",
            "multiplicity": f"Holm step-down over the primary p-values of all {res['holm']['m_primary']} "
                            f"pairs x metrics (secondary p-values corrected separately)",
            "ci": f"{round(confidence * 100)}% bootstrap CI ({ci_method}, B={n_resamples}, "
                  f"numpy Generator seeded with {seed} for each interval; BCa falls back to percentile "
                  f"when undefined)",
        },
        "arms": res["by_metric"][metrics[0]]["arms"],
        "by_metric": res["by_metric"],
        "pairs": res["pairs"],
        "holm": res["holm"],
        "runs": runs,
        "n_failed": n_failed,
        "n_incomplete": n_incomplete,
        "notes": notes,
    }


# --------------------------------------------------------------------------------------------
# rendering


def _num(x: Any, digits: int = 4) -> str:
    if x is None:
        return "n/a"
    x = float(x)
    if not math.isfinite(x):
        return "n/a"
    if x == 0 or 1e-2 <= abs(x) < 1e4:
        return f"{x:.{digits}f}"
    return f"{x:.{digits - 1}g}"


def _ci(lo: Any, hi: Any) -> str:
    if lo is None or hi is None or not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
        return "n/a"
    return f"{_num(lo)} to {_num(hi)}"


_ARM_HEADER = ["arm", "n", "failed", "mean", "sd", "95% CI of mean", "median", "min", "max", "CI method"]


def _arm_rows(result: Mapping, metric: str) -> list[list[str]]:
    rows = []
    for name, st in result["by_metric"][metric]["arms"].items():
        rows.append([name, str(st["n"]), str(st.get("n_failed", 0)), _num(st["mean"]), _num(st["sd"]),
                     _ci(st["ci_low"], st["ci_high"]), _num(st["median"]), _num(st["min"]), _num(st["max"]),
                     st["ci_method"] or "n/a"])
    return rows


_PAIR_HEADER = ["a", "b", "design", "test", "p", "Holm p", "diff (a−b)", "95% CI of diff", "effect size", "significant"]


_EFFECT_LABELS = {"cohens_dz": "d_z", "cohens_d": "d"}


def _p_cell(p: Any) -> str:
    s = format_p(p)
    return s[1:] if s.startswith("p<") else s[2:]


def _pair_rows(result: Mapping, metric: str) -> list[list[str]]:
    rows = []
    for p in result["pairs"]:
        if p["metric"] != metric:
            continue
        design = f"paired (n={p['n_pairs']})" if p["paired"] else f"unpaired ({p['n_a']} vs {p['n_b']})"
        eff = f"{_EFFECT_LABELS.get(p['effect_size_name'], p['effect_size_name'])} = {_num(p['effect_size'], 2)}"
        tested = p["p"] is not None
        rows.append([p["a"], p["b"], design, TEST_LABELS[p["test"]] if tested else "not tested", _p_cell(p["p"]),
                     _p_cell(p["p_holm"]), _num(p["diff"]), _ci(p["diff_ci_low"], p["diff_ci_high"]), eff,
                     "yes" if p["significant"] else "no"])
    return rows


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_escape(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def markdown_table(result: Mapping, metric: str | None = None) -> str:
    """The per-arm markdown table of one metric (default: the first)."""
    metric = metric or result["metrics"][0]
    return _md_table(_ARM_HEADER, _arm_rows(result, metric))


def _safe_name(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", metric)


def plot_metric(result: Mapping, metric: str) -> bytes:
    """PNG bytes: a box plot per arm with each seed overlaid as a jittered point."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    arms = result["by_metric"][metric]["arms"]
    names = list(arms)
    data = [np.asarray(arms[n]["values"], dtype=float) for n in names]
    fig = Figure(figsize=(max(4.0, 1.2 * len(names) + 2.0), 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    pos = np.arange(1, len(names) + 1)
    boxed = [(i, d) for i, d in zip(pos, data) if d.size]
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
    ax.set_xticks(pos)
    ax.set_xticklabels(names, rotation=20 if len(names) > 3 else 0, ha="right" if len(names) > 3 else "center")
    ax.set_xlim(0.4, len(names) + 0.6)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}\none point per seed, diamond = mean", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _sentences(result: Mapping, metric: str) -> list[str]:
    return [p["sentence"] for p in result["pairs"] if p["metric"] == metric]


def _method_notes(result: Mapping) -> list[str]:
    t = result["tests"]
    return [f"Confidence intervals: {t['ci']}.", f"Paired design: {t['paired']}.", f"Unpaired design: {t['unpaired']}.",
            f"Effect size: {t['effect_size']}.", f"Multiplicity: {t['multiplicity']}; α={result['alpha']:g}.",
            "sd uses ddof=1. Failed and unfinished runs are excluded (counted in 'failed')."]


def render_markdown(result: Mapping, images: Mapping[str, str] | None = None) -> str:
    images = images or {}
    out = ["# medtl compare", ""]
    arms = list(result["arms"])
    out.append(f"Arms: {', '.join(arms)}. Metrics: {', '.join(result['metrics'])}. "
               f"Failed runs skipped: {result['n_failed']}.")
    out.append("")
    for m in result["metrics"]:
        out += [f"## {m}", "", _md_table(_ARM_HEADER, _arm_rows(result, m)), ""]
        if m in images:
            out += [f"![{m}]({images[m]})", ""]
        rows = _pair_rows(result, m)
        if rows:
            out += ["### Pairwise comparisons", "", _md_table(_PAIR_HEADER, rows), ""]
            out += [f"- {s}" for s in _sentences(result, m)] + [""]
    if result.get("delong"):
        d = result["delong"]
        out += ["## DeLong test (test-set ROC AUC)", "", _delong_sentence(d), ""]
    if result["notes"]:
        out += ["## Notes", ""] + [f"- {n}" for n in result["notes"]] + [""]
    out += ["## Methods", ""] + [f"- {n}" for n in _method_notes(result)] + [""]
    return "\n".join(out)


def _delong_sentence(d: Mapping) -> str:
    return (f"{d['run_a']} (AUC {_num(d['auc_a'])}) vs {d['run_b']} (AUC {_num(d['auc_b'])}) on the same "
            f"{d['n']} test cases ({d['n_pos']} positive): AUC difference {_num(d['diff'])} "
            f"(95% CI {_ci(d['diff_ci_low'], d['diff_ci_high'])}), z={_num(d['z'], 2)}, DeLong {format_p(d['p'])}.")


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child,th:nth-child(2),td:nth-child(2){text-align:left}th{background:#f3f3f3}
img{max-width:100%}li{margin:.3em 0}.note{color:#555}"""


def render_html(result: Mapping, pngs: Mapping[str, bytes] | None = None) -> str:
    """A self-contained page: tables, sentences, plots as base64 PNG data URIs."""
    pngs = pngs or {}
    e = html.escape
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             "<title>medtl compare</title>", f"<style>{_CSS}</style></head><body>", "<h1>medtl compare</h1>",
             f"<p>Arms: {e(', '.join(result['arms']))}. Metrics: {e(', '.join(result['metrics']))}. "
             f"Failed runs skipped: {result['n_failed']}.</p>"]
    for m in result["metrics"]:
        parts += [f"<h2>{e(m)}</h2>", _html_table(_ARM_HEADER, _arm_rows(result, m))]
        if m in pngs:
            b64 = base64.b64encode(pngs[m]).decode("ascii")
            parts.append(f"<img src=\"data:image/png;base64,{b64}\" alt=\"{e(m)} per arm\">")
        rows = _pair_rows(result, m)
        if rows:
            parts += ["<h3>Pairwise comparisons</h3>", _html_table(_PAIR_HEADER, rows), "<ul>"]
            parts += [f"<li>{e(s)}</li>" for s in _sentences(result, m)] + ["</ul>"]
    if result.get("delong"):
        parts += ["<h2>DeLong test (test-set ROC AUC)</h2>", f"<p>{e(_delong_sentence(result['delong']))}</p>"]
    if result["notes"]:
        parts += ["<h2>Notes</h2>", "<ul class=\"note\">"] + [f"<li>{e(n)}</li>" for n in result["notes"]] + ["</ul>"]
    parts += ["<h2>Methods</h2>", "<ul>"] + [f"<li>{e(n)}</li>" for n in _method_notes(result)] + ["</ul>"]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


_json_clean = json_safe


def write_report(result: Mapping, out: str | Path, *, plots: bool = True) -> dict[str, Path]:
    """Write OUT/compare.json, compare.md, compare.html and one PNG per metric, each atomically."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    clean = _json_clean(result)
    paths: dict[str, Path] = {}
    pngs: dict[str, bytes] = {}
    images: dict[str, str] = {}
    if plots:
        for m in clean["metrics"]:
            pngs[m] = plot_metric(clean, m)
            fname = f"compare_{_safe_name(m)}.png"
            with atomic_path(out / fname) as tmp:
                tmp.write_bytes(pngs[m])
            images[m] = fname
            paths[f"png:{m}"] = out / fname
    write_json_atomic(out / "compare.json", clean)
    write_text_atomic(out / "compare.md", render_markdown(clean, images))
    write_text_atomic(out / "compare.html", render_html(clean, pngs))
    paths.update(json=out / "compare.json", md=out / "compare.md", html=out / "compare.html")
    return paths


def run_compare(dirs: Sequence[str | Path], metrics: Sequence[str], out: str | Path, *, alpha: float = 0.05,
                n_resamples: int = 10000, seed: int = 0, ci_method: str = "bca",
                named: Sequence[tuple[str, str | Path]] = (), delong: tuple[str | Path, str | Path] | None = None,
                plots: bool = True) -> dict:
    """Everything `medtl compare` does: discover, compute, write; returns the (NaN-free) result."""
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"--alpha must be between 0 and 1 (got {alpha})")
    if n_resamples < 100:
        raise ConfigError(f"--bootstrap must be at least 100 resamples (got {n_resamples})")
    ci_method = ci_method.lower()
    if ci_method not in ("bca", "percentile"):
        raise ConfigError(f"--ci must be 'bca' or 'percentile' (got {ci_method!r})")
    arms = discover_arms(dirs, named)
    result = build_comparison(arms, metrics, alpha=alpha, n_resamples=n_resamples, seed=seed, ci_method=ci_method)
    result["inputs"] = [str(d) for d in dirs] + [f"{n}={d}" for n, d in named]
    if delong is not None:
        result["delong"] = delong_from_runs(delong[0], delong[1])
    write_report(result, out, plots=plots)
    return _json_clean(result)
