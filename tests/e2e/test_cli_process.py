"""Every command has the same command line, run as a process: its own help (exit 0), a bad flag in one line with
exit status 2 (tests/unit/test_cli.py: the same in-process)."""

import subprocess
import sys

import pytest

from support.data import ROOT
from support.processes import clean_env


ENTRY_POINTS = [  # module, program, one of its flags
    ("trainer.task", "fmnist-train", "--output_dir"),  # the launchers' module name (Vertex AI's pythonModule)
    ("trainer.commands.train", "fmnist-train", "--output_dir"),
    ("trainer.commands.predict", "fmnist-predict", "--model_dir"),
    ("trainer.commands.export", "export", "--default_signature"),
    ("trainer.commands.compare", "compare", "--no-report"),
    ("trainer.commands.check_accuracy", "check_accuracy", None),
    ("trainer.commands.prepare_data", "prepare_data", "--data_dir"),
]


def command(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=clean_env())


@pytest.mark.e2e
@pytest.mark.parametrize("module, program, flag", ENTRY_POINTS)
def test_every_entry_point_helps_with_its_own_flags_and_refuses_a_bad_one_in_one_line(module, program, flag):
    helped = command(module, "--help")
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("Usage: ") and (flag is None or f"{flag}:" in helped.stdout.replace("[no]", ""))
    assert "--alsologtostderr" not in helped.stdout  # absl's own flags are not the command's
    refused = command(module, "--no_such_flag=1")
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"{program}: error: Unknown command line flag 'no_such_flag'"], refused.stderr
