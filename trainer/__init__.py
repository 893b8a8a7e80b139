"""fmnist-trainer: a Fashion-MNIST batch training job for laptops, containers, Kubernetes and Vertex AI.

The pipeline reads top-down through the modules: flags -> config -> data -> models/recipes -> distribution ->
train -> evaluate -> export -> outputs; fault handling (the backup, its lease, SIGTERM, a lost worker) is the
sub-package `trainer.resilience`, which train enters once. Entry point: `python -m trainer.task` (console script
`fmnist-train`).
"""

import os

# tf.keras must mean Keras 2 (tf-keras) wherever TensorFlow code reaches for it: Keras 3's fit() fails under
# MultiWorkerMirroredStrategy. This must happen before TensorFlow is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ INFO lines (CPU features, missing CUDA on a CPU machine) drown the job's own log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
