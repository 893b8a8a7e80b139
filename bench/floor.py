"""GFLOP/s of an epoch of each registered network under its recipe, against the matmul floor of its number format.

    .venv/bin/python bench/floor.py [--pairs=mlp:fast,cnn:fast,speedrun:speedrun,vgg:strong]
        [--train_examples=12000] [--epochs=3]

Issue 28's item 2 in one table per host: for each model:recipe pair, bench/epoch_time.py (a process of its own,
the trainer's own steps, the recipe's batch, steps per execution, threads and precision) gives the median epoch
after the first; its arithmetic is bench/anatomy.py's count (6 x multiply-adds x images). The floors (float32,
and bfloat16 where native) are measured in this process before and after the pairs, and each pair is compared
with the floor of its own number format (`anatomy.floor_of`), the better of the two measurements.
"""

import argparse
import json
import subprocess
import sys

from common import ROOT, add_data_args, data_flags, machine
import anatomy  # noqa: I100


def epoch_seconds(args, model, recipe):
    cmd = [sys.executable, "bench/epoch_time.py", f"--model={model}", f"--recipe={recipe}",
           f"--epochs={args.epochs}", f"--train_examples={args.train_examples}", *data_flags(args)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", default="mlp:fast,cnn:fast,speedrun:speedrun,vgg:strong")
    parser.add_argument("--train_examples", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=3)
    add_data_args(parser)
    args = parser.parse_args(argv)
    import trainer  # noqa: F401
    from trainer.training import precision
    from trainer.config import recipes
    before, load_before = anatomy.floors(), anatomy.load_average()
    rows = []
    for pair in args.pairs.split(","):
        model, recipe_name = pair.split(":")
        timing = epoch_seconds(args, model, recipe_name)
        rows.append((model, recipe_name, timing,
                     precision.resolve("auto", recipes.get(recipe_name, model).mixed_precision)))
    after = anatomy.floors()
    rates = {name: max(rate, after.get(name, 0.0)) for name, rate in before.items()}
    lines = [f"Machine: {machine()}", anatomy.floor_line(before) + " (before)", anatomy.floor_line(after) +
             " (after)", f"Command: bench/floor.py {' '.join(argv or sys.argv[1:])}; load average {load_before} "
             f"before, {anatomy.load_average()} after", "",
             "| model | recipe | precision | M multiply-adds per image | epoch s (median, "
             f"{args.train_examples:,} images) | first epoch s | GFLOP/s | floor | of the floor |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model, recipe_name, timing, policy in rows:
        gflops = anatomy.epoch_tflop(model, args.train_examples) * 1e3 / timing["epoch_s"]
        floor_name, floor_gflops = anatomy.floor_of(policy, rates)
        lines.append(f"| {model} | {recipe_name} | {policy} | {anatomy.multiply_adds(model) / 1e6:.2f} | "
                     f"{timing['epoch_s']:.2f} | {timing['first_epoch_s']:.2f} | {gflops:.0f} | "
                     f"{floor_name} {floor_gflops:.0f} | {gflops / floor_gflops:.0%} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
