"""The exit-code contract every launcher acts on (the README's table): 0 finished, 2 a mistake a retry cannot fix,
75 retry me, 1 a crash, pinned as numbers (tests/e2e/test_exit_codes_process.py: each from a real trainer
process).
"""

import re


from support.data import ROOT
from trainer import errors

def readme_exit_statuses():
    """{status: meaning} from the README's exit-code table, in its order."""
    section = (ROOT / "README.md").read_text().split("### Exit codes", 1)[1].split("\n### ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| ([^|]+) \|", section, re.M)
    return {int(status): meaning.strip() for status, meaning in rows}


def test_the_exit_statuses_are_the_readmes_literally():
    """0/2/75/1 here are numbers, not errors.* constants: a launcher's podFailurePolicy and retry rules are
    written against the numbers, so a constant that drifts must fail a test."""
    table = readme_exit_statuses()
    assert list(table) == [0, 2, 75, 1], table
    assert table[0].startswith("finished") and table[2].startswith("a mistake a retry cannot fix")
    assert table[75].startswith("retry me") and table[1].startswith("an unexpected crash (a bug)")
    assert (errors.FINISHED, errors.PERMANENT, errors.RETRY, errors.CRASHED) == (0, 2, 75, 1)
