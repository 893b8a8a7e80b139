"""Using a trained model: the SavedModel's signatures and the batch-prediction job.

Read top-down: `photo` (any image -> Fashion-MNIST's 28x28: the rule and the conversion, in TensorFlow ops) ->
`signatures` (what the exported SavedModel takes and returns) -> `model` (finding a run's SavedModel, local or
gs://, and loading it) -> `inputs` (what to predict: files, folders, globs, gs://, JSONL) -> `preprocess` (each
input checked and decoded) -> `output` (the JSONL of predictions, complete or absent) -> `batch` (the job:
`python -m trainer.commands.predict`, console script `fmnist-predict`).
"""

SIGNATURES = ("serving_default", "serving_bytes")  # the exported SavedModel's (signatures.py), named before TF loads
