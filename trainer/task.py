"""`python -m trainer.task`: the training job's module name, as Vertex AI's Python package runs it.

The job itself is `trainer.commands.train` (console script `fmnist-train`); this name stays because launchers call
it (Vertex AI's `pythonModule`, the image's entrypoint).
"""

from trainer.commands.train import main, run  # noqa: F401

if __name__ == "__main__":
    run()
