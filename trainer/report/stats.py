"""McNemar's test between two classifiers' predictions on the same test set (scipy.stats: the report extra).

Only the discordant test images matter: b = images run A classifies correctly and run B does not, c = the reverse.
Under the null hypothesis (both runs have the same error rate) each discordant image is equally likely to fall on
either side, so b ~ Binomial(b + c, 1/2).

* b + c < 25: the exact two-sided binomial test (`scipy.stats.binomtest`; with p = 1/2 the distribution is
  symmetric, so p = min(1, 2 * P(X <= min(b, c)))); the statistic reported is min(b, c).
* otherwise: the chi-square approximation with Edwards' continuity correction,
  chi2 = max(|b - c| - 1, 0)^2 / (b + c), 1 degree of freedom, p = P(chi2_1 >= chi2) (`scipy.stats.chi2`).

Many pairs are corrected with Holm's step-down method, written here: scipy has no Holm (its
`false_discovery_control` is Benjamini-Hochberg's), and statsmodels' `multipletests` would bring statsmodels, pandas
and patsy into the report extra for eight lines. scipy itself is in the report extra, not the runtime image (35 MB
more to download): without it `compare --no-report` prints the table and says how to get the tests.
"""

import dataclasses

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
    from scipy import stats
    n = b + c
    if n < EXACT_BELOW:
        k = min(b, c)
        p_value = float(stats.binomtest(k, n, 0.5).pvalue) if n else 1.0  # no discordant image: no evidence
        return McNemar(b, c, float(k), min(1.0, p_value), EXACT)
    statistic = max(abs(b - c) - 1, 0) ** 2 / n
    return McNemar(b, c, statistic, chi2_1_survival(statistic), CHI_SQUARE)


def chi2_1_survival(x):
    """P(X >= x) for X ~ chi-square with 1 degree of freedom."""
    from scipy import stats
    return float(stats.chi2.sf(x, df=1))


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


# ---- every pair of runs ----------------------------------------------------------------------------------------

ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class Comparison:
    a: object                     # trainer.report.comparison.Run
    b: object
    agreement: Agreement
    test: McNemar
    holm_p: float = None          # only when more than one pair is tested

    @property
    def p(self):
        return self.test.p_value if self.holm_p is None else self.holm_p

    def verdict(self):
        t = self.test
        adjusted = " after Holm's adjustment" if self.holm_p is not None else ""
        if self.p < ALPHA:
            better, worse = (self.a, self.b) if t.b > t.c else (self.b, self.a)
            return (f"{better.name} makes significantly fewer errors than {worse.name} "
                    f"(p < {ALPHA:g}{adjusted}).")
        return f"no significant difference between {self.a.name} and {self.b.name} at the {ALPHA:g} level{adjusted}."


def compare_pairs(runs):
    """McNemar's test for every pair of runs, in command-line order."""
    pairs = [(a, b) for i, a in enumerate(runs) for b in runs[i + 1:]]
    results = []
    for a, b in pairs:
        counts = agreement(a.predicted, b.predicted, a.labels)
        results.append(Comparison(a, b, counts, counts.test()))
    if len(results) > 1:
        adjusted = holm([r.test.p_value for r in results])
        results = [dataclasses.replace(r, holm_p=p) for r, p in zip(results, adjusted)]
    return results


def test_lines(comparisons):
    """McNemar's results as lines for the terminal."""
    lines = []
    for c in comparisons:
        t = c.test
        holm = f", Holm-adjusted p = {format_p(c.holm_p)}" if c.holm_p is not None else ""
        lines.append(f"McNemar {c.a.name} vs {c.b.name}: b = {t.b} (only {c.a.name} right), c = {t.c} (only "
                     f"{c.b.name} right), {t.method}, statistic = {statistic_text(t)}, "
                     f"p = {format_p(t.p_value)}{holm}: {c.verdict()}")
    return lines


def warnings(runs):
    """Things that make the comparison weaker or suspect, for the terminal and the report."""
    found = []
    for run in runs:
        recorded = run.metrics.get("test_accuracy")
        computed = float(np.mean(run.predicted == run.labels))
        if recorded is not None and abs(recorded - computed) > 1e-6:
            found.append(f"{run.name}: its test predictions give accuracy {computed:.4f} but metrics.json says "
                         f"{recorded:.4f}: the predictions may be from another training.")
        if not run.metrics.get("history"):
            found.append(f"{run.name}: metrics.json has no per-epoch history, so it has no training curve.")
        if run.class_names != runs[0].class_names:
            found.append(f"{run.name}: its class names differ from {runs[0].name}'s; per-class figures follow "
                         f"{runs[0].name}'s.")
    sizes = {run.name: run.metrics.get("train_examples") for run in runs}
    if len(set(sizes.values())) > 1:
        found.append("the runs trained on different numbers of examples ("
                     + ", ".join(f"{name}: {size if size is not None else '?'}" for name, size in sizes.items())
                     + ").")
    return found


def statistic_text(test):
    return f"{test.statistic:.0f}" if test.method == EXACT else f"{test.statistic:.2f}"
