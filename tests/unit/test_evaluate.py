"""Evaluation: test-time views of an image and their averaged predictions."""

import numpy as np
import pytest

from trainer.training import evaluation  # noqa: I100  (the trainer picks tf-keras before TensorFlow loads)

import tensorflow as tf  # noqa: E402


def one_bright_pixel(row, column, channel_axis):
    image = np.zeros((1, 28, 28), np.float32)
    image[0, row, column] = 1.0
    return tf.constant(image[..., None] if channel_axis else image)


@pytest.mark.parametrize("channel_axis", [False, True])
@pytest.mark.parametrize("mirror, down, right, expected", [
    (False, 0, 0, (5, 7)),
    (True, 0, 0, (5, 20)),      # mirrored left-right: column 7 -> 27 - 7
    (False, 1, 0, (6, 7)),
    (False, -1, 0, (4, 7)),
    (False, 0, 1, (5, 8)),
    (False, 0, -1, (5, 6)),
    (True, 0, 1, (5, 21)),      # mirrored, then shifted
])
def test_a_view_moves_the_image_by_whole_pixels(channel_axis, mirror, down, right, expected):
    view = evaluation.view(one_bright_pixel(5, 7, channel_axis), mirror, down, right).numpy()
    assert view.shape == ((1, 28, 28, 1) if channel_axis else (1, 28, 28))
    assert view.sum() == 1.0 and tuple(np.argwhere(view[0].squeeze() == 1.0)[0]) == expected


def test_a_shift_fills_the_uncovered_edge_with_background():
    image = tf.ones((1, 28, 28))
    view = evaluation.view(image, False, 0, 1).numpy()[0]
    assert (view[:, 0] == 0).all() and (view[:, 1:] == 1).all()


@pytest.mark.parametrize("mode", sorted(evaluation.TEST_TIME_VIEWS))
def test_predicted_probabilities_are_the_mean_over_the_views(mode):
    # A "model" that reads its answer off the images: its output differs per view, so the mean is checked.
    def model(images, training=False):
        weights = tf.reshape(tf.range(28 * 28, dtype=tf.float32), (1, 28, 28))
        score = tf.reduce_sum(images * weights, axis=[1, 2])
        return tf.stack([score, -score], axis=1)
    images = tf.random.stateless_uniform((3, 28, 28), seed=(1, 2))
    expected = np.mean([model(evaluation.view(images, *spec)).numpy() for spec in evaluation.TEST_TIME_VIEWS[mode]],
                       axis=0)
    np.testing.assert_allclose(evaluation.predict_probabilities(model, images, mode).numpy(), expected, rtol=1e-5)
    views = evaluation.TEST_TIME_VIEWS[mode]
    assert len(set(views)) == len(views) == {"none": 1, "flip": 2, "flip_shift": 6, "flip_grid": 18}[mode]
