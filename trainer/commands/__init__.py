"""The job's commands, one shape each: a module with its settings (`COMMAND`, a `cli.Command`) and `main(argv)`
-> an exit status of the contract (trainer/errors.py), which `cli.Command.status_of` alone maps from exceptions.

- `train`: the training job (`python -m trainer.task`, console script `fmnist-train`);
- `predict`: batch prediction with a trained model (console script `fmnist-predict`);
- `export`: a copy of a run's SavedModel with another default signature;
- `compare`: the comparison report of finished runs;
- `check_accuracy`: whether finished runs reached their accuracy floors;
- `prepare_data`: Fashion-MNIST prepared once in the TFDS folder.

Run each as `python -m trainer.commands.NAME`. No module here imports TensorFlow when it is imported: a wrong
command line fails in a second (tests/unit/test_layers.py holds that boundary).
"""
