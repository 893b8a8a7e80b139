"""The recipes' optimizers: which variables decoupled weight decay shrinks."""

import dataclasses

import numpy as np
import pytest

from trainer.training import optimization  # noqa: I100  (the trainer picks tf-keras before TensorFlow loads)
from trainer.config import recipes

import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402


@pytest.mark.parametrize("optimizer_name", ["adam", "sgd"])
def test_weight_decay_shrinks_kernels_and_leaves_norm_scales_shifts_and_biases(optimizer_name):
    recipe = dataclasses.replace(recipes.get("strong", "vgg"), schedule="constant", optimizer=optimizer_name)
    assert recipe.weight_decay > 0
    model = tf_keras.Sequential([
        tf_keras.Input((4, 4, 1)),
        tf_keras.layers.Conv2D(2, 3),
        tf_keras.layers.BatchNormalization(),
        tf_keras.layers.Flatten(),
        tf_keras.layers.Dense(3),
    ])
    for variable in model.trainable_variables:  # nonzero everywhere, so a shrink would show
        variable.assign(tf.ones_like(variable))
    before = {v.name: v.numpy().copy() for v in model.trainable_variables}

    optimizer = optimization.optimizer(recipe, steps_per_epoch=10)
    # Zero gradients: the step itself moves nothing, so any change is the weight decay's.
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in model.trainable_variables])

    shrink = 1.0 - recipe.learning_rate * recipe.weight_decay
    for variable in model.trainable_variables:
        name = variable.name
        if "kernel" in name:
            np.testing.assert_allclose(variable.numpy(), before[name] * shrink, rtol=1e-6, err_msg=name)
        else:
            assert any(word in name for word in optimization.NOT_DECAYED), name
            np.testing.assert_array_equal(variable.numpy(), before[name], err_msg=name)


def test_a_recipe_without_weight_decay_changes_nothing_on_a_zero_gradient():
    recipe = dataclasses.replace(recipes.get("fast", "cnn"), schedule="constant")
    assert not recipe.weight_decay
    variable = tf.Variable(tf.ones([3]), name="kernel")
    optimization.optimizer(recipe, steps_per_epoch=10).apply_gradients([(tf.zeros([3]), variable)])
    np.testing.assert_array_equal(variable.numpy(), np.ones(3))
