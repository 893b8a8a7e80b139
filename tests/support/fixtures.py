"""The suite's shared pytest fixtures (a plugin: tests/conftest.py loads it), built on the support modules."""

import pytest

from support import data, emulator, model


@pytest.fixture(scope="session")
def fashion_builder():
    """The TFDS builder of Fashion-MNIST, prepared once in DATA_DIR (a no-op when `make` already did it)."""
    return data.builder()


@pytest.fixture(scope="session")
def prepared_data(fashion_builder):
    """DATA_DIR, with Fashion-MNIST prepared in it."""
    return data.DATA_DIR


@pytest.fixture(scope="session")
def fashion(fashion_builder):
    """The first 10,000 training examples and the whole test split, decoded once: (train, test) array pairs."""
    from trainer.training import data as trainer_data
    return trainer_data.load(fashion_builder, "train[:10000]"), trainer_data.load(fashion_builder, "test")


@pytest.fixture
def gcs(monkeypatch):
    """A Cloud Storage emulator in this process with a bucket `runs`; clients (google-cloud-storage) reach it
    through STORAGE_EMULATOR_HOST. Yields the bucket."""
    with emulator.in_process("runs") as host:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", host)
        monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test")
        from google.cloud import storage
        yield storage.Client().bucket("runs")


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory):
    """A run folder (with saved_model/) of a small CNN briefly fitted (support/model.py); built once."""
    return model.export_small_cnn(tmp_path_factory.mktemp("exported-run"))


@pytest.fixture(scope="session")
def signatures(exported_model):
    """(the loaded SavedModel, serving_default, serving_bytes) of `exported_model`."""
    return model.load_signatures(exported_model)


@pytest.fixture(scope="session")
def vertex_copy(signatures, tmp_path_factory):
    """The Vertex AI copy of an old-style export of `exported_model` (serving_default takes image_bytes)."""
    return model.vertex_copy(signatures, tmp_path_factory.mktemp("vertex-copy"))


@pytest.fixture
def trainer_command_line():
    """Parses a command line with the trainer's own flags (absl's global FLAGS) in this process, then restores
    them; the parse returns the arguments that are not flags (absl's)."""
    from absl import flags
    from trainer.config import flags as trainer_flags
    trainer_flags.define_trainer_flags()

    def parse(*args):
        flags.FLAGS.unparse_flags()
        return flags.FLAGS(["fmnist-train", *args])
    yield parse
    flags.FLAGS.unparse_flags()


@pytest.fixture
def two_runs(tmp_path):
    """Two finished runs for the comparison report (`support.runs.write_two_runs`): (mlp, cnn)."""
    from support.runs import write_two_runs
    return write_two_runs(tmp_path)


@pytest.fixture
def placeholder_saved_model(monkeypatch):
    """train.run's SavedModel export replaced by an empty saved_model/ folder: for the modules that test backups,
    stops and resumes, whose assertions never read the SavedModel (the export is a second or more of tracing per
    run, and those modules make dozens of runs). The SavedModel itself is tested where it is read: test_train,
    test_export, test_predict, test_speedrun, test_precision."""
    import os
    from trainer.training import train

    def placeholder(model, input_shape, path, test_time_augmentation="none"):
        os.makedirs(path)
        with open(os.path.join(path, "PLACEHOLDER"), "w") as f:
            f.write("the tests' placeholder for the SavedModel (support/fixtures.py)\n")
    monkeypatch.setattr(train.signatures, "export_saved_model", placeholder)
