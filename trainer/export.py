"""The SavedModel a run exports: raw uint8 images in, probabilities, class ids and class names out.

The serving signature takes images exactly as the data set stores them (uint8, `[N, 28, 28]` or `[N, 28, 28, 1]`),
so a client never has to know the training-time scaling: it is part of the exported graph, and so is the
test-time augmentation of a recipe that evaluates with it (the same views as `trainer.evaluate`).
"""

import tensorflow as tf

from trainer import data, evaluate


class ServingModule(tf.Module):
    def __init__(self, model, input_shape, test_time_augmentation="none"):
        super().__init__()
        self._test_time_augmentation = test_time_augmentation
        self.model = model
        self._input_shape = tuple(input_shape)
        self._class_names = tf.constant(data.CLASS_NAMES)

    @tf.function(input_signature=[tf.TensorSpec(shape=None, dtype=tf.uint8, name="images")])
    def serve(self, images):
        tf.debugging.assert_equal(tf.shape(images)[1:3], [28, 28],
                                  message="images must be uint8 [N, 28, 28] or [N, 28, 28, 1]")
        probabilities = evaluate.predict_probabilities(self.model, data.scale(images, self._input_shape),
                                                     self._test_time_augmentation)
        class_id = tf.argmax(probabilities, axis=-1)
        return {
            "probabilities": probabilities,
            "class_id": class_id,
            "class_name": tf.gather(self._class_names, class_id),
        }


def export_saved_model(model, input_shape, path, test_time_augmentation="none"):
    module = ServingModule(model, input_shape, test_time_augmentation)
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path
