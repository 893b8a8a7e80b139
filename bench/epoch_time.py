"""Seconds per training epoch of one model under one set of execution settings (for bench/speed.py's ablation).

    .venv/bin/python bench/epoch_time.py --model=cnn --batch_size=128 --steps_per_execution=64 [--threads_per_op=1]
        [--jit_compile] [--precision=mixed_bfloat16] [--epochs=2] [--train_examples=N]

It trains with the trainer's own pipeline, model and optimizer (Adam, constant learning rate: the schedule does
not change the cost of a step) and prints one JSON line: the first epoch's seconds (tracing included) and the
median of the others. A process of its own, because TensorFlow's thread pools are fixed when its runtime starts.
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch_size", type=int, required=True)
    parser.add_argument("--steps_per_execution", type=int, default=1)
    parser.add_argument("--threads_per_op", type=int, default=0)
    parser.add_argument("--jit_compile", action="store_true")
    parser.add_argument("--precision", default="float32", help="a Keras policy, e.g. mixed_bfloat16")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train_examples", type=int, default=0)
    parser.add_argument("--data_dir", default=str(ROOT / ".data" / "tfds"))
    args = parser.parse_args()

    import trainer  # noqa: F401  (tf-keras before TensorFlow)
    import tensorflow as tf
    import tf_keras
    if args.threads_per_op:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads_per_op)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads_per_op)
    from trainer import data, models, precision

    builder = data.prepare(os.path.abspath(args.data_dir))
    images, labels = data.load(builder, data.train_split(args.train_examples))
    spec = models.get(args.model)
    ds = data.train_dataset(images, labels, args.batch_size, spec.input_shape, seed=1)
    with precision.policy(args.precision):
        model = spec.build()
        model.compile(tf_keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", ["accuracy"],
                      steps_per_execution=args.steps_per_execution, jit_compile=args.jit_compile)
    seconds = []

    class Timer(tf_keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.started)

    model.fit(ds, epochs=args.epochs, steps_per_epoch=-(-len(labels) // args.batch_size), callbacks=[Timer()],
              verbose=0)
    print(json.dumps({"first_epoch_s": round(seconds[0], 3),
                      "epoch_s": round(statistics.median(seconds[1:] or seconds), 3)}))


if __name__ == "__main__":
    main()
