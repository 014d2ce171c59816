"""Statistics of the study, in NumPy (SciPy is not a dependency of the
examples): Spearman's rank correlation and its permutation p-value, the
mean and spread over seeds, and the verdict of a paired t interval."""

import math

import numpy as np


def _ranks(values):
    """Average ranks (ties share the mean rank), as Spearman needs."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x, y):
    """Spearman's rank correlation (Pearson's on average ranks)."""
    if len(x) != len(y) or len(x) < 2:
        return float("nan")
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float(np.sum(rx * rx) * np.sum(ry * ry)))
    return float(np.sum(rx * ry) / denominator) if denominator else float("nan")


def permutation_p_value(x, y, rounds=2000, seed=0):
    """Two-sided p-value of a Spearman correlation by permutation."""
    observed = spearman(x, y)
    if not np.isfinite(observed):
        return float("nan")
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=float)
    hits = sum(
        abs(spearman(x, rng.permutation(y))) >= abs(observed) - 1e-12
        for _ in range(rounds)
    )
    return (hits + 1) / (rounds + 1)


def mean_std(values):
    """Mean and sample standard deviation (0 for a single value)."""
    values = np.asarray(values, dtype=float)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), std


# Two-sided 95% Student t quantiles by degrees of freedom (SciPy is not
# a dependency of the examples); 1.96 beyond the table.
T_95 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    15: 2.131,
    20: 2.086,
    30: 2.042,
}


def t_quantile(degrees):
    """The 97.5% quantile of Student's t (the nearest tabled df below)."""
    known = [d for d in sorted(T_95) if d <= degrees]
    return T_95[known[-1]] if degrees <= 30 else 1.96


def verdict(mean, std, count, expected_sign):
    """`reproduces`, `opposite` or `within noise`: whether the 95% t
    interval of the paired differences excludes 0, and on which side.
    `expected_sign` 0 (no claim to test): `variant higher` or `lower`."""
    if count < 2:
        return "one seed: no verdict"
    half_width = t_quantile(count - 1) * std / math.sqrt(count)
    if abs(mean) <= half_width or mean == 0:
        return "within noise"
    if expected_sign == 0:
        return "variant higher" if mean > 0 else "variant lower"
    return (
        "reproduces" if math.copysign(1, mean) == expected_sign else "opposite"
    )
