"""A trained model's test scores: its predictions over a data set with the recipe's test-time views, then
accuracy, loss, per-class accuracy and the confusion matrix from them.

One pass of predictions rather than `model.evaluate`, so that the scores, the confusion matrix and the kept test
predictions (for comparing runs) all come from the same numbers. TensorFlow is imported by the functions that
need it: the comparison report (`trainer.report`) scores finished runs with NumPy alone.
"""

import numpy as np

from trainer.config import recipes
from trainer.training.fashion_mnist import CLASS_NAMES


# Test-time augmentation: the views of each image whose predicted probabilities are averaged (in evaluation and in
# the exported SavedModel alike), as (mirror, rows down, columns right).
TEST_TIME_VIEWS = {
    "none": [(False, 0, 0)],
    "flip": [(False, 0, 0), (True, 0, 0)],
    # + the four one-pixel shifts: chosen on the strong recipe's validation split (docs/benchmarks.md).
    "flip_shift": [(False, 0, 0), (True, 0, 0), (False, 1, 0), (False, -1, 0), (False, 0, 1), (False, 0, -1)],
    # The image and its mirror, each at the nine positions of a one-pixel grid: 18 views (the speedrun's; issue 28,
    # docs/benchmarks.md).
    "flip_grid": [(mirror, down, right) for mirror in (False, True) for down in (0, 1, -1) for right in (0, 1, -1)],
}
assert tuple(TEST_TIME_VIEWS) == recipes.TEST_TIME_AUGMENTATIONS


def predict(model, dataset, test_time_augmentation="none"):
    """Class probabilities and labels for every example of a batched (images, labels) dataset.

    With test-time augmentation each image's probabilities are the mean over its views (`TEST_TIME_VIEWS`), as in
    the exported SavedModel (`trainer.serving.signatures`).
    """
    import tensorflow as tf
    predict_step = tf.function(lambda images: predict_probabilities(model, images, test_time_augmentation))
    probabilities, labels = [], []
    for images, batch_labels in dataset:
        probabilities.append(predict_step(images).numpy())
        labels.append(batch_labels.numpy())
    return np.concatenate(probabilities), np.concatenate(labels)


def predict_probabilities(model, images, test_time_augmentation="none"):
    """The model's class probabilities for scaled images of its input shape, averaged over the asked views."""
    import tensorflow as tf
    views = TEST_TIME_VIEWS[test_time_augmentation]
    return tf.add_n([model(view(images, *spec), training=False) for spec in views]) / float(len(views))


def view(images, mirror, down, right):
    """`images` ([N, 28, 28] or [N, 28, 28, 1]: rows are axis 1, columns axis 2) mirrored left-right and/or shifted
    by whole pixels, with zeros (the background) filling in."""
    import tensorflow as tf
    if mirror:
        images = tf.reverse(images, axis=[2])
    if down or right:
        pad_rows, pad_columns = abs(down), abs(right)
        padding = [[0, 0], [pad_rows, pad_rows], [pad_columns, pad_columns]] + [[0, 0]] * (images.shape.rank - 3)
        padded = tf.pad(images, padding)
        top, left = pad_rows - down, pad_columns - right
        images = padded[:, top:top + images.shape[1], left:left + images.shape[2]]
    return images

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
