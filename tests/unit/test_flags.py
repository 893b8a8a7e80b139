"""Settings: declared once, every one a flag with its check; bad input fails fast with one line that says what to
do and the contract's permanent exit status, never a traceback."""

import dataclasses
import json
import re

import pytest
from absl import flags

from support.data import ROOT, train_in_process
from trainer.config import declare, flags as trainer_flags, recipes, run_config, tables
from trainer.errors import UserError

BAD_VALUES = [
    (["--epochs=0"], "--epochs must be a positive whole number"),
    (["--epochs=-3"], "--epochs must be a positive whole number"),
    (["--batch_size=0"], "--batch_size must be a positive whole number"),
    (["--learning_rate=0"], "--learning_rate must be a positive number"),
    (["--train_examples=70000"], "--train_examples must be between 1 and 60000"),
    (["--model=resnet9000"], "value should be one of"),
    (["--strategy=tpu_pod"], "value should be one of"),
    (["--recipe=magic"], "value should be one of"),
    (["--schedule=sawtooth"], "value should be one of"),
    (["--label_smoothing=1"], "--label_smoothing must be a number from 0 up to"),
    (["--max_shift=30"], "--max_shift must be a whole number of pixels from 0 to 13"),
    (["--validation_split=0.5"], "--validation_split must be a fraction from 0 up to"),
    (["--early_stopping_patience=-1"], "--early_stopping_patience must be 0 (off)"),
    (["--early_stopping_patience=3"], "--early_stopping_patience needs a validation set"),
    (["--output_dir=gs://"], "--output_dir must be a local path or gs://BUCKET/PREFIX"),
    (["--output_dir= "], "--output_dir must be a local path or gs://BUCKET/PREFIX"),
]


@pytest.fixture
def parsed(trainer_command_line):
    return trainer_command_line


@pytest.mark.parametrize("args, expected", BAD_VALUES)
def test_invalid_flag_values_are_rejected_with_a_message(parsed, args, expected):
    with pytest.raises(flags.IllegalFlagValueError, match=re.escape(expected)):
        parsed(*args)


@pytest.mark.parametrize("args, expected", [a for a in BAD_VALUES if "one of" not in a[1]])
def test_the_config_applies_the_same_checks_as_the_flags(args, expected):
    name, _, value = args[0][2:].partition("=")
    declared = {d.name: d for d in run_config.all_settings()}[name]
    values = {"output_dir": "out", name: declared.type(value) if declared.type is not str else value}
    with pytest.raises(UserError, match=re.escape(expected)):
        run_config.build(values, environ={})


def test_every_recipe_field_is_a_flag_and_every_flag_is_declared_once():
    trainer_flags.define_trainer_flags()
    names = [d.name for d in run_config.all_settings()]
    assert len(names) == len(set(names))
    fields = {f.name for f in dataclasses.fields(recipes.Recipe)} - {"name", "augmentation"}
    fields |= {f.name for f in dataclasses.fields(recipes.Augmentation)}
    assert fields == {d.name for d in run_config.recipe_settings()}
    assert set(names) == {f.name for f in flags.FLAGS.get_flags_for_module(trainer_flags)}


def test_a_recipe_override_changes_only_that_field():
    cfg = run_config.make(output_dir="out", recipe="strong", model="vgg", erasing_probability=0.0, epochs=3)
    strong = recipes.get("strong", "vgg")
    assert cfg.recipe.epochs == 3 and cfg.recipe.augmentation.erasing_probability == 0.0
    assert cfg.recipe.augmentation.max_shift == strong.augmentation.max_shift
    assert declare.replace(cfg.recipe, {("epochs",): strong.epochs, ("augmentation", "erasing_probability"):
                                         strong.augmentation.erasing_probability}) == strong


def test_the_readme_flag_tables_are_the_declarations():
    readme = (ROOT / "README.md").read_text()
    for table in tables.flag_tables():
        assert table in readme, ("README.md's flag tables differ from the declarations: run "
                                 "`python -m trainer.config.tables --write README.md`.\n" + table)
    assert tables.flag_tables_block() in readme
    assert max(len(line) for line in tables.flag_tables_block().splitlines()) <= 120


def test_missing_output_location_says_how_to_give_one():
    with pytest.raises(UserError, match=r"pass --output_dir=PATH.*AIP_MODEL_DIR"):
        run_config.make(model="mlp")


def test_missing_manual_dir_is_rejected(tmp_path):
    with pytest.raises(UserError, match="is not a folder"):
        run_config.make(output_dir=str(tmp_path), tfds_manual_dir=str(tmp_path / "nope"))


def test_output_dir_that_is_a_file_is_rejected(tmp_path, fashion):
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    with pytest.raises(UserError, match="is a file, not a folder"):
        train_in_process(a_file, None)


def test_unwritable_output_dir_is_rejected():
    with pytest.raises(UserError, match="cannot write to --output_dir"):
        train_in_process("/proc/fmnist-run", None)


def test_finished_run_is_not_overwritten_without_overwrite(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"test_accuracy": 0.9}))
    with pytest.raises(UserError, match="already holds a finished run.*--overwrite"):
        train_in_process(tmp_path, None)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"test_accuracy": 0.9}


# ---- the command line, as a process ----------------------------------------------------------------------------
