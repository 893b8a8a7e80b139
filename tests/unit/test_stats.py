"""McNemar's test and Holm's correction (trainer/report/stats.py) against known values, and against the
hand-written code they replaced: the report's figures do not change."""

import math
import re

import numpy as np
import pytest

from trainer.report import stats as report_stats


# ---- McNemar's test against known values ---------------------------------------------------------------------

def test_exact_test_for_few_discordant_pairs():
    # b=10, c=2: p = 2 * P(X <= 2), X ~ Bin(12, 1/2) = 2 * (1 + 12 + 66) / 4096.
    result = report_stats.mcnemar(10, 2)
    assert result.method == report_stats.EXACT
    assert result.p_value == pytest.approx(2 * 79 / 4096, rel=1e-12)
    assert result.p_value == pytest.approx(0.0385742, abs=1e-7)
    assert result.statistic == 2


def test_exact_test_matches_a_textbook_example():
    # Wikipedia's McNemar example (b=6, c=16): exact two-sided p = 0.0525.
    assert report_stats.mcnemar(6, 16).p_value == pytest.approx(0.052478, abs=1e-6)
    assert report_stats.mcnemar(0, 5).p_value == pytest.approx(2 / 32)


def test_chi_square_with_continuity_correction_for_many_discordant_pairs():
    result = report_stats.mcnemar(150, 100)
    assert result.method == report_stats.CHI_SQUARE
    assert result.statistic == pytest.approx(49 ** 2 / 250)  # (|150 - 100| - 1)^2 / 250 = 9.604
    assert result.p_value == pytest.approx(0.0019415, rel=1e-4)  # 2 * (1 - Phi(sqrt(9.604)))


@pytest.mark.parametrize("chi2, p", [(3.841458820694124, 0.05), (6.634896601021214, 0.01),
                                     (10.827566170662733, 0.001)])
def test_chi_square_tail_matches_the_critical_values_of_one_degree_of_freedom(chi2, p):
    assert report_stats.chi2_1_survival(chi2) == pytest.approx(p, rel=1e-9)


def test_exact_below_25_discordant_pairs_chi_square_from_25():
    assert report_stats.mcnemar(20, 4).method == report_stats.EXACT
    assert report_stats.mcnemar(20, 5).method == report_stats.CHI_SQUARE
    assert report_stats.mcnemar(20, 5).statistic == pytest.approx(14 ** 2 / 25)


@pytest.mark.parametrize("b, c", [(0, 0), (7, 7), (40, 40), (3, 4)])
def test_no_evidence_gives_p_one_or_near(b, c):
    p = report_stats.mcnemar(b, c).p_value
    assert p == pytest.approx(1.0) if b == c else p > 0.9
    assert report_stats.mcnemar(c, b).p_value == p


def test_very_small_p_values_stay_printable():
    p = report_stats.mcnemar(900, 100).p_value  # chi-square 638.4: p ~ 1e-140, far below any table
    assert 1e-142 < p < 1e-138
    assert re.fullmatch(r"\d\.\d\de-1[34]\d", report_stats.format_p(p))
    assert report_stats.format_p(report_stats.mcnemar(5000, 10).p_value) == "< 1e-300"
    assert report_stats.format_p(0.0) == "< 1e-300"
    assert report_stats.format_p(0.25184) == "0.2518"


def hand_written_mcnemar_p(b, c):
    """The report's p-value as it was computed by hand before scipy: exact integer binomial tails below 25
    discordant images, erfc of the continuity-corrected chi-square from 25."""
    n = b + c
    if n < report_stats.EXACT_BELOW:
        return min(1.0, 2.0 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n)
    statistic = max(abs(b - c) - 1, 0) ** 2 / n
    return math.erfc(math.sqrt(statistic / 2.0)) if statistic > 0 else 1.0


def test_the_reports_figures_are_those_of_the_hand_written_tests():
    """scipy's binomtest and chi2 give the p-values of the former hand-written code to 1e-12 (here: 6e-14 at
    worst), and every printed figure (statistic, p) stays the same."""
    for b in range(0, 70):
        for c in range(0, 70, 3):
            old, new = hand_written_mcnemar_p(b, c), report_stats.mcnemar(b, c).p_value
            assert new == pytest.approx(old, rel=1e-12), (b, c)
            assert report_stats.format_p(new) == report_stats.format_p(old), (b, c)
    # The README's line from `make reproduce` (b = 321, c = 622), as the hand-written code printed it.
    test = report_stats.mcnemar(321, 622)
    assert (report_stats.statistic_text(test), report_stats.format_p(test.p_value)) == ("95.44", "1.52e-22")


def test_holm_adjustment():
    assert report_stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert report_stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_agreement_counts_the_four_cells():
    labels = np.array([0, 1, 2, 3, 4, 5])
    a = np.array([0, 1, 2, 9, 9, 9])
    b = np.array([0, 9, 2, 3, 9, 9])
    g = report_stats.agreement(a, b, labels)
    assert (g.both_right, g.only_a_right, g.only_b_right, g.both_wrong) == (2, 1, 1, 2)
