"""`fmnist-predict` as a process: it predicts and summarises, repeated --input flags add up, a bad flag exits 2
before TensorFlow loads (tests/unit/test_predict.py: batch prediction in-process)."""

import json
import os
import subprocess
import sys

import pytest

import trainer  # noqa: F401  (tf-keras before TensorFlow)
from support.data import ROOT
from support.images import write_image_folder


def read_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The image folder of batch prediction's tests (`support.images.write_image_folder`)."""
    return write_image_folder(tmp_path_factory.mktemp("images"))


def command(*args, env=None):
    environment = {k: v for k, v in os.environ.items() if k != "STORAGE_EMULATOR_HOST"}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "trainer.commands.predict", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=environment)


@pytest.mark.e2e
def test_command_line_predicts_and_summarizes(folder, tmp_path, exported_model):
    output = tmp_path / "out.jsonl"
    result = command(f"--model_dir={exported_model}", f"--input={folder}", f"--output={output}",
                     "--batch_size=5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("fmnist-predict: 16 read, 12 predicted, 4 refused in ")
    assert "images/s); predictions in" in result.stdout
    assert "Traceback" not in result.stderr and "oneDNN" not in result.stderr
    assert len(read_lines(output)) == 16


@pytest.mark.e2e
def test_repeated_input_flags_add_up_and_a_path_with_a_comma_is_one_input(folder, tmp_path, exported_model):
    """`--input=a --input=b` predicts both (an absl list flag kept only the last one: "1 read"); a comma separates
    inputs, except in a value that names an existing file as a whole."""
    comma = tmp_path / "shirt, blue.png"
    comma.write_bytes((folder / "01.png").read_bytes())
    output = tmp_path / "out.jsonl"
    result = command(f"--model_dir={exported_model}", f"--input={folder / '00.png'}", f"--input={comma}",
                     f"--input={folder / '02.png'},{folder / '03.png'}", f"--output={output}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("fmnist-predict: 4 read, 4 predicted, 0 refused in "), result.stdout
    assert [line["name"] for line in read_lines(output)] == [
        str(folder / "00.png"), str(comma), str(folder / "02.png"), str(folder / "03.png")]


@pytest.mark.e2e
def test_a_bad_flag_exits_2_with_one_line_before_tensorflow_loads(exported_model):
    bad_flag = command(f"--model_dir={exported_model}", "--input=x", "--output=x.jsonl", "--batch_size=0")
    assert bad_flag.returncode == 2
    assert bad_flag.stderr.strip().splitlines() == [
        "fmnist-predict: error: flag --batch_size=0: --batch_size must be from 1 to 8192, e.g. --batch_size=256."]
