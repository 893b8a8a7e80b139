"""The benchmark scripts run end to end and print every table; no timing is asserted."""

import sys

import pytest

from support.data import DATA_DIR, ROOT, TFDS_MANUAL_DIR, splits, train_in_process
from trainer.training import evaluation

sys.path.insert(0, str(ROOT / "bench"))
import anatomy  # noqa: E402
import score_validation  # noqa: E402
import speed  # noqa: E402


def test_the_ablation_builds_up_to_the_fast_recipe_with_the_trainers_own_flags():
    variants = speed.ablation_variants("mlp")
    assert variants[0][1] == ["--batch_size=32", "--steps_per_execution=1"]
    last_used = [flags for label, flags in variants if not label.startswith("(")][-1]
    assert last_used == ["--batch_size=128", "--steps_per_execution=64", "--threads_per_op=1",
                         "--precision=mixed_bfloat16"]
    from trainer.config import run_config
    names = {d.name for d in run_config.all_settings()}
    assert all(flag[2:].split("=")[0] in names for _, flags in variants for flag in flags)
    assert sum(label == "+ 1 thread per op" for label, _ in variants) == 1  # the MLP's names its thread setting


def test_a_run_is_compared_with_the_floor_of_the_number_format_it_trained_in():
    rates = {"float32": 328.0, "bfloat16": 1317.0}
    assert anatomy.floor_of("mixed_bfloat16", rates) == ("bfloat16", 1317.0)
    assert anatomy.floor_of("float32", rates) == ("float32", 328.0)
    assert anatomy.floor_of("mixed_bfloat16", {"float32": 100.0}) == ("float32", 100.0)  # not measured: float32's
    assert anatomy.floor_of("mixed_float16", rates) == ("float32", 328.0)


def test_score_validation_scores_exactly_the_held_out_images(fashion, tmp_path, capsys):
    run = tmp_path / "run"
    metrics = train_in_process(run, splits(fashion, 1000, validation_split=0.3, test_examples=500), model="mlp",
                               recipe="seed", epochs=1, validation_split=0.3, train_examples=1000)
    score_validation.main([str(run), f"--data_dir={DATA_DIR}", f"--tfds_manual_dir={TFDS_MANUAL_DIR}"])
    header, row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert header.startswith("| run | none acc | none loss | flip acc |")
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[0] == str(run) and len(cells) == 1 + 2 * len(evaluation.TEST_TIME_VIEWS)  # an acc and a loss each
    # The image's own view is what Keras scored on the 300 held-out images during fit (the same weights, float32).
    assert abs(float(cells[1]) - metrics["validation_accuracy"]) <= 1 / 300 + 1e-9


def test_score_validation_refuses_a_run_without_a_validation_split(fashion, tmp_path):
    run = tmp_path / "run"
    train_in_process(run, splits(fashion, 200, test_examples=200), model="mlp", recipe="seed", epochs=1)
    with pytest.raises(SystemExit, match="without --validation_split"):
        score_validation.main([str(run), f"--data_dir={DATA_DIR}", f"--tfds_manual_dir={TFDS_MANUAL_DIR}"])
