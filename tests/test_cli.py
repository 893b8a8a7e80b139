"""trainer.cli: every entry point has the same command line: its own help (exit 0), a bad flag in one line (exit
2), a UserError in one line (2), a RetryableError in one line (75), flags declared as settings."""

import dataclasses
import subprocess
import sys
from typing import Optional

import pytest

from support.data import ROOT
from support.processes import clean_env
from trainer import cli, settings
from trainer.errors import RetryableError, UserError
from trainer.settings import setting

ENTRY_POINTS = [  # module, program, one of its flags
    ("trainer.task", "fmnist-train", "--output_dir"),
    ("trainer.predict", "fmnist-predict", "--model_dir"),
    ("trainer.export", "python -m trainer.export", "--default_signature"),
    ("trainer.compare", "compare", "--no-report"),
    ("trainer.check_accuracy", "check_accuracy", None),
    ("trainer.prepare_data", "prepare_data", "--data_dir"),
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


@dataclasses.dataclass(frozen=True)
class Toy:
    size: int = setting(3, "How many.", check=lambda v: v > 0, message="--size must be positive, e.g. --size=3.")
    where: Optional[str] = setting(None, "Where to.", required=True)
    many: Optional[list] = setting(None, "Repeat me.")


def toy():
    return cli.Command("toy", "toy --where=X", settings=settings.declared(Toy))


def test_the_exit_status_follows_the_contract(capsys):
    command_ = toy()

    def raising(error):
        def function(arguments):
            raise error
        return function

    assert command_.main(lambda arguments: None, ["toy", "--where=a"]) == 0
    assert command_.main(raising(UserError("fix the flag")), ["toy", "--where=a"]) == 2
    assert capsys.readouterr().err == "toy: error: fix the flag\n"
    assert command_.main(raising(RetryableError("later")), ["toy", "--where=a"]) == 75
    assert capsys.readouterr().err == "toy: error: later\n"
    with pytest.raises(KeyError):  # a bug keeps its traceback
        command_.main(raising(KeyError("bug")), ["toy", "--where=a"])


def test_flags_come_from_the_declared_settings_and_start_from_their_defaults_on_every_call(capsys):
    command_ = toy()
    seen = []
    command_.main(lambda arguments: seen.append((arguments, command_.values())),
                  ["toy", "--where=a", "--size=5", "--many=x", "--many=y", "rest"])
    command_.main(lambda arguments: seen.append((arguments, command_.values())), ["toy", "--where=b"])
    assert seen == [(["rest"], {"size": 5, "where": "a", "many": ["x", "y"]}),
                    ([], {"size": 3, "where": "b", "many": None})]
    assert command_.main(lambda arguments: None, ["toy", "--where=a", "--size=0"]) == 2
    assert capsys.readouterr().err == "toy: error: flag --size=0: --size must be positive, e.g. --size=3.\n"
    assert command_.main(lambda arguments: None, ["toy"]) == 2
    assert "--where" in capsys.readouterr().err
    assert command_.main(lambda arguments: None, ["toy", "-h"]) == 0
    helped = capsys.readouterr().out
    assert "--where: Where to. (required)" in helped and "--size: How many. (default: 3)" in helped
