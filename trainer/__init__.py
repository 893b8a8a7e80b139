"""fmnist-trainer: a Fashion-MNIST batch training job for laptops, containers, Kubernetes and Vertex AI.

Read top-down, as the README's Layout table lists it: `settings` (a setting declared once) -> `config` (the job's)
and `recipes` (the recipe's) -> `flags` -> `data` -> `models` -> `precision`, `distribution` -> `train` (the run in
named steps; `optimization`) -> `evaluate`, `scores` -> `export` -> `outputs` -> `tuning`. Fault handling (the
backup, its lease, SIGTERM, a lost worker) is the sub-package `resilience/`, which train enters once. Shared by
every entry point: `cli` (the command line), `errors` (the exit codes), `storage` (local paths and Cloud Storage),
`logs`. Using a trained model: `serving/`; comparing runs: `report/`. Entry point of the job:
`python -m trainer.task` (console script `fmnist-train`).
"""

import os

# tf.keras must mean Keras 2 (tf-keras) wherever TensorFlow code reaches for it: Keras 3's fit() fails under
# MultiWorkerMirroredStrategy. This must happen before TensorFlow is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ INFO lines (CPU features, missing CUDA on a CPU machine) drown the job's own log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
