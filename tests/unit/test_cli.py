"""trainer.commands.cli: every entry point has the same command line: its own help (exit 0), a bad flag in one line
(exit 2), a UserError in one line (2), a RetryableError in one line (75), flags declared as settings."""

import dataclasses
from typing import Optional

import pytest

from trainer.commands import cli
from trainer.config import declare
from trainer.errors import RetryableError, UserError
from trainer.config.declare import setting


@dataclasses.dataclass(frozen=True)
class Toy:
    size: int = setting(3, "How many.", check=lambda v: v > 0, message="--size must be positive, e.g. --size=3.")
    where: Optional[str] = setting(None, "Where to.", required=True)
    many: Optional[list] = setting(None, "Repeat me.")


def toy():
    return cli.Command("toy", "toy --where=X", settings=declare.declared(Toy))


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
