"""Patient-level, stratified, seeded hold-out splits (no patient in two splits)."""
from __future__ import annotations

import warnings

import numpy as np

from ..errors import DataError


def strata(labels: np.ndarray) -> np.ndarray:
    """Stratification target: the class for single-label, 'any positive' for multi-label."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return (labels > 0.5).any(axis=1).astype(np.int64)
    return labels.astype(np.int64)


def holdout(labels: np.ndarray, patients: np.ndarray, fraction: float, seed: int,
            what: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (keep, held) with about ``fraction`` of images held out.

    StratifiedGroupKFold(n_splits=round(1/fraction), shuffle=True, random_state=seed); the
    first fold is held out.  Patients never straddle the two parts.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    n = len(patients)
    y = strata(labels)
    groups = np.asarray([str(p) for p in patients], dtype=object)
    n_groups = len(set(groups.tolist()))
    k = max(2, int(round(1.0 / fraction)))
    if n_groups < 2:
        raise DataError(f"{what}: only {n_groups} patient(s); cannot make a patient-level split")
    k = min(k, n_groups, int(np.bincount(y).max()))  # tiny data: fewer folds (sklearn's limits)
    if k < 2:
        raise DataError(f"{what}: too few images per class to make a stratified split")
    # sklearn needs the group labels as something sortable; map to ints
    _, gid = np.unique(groups.astype(str), return_inverse=True)
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=int(seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only ..."
        keep, held = next(cv.split(np.zeros(n), y, gid))
    return np.sort(keep), np.sort(held)
