"""Calibration of predicted probabilities: expected calibration error (equal-width and
equal-mass bins), maximum calibration error, Brier score, negative log-likelihood, the data of a
reliability diagram, and temperature scaling fitted on validation NLL.

Binary runs are judged on the positive-class probability (a reliability diagram of P(y = 1));
multi-class runs on the top label (confidence = max probability, outcome = argmax is right),
except Brier and NLL, which use the whole probability vector.

What comes from libraries and what is written here, and why:

* the reliability curve (observed frequency and mean prediction per non-empty bin) is
  :func:`sklearn.calibration.calibration_curve` (``strategy="uniform"``: equal-width bins,
  ``"quantile"``: equal-mass bins);
* Brier score: :func:`sklearn.metrics.brier_score_loss`; NLL: :func:`sklearn.metrics.log_loss`;
* the temperature is found by :func:`scipy.optimize.minimize_scalar` (bounded, on log T).

Hand-written: (1) the per-bin *counts*: ``calibration_curve`` does not return them and ECE needs
them as weights, so they are recomputed with exactly its binning (``np.searchsorted`` on the
inner edges; a test checks the two agree); (2) ECE and MCE themselves, a count-weighted mean and
the maximum of |observed - predicted| over those bins (neither torchmetrics nor MONAI, which
have one, is a dependency of medtl); (3) the NLL objective of temperature scaling, computed from
*logits* with a stable log-sigmoid / log-softmax, because ``log_loss`` takes probabilities,
which saturate at 0 and 1 for large logits and would flatten the objective.

Temperature scaling (Guo et al. 2017) divides the logits by one scalar T > 0.  For a binary
run the positive-class probability is a monotone function of the logit margin, so the ranking of
the cases and hence the AUC are unchanged (computed here from the scaled margin, which keeps the
order exactly).  For a multi-class run that does not hold in general: one class's softmax
probability depends on all the other logits, so its ranking across cases, and the one-vs-rest
AUC, can change with T (only each case's arg-max, hence accuracy, is kept); ``temp_scaled.auc``
is then the AUC of the scaled probabilities.
"""
from __future__ import annotations

import math

import numpy as np

DEFAULT_BINS = 10
T_BOUNDS = (0.02, 50.0)
METHOD = ("temperature scaling: logits / T with one scalar T > 0 minimising the validation NLL "
          "(scipy.optimize.minimize_scalar, bounded, on log T)")


def _as_binary_or_top_label(y: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(outcome 0/1, probability) for the reliability diagram: the positive class of a binary
    problem (``prob`` 1-D, or (n, 2)), the top label of a multi-class one."""
    y = np.asarray(y).astype(int).ravel()
    prob = np.asarray(prob, dtype=np.float64)
    if prob.ndim == 2 and prob.shape[1] == 2:
        prob = prob[:, 1]
    if prob.ndim == 1:
        return y, np.clip(prob, 0.0, 1.0)
    conf = prob.max(1)
    return (prob.argmax(1) == y).astype(int), np.clip(conf, 0.0, 1.0)


def _edges(p: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    # the same edges as sklearn.calibration.calibration_curve
    if strategy == "quantile":
        return np.percentile(p, np.linspace(0, 1, n_bins + 1) * 100)
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    raise ValueError(f"strategy must be 'uniform' or 'quantile' (got {strategy!r})")


def reliability(y, prob, n_bins: int = DEFAULT_BINS, strategy: str = "uniform") -> dict:
    """Per-bin data of a reliability diagram plus ECE and MCE.

    Returns ``{"strategy", "n_bins", "bin_lower", "bin_upper", "count", "mean_predicted",
    "observed", "ece", "mce"}``; the lists have one entry per bin (NaN for empty bins), so the
    diagrams of several runs with equal-width bins line up bin by bin."""
    from sklearn.calibration import calibration_curve

    y, p = _as_binary_or_top_label(y, prob)
    nan = float("nan")
    if p.size == 0:
        return {"strategy": strategy, "n_bins": n_bins, "bin_lower": [], "bin_upper": [], "count": [],
                "mean_predicted": [], "observed": [], "ece": nan, "mce": nan}
    edges = _edges(p, n_bins, strategy)
    binids = np.searchsorted(edges[1:-1], p)
    count = np.bincount(binids, minlength=n_bins)
    nonzero = count != 0
    observed, predicted = calibration_curve(y, p, n_bins=n_bins, strategy=strategy, pos_label=1)
    obs_full = np.full(n_bins, nan)
    pred_full = np.full(n_bins, nan)
    obs_full[nonzero], pred_full[nonzero] = observed, predicted
    gap = np.abs(observed - predicted)
    return {"strategy": strategy, "n_bins": int(n_bins), "bin_lower": edges[:-1].tolist(),
            "bin_upper": edges[1:].tolist(), "count": count.astype(int).tolist(),
            "mean_predicted": pred_full.tolist(), "observed": obs_full.tolist(),
            "ece": float(np.sum(count[nonzero] * gap) / p.size), "mce": float(gap.max())}


def ece(y, prob, n_bins: int = DEFAULT_BINS, strategy: str = "uniform") -> float:
    """Expected calibration error: sum over bins of (n_bin / n) * |observed - mean predicted|."""
    return reliability(y, prob, n_bins, strategy)["ece"]


def _labels_and_probs(y, prob) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(labels, probabilities, class list) for the scikit-learn scores: a binary problem as the
    positive-class probability (1-D, or (n, 2) reduced to its column 1), clipped to [0, 1]."""
    y = np.asarray(y).astype(int).ravel()
    prob = np.asarray(prob, dtype=np.float64)
    if prob.ndim == 2 and prob.shape[1] == 2:
        prob = prob[:, 1]
    labels = [0, 1] if prob.ndim == 1 else list(range(prob.shape[1]))
    prob = np.clip(prob, 0.0, 1.0)
    if prob.ndim == 2:  # float32 softmax rows sum to 1 only to ~1e-7, which scikit-learn warns about
        prob = prob / np.maximum(prob.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
    return y, prob, labels


def brier(y, prob) -> float:
    """Brier score: mean squared error of the probabilities (multi-class: summed over classes)."""
    from sklearn.metrics import brier_score_loss

    y, prob, labels = _labels_and_probs(y, prob)
    if y.size == 0:
        return float("nan")
    if prob.ndim == 1:
        return float(brier_score_loss(y, prob, pos_label=1, labels=labels))
    return float(brier_score_loss(y, prob, labels=labels))


def nll(y, prob) -> float:
    """Mean negative log-likelihood of the labels (natural log; probabilities clipped by scikit-learn)."""
    from sklearn.metrics import log_loss

    y, prob, labels = _labels_and_probs(y, prob)
    if y.size == 0:
        return float("nan")
    return float(log_loss(y, prob, labels=labels))


def calibration_metrics(y, prob, n_bins: int = DEFAULT_BINS) -> dict:
    """ECE (equal-width and equal-mass bins), MCE (equal-width), Brier, NLL and the equal-width
    reliability-diagram data, as one JSON-ready dict (NaN where undefined)."""
    rel = reliability(y, prob, n_bins, "uniform")
    mass = reliability(y, prob, n_bins, "quantile")
    return {"ece": rel["ece"], "ece_equal_mass": mass["ece"], "mce": rel["mce"], "brier": brier(y, prob),
            "nll": nll(y, prob), "calibration_bins": int(n_bins),
            "reliability": {k: rel[k] for k in ("bin_lower", "bin_upper", "count", "mean_predicted", "observed")}}


# --------------------------------------------------------------------------------------------
# temperature scaling


def binary_margin(logits) -> np.ndarray:
    """The logit of the positive class of a 2-output model: z1 - z0 (its sigmoid is softmax's p1)."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 2 and z.shape[1] == 2:
        return z[:, 1] - z[:, 0]
    return z.ravel() if z.ndim <= 1 else z


def scaled_probs(logits, temperature: float) -> np.ndarray:
    """Probabilities of ``logits / T``: sigmoid for a 1-D binary margin, softmax for (n, C)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    if z.ndim == 1:
        out = np.empty_like(z)
        pos = z >= 0
        out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
        e = np.exp(z[~pos])
        out[~pos] = e / (1.0 + e)
        return out
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _nll_at(y: np.ndarray, z: np.ndarray, temperature: float) -> float:
    """Mean NLL of labels ``y`` under ``z / T`` (stable log-sigmoid / log-softmax)."""
    s = z / temperature
    if s.ndim == 1:
        # -log sigmoid(s) for y = 1, -log sigmoid(-s) for y = 0: softplus(-+s)
        signed = np.where(y == 1, -s, s)
        return float(np.mean(np.logaddexp(0.0, signed)))
    lse = np.logaddexp.reduce(s, axis=1)
    return float(np.mean(lse - s[np.arange(len(y)), y]))


def fit_temperature(y, logits, bounds: tuple[float, float] = T_BOUNDS) -> float:
    """The temperature T minimising the NLL of ``y`` under ``logits / T`` (1-D binary margin or
    (n, C) logits); 1.0 when there is nothing to fit (no cases, or a single class)."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(y).astype(int).ravel()
    z = binary_margin(logits)
    if y.size == 0 or np.unique(y).size < 2 or not np.isfinite(z).all():
        return 1.0
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    res = minimize_scalar(lambda t: _nll_at(y, z, math.exp(t)), bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-6})
    return float(math.exp(res.x))


def temperature_record(y_val, logits_val) -> dict:
    """The temperature fitted on validation (``y_val``, ``logits_val``) as a run records it: the
    value, where it was fitted, the method, its bounds and whether it stopped at one (a fit at a
    bound means the search range, not the data, set T)."""
    t = fit_temperature(y_val, logits_val)
    lo, hi = T_BOUNDS
    return {"temperature": t, "fitted_on": "val", "n_val": int(np.asarray(y_val).size), "method": METHOD,
            "bounds": [lo, hi], "at_bound": bool(t <= lo * 1.001 or t >= hi / 1.001)}


def temperature_scaled(y, logits, temperature: float, n_bins: int = DEFAULT_BINS) -> dict:
    """Calibration metrics after dividing ``logits`` by ``temperature``, with the AUC of the
    scaled scores and the temperature.  Binary: the AUC equals the unscaled one (the margin's
    order is kept).  Multi-class: the one-vs-rest AUC of the scaled softmax, which can differ
    from the unscaled one (see the module docstring)."""
    from .metrics import auc

    z = binary_margin(logits)
    prob = scaled_probs(z, temperature)
    out = calibration_metrics(y, prob, n_bins)
    score = z / float(temperature) if z.ndim == 1 else prob
    return {"temperature": float(temperature), **out, "auc": auc(np.asarray(y).astype(int), score)}
