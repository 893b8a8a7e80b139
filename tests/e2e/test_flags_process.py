"""The trainer's command line as a process: a bad flag or setting is one line and exit status 2, a flagfile is
read, --help lists the trainer's own flags (tests/unit/test_flags.py: the declarations and their checks)."""

import pytest

from support.data import data_flags
from support.processes import run_trainer
from trainer.config import run_config
from trainer import errors


def assert_user_error(result, *expected):
    assert result.returncode == errors.PERMANENT, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fmnist-train: error: "), result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr


@pytest.mark.e2e
def test_a_bad_flag_is_one_line_and_the_permanent_status(tmp_path):
    assert_user_error(run_trainer("--epochs=0", f"--output_dir={tmp_path}"), "--epochs must be a positive whole")
    assert_user_error(run_trainer("--model=resnet9000", f"--output_dir={tmp_path}"), "value should be one of")


@pytest.mark.e2e
def test_a_bad_setting_found_after_parsing_is_one_line_too(tmp_path):
    assert_user_error(run_trainer("--model=mlp"), "pass --output_dir=PATH", "AIP_MODEL_DIR")
    assert_user_error(run_trainer(f"--output_dir={tmp_path}", "cnn"), "unexpected arguments 'cnn'")
    (tmp_path / "metrics.json").write_text("{}")
    assert_user_error(run_trainer(f"--output_dir={tmp_path}", *data_flags()), "already holds a finished run")


@pytest.mark.e2e
def test_flagfile_is_read(tmp_path):
    flagfile = tmp_path / "run.flags"
    flagfile.write_text(f"--model=mlp\n--epochs=0\n--output_dir={tmp_path}\n")
    assert_user_error(run_trainer(f"--flagfile={flagfile}"), "--epochs must be a positive whole number")


@pytest.mark.e2e
@pytest.mark.parametrize("help_flag", ["--helpshort", "--help"])
def test_help_lists_the_trainers_own_flags(help_flag):
    result = run_trainer(help_flag)
    assert result.returncode == 0, result.stderr
    for declared in run_config.all_settings():
        assert f"--{declared.name}:" in result.stdout or f"--[no]{declared.name}:" in result.stdout
