"""Prepares Fashion-MNIST in the TFDS data directory once: `python -m trainer.prepare_data --data_dir=...`.

With `--tfds_manual_dir` TFDS builds the data set from the four official files in that folder, offline.
"""

from absl import app, flags

import trainer  # noqa: F401
from trainer import flags as trainer_flags  # noqa: F401  (defines --data_dir and --tfds_manual_dir)


def main(argv):
    del argv
    from trainer import data
    builder = data.prepare(flags.FLAGS.data_dir, flags.FLAGS.tfds_manual_dir)
    print(f"Fashion-MNIST ready in {builder.data_dir}: "
          f"{builder.info.splits['train'].num_examples} train, {builder.info.splits['test'].num_examples} test.")


if __name__ == "__main__":
    app.run(main)
