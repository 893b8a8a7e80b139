"""The data set as the tests use it: where it is prepared, the trainer's data flags, slices of it, and the
trainer's steps run in this process on such a slice."""

import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
DATA_DIR = os.environ.get("DATA_DIR") or str(ROOT / ".data" / "tfds")
_default_manual = ROOT.parent / "shared" / "datasets" / "fashion-mnist"
TFDS_MANUAL_DIR = os.environ.get("TFDS_MANUAL_DIR") or (str(_default_manual) if _default_manual.is_dir() else "")


def data_flags():
    flags = [f"--data_dir={DATA_DIR}"]
    if TFDS_MANUAL_DIR:
        flags.append(f"--tfds_manual_dir={TFDS_MANUAL_DIR}")
    return flags


def builder():
    """The TFDS builder of Fashion-MNIST, prepared in DATA_DIR (a no-op when `make` already did it)."""
    from trainer.training import data
    return data.prepare(DATA_DIR, TFDS_MANUAL_DIR or None)


def splits(fashion, train_examples, validation_split=0.0, test_examples=None):
    """A data.Splits as the trainer would load it with --train_examples / --validation_split, from `fashion`."""
    from trainer.training import data
    (images, labels), (test_images, test_labels) = fashion
    train = (images[:train_examples], labels[:train_examples])
    validation = None
    held_out = int(round(train_examples * validation_split))
    if held_out:
        train, validation = data.hold_out(*train, held_out)
    return data.Splits(train=train, test=(test_images[:test_examples], test_labels[:test_examples]),
                       validation=validation)


def train_in_process(output_dir, data_splits, strategy=None, environ=None, **settings):
    """Runs the trainer's steps in this process on `data_splits`; returns the metrics it published."""
    from trainer.config import run_config
    from trainer.training import train
    cfg = run_config.make(output_dir=str(output_dir), environ=environ, **settings)
    return train.run(cfg, splits=data_splits, strategy=strategy)
