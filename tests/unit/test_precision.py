"""Mixed precision: who decides the number format, what computes in 16 bits, and what stays float32."""

import numpy as np
import pytest

from support.data import splits, train_in_process
from trainer.training import models, precision  # noqa: I100  (the trainer picks tf-keras before TensorFlow loads)
from trainer.config import recipes

import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402


def test_an_explicit_precision_wins_over_recipe_and_hardware(monkeypatch):
    monkeypatch.setattr(precision, "native_bfloat16", lambda: False)
    assert precision.resolve("mixed_bfloat16", recipe_wants_mixed=False) == "mixed_bfloat16"
    assert precision.resolve("float32", recipe_wants_mixed=True) == "float32"
    assert precision.resolve("mixed_float16", recipe_wants_mixed=True) == "mixed_float16"


@pytest.mark.parametrize("recipe_wants_mixed, native, expected", [
    (True, True, "mixed_bfloat16"),
    (True, False, "float32"),     # emulated bfloat16 would be slower than float32
    (False, True, "float32"),     # the recipe (e.g. the seed's) did not ask
])
def test_auto_grants_bfloat16_only_when_asked_and_native(monkeypatch, recipe_wants_mixed, native, expected):
    monkeypatch.setattr(precision, "native_bfloat16", lambda: native)
    assert precision.resolve("auto", recipe_wants_mixed) == expected


def test_the_seed_recipe_never_asks_for_mixed_precision():
    assert not any(recipes.get("seed", name).mixed_precision for name in models.names())


@pytest.mark.parametrize("name", models.names())
def test_under_mixed_bfloat16_layers_compute_in_16_bits_but_weights_and_probabilities_are_float32(name):
    with precision.policy("mixed_bfloat16"):
        model = models.get(name).build()
    assert tf_keras.mixed_precision.global_policy().name == "float32"  # restored after the block
    assert model.layers[1].compute_dtype == "bfloat16"
    assert all(weight.dtype == tf.float32 for weight in model.weights)
    assert model.layers[-1].compute_dtype == "float32"  # the classifier: softmax and loss stay float32
    probabilities = model(np.random.default_rng(0).random((4, *models.get(name).input_shape), np.float32))
    assert probabilities.dtype == tf.float32
    np.testing.assert_allclose(probabilities.numpy().sum(axis=1), 1.0, rtol=1e-5)


def test_a_mixed_precision_run_says_so_and_exports_a_float32_model(fashion, tmp_path):
    metrics = train_in_process(tmp_path, splits(fashion, 2000, test_examples=2000), model="cnn", epochs=1,
                               precision="mixed_bfloat16")
    assert metrics["precision"] == "mixed_bfloat16" and metrics["flags"]["precision"] == "mixed_bfloat16"
    assert metrics["test_accuracy"] > 0.5  # trains: far above chance (0.1)
    serve = tf.saved_model.load(str(tmp_path / "saved_model")).signatures["serving_default"]
    assert serve.structured_outputs["probabilities"].dtype == tf.float32
    graph = serve.graph.as_graph_def()
    nodes = list(graph.node) + [node for function in graph.library.function for node in function.node_def]
    assert len(nodes) > 20
    bfloat16 = tf.bfloat16.as_datatype_enum
    assert not [node.name for node in nodes if any(attr.type == bfloat16 for attr in node.attr.values())]
