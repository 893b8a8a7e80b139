"""Test-set evaluation from the model's own predictions: accuracy, loss, per-class accuracy, confusion matrix.

Computed from one pass of predictions rather than `model.evaluate`, so the confusion matrix, the per-class figures
and the kept test predictions (for comparing runs) all come from the same numbers.
"""

import numpy as np
import tensorflow as tf

from trainer import data


def predict(model, dataset, flip_test_time_augmentation=False):
    """Class probabilities and labels for every example of a batched (images, labels) dataset.

    With `flip_test_time_augmentation` each image's probabilities are the mean of the image's and its mirror
    image's, as in the exported SavedModel (`trainer.export`).
    """
    predict_step = tf.function(lambda images: predict_probabilities(model, images, flip_test_time_augmentation))
    probabilities, labels = [], []
    for images, batch_labels in dataset:
        probabilities.append(predict_step(images).numpy())
        labels.append(batch_labels.numpy())
    return np.concatenate(probabilities), np.concatenate(labels)


def predict_probabilities(model, images, flip_test_time_augmentation=False):
    """The model's class probabilities for scaled images of its input shape, mirrored too when asked."""
    probabilities = model(images, training=False)
    if flip_test_time_augmentation:
        # The width axis is axis 2 for both [N, 28, 28] and [N, 28, 28, 1].
        probabilities = (probabilities + model(tf.reverse(images, axis=[2]), training=False)) / 2.0
    return probabilities


def summarize(probabilities, labels):
    num_classes = probabilities.shape[1]
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    picked = probabilities[np.arange(len(labels)), labels]
    loss = float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))
    return {
        "test_accuracy": float(np.mean(predicted == labels)),
        "test_loss": loss,
        "per_class_accuracy": {name: float(v) for name, v in zip(data.CLASS_NAMES, per_class)},
        "confusion_matrix": confusion.tolist(),
        "test_examples": int(len(labels)),
    }, predicted
