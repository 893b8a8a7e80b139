"""Score finished runs' SavedModels on their validation split, with each set of test-time views.

    .venv/bin/python bench/score_validation.py RUN_DIR [RUN_DIR ...]

A run trained with `--validation_split=F` held out the last F of the training split; this scores the run's exported
model (its final weights) on exactly those images with every view set of `trainer.training.evaluation`, printing
accuracy and loss per set: how the strong recipe's model, recipe and views were chosen without the test split.
"""

import argparse
import os
import sys

from common import add_data_args, load_split
from trainer.training import data, evaluation, models  # noqa: I100
from trainer.storage import outputs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+")
    add_data_args(parser)
    args = parser.parse_args(argv)
    import tensorflow as tf

    cached = {}
    print("| run | " + " | ".join(f"{views} acc | {views} loss" for views in evaluation.TEST_TIME_VIEWS) + " |")
    for run in args.runs:
        metrics = outputs.read_metrics(run)
        held_out = metrics["validation_examples"]
        if not held_out:
            sys.exit(f"{run} held out no validation examples (trained without --validation_split)")
        split = data.train_split(metrics["train_examples"] + held_out)
        if split not in cached:
            cached[split] = load_split(args, split)
        _, validation = data.hold_out(*cached[split], held_out)
        dataset = data.eval_dataset(*validation, models.get(metrics["model"]).input_shape)
        model = tf.saved_model.load(os.path.join(run, "saved_model")).model
        cells = []
        for views in evaluation.TEST_TIME_VIEWS:
            scored, _ = evaluation.summarize(*evaluation.predict(model, dataset, views))
            cells += [f"{scored['test_accuracy']:.4f}", f"{scored['test_loss']:.4f}"]
        print(f"| {run} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
