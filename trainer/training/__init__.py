"""One training run, from the data set to the scores, under a tf.distribute strategy.

Read top-down: `fashion_mnist` (what the data set is) -> `data` (the tf.data pipeline from TFDS) -> `models` (the
registry) -> `precision` and `distribution` (number format, strategy) -> `optimization` (optimizer, schedule, loss)
-> `train` (the run in named steps) -> `evaluation` (test predictions and scores). Fault handling around the run
is `trainer.resilience`; what it reports while it runs, `trainer.monitoring`; where results go, `trainer.storage`.

`fashion_mnist`, `models`, `precision` and this package import no TensorFlow at module level: the settings
(`trainer.config`) read their names and choices before the flags are checked.
"""
