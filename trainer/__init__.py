"""fmnist-trainer: a Fashion-MNIST batch training job for laptops, containers, Kubernetes and Vertex AI.

A sub-package per role, read from the top: `commands` (the entry points: one shape, the one mapping of exceptions
to exit statuses) read `config` (every setting declared once, the recipes, the flags) and run `training` (data,
models, the run in named steps), with its wings `resilience` (the backup, signals, many workers), `monitoring`
(the log, progress, metrics) and `serving` (using a trained model); `report` compares finished runs. Beneath them
all: `storage` (local paths and Cloud Storage, the only place that knows gs://) and `errors` (the exit-code
contract). `task` is the training job's module name for launchers (`python -m trainer.task`).
"""

import os

# tf.keras must mean Keras 2 (tf-keras) wherever TensorFlow code reaches for it: Keras 3's fit() fails under
# MultiWorkerMirroredStrategy. This must happen before TensorFlow is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ INFO lines (CPU features, missing CUDA on a CPU machine) drown the job's own log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
