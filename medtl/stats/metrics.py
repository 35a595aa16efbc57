"""Classification metrics as small pure functions over numpy arrays (scikit-learn style).

AUC comes from scikit-learn; the operating threshold is chosen on the validation split and
then applied unchanged to the test split, so test metrics never peek at test labels.
"""
from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC; NaN where undefined (one class only).

    ``score``: a 1-D score of the positive class; or probabilities (n, C): for C = 2 the AUC of
    column 1, for C > 2 the macro one-vs-rest AUC over all C classes.
    """
    y = np.asarray(y)
    score = np.asarray(score)
    if len(np.unique(y)) < 2:
        return float("nan")
    if score.ndim == 2 and score.shape[1] == 2:
        score = score[:, 1]
    if score.ndim == 1:
        return float(roc_auc_score(y, score))
    try:
        return float(roc_auc_score(y, score, multi_class="ovr", average="macro", labels=np.arange(score.shape[1])))
    except ValueError:  # a class missing from y
        return float("nan")


def choose_threshold(y: np.ndarray, p: np.ndarray, rule: str = "youden") -> float:
    """Threshold on the positive-class probability, chosen on validation data.

    ``youden`` maximises sensitivity + specificity - 1 (equivalently balanced accuracy);
    ``0.5`` is the fixed default.  Ties go to the threshold closest to 0.5.
    """
    if rule == "0.5" or len(np.unique(y)) < 2:
        return 0.5
    if rule not in ("youden", "balanced_acc"):
        raise ValueError(f"unknown threshold rule {rule!r}")
    fpr, tpr, thr = roc_curve(y, p)
    j = tpr - fpr
    finite = np.isfinite(thr)
    j, thr = j[finite], thr[finite]
    best = j.max()
    cands = thr[np.isclose(j, best)]
    return float(cands[np.argmin(np.abs(cands - 0.5))])


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict:
    """AUC, accuracy, sensitivity, specificity at ``threshold`` (predict 1 when p >= t)."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    pred = (p >= threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    pos, neg = tp + fn, tn + fp
    return {
        "auc": auc(y, p),
        "acc": (tp + tn) / max(len(y), 1),
        "sensitivity": tp / pos if pos else float("nan"),
        "specificity": tn / neg if neg else float("nan"),
        "balanced_acc": (tp / pos + tn / neg) / 2 if pos and neg else float("nan"),
        "acc_at_0.5": float(((p >= 0.5).astype(int) == y).mean()) if len(y) else float("nan"),
        "n": int(len(y)),
        "n_pos": int(pos),
        "tp": tp, "tn": tn, "fp": fp, "fn": fn,
    }


def multiclass_metrics(y: np.ndarray, prob: np.ndarray, classes: list[str] | None = None) -> dict:
    y = np.asarray(y).astype(int)
    pred = prob.argmax(1)
    out = {"auc": auc(y, prob), "acc": float((pred == y).mean()) if len(y) else float("nan"), "n": int(len(y))}
    if classes is not None:  # each class against the rest (NaN where a class is absent or alone)
        out["auc_per_class"] = {str(c): auc((y == k).astype(int), prob[:, k]) for k, c in enumerate(classes)}
    return out


def multilabel_metrics(y: np.ndarray, prob: np.ndarray, classes: list[str]) -> dict:
    """Per-class AUC and their macro mean (classes without both labels are left out)."""
    per = {}
    for j, c in enumerate(classes):
        per[c] = auc(y[:, j], prob[:, j])
    valid = [v for v in per.values() if not math.isnan(v)]
    macro = float(np.mean(valid)) if valid else float("nan")
    return {"auc": macro, "auc_macro": macro, "auc_per_class": per, "n": int(len(y))}

