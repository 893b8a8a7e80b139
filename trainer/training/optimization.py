"""The recipe's optimizer, learning-rate schedule and loss."""

import tensorflow as tf
import tf_keras

from trainer.training.fashion_mnist import NUM_CLASSES

# Variables that weight decay leaves alone: batch normalization's scale and shift and every bias set a feature's
# scale and offset, not what it detects (docs/benchmarks.md, strong model, third round).
NOT_DECAYED = ("gamma", "beta", "bias")


def optimizer(recipe, steps_per_epoch):
    """Adam as in the seed, or SGD with Nesterov momentum; both with decoupled weight decay of kernels
    (AdamW-style: each step shrinks every kernel by learning rate x weight_decay) when the recipe sets one, and an
    average of the weights (`AveragedWeights`) when it sets --ema_momentum."""
    rate = learning_rate(recipe, steps_per_epoch)
    decay = recipe.weight_decay or None
    average = dict(use_ema=True, ema_momentum=recipe.ema_momentum) if recipe.ema_momentum else {}
    if recipe.optimizer == "sgd":
        chosen = NesterovSGD(learning_rate=rate, momentum=0.9, nesterov=True, weight_decay=decay,
                             bias_learning_rate_factor=recipe.bias_learning_rate_factor, **average)
    elif recipe.optimizer == "adam":
        chosen = Adam(learning_rate=rate, weight_decay=decay, **average)
    else:
        raise ValueError(f"unknown optimizer {recipe.optimizer!r}")
    if decay:
        chosen.exclude_from_weight_decay(var_names=list(NOT_DECAYED))
    return chosen


class AveragedWeights:
    """tf-keras's exponential moving average of the trainable weights (`use_ema`), used only once training is done.

    The average is an optimizer variable, so the preemption backup holds it and a resumed run continues it. But
    tf-keras copies it into the model at the end of every `fit`, before `on_train_end`, where a stop requested
    after the last execution saves its backup: that backup would hold the average as the weights. So `fit`'s copy
    does nothing here, and the trainer calls `use_average` once `fit` has finished.
    Batch normalization's statistics are not averaged (they are not trainable): at a learning rate decaying to 0
    the last steps' weights and the average differ little.
    """

    def finalize_variable_values(self, var_list):
        """Nothing: see the class docstring (`use_average`)."""

    def use_average(self, var_list):
        """The model's `var_list` (its trainable variables) set to their average; nothing without one."""
        if self.use_ema:
            self._overwrite_model_variables_with_average_value(var_list)


def use_average(model):
    """After a finished `fit`: the model's weights become the optimizer's average, if the recipe keeps one."""
    if isinstance(model.optimizer, AveragedWeights):
        model.optimizer.use_average(model.trainable_variables)


class Adam(AveragedWeights, tf_keras.optimizers.Adam):
    """Keras's Adam (with an average of the weights, if asked)."""


class NesterovSGD(AveragedWeights, tf_keras.optimizers.SGD):
    """SGD whose biases and batch-norm shifts learn `bias_learning_rate_factor` times faster than the kernels.

    With momentum SGD, scaling a variable's gradient by k is scaling its learning rate by k (its decoupled weight
    decay, which the optimizer applies apart, is unchanged): one optimizer, one set of slots, any strategy.
    """

    def __init__(self, *args, bias_learning_rate_factor=1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.bias_learning_rate_factor = float(bias_learning_rate_factor)

    def update_step(self, gradient, variable):
        if self.bias_learning_rate_factor != 1.0 and is_shift(variable):
            gradient = gradient * tf.cast(self.bias_learning_rate_factor, gradient.dtype)
        return super().update_step(gradient, variable)

    def get_config(self):
        return {**super().get_config(), "bias_learning_rate_factor": self.bias_learning_rate_factor}


def is_shift(variable):
    """A bias or a batch norm's shift (beta), by the variable's own name."""
    return variable.name.split("/")[-1].split(":")[0] in ("bias", "beta")


def learning_rate(recipe, steps_per_epoch):
    """Constant, or linear warm-up then a cosine or straight-line decay to zero."""
    if recipe.schedule == "constant":
        return recipe.learning_rate
    total = recipe.epochs * steps_per_epoch
    warmup = int(recipe.warmup_epochs * steps_per_epoch)
    if recipe.schedule == "warmup_cosine":
        return tf_keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else recipe.learning_rate, decay_steps=max(1, total - warmup),
            warmup_target=recipe.learning_rate if warmup else None, warmup_steps=warmup)
    if recipe.schedule == "linear_decay":
        return WarmupLinearDecay(recipe.learning_rate, warmup, total)
    raise ValueError(f"unknown schedule {recipe.schedule!r}")


class WarmupLinearDecay(tf_keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then linear decay to 0 at `total_steps`."""

    def __init__(self, peak, warmup_steps, total_steps):
        self.peak, self.warmup_steps, self.total_steps = peak, warmup_steps, max(total_steps, warmup_steps + 1)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warming = self.peak * step / max(self.warmup_steps, 1)
        decaying = self.peak * (self.total_steps - step) / (self.total_steps - self.warmup_steps)
        return tf.maximum(0.0, tf.where(step < self.warmup_steps, warming, decaying))

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}


def crossentropy(label_smoothing):
    """Sparse categorical cross-entropy; with smoothing, the target spreads `label_smoothing` over all classes.

    A plain per-example function, so Keras reduces it correctly over replicas under every strategy.
    """
    if not label_smoothing:
        return "sparse_categorical_crossentropy"

    def smoothed_crossentropy(labels, probabilities):
        one_hot = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), NUM_CLASSES)
        return tf_keras.losses.categorical_crossentropy(one_hot, probabilities, label_smoothing=label_smoothing)
    return smoothed_crossentropy
