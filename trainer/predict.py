"""`python -m trainer.predict` (console script `fmnist-predict`): batch prediction with a trained model.

The job is `trainer.serving.batch`; this module keeps the command's name, which the launchers, the image and the
docs use.
"""

from trainer.serving.batch import COMMAND, main, predict, run  # noqa: F401

if __name__ == "__main__":
    run()
