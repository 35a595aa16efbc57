"""Clinical operating points and decision curves, as small pure functions over numpy arrays.

* **Sensitivity at fixed specificity** (and specificity at fixed sensitivity), two ways, named
  apart everywhere:
  - ``sens_at_spec95``: the threshold is fixed on **val** (the lowest threshold whose val
    specificity is at least 0.95) and read on **test**, as a deployed model would be; the test
    specificity at that threshold is recorded beside it and may fall short of 0.95;
  - ``achieved_spec_spec95``: the test specificity that val's rule actually gives (and
    ``achieved_sens_sens95`` for the converse): read it beside ``sens_at_spec95``, since a rule fixed
    on one split can miss its target on another;
  - ``sens_at_spec95_direct``: read off the **test** ROC curve itself (the best sensitivity among
    thresholds with test specificity >= 0.95): optimistic, since the threshold saw the test labels.
* **Net benefit** (Vickers & Elkin, Med Decis Making 2006): treating the cases with p >= pt is
  worth ``NB(pt) = TP/n - FP/n * pt / (1 - pt)``; treat-all is ``prev - (1 - prev) pt / (1 - pt)``
  and treat-none is 0.  ``net_benefit_10`` is NB at pt = 0.10.  The probabilities are the run's
  own (uncalibrated) outputs: a decision curve also tests calibration.

Both are fixed-threshold proportions or means of per-case terms, so their intervals over seeds
and test cases come from :mod:`medtl.stats.hierarchical` as accuracy's do.  Written here because
scikit-learn gives the ROC curve but neither the constrained operating points nor net benefit.
"""
from __future__ import annotations

import math

import numpy as np

TARGETS = (0.90, 0.95)
NB_POINTS = (0.05, 0.10, 0.20, 0.30, 0.50)   # the threshold probabilities with a scalar metric
CURVE = tuple(round(x, 2) for x in np.arange(0.01, 0.81, 0.01))  # the decision curve's grid


def _pct(x: float) -> str:
    return f"{int(round(x * 100)):02d}"


def op_names() -> list[str]:
    """The scalar metric names this module adds to a binary run's test metrics."""
    out = []
    for t in TARGETS:
        out += [f"sens_at_spec{_pct(t)}", f"spec_at_sens{_pct(t)}"]
    achieved = [f"achieved_spec_spec{_pct(t)}" for t in TARGETS] + [f"achieved_sens_sens{_pct(t)}" for t in TARGETS]
    return out + achieved + [f"{n}_direct" for n in out] + [f"net_benefit_{_pct(pt)}" for pt in NB_POINTS]


def _clean(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(int).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    return y, p


def threshold_for_specificity(y, p, target: float) -> float:
    """The lowest threshold t (predict positive when p >= t) whose specificity on (y, p) is at
    least ``target``: the most sensitive such rule.  NaN without negatives."""
    y, p = _clean(y, p)
    neg = np.sort(p[y == 0])
    if not neg.size:
        return float("nan")
    # specificity at t = #(neg < t) / n_neg; need #(neg < t) >= k
    k = int(math.ceil(target * neg.size - 1e-9))
    if k <= 0:
        return float(np.nextafter(neg[0], -np.inf)) if neg.size else float("nan")
    return float(np.nextafter(neg[k - 1], np.inf))  # just above the k-th lowest negative score


def threshold_for_sensitivity(y, p, target: float) -> float:
    """The highest threshold t whose sensitivity on (y, p) is at least ``target``: the most
    specific such rule.  NaN without positives."""
    y, p = _clean(y, p)
    pos = np.sort(p[y == 1])[::-1]
    if not pos.size:
        return float("nan")
    k = max(1, int(math.ceil(target * pos.size - 1e-9)))  # need #(pos >= t) >= k
    return float(pos[k - 1])


def rates(y, p, threshold: float) -> tuple[float, float]:
    """(sensitivity, specificity) of the rule p >= threshold; NaN where a class is absent."""
    y, p = _clean(y, p)
    if not math.isfinite(threshold):
        return float("nan"), float("nan")
    pred = p >= threshold
    pos, neg = y == 1, y == 0
    sens = float(pred[pos].mean()) if pos.any() else float("nan")
    spec = float((~pred[neg]).mean()) if neg.any() else float("nan")
    return sens, spec


def op_thresholds(val_y, val_p) -> dict[str, float]:
    """``{"spec90": t, "spec95": t, "sens90": t, "sens95": t}`` fixed on val."""
    out = {}
    for t in TARGETS:
        out[f"spec{_pct(t)}"] = threshold_for_specificity(val_y, val_p, t)
        out[f"sens{_pct(t)}"] = threshold_for_sensitivity(val_y, val_p, t)
    return out


def net_benefit(y, p, pt: float) -> float:
    """Net benefit of treating the cases with p >= pt."""
    return float(net_benefit_terms(y, p, pt).mean()) if len(np.asarray(y)) else float("nan")


def net_benefit_terms(y, p, pt: float) -> np.ndarray:
    """Per-case terms whose mean is the net benefit: 1 for a true positive, -pt/(1-pt) for a
    false positive, 0 otherwise."""
    y, p = _clean(y, p)
    treat = p >= pt
    return np.where(treat & (y == 1), 1.0, 0.0) - np.where(treat & (y == 0), pt / (1.0 - pt), 0.0)


def treat_all(y, pt: float) -> float:
    y = np.asarray(y).astype(int).ravel()
    prev = float(y.mean()) if y.size else float("nan")
    return prev - (1 - prev) * pt / (1 - pt)


def operating_points(val_y, val_p, test_y, test_p) -> dict:
    """Every operating point and decision-curve value of a binary run: the flat scalars of
    :func:`op_names` plus ``operating_points`` (threshold, test sensitivity and specificity per
    val-fixed rule) and ``decision_curve`` (model, treat-all on :data:`CURVE`)."""
    ty, tp = _clean(test_y, test_p)
    thr = op_thresholds(val_y, val_p)
    out: dict = {}
    ops = {}
    for t in TARGETS:
        s = _pct(t)
        sens, spec = rates(ty, tp, thr[f"spec{s}"])
        out[f"sens_at_spec{s}"] = sens
        out[f"achieved_spec_spec{s}"] = spec  # what the val-fixed rule gives on test: may miss the target
        ops[f"spec{s}"] = {"threshold": thr[f"spec{s}"], "sensitivity": sens, "specificity": spec,
                           "rule": f"lowest threshold with val specificity >= {t:.2f}"}
        sens2, spec2 = rates(ty, tp, thr[f"sens{s}"])
        out[f"spec_at_sens{s}"] = spec2
        out[f"achieved_sens_sens{s}"] = sens2
        ops[f"sens{s}"] = {"threshold": thr[f"sens{s}"], "sensitivity": sens2, "specificity": spec2,
                           "rule": f"highest threshold with val sensitivity >= {t:.2f}"}
        out[f"sens_at_spec{s}_direct"] = rates(ty, tp, threshold_for_specificity(ty, tp, t))[0]
        out[f"spec_at_sens{s}_direct"] = rates(ty, tp, threshold_for_sensitivity(ty, tp, t))[1]
    for pt in NB_POINTS:
        out[f"net_benefit_{_pct(pt)}"] = net_benefit(ty, tp, pt)
    out["operating_points"] = ops
    out["decision_curve"] = {"pt": list(CURVE), "model": [net_benefit(ty, tp, pt) for pt in CURVE],
                             "treat_all": [treat_all(ty, pt) for pt in CURVE], "treat_none": 0.0,
                             "prevalence": float(ty.mean()) if ty.size else float("nan")}
    return out


def operating_points_multilabel(val_y, val_p, test_y, test_p, labels) -> dict:
    """Per label, :func:`operating_points` of that label's column (``per_class``, without the
    curves), and the macro mean of each scalar over the labels where it is defined."""
    vy, vp, ty, tp = (np.asarray(a) for a in (val_y, val_p, test_y, test_p))
    per = {}
    for k, name in enumerate(labels):
        res = operating_points(vy[:, k], vp[:, k], ty[:, k], tp[:, k])
        per[str(name)] = {n: res[n] for n in op_names()} | {"operating_points": res["operating_points"]}
    out: dict = {"operating_points_per_class": per}
    for n in op_names():
        vals = [v[n] for v in per.values() if v[n] is not None and math.isfinite(v[n])]
        out[n] = float(np.mean(vals)) if vals else float("nan")
    return out


def operating_points_one_vs_rest(val_y, val_p, test_y, test_p, classes) -> dict:
    """A multi-class run read one class against the rest (a clinician's "is it viral?"): integer
    labels and (n, K) probabilities, :func:`operating_points_multilabel` on the one-hot labels
    (per class, without the curves, and the macro means)."""
    k = len(classes)
    onehot = lambda y: np.eye(k, dtype=np.int64)[np.asarray(y, dtype=np.int64)]  # noqa: E731
    return operating_points_multilabel(onehot(val_y), val_p, onehot(test_y), test_p, classes)


__all__ = ["operating_points_multilabel", "operating_points_one_vs_rest", "CURVE", "NB_POINTS", "TARGETS", "net_benefit", "net_benefit_terms", "op_names", "op_thresholds",
           "operating_points", "rates", "threshold_for_sensitivity", "threshold_for_specificity", "treat_all"]
