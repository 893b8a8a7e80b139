"""Progress a person can read: one line per epoch with the ETA of the whole run, and a bar on a terminal.

    training epochs 1-18 (422 steps of 128 examples each)
    epoch 3/18: loss 0.4132, accuracy 0.8741, val_accuracy 0.9020, 8,410 examples/s, 1m31s elapsed, ETA 7m46s

This replaces Keras's own `fit(verbose=2)` lines ("Epoch 3/18", then "422/422 - 27s - loss: ..."): one line per
epoch, not two, and it says when the run will end. The ETA counts only what is left of the run (after a resume
too: the steps the backup already holds are not counted again): the training steps left at the pace of this
process's epochs after its first (the first one also traces and compiles the train function), and, with a
validation split, the test evaluation at the pace of the last validation (test images x test-time views; the
SavedModel's export after it is not counted).

On a terminal (stdout is a tty) Keras's Progbar draws an in-place bar within each epoch, which the epoch's line
then replaces; in a log (kubectl logs, a file) there are no control characters and no per-step lines.

`Progress` is also the state the metrics endpoint serves: global step, epoch, examples/s, last logs, ETA.
"""

import sys
import time

import tf_keras
from absl import logging

QUIET_BATCHES = 5  # tf_keras's CallbackList times the hooks of the first 5 batches and warns about slow ones


def duration(seconds):
    """42s, 7m46s, 1h05m: short, for a log line."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def is_terminal(stream=None):
    stream = sys.stdout if stream is None else stream
    return bool(getattr(stream, "isatty", None) and stream.isatty())


class Progress(tf_keras.callbacks.Callback):
    """Where the run is and when it will end; logs one line per epoch (and draws a bar on a terminal).

    `track_steps`: follow every step (for the metrics endpoint) even without a terminal. The per-step hook only
    stores the step and Keras's logs as they are (tensors: nothing waits for the device); values are read when a
    line is printed or the endpoint is scraped.
    """

    def __init__(self, epochs, steps_per_epoch, examples_per_epoch, batch_size, start_step=0, interactive=None,
                 track_steps=False, validation_examples=0, evaluation_examples=0):
        super().__init__()
        self._supports_tf_logs = True  # the per-step hook keeps tensors; reading them is left to the reader
        self.epochs, self.steps_per_epoch, self.batch_size = epochs, steps_per_epoch, batch_size
        self.examples_per_step = examples_per_epoch / steps_per_epoch  # the last batch of an epoch may be short
        self.start_step = start_step
        self.interactive = is_terminal() if interactive is None else interactive
        self.track_steps = track_steps
        self.global_step = start_step          # steps done, the backup's included
        self.epoch = start_step // steps_per_epoch + 1  # the epoch in progress (1-based)
        self.logs = {}                         # the latest logs Keras passed (per step or per epoch)
        self.epoch_logs = {}                   # the last finished epoch's logs, as floats
        self.examples_per_second = None        # the last finished epoch's training throughput
        self.eta_seconds = None
        self.training = False
        self._train_started = None
        self._epoch_started = self._validation_started = None
        self._epoch_first_step = start_step
        self._paces = []                       # (seconds, steps) of each epoch finished in this process
        self.validation_examples = validation_examples    # per epoch, from fit's validation_data
        self.evaluation_examples = evaluation_examples    # the test evaluation after fit: images x views
        self._evaluation_seconds = None        # its estimate, from the last validation's pace
        self._bar = None
        self._bar_updated = 0.0
        self._batches_seen = 0

    # ---- what the run has left -----------------------------------------------------------------------------------

    @property
    def total_steps(self):
        return self.epochs * self.steps_per_epoch

    @property
    def elapsed_seconds(self):
        return 0.0 if self._train_started is None else time.perf_counter() - self._train_started

    def seconds_per_step(self):
        """Wall time per step, validation included, from this process's finished epochs after its first (the
        first also traces the train function); from the first alone until there is a second."""
        paces = self._paces[1:] or self._paces
        steps = sum(s for _, s in paces)
        return sum(t for t, _ in paces) / steps if steps else None

    def estimate_eta(self):
        pace = self.seconds_per_step()
        if pace is None:
            return None
        return (self.total_steps - self.global_step) * pace + (self._evaluation_seconds or 0.0)

    # ---- Keras's hooks ---------------------------------------------------------------------------------------------

    def _implements_train_batch_hooks(self):
        return self.interactive or self.track_steps

    def on_train_begin(self, logs=None):
        self.training = True
        self._train_started = time.perf_counter()
        first_epoch, step_in_epoch = divmod(self.start_step, self.steps_per_epoch)
        resumed = f", from step {step_in_epoch + 1} of epoch {first_epoch + 1}" if step_in_epoch else ""
        logging.info("training epochs %d-%d (%d steps of %d examples each)%s", first_epoch + 1, self.epochs,
                     self.steps_per_epoch, self.batch_size, resumed)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1
        self._epoch_started, self._validation_started = time.perf_counter(), None
        self._epoch_first_step = self.global_step
        if self.interactive:
            self._bar = tf_keras.utils.Progbar(self.steps_per_epoch, stateful_metrics=("loss", "accuracy"),
                                               unit_name="step")
            self._bar._seen_so_far = self.global_step - epoch * self.steps_per_epoch  # a resumed epoch's start

    def on_train_batch_end(self, batch, logs=None):
        self.global_step = (self.epoch - 1) * self.steps_per_epoch + batch + 1
        self.logs = logs or {}
        self._batches_seen += 1
        now = time.perf_counter()
        # Reading a value waits for the step: not in the first batches, which Keras times to find slow callbacks.
        if self._bar is not None and self._batches_seen > QUIET_BATCHES and (
                now - self._bar_updated >= 0.1 or batch + 1 >= self.steps_per_epoch):
            self._bar_updated = now
            self._bar.update(batch + 1, values=[(k, float(v)) for k, v in self.logs.items()
                                                if k in ("loss", "accuracy")])

    def on_test_begin(self, logs=None):
        if self.training and self._epoch_started is not None:
            self._validation_started = time.perf_counter()  # fit's validation: the epoch's training ended

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self.global_step = (epoch + 1) * self.steps_per_epoch
        steps = self.global_step - self._epoch_first_step
        self._paces.append((now - self._epoch_started, steps))
        train_seconds = (self._validation_started or now) - self._epoch_started
        if self._validation_started is not None and self.validation_examples and self.evaluation_examples:
            validation_rate = self.validation_examples / max(now - self._validation_started, 1e-6)
            self._evaluation_seconds = self.evaluation_examples / validation_rate
        self.examples_per_second = steps * self.examples_per_step / train_seconds if train_seconds > 0 else None
        self.epoch_logs = {k: float(v) for k, v in (logs or {}).items()}
        self.logs = self.epoch_logs
        self.eta_seconds = self.estimate_eta()
        if self._bar is not None:
            sys.stdout.write("\r\x1b[K")  # the bar gives way to the epoch's line
            sys.stdout.flush()
            self._bar = None
        logging.info("%s", self.epoch_line())

    def on_train_end(self, logs=None):
        self.training = False
        if self._bar is not None:  # fit ended within an epoch (a stop request): end the bar's line
            sys.stdout.write("\n")
            sys.stdout.flush()
            self._bar = None

    def epoch_line(self):
        """`epoch 3/18: loss 0.4132, accuracy 0.8741, val_accuracy 0.9020, 8,410 examples/s, 1m31s elapsed,
        ETA 7m46s`."""
        parts = [f"{name} {self.epoch_logs[name]:.4f}" for name in ("loss", "accuracy", "val_loss", "val_accuracy")
                 if name in self.epoch_logs]
        if self.examples_per_second:
            parts.append(f"{self.examples_per_second:,.0f} examples/s")
        parts.append(f"{duration(self.elapsed_seconds)} elapsed")
        parts.append(f"ETA {duration(self.eta_seconds)}" if self.eta_seconds is not None else "ETA unknown")
        return f"epoch {self.epoch}/{self.epochs}: " + ", ".join(parts)
