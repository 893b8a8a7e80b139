"""Bad input fails fast with one line that says what to do, a non-zero exit and no traceback."""

import json
import os

import pytest

from conftest import data_flags, run_trainer


def assert_user_error(result, *expected):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr


@pytest.mark.parametrize("args, expected", [
    (["--epochs=0"], "--epochs must be a positive whole number"),
    (["--epochs=-3"], "--epochs must be a positive whole number"),
    (["--batch_size=0"], "--batch_size must be a positive whole number"),
    (["--learning_rate=0"], "--learning_rate must be a positive number"),
    (["--train_examples=70000"], "--train_examples must be between 1 and 60000"),
    (["--model=resnet9000"], "value should be one of"),
    (["--strategy=tpu_pod"], "value should be one of"),
    (["--recipe=magic"], "value should be one of"),
    (["--validation_split=0.5"], "--validation_split must be a fraction from 0 up to"),
    (["--early_stopping_patience=-1"], "--early_stopping_patience must be 0 (off)"),
    (["--early_stopping_patience=3"], "--early_stopping_patience needs a validation set"),
    (["--output_dir=gs://"], "--output_dir must be a local path or gs://BUCKET/PREFIX"),
    (["--output_dir= "], "--output_dir must be a local path or gs://BUCKET/PREFIX"),
])
def test_invalid_flag_values_are_rejected_with_a_message(args, expected, tmp_path):
    assert_user_error(run_trainer(*args, f"--output_dir={tmp_path}" if "--output_dir" not in args[0] else "--seed=1"),
                      expected)


def test_missing_output_location_says_how_to_give_one():
    assert_user_error(run_trainer("--model=mlp"), "pass --output_dir=PATH", "AIP_MODEL_DIR")


def test_output_dir_that_is_a_file_is_rejected(tmp_path):
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    assert_user_error(run_trainer(f"--output_dir={a_file}", *data_flags()), "is a file, not a folder")


def test_unwritable_output_dir_is_rejected(tmp_path):
    assert_user_error(run_trainer(f"--output_dir=/proc/fmnist-run", *data_flags()), "cannot write to --output_dir")


def test_missing_manual_dir_is_rejected(tmp_path):
    assert_user_error(run_trainer(f"--output_dir={tmp_path}", f"--tfds_manual_dir={tmp_path}/nope"),
                      "is not a folder")


def test_positional_arguments_are_rejected(tmp_path):
    assert_user_error(run_trainer(f"--output_dir={tmp_path}", "cnn"), "unexpected arguments 'cnn'")


def test_finished_run_is_not_overwritten_without_overwrite(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"test_accuracy": 0.9}))
    assert_user_error(run_trainer(f"--output_dir={tmp_path}", *data_flags()), "already holds a finished run",
                      "--overwrite")
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"test_accuracy": 0.9}


def test_flagfile_is_read(tmp_path):
    flagfile = tmp_path / "run.flags"
    flagfile.write_text(f"--model=mlp\n--epochs=0\n--output_dir={tmp_path}\n")
    assert_user_error(run_trainer(f"--flagfile={flagfile}"), "--epochs must be a positive whole number")
