"""McNemar's test between two classifiers' predictions on the same test set, without scipy.

Only the discordant test images matter: b = images run A classifies correctly and run B does not, c = the reverse.
Under the null hypothesis (both runs have the same error rate) each discordant image is equally likely to fall on
either side, so b ~ Binomial(b + c, 1/2).

* b + c < 25: the exact two-sided binomial test, p = min(1, 2 * P(X <= min(b, c))); the statistic reported is
  min(b, c).
* otherwise: the chi-square approximation with Edwards' continuity correction,
  chi2 = max(|b - c| - 1, 0)^2 / (b + c), 1 degree of freedom, p = P(chi2_1 >= chi2) = erfc(sqrt(chi2 / 2)).
"""

import dataclasses
import math

import numpy as np

EXACT_BELOW = 25  # b + c below this: exact binomial test; from this on: chi-square with continuity correction
EXACT = "exact binomial"
CHI_SQUARE = "chi-square, continuity-corrected"


@dataclasses.dataclass(frozen=True)
class McNemar:
    b: int              # run A right, run B wrong
    c: int              # run A wrong, run B right
    statistic: float    # min(b, c) for the exact test, chi-square for the approximation
    p_value: float
    method: str         # EXACT or CHI_SQUARE


def mcnemar(b, c):
    """McNemar's test from the two discordant counts (see the module docstring)."""
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be non-negative, got b={b}, c={c}")
    n = b + c
    if n < EXACT_BELOW:
        k = min(b, c)
        tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n  # exact: integers up to 2**24
        return McNemar(b, c, float(k), min(1.0, 2.0 * tail), EXACT)
    statistic = max(abs(b - c) - 1, 0) ** 2 / n
    return McNemar(b, c, statistic, chi2_1_survival(statistic), CHI_SQUARE)


def chi2_1_survival(x):
    """P(X >= x) for X ~ chi-square with 1 degree of freedom: X = Z^2, so it is P(|Z| >= sqrt(x))."""
    return math.erfc(math.sqrt(x / 2.0)) if x > 0 else 1.0


@dataclasses.dataclass(frozen=True)
class Agreement:
    """How two runs' test predictions split the test set (the 2x2 table McNemar's test reads)."""
    both_right: int
    only_a_right: int   # b
    only_b_right: int   # c
    both_wrong: int

    def test(self):
        return mcnemar(self.only_a_right, self.only_b_right)


def agreement(predicted_a, predicted_b, labels):
    right_a = np.asarray(predicted_a) == np.asarray(labels)
    right_b = np.asarray(predicted_b) == np.asarray(labels)
    return Agreement(both_right=int(np.sum(right_a & right_b)), only_a_right=int(np.sum(right_a & ~right_b)),
                     only_b_right=int(np.sum(~right_a & right_b)), both_wrong=int(np.sum(~right_a & ~right_b)))


def holm(p_values):
    """Holm-Bonferroni adjusted p-values (same order as given): controls the family-wise error over many pairs."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def format_p(p):
    """A p-value for people: 4 decimals down to 0.001, then scientific notation; erfc underflow says so."""
    if p <= 0.0:
        return "< 1e-300"
    if p >= 0.001:
        return f"{p:.4f}"
    return f"{p:.2e}"
