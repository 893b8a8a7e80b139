"""Finished runs on disk as the trainer leaves them (metrics.json, test_predictions.npz), with the test images each
gets right laid out cell by cell of McNemar's 2x2 table: for the comparison report's tests."""

import json
import os

import numpy as np

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


N = 200


def correctness(both_right, only_this, only_other, both_wrong):
    """Which of the N images a run gets right, laid out cell by cell of the 2x2 agreement table."""
    assert both_right + only_this + only_other + both_wrong == N
    return np.array([True] * both_right + [True] * only_this + [False] * only_other + [False] * both_wrong)


def write_run(path, right, model="mlp", labels=None, predictions=True, history=True, validation=False, **extra):
    labels = np.arange(N) % 10 if labels is None else labels
    predicted = np.where(right, labels, (labels + 1 + np.arange(len(labels)) % 3) % 10)
    confusion = np.zeros((10, 10), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    rows = []
    for epoch in range(1, 4 if history else 1):
        row = {"epoch": epoch, "seconds": 1.5, "loss": 1.0 / epoch, "accuracy": 0.6 + 0.1 * epoch}
        if validation:
            row.update(val_loss=1.1 / epoch, val_accuracy=0.55 + 0.1 * epoch)
        rows.append(row)
    metrics = {
        "model": model, "params": 109386 if model == "mlp" else 93322,
        "test_accuracy": float(np.mean(predicted == labels)), "test_loss": 0.5 if model == "mlp" else 0.4,
        "per_class_accuracy": dict(zip(CLASSES, per_class.tolist())), "confusion_matrix": confusion.tolist(),
        "recipe": "seed", "epochs": 3, "batch_size": 32, "train_examples": 5000, "seed": 42, "strategy": "default",
        "train_seconds": 12.5, "examples_per_second": 1200.0, "history": rows, "finished_at": "2026-01-01T00:00:00Z",
        **extra,
    }
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "metrics.json"), "w") as f:
        json.dump(metrics, f)
    if predictions:
        np.savez_compressed(os.path.join(path, "test_predictions.npz"), class_id=predicted.astype(np.uint8),
                            label=labels.astype(np.uint8))
    return str(path)


def write_two_runs(root):
    """mlp right on 150 of 200 test images, cnn on 130; b = 30 (only mlp right), c = 10 (only cnn right)."""
    runs = root / "runs"
    mlp = write_run(runs / "mlp", correctness(120, 30, 10, 40), "mlp")
    cnn = write_run(runs / "cnn", other(correctness(120, 30, 10, 40), 120, 30, 10), "cnn")
    return mlp, cnn


def other(right_a, both_right, only_a, only_b):
    """Run B's correctness against run A's layout from correctness(): right on the both-right and only-B cells."""
    right_b = np.zeros(N, dtype=bool)
    right_b[:both_right] = True
    right_b[both_right + only_a:both_right + only_a + only_b] = True
    return right_b
