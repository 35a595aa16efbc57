"""Coverage of medtl's intervals, by simulation at realistic settings (``scripts/coverage_sim.py``).

One simulated study: a test set of ``n_pos`` positive and ``n_neg`` negative cases is drawn from
the population; each of two arms trains ``m`` seeds.  Arm ``k``'s seed ``j`` scores case ``i`` as

    s = (d_k + u_kj) * y_i + z_i + e_kij

``z_i ~ N(0, var_case)`` is the case's difficulty (shared by every seed and both arms: the arms
see the same patients), ``u_kj ~ N(0, sd_seed^2)`` the seed's quality (the two arms' seed j are
correlated ``rho_seed``: same data order and initial draw), and ``e_kij ~ N(0, var_inter)`` the
run's own error on that case, independent for each arm and seed.  With ``var_case + var_inter =
1`` a run's population AUC is ``Phi((d + u) / sqrt(2))``.

Two estimands, two intervals:

* **seeds + cases** (``fraction = 1``): the population AUC averaged over seeds,
  ``E_u Phi((d + u) / sqrt 2)`` (Gauss-Hermite), and its difference between the arms;
* **seeds only** (``fraction = 0``): the expected AUC over seeds *on this test set*,
  ``mean_{i pos, k neg} Phi((d + z_i - z_k) / sqrt(sd_seed^2 + 2 var_inter))`` -- exact, since
  only u and e vary -- and its difference.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from .hierarchical import RunPredictions, diff_ci, mean_ci


@dataclass
class Setting:
    n_pos: int = 390          # PneumoniaMNIST's / Kermany's test split: 390 pneumonia, 234 normal
    n_neg: int = 234
    d_a: float = 2.475        # AUC of a run at u = 0: Phi(2.475 / sqrt 2) = 0.960
    d_b: float = 2.375        # arm b a little worse (about -0.006 AUC)
    sd_seed: float = 0.10     # seed-to-seed sd of d (about 0.006 AUC)
    rho_seed: float = 0.3
    var_inter: float = 0.3    # each run's own per-case error
    var_case: float = 0.7     # case difficulty shared by all runs


def population_auc(d: float, s: Setting) -> float:
    """``E_u Phi((d + u) / sqrt(2 (var_case + var_inter)))`` by Gauss-Hermite quadrature."""
    x, w = np.polynomial.hermite_e.hermegauss(60)
    scale = np.sqrt(2.0 * (s.var_case + s.var_inter))
    return float(np.sum(w * stats.norm.cdf((d + s.sd_seed * x) / scale)) / np.sqrt(2 * np.pi))


def conditional_auc(d: float, z_pos: np.ndarray, z_neg: np.ndarray, s: Setting) -> float:
    """Expected AUC over seeds on this test set (only u and e vary)."""
    scale = np.sqrt(s.sd_seed ** 2 + 2.0 * s.var_inter)
    return float(stats.norm.cdf((d + z_pos[:, None] - z_neg[None, :]) / scale).mean())


def one_study(rng: np.random.Generator, m: int, s: Setting) -> tuple[list, list, np.ndarray, np.ndarray]:
    y = np.r_[np.ones(s.n_pos, int), np.zeros(s.n_neg, int)]
    z = rng.normal(0.0, np.sqrt(s.var_case), y.size)
    ua = rng.normal(0.0, s.sd_seed, m)
    ub = s.rho_seed * ua + np.sqrt(1 - s.rho_seed ** 2) * rng.normal(0.0, s.sd_seed, m)
    runs = []
    for d, u in ((s.d_a, ua), (s.d_b, ub)):
        e = rng.normal(0.0, np.sqrt(s.var_inter), (m, y.size))
        runs.append([RunPredictions(y, (d + u[j]) * y + z + e[j]) for j in range(m)])
    return runs[0], runs[1], z[y == 1], z[y == 0]


def coverage(m: int, reps: int, seed: int = 0, s: Setting | None = None, confidence: float = 0.95) -> dict:
    """Coverage of the four intervals (mean of arm a and difference a - b; seeds + cases and seeds
    only) over ``reps`` simulated studies with ``m`` seeds per arm, with each coverage's binomial
    standard error and the mean interval widths."""
    s = s or Setting()
    rng = np.random.default_rng([seed, m])
    pop_a, pop_b = population_auc(s.d_a, s), population_auc(s.d_b, s)
    hits = {k: 0 for k in ("mean_seeds_cases", "diff_seeds_cases", "mean_seeds", "diff_seeds")}
    width = {k: 0.0 for k in hits}
    for _ in range(reps):
        a, b, zp, zn = one_study(rng, m, s)
        cond_a, cond_b = conditional_auc(s.d_a, zp, zn, s), conditional_auc(s.d_b, zp, zn, s)
        for key, res, truth in (
                ("mean_seeds_cases", mean_ci(a, "auc", confidence=confidence), pop_a),
                ("diff_seeds_cases", diff_ci(a, b, "auc", confidence=confidence), pop_a - pop_b),
                ("mean_seeds", mean_ci(a, "auc", confidence=confidence, fraction=0.0), cond_a),
                ("diff_seeds", diff_ci(a, b, "auc", confidence=confidence, fraction=0.0), cond_a - cond_b)):
            hits[key] += res["ci_low"] <= truth <= res["ci_high"]
            width[key] += (res["ci_high"] - res["ci_low"]) / reps
    cov = {k: v / reps for k, v in hits.items()}
    return {"m": m, "reps": reps, "confidence": confidence, "coverage": cov,
            "se": {k: float(np.sqrt(c * (1 - c) / reps)) for k, c in cov.items()}, "mean_width": width,
            "population_auc": {"a": pop_a, "b": pop_b}, "setting": asdict(s)}
