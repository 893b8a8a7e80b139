"""Seconds per training epoch of candidate shapes of the speedrun network against `vgg`, on synthetic batches.

    .venv/bin/python bench/shapes.py [--candidates=vgg,32-64-128,48-96-192] [--batch_size=256]

A candidate "A-B-C" is `trainer.training.models.speedrun(widths=(A, B, C))`. Each is compiled with Nesterov SGD, warmed
up with 10 steps, then timed for 20 steps in each of 3 rounds, the candidates interleaved within a round (the machine is
shared: interleaving gives each the same conditions); the rate is scaled to an epoch of 60,000 images. Prints one line
per candidate: parameters, the three estimates and their median.
"""

import argparse
import statistics
import time

import common  # noqa: F401  (the repository on sys.path)
import trainer  # noqa: F401,I100  (tf-keras before TensorFlow)


def build(name):
    from trainer.training import models
    if name in models.names():
        return models.get(name).build()
    return models.speedrun(widths=tuple(int(width) for width in name.split("-")))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", default="vgg,32-64-128,48-96-192,64-128-256")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import tensorflow as tf
    import tf_keras
    images = tf.random.uniform([args.batch_size, 28, 28, 1])
    labels = tf.random.uniform([args.batch_size], 0, 10, tf.int32)
    batches = tf.data.Dataset.from_tensors((images, labels)).repeat()
    compiled = {}
    for name in args.candidates.split(","):
        model = build(name)
        model.compile(tf_keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True), "sparse_categorical_crossentropy",
                      steps_per_execution=10)
        model.fit(batches, steps_per_epoch=10, epochs=1, verbose=0)
        compiled[name] = model
    estimates = {name: [] for name in compiled}
    for _ in range(args.rounds):
        for name, model in compiled.items():
            started = time.perf_counter()
            model.fit(batches, steps_per_epoch=20, epochs=1, verbose=0)
            estimates[name].append((time.perf_counter() - started) / (20 * args.batch_size) * 60_000)
    for name, seconds in estimates.items():
        print(f"{name}: {compiled[name].count_params():,} parameters, epoch s (60,000 images) "
              f"{' '.join(f'{s:.1f}' for s in seconds)}, median {statistics.median(seconds):.1f}")


if __name__ == "__main__":
    main()
