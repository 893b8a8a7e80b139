"""Score finished runs' SavedModels on their validation split, with each set of test-time views.

    .venv/bin/python bench/score_validation.py RUN_DIR [RUN_DIR ...]

A run trained with `--validation_split=F` held out the last F of the training split; this scores the run's
exported model (its final weights) on exactly those images with every view set of `trainer.evaluate`, printing
accuracy and loss per set: how the strong recipe's model, recipe and views were chosen without the test split.
"""

import argparse
import json
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import trainer  # noqa: E402,F401  (selects tf-keras before TensorFlow loads)
from speed import add_data_args, load_split  # noqa: E402  (the same data flags and loader as the benchmarks)
from trainer import data, evaluate, models  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+")
    add_data_args(parser)
    args = parser.parse_args(argv)
    import tensorflow as tf

    cached = {}
    print("| run | " + " | ".join(f"{views} acc | {views} loss" for views in evaluate.TEST_TIME_VIEWS) + " |")
    for run in args.runs:
        metrics = json.loads(pathlib.Path(run, "metrics.json").read_text())
        held_out = metrics["validation_examples"]
        if not held_out:
            sys.exit(f"{run} held out no validation examples (trained without --validation_split)")
        split = data.train_split(metrics["train_examples"] + held_out)
        if split not in cached:
            cached[split] = load_split(args, split)
        _, validation = data.hold_out(*cached[split], held_out)
        dataset = data.eval_dataset(*validation, 1000, models.get(metrics["model"]).input_shape)
        model = tf.saved_model.load(os.path.join(run, "saved_model")).model
        cells = []
        for views in evaluate.TEST_TIME_VIEWS:
            scores, _ = evaluate.summarize(*evaluate.predict(model, dataset, views))
            cells += [f"{scores['test_accuracy']:.4f}", f"{scores['test_loss']:.4f}"]
        print(f"| {run} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
