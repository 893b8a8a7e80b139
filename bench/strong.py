"""Accuracy benchmark of the strong model: `vgg` with the `strong` recipe, per seed and mean ± std.

    .venv/bin/python bench/strong.py                    # 3 seeds of the full recipe + the short schedule (~35 min)
    .venv/bin/python bench/strong.py --quick            # a smoke run: 2,000 examples, 1 epoch, 1 seed

Each run is its own `python -m trainer.task` process and trains on the whole training split; the test split is
evaluated once, at the end of each run (the recipe was tuned with `--validation_split`, see docs/benchmarks.md).
"Time to 0.93" is the training time of the shortest schedule of the same recipe (`--short_epochs`) that reaches
0.93: with a cosine schedule the accuracy of a run depends on its length, so it is measured by a run of that length,
not read off the middle of a longer one. Prints a Markdown table; runs go to bench/results/strong/.
"""

import os
import statistics
import sys

from common import bench_parser, machine, over_seeds, train, write_report

TARGET = 0.93


def main(argv=None):
    parser = bench_parser(__doc__.split("\n\n")[0], "strong")
    parser.add_argument("--model", default="vgg")
    parser.add_argument("--recipe", default="strong")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--short_epochs", type=int, default=9, help="the short schedule for the time to 0.93; 0: none")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s][:1 if args.quick else None]
    os.makedirs(args.out, exist_ok=True)

    def run(name, *flags):
        return train(args, name, f"--model={args.model}", f"--recipe={args.recipe}", *flags)

    runs = [run(f"{args.model}-{args.recipe}-{seed}", f"--seed={seed}") for seed in seeds]
    short = run(f"{args.model}-{args.recipe}-{args.short_epochs}-epochs", f"--epochs={args.short_epochs}") \
        if args.short_epochs and not args.quick else None

    lines = [f"Machine: {machine()}", f"Command: bench/strong.py {' '.join(argv or sys.argv[1:])}", "",
             "| run | seed | epochs | train s | test accuracy | test loss |", "| --- | --- | --- | --- | --- | --- |"]
    for m in runs + ([short] if short else []):
        lines.append(f"| {m['model']} {m['recipe']} | {m['seed']} | {m['epochs']} | {m['train_seconds']:.0f} | "
                     f"{m['test_accuracy']:.4f} | {m['test_loss']:.4f} |")
    accuracy, spread, seconds = over_seeds(runs)
    lines += ["", f"Mean over {len(runs)} seed(s): test accuracy {accuracy:.4f} ± {spread:.4f}, "
                  f"training {statistics.mean(seconds):.0f} s (max {max(seconds):.0f} s) per seed."]
    if short:
        reached = "reaches" if short["test_accuracy"] >= TARGET else "does not reach"
        lines.append(f"Time to {TARGET}: the {short['epochs']}-epoch schedule {reached} it "
                     f"({short['test_accuracy']:.4f}) in {short['train_seconds']:.0f} s of training.")
    write_report(lines, args.out, "strong.md")


if __name__ == "__main__":
    main()
