"""Seeing the job while it runs: its log, and what `fit` reports besides the model, as Keras callbacks.

- `logs`: a run's log reads like a job's log (settings, one line per epoch, one line for a lost peer);
- `progress`: one line per epoch with the ETA of the whole run (a bar within the epoch on a terminal);
- `endpoint`: `--metrics_port`, the same progress as Prometheus metrics, with `faults` (restarts, backup age);
- `tuning`: the tuning metric after every epoch, for Vertex AI's and Katib's early stopping;
- `hparams`: the run's settings and final metrics for TensorBoard's HParams tab;
- `trainjob_status`: in a Kubeflow TrainJob, the chief's progress, ETA and metrics in the TrainJob's status;
- `callbacks`: the one call `train.fit` makes for all of them.

Importing the package imports nothing: the command line reaches `logs` before TensorFlow loads.
"""
