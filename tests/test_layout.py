"""The README's Layout table is the tree: every folder has its row, and every module, script and doc of a folder
is named in that folder's row (a new module that the table does not mention fails here)."""

import re

import pytest

from support.data import ROOT

FOLDERS = {  # a row of the table -> the folder whose files it must name, and which of them
    "trainer/": ("trainer", "*.py"), "trainer/serving/": ("trainer/serving", "*.py"),
    "trainer/resilience/": ("trainer/resilience", "*.py"), "trainer/report/": ("trainer/report", "*.py"),
    "tests/support/": ("tests/support", "*.py"),
    "bench/": ("bench", "*.py"), "docs/": ("docs", "*.md"), "k8s/": ("k8s", "*"),
}


def layout_rows():
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Layout"):]
    table = table[:table.index("\n## ")] if "\n## " in table else table
    return {re.findall(r"`([^`]+)`", line.split("|")[1])[0]: line for line in table.splitlines()
            if line.startswith("| `")}


@pytest.mark.parametrize("row, folder", FOLDERS.items())
def test_every_module_of_a_folder_is_named_in_its_row(row, folder):
    rows = layout_rows()
    assert row in rows, f"README's Layout table has no row for {row}"
    path, pattern = folder
    names = [p.stem for p in (ROOT / path).glob(pattern) if not p.name.startswith(("_", "."))]
    missing = [name for name in names if f"`{name}" not in rows[row]]
    assert not missing, f"README's Layout row {row} does not name {', '.join(missing)}"


def test_every_top_level_folder_has_a_row():
    rows = " ".join(line.split("|")[1] for line in layout_rows().values())
    folders = [p.name for p in ROOT.iterdir() if p.is_dir() and p.name in ("trainer", "tests", "bench", "docs",
                                                                            "k8s", "jobs", ".ci")]
    assert len(folders) == 7 and all(f"{name}/" in rows for name in folders), rows
