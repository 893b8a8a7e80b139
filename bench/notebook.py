"""The seed notebook's own code, as its README gives it, timed: the baseline the fast-training goals quote.

    .venv/bin/python bench/notebook.py --model=cnn [--train_examples=N] [--epochs=10]

What the notebook does (../shared/seed/README.md): Keras as TensorFlow ships it (Keras 3), the data as NumPy arrays
scaled to [0, 1], `Sequential` models written exactly as there, Adam, sparse categorical cross-entropy,
`model.fit(x, y, epochs=10)` at Keras's default batch of 32, then `model.evaluate` on the test split. The only
change: the arrays come from the TFDS copy the trainer prepares (the same 70,000 images) instead of
`keras.datasets.fashion_mnist.load_data()`, which needs the network.

Prints one JSON line: training seconds (`fit` alone), test accuracy, epochs. A process of its own, without the
trainer's package imported, so that `keras` means Keras 3 as in the notebook, not tf-keras.
"""

import argparse
import json
import os
import pathlib
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def load(data_dir, split, limit):
    import numpy as np
    import tensorflow_datasets as tfds
    images, labels = tfds.as_numpy(tfds.load("fashion_mnist", split=split, data_dir=data_dir, as_supervised=True,
                                             batch_size=-1, download=False))
    images, labels = images[:limit] if limit else images, labels[:limit] if limit else labels
    return images[..., 0].astype(np.float32) / 255.0, labels


def build(model_name):
    from keras import layers, models
    if model_name == "mlp":
        return models.Sequential([
            layers.Flatten(input_shape=(28, 28)),
            layers.Dense(128, activation='relu'),
            layers.Dense(64, activation='relu'),
            layers.Dense(10, activation='softmax')
        ])
    return models.Sequential([
        layers.Conv2D(32, (3, 3), activation='relu', input_shape=(28, 28, 1)),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation='relu'),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation='relu'),
        layers.Flatten(),
        layers.Dense(64, activation='relu'),
        layers.Dense(10, activation='softmax')
    ])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=("mlp", "cnn"), required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train_examples", type=int, default=0)
    parser.add_argument("--data_dir", default=os.environ.get("DATA_DIR") or str(ROOT / ".data" / "tfds"))
    args = parser.parse_args()
    os.environ.pop("TF_USE_LEGACY_KERAS", None)  # the notebook's Keras: Keras 3
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

    x_train, y_train = load(args.data_dir, "train", args.train_examples)
    x_test, y_test = load(args.data_dir, "test", 0)
    if args.model == "cnn":
        x_train, x_test = x_train[..., None], x_test[..., None]
    model = build(args.model)
    model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
    started = time.perf_counter()
    model.fit(x_train, y_train, epochs=args.epochs, verbose=2)
    train_seconds = time.perf_counter() - started
    test_loss, test_accuracy = model.evaluate(x_test, y_test, verbose=0)
    import keras
    print(json.dumps({"model": args.model, "keras": keras.__version__, "epochs": args.epochs,
                      "train_seconds": round(train_seconds, 2), "test_accuracy": round(float(test_accuracy), 4),
                      "test_loss": round(float(test_loss), 4)}))


if __name__ == "__main__":
    main()
