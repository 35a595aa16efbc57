"""Conclusions from a recorded result file, by today's rules.

A report's conclusion sentences must follow from its JSON by the same rules ``medtl compare``
uses.  :func:`regenerate` rebuilds every pair of a recorded ``compare.json``, ``robustness.json``
or ``study.json`` from what the file itself holds:

* pairs that already carry today's fields (``family``, ``se``, ``df``, ``conclusion``: written by
  this medtl) are re-concluded as recorded (their test and interval came from the run folders:
  over seeds and test cases, or over seeds and the attacked subset);
* older files are recomputed from the per-seed values they store (compare: each arm's ``seeds``
  and ``values``; robustness: the per-run records), over seeds only -- the per-case predictions
  that a seeds + cases interval needs are in the run folders, not in the file; the sentence then
  says "over seeds".

Holm families and the equivalence margin are the caller's (default: the file's own, else every
pair exploratory and no margin).
"""
from __future__ import annotations

import copy
from typing import Mapping, Sequence

from .compare import compare_arms, conclude


def _modern(pairs: Sequence[Mapping]) -> bool:
    return bool(pairs) and all("family" in p and "se" in p and "df" in p for p in pairs)


def _as_recorded(pairs: Sequence[Mapping], primary: Sequence[str], primary_pairs=None) -> list[dict]:
    """Copies of pairs written by this medtl, with the caller's families (``primary_pairs``: the
    declared primary pairs of a study, else every pair of a primary metric)."""
    from .compare import pair_family

    out = copy.deepcopy(list(pairs))
    for p in out:
        p["family"] = pair_family(p["a"], p["b"], p["metric"], primary, primary_pairs)
    return out


def _compare_pairs(doc: Mapping, primary: Sequence[str], margin, alpha: float, primary_pairs=None) -> list[dict]:
    if _modern(doc.get("pairs") or []):
        return _as_recorded(doc["pairs"], primary, primary_pairs)
    values = {m: {arm: {int(s): (float("nan") if v is None else float(v)) for s, v in zip(st["seeds"], st["values"])}
                  for arm, st in doc["by_metric"][m]["arms"].items()} for m in doc["metrics"]}
    return compare_arms(values, alpha=alpha, margin=margin, primary=primary)["pairs"]


def _robustness_pairs(doc: Mapping, primary: Sequence[str], margin, alpha: float, metrics,
                      primary_pairs=None) -> list[dict]:
    from .robustness import robustness_pairs

    if _modern(doc.get("pairs") or []):
        return _as_recorded(doc["pairs"], primary, primary_pairs)
    if metrics is None:
        raise ValueError("an older robustness record is recomputed from its per-run records: give probe_metrics")
    return robustness_pairs(doc["runs"], metrics, alpha=alpha, margin=margin, primary=primary)["pairs"]


def regenerate(doc: Mapping, *, primary: Sequence[str] | None = None, margin=None, alpha: float | None = None,
               probe_metrics=None) -> list[dict]:
    """Every pair of a recorded compare / robustness / study JSON, concluded by today's rule (one
    Holm family for ``primary`` across the file (a study's declared ``primary_pairs`` only, where
    it declares them), one for the rest).  ``probe_metrics``
    (:class:`medtl.stats.robustness.ProbeMetrics`) flattens an older robustness file's per-run
    records (:func:`medtl.probes.registry.probe_metrics`)."""
    kind = doc.get("kind")
    if "study" in doc and "compare" in doc:  # study.json
        study = doc["study"]
        cfg = study.get("config") or {}
        primary = list(primary if primary is not None else cfg.get("primary") or [])
        margin = margin if margin is not None else cfg.get("margin")
        alpha = alpha or (cfg.get("compare") or {}).get("alpha", 0.05)
        pp = cfg.get("primary_pairs")
        if pp is not None:
            from .compare import parse_pair

            pp = [parse_pair(t) for t in pp]
        pairs = _compare_pairs(doc["compare"], primary, margin, alpha, pp)
        if doc.get("robustness"):
            pairs += _robustness_pairs(doc["robustness"], primary, margin, alpha, probe_metrics, pp)
    elif kind == "medtl.compare" or ("by_metric" in doc and "metrics" in doc):
        primary = list(primary if primary is not None else doc.get("primary") or [])
        margin = margin if margin is not None else doc.get("margin")
        alpha = alpha or doc.get("alpha", 0.05)
        pairs = _compare_pairs(doc, primary, margin, alpha)
    elif "runs" in doc and "arms" in doc:  # robustness.json
        primary, alpha = list(primary or []), alpha or 0.05
        pairs = _robustness_pairs(doc, primary, margin, alpha, probe_metrics)
    else:
        raise ValueError("not a compare, robustness or study record")
    conclude(pairs, alpha=alpha, margin=margin)
    return pairs
