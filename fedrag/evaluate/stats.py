r"""Uncertainty of a comparison on a finite test set: bootstrap confidence intervals,
a paired difference's verdict against an equivalence margin, and the test size that
would settle it.

Every statistic here is computed from per-question scores (one value per test
question, the same questions for every strategy), so differences are *paired*: the
question-to-question variation that all strategies share cancels out.

* [`bootstrap_ci`][bootstrap_ci]: percentile interval of the mean over `B` resamples of the
  questions (Efron & Tibshirani 1993, §13.3).
* [`paired_diff_ci`][paired_diff_ci]: the same for `mean(b) - mean(a)`, resampling questions jointly.
* [`verdict`][verdict]: `equivalent` when the difference's CI lies inside `±margin`
  (two one-sided tests at level α/2 each, Schuirmann 1987), `different` when it
  excludes 0, else `inconclusive`.
* [`questions_needed`][questions_needed]: $n = \lceil (z_{1-\alpha/2} + z_{1-\beta})^2
  \sigma_d^2 / \Delta^2 \rceil$, the paired test size with power $1-\beta$ to
  detect a difference of `margin` given the per-question standard deviation
  $\sigma_d$ of the observed differences (the normal-approximation formula of
  any sample-size table, e.g. Chow, Shao & Wang 2008, §3.1).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Literal, Sequence

import numpy as np

Verdict = Literal["equivalent", "different", "inconclusive"]


def bootstrap_ci(values: Sequence[float], level: float = 0.95, resamples: int = 2000, seed: int = 0) -> list[float]:
    """`[low, high]`: the percentile bootstrap CI of the mean of `values`."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return [math.nan, math.nan]
    idx = np.random.default_rng(seed).integers(0, x.size, size=(resamples, x.size))
    means = x[idx].mean(axis=1)
    tail = (1 - level) / 2
    return [float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))]


def paired_diff_ci(
    a: Sequence[float], b: Sequence[float], level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> list[float]:
    """`[low, high]`: the bootstrap CI of `mean(b) - mean(a)` over the same questions."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need the same questions: {len(a)} vs {len(b)}")
    return bootstrap_ci(np.asarray(b, dtype=float) - np.asarray(a, dtype=float), level, resamples, seed)


def verdict(diff_ci: Sequence[float], margin: float) -> Verdict:
    """`equivalent` (CI inside ±margin), `different` (CI excludes 0) or `inconclusive`."""
    low, high = diff_ci
    if -margin < low and high < margin:
        return "equivalent"
    if low > 0 or high < 0:
        return "different"
    return "inconclusive"


def questions_needed(differences: Sequence[float], margin: float, power: float = 0.8, alpha: float = 0.05) -> int | None:
    """Paired test size that detects a difference of `margin` with `power` at two-sided
    level `alpha`, from the per-question differences' standard deviation (None when
    they do not vary: no test size is informative then)."""
    d = np.asarray(differences, dtype=float)
    if d.size < 2:
        return None
    sd = float(d.std(ddof=1))
    if sd < 1e-12 or margin <= 0:  # constant differences (float noise aside)
        return None
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return math.ceil((z * sd / margin) ** 2)
