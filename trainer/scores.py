"""Scores of a model's test predictions, in NumPy alone: shared by the trainer (evaluate) and the report."""

import numpy as np

from trainer.fashion_mnist import CLASS_NAMES


def confusion_matrix(labels, predicted, num_classes=len(CLASS_NAMES)):
    """counts[true class, predicted class]."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(labels, np.int64), np.asarray(predicted, np.int64)), 1)
    return counts


def summarize(probabilities, labels):
    """Accuracy, loss, per-class accuracy and the confusion matrix of class probabilities [N, C] against labels;
    returns (scores for metrics.json, predicted class of every example)."""
    predicted = probabilities.argmax(axis=1)
    confusion = confusion_matrix(labels, predicted, probabilities.shape[1])
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    picked = probabilities[np.arange(len(labels)), labels]
    return {
        "test_accuracy": float(np.mean(predicted == labels)),
        "test_loss": float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0)))),
        "per_class_accuracy": {name: float(v) for name, v in zip(CLASS_NAMES, per_class)},
        "confusion_matrix": confusion.tolist(),
        "test_examples": int(len(labels)),
    }, predicted
