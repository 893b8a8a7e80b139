"""The suite's shared pytest fixtures (a plugin: tests/conftest.py loads it), built on the support modules."""

import pytest

from support import data, emulator


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
