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
    from trainer import data as trainer_data
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
