"""Seconds per training epoch of one model under one set of execution settings (for bench/speed.py's ablation).

    .venv/bin/python bench/epoch_time.py --model=cnn --batch_size=128 --steps_per_execution=64 [--threads_per_op=1]
        [--jit_compile] [--precision=mixed_bfloat16] [--epochs=2] [--train_examples=N] [any trainer flag]

It takes the trainer's own flags (default: the seed recipe, 2 epochs) and builds the data, model and optimizer
with the trainer's own steps, then prints one JSON line: the first epoch's seconds (tracing included) and the
median of the others. A process of its own, because TensorFlow's thread pools are fixed when its runtime starts.
"""

import json
import statistics
import tempfile
import time

from absl import app, flags

from common import ROOT
from trainer.config import flags as trainer_flags, run_config  # noqa: I100

trainer_flags.define_trainer_flags()

FLAGS = flags.FLAGS
FLAGS.set_default("recipe", "seed")
FLAGS.set_default("epochs", 2)
FLAGS.set_default("data_dir", str(ROOT / ".data" / "tfds"))


def main(argv):
    del argv
    values = {d.name: FLAGS[d.name].value for d in run_config.all_settings()}
    cfg = run_config.build({**values, "output_dir": values["output_dir"] or tempfile.mkdtemp()})
    import tensorflow as tf
    import tf_keras
    from trainer.training import data, models, train
    train.configure_threads(cfg.recipe, multi_process=False)
    splits = train.load_splits(cfg.job)
    model, _ = train.build_model(cfg, tf.distribute.get_strategy(), len(splits.train[1]))
    dataset = data.train_dataset(*splits.train, cfg.recipe.batch_size, models.get(cfg.job.model).input_shape,
                                 seed=cfg.job.seed)
    seconds = []

    class Timer(tf_keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.started)

    model.fit(dataset, epochs=cfg.recipe.epochs, callbacks=[Timer()], verbose=0,
              steps_per_epoch=data.steps_per_epoch(len(splits.train[1]), cfg.recipe.batch_size))
    print(json.dumps({"first_epoch_s": round(seconds[0], 3),
                      "epoch_s": round(statistics.median(seconds[1:] or seconds), 3)}))


if __name__ == "__main__":
    app.run(main)
