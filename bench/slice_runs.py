"""Tuning runs in one process on the first N training images: the trainer's own steps, any settings per run.

    .venv/bin/python bench/slice_runs.py 20000 max:epochs=8 lr=0.8:epochs=8,learning_rate=0.8
    THREADS=1 .venv/bin/python bench/slice_runs.py 0 mlp4:recipe=fast,model=mlp,epochs=4

Each argument after the count is NAME:SETTING=VALUE,... (trainer settings; recipe defaults to speedrun, seed to 1); N =
0 means all 60,000. The data are decoded once; each run is `trainer.training.train.run` with those splits and prints one
JSON line: test accuracy and loss, training seconds, per-epoch training accuracy and loss. THREADS fixes TensorFlow's
thread pools (as --threads_per_op would in a process of its own). Used to choose the speedrun recipe and to try the fast
recipe's levers (docs/benchmarks.md, "Time to accuracy").
"""

import json
import os
import sys
import tempfile

from common import ROOT

import trainer  # noqa: F401,I100


def parse(spec):
    name, _, pairs = spec.partition(":")
    values = {}
    for pair in filter(None, pairs.split(",")):
        key, value = pair.split("=")
        values[key] = {"true": True, "false": False}.get(value, value)
        for kind in (int, float):
            try:
                values[key] = kind(value)
                break
            except ValueError:
                pass
    values.setdefault("recipe", "speedrun")
    values.setdefault("seed", 1)
    return name, values


def main(argv):
    import tensorflow as tf
    if os.environ.get("THREADS"):
        tf.config.threading.set_intra_op_parallelism_threads(int(os.environ["THREADS"]))
        tf.config.threading.set_inter_op_parallelism_threads(int(os.environ["THREADS"]))
    from trainer.config import run_config
    from trainer.training import data, train
    examples = int(argv[0])
    builder = data.prepare(os.environ.get("DATA_DIR") or str(ROOT / ".data" / "tfds"))
    splits = data.load_splits(builder, examples or None)
    for spec in argv[1:]:
        name, values = parse(spec)
        cfg = run_config.make(output_dir=tempfile.mkdtemp(), overwrite=True, **values)
        m = train.run(cfg, splits=splits)
        print(json.dumps({"name": name, "test_accuracy": m["test_accuracy"], "test_loss": round(m["test_loss"], 4),
                          "train_seconds": m["train_seconds"],
                          "accuracy": [round(row["accuracy"], 4) for row in m["history"]],
                          "loss": [round(row["loss"], 3) for row in m["history"]]}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
