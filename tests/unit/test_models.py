"""The registry's mlp and cnn are the seed notebook's networks, layer for layer."""

import pytest

import trainer  # noqa: F401
from trainer.training import models


def layer_summary(model):
    rows = []
    for layer in model.layers:
        config = layer.get_config()
        rows.append((type(layer).__name__, config.get("units") or config.get("filters") or config.get("pool_size"),
                     config.get("kernel_size"), config.get("activation"), layer.output_shape[1:]))
    return rows


def test_mlp_is_the_seed_mlp():
    model = models.get("mlp").build()
    assert layer_summary(model) == [
        ("Flatten", None, None, None, (784,)),
        ("Dense", 128, None, "relu", (128,)),
        ("Dense", 64, None, "relu", (64,)),
        ("Dense", 10, None, "softmax", (10,)),
    ]
    assert model.input_shape == (None, 28, 28)
    assert model.count_params() == 109_386


def test_cnn_is_the_seed_cnn():
    model = models.get("cnn").build()
    assert layer_summary(model) == [
        ("Conv2D", 32, (3, 3), "relu", (26, 26, 32)),
        ("MaxPooling2D", (2, 2), None, None, (13, 13, 32)),
        ("Conv2D", 64, (3, 3), "relu", (11, 11, 64)),
        ("MaxPooling2D", (2, 2), None, None, (5, 5, 64)),
        ("Conv2D", 64, (3, 3), "relu", (3, 3, 64)),
        ("Flatten", None, None, None, (576,)),
        ("Dense", 64, None, "relu", (64,)),
        ("Dense", 10, None, "softmax", (10,)),
    ]
    assert model.input_shape == (None, 28, 28, 1)
    assert model.count_params() == 93_322


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_registry_input_shape_matches_the_model(name):
    spec = models.get(name)
    assert spec.build().input_shape[1:] == spec.input_shape


def test_models_are_tf_keras_not_keras_3():
    import tf_keras
    assert isinstance(models.get("cnn").build(), tf_keras.Model)


def test_vgg_normalizes_every_convolution_and_ends_in_probabilities():
    model = models.get("vgg").build()
    kinds = [type(layer).__name__ for layer in model.layers]
    convs = [i for i, kind in enumerate(kinds) if kind == "Conv2D"]
    assert len(convs) == 5
    assert all(kinds[i + 1] == "BatchNormalization" and kinds[i + 2] == "ReLU" for i in convs)
    assert all(not model.layers[i].use_bias for i in convs)  # the batch norm's shift is the bias
    assert [model.layers[i].filters for i in convs] == [32, 64, 64, 128, 128]
    # The classifier reads the whole 7x7x128 map (where each feature was), not its average.
    assert model.layers[-1].input_shape == (None, 7 * 7 * 128)
    assert model.count_params() == 341_162
    assert model.output_shape == (None, 10)


@pytest.mark.parametrize("name", models.names())
def test_every_registered_model_maps_its_input_shape_to_class_probabilities(name):
    import numpy as np
    spec = models.get(name)
    model = spec.build()
    probabilities = model(np.random.default_rng(0).random((3, *spec.input_shape), dtype=np.float32)).numpy()
    assert probabilities.shape == (3, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
