"""The README's Layout list is the tree: every folder has its item, and every module, script and doc of a folder
is named in that folder's item (a new module that the list does not mention fails here)."""

import re

import pytest

from support.data import ROOT

def folders():
    """{an item of the list: (the folder whose files it must name, which of them)}: every package of trainer/ (found,
    not listed: a new package without an item fails), the tests' helpers, bench/, docs/ and k8s/."""
    packages = sorted(p.parent for p in (ROOT / "trainer").rglob("__init__.py"))
    found = {f"{p.relative_to(ROOT)}/": (str(p.relative_to(ROOT)), "*.py") for p in packages}
    return {**found, "tests/support/": ("tests/support", "*.py"), "bench/": ("bench", "*.py"),
            "docs/": ("docs", "*.md"), "k8s/": ("k8s", "*")}


FOLDERS = folders()
TEST_KINDS = ("tests/unit/", "tests/e2e/", "tests/launch/")


def layout_rows():
    """{path: its item's text} of the README's Layout list (`- `path`: what`, wrapped lines indented)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Layout"):]
    section = section[:section.index("\n## ")] if "\n## " in section else section
    items = re.findall(r"^- (`[^`]+`[^:]*): (.*(?:\n  .*)*)", section, re.M)
    return {re.findall(r"`([^`]+)`", head)[0]: f"{head}: {body}" for head, body in items}


@pytest.mark.parametrize("row, folder", FOLDERS.items())
def test_every_module_of_a_folder_is_named_in_its_row(row, folder):
    rows = layout_rows()
    assert row in rows, f"README's Layout list has no item for {row}"
    path, pattern = folder
    names = [p.stem for p in (ROOT / path).glob(pattern) if not p.name.startswith(("_", "."))]
    missing = [name for name in names if f"`{name}" not in rows[row]]
    assert not missing, f"README's Layout item {row} does not name {', '.join(missing)}"


def test_every_package_and_every_kind_of_test_has_a_row():
    assert {"trainer/commands/", "trainer/config/", "trainer/training/", "trainer/storage/"} <= set(FOLDERS)
    rows = layout_rows()
    kinds = sorted(f"{p.relative_to(ROOT)}/" for p in (ROOT / "tests").iterdir() if p.is_dir()
                   and p.name not in ("support", "__pycache__"))
    assert kinds == sorted(TEST_KINDS) and all(kind in rows for kind in kinds), kinds


def test_every_top_level_folder_has_a_row():
    rows = " ".join(item.split(": ", 1)[0] for item in layout_rows().values())  # the items' paths
    folders = [p.name for p in ROOT.iterdir() if p.is_dir() and p.name in ("trainer", "tests", "bench", "docs",
                                                                            "k8s", "jobs", ".ci")]
    assert len(folders) == 7 and all(f"{name}/" in rows for name in folders), rows
