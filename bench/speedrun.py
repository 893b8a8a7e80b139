"""Time-to-accuracy benchmark: `--recipe=speedrun` over 5 seeds against the strong recipe, in one run.

    .venv/bin/python bench/speedrun.py                  # = make bench-speedrun: 5 speedrun seeds, 1 strong seed
    .venv/bin/python bench/speedrun.py --quick          # a smoke run: 2,000 examples, 1 epoch, 1 seed each
    .venv/bin/python bench/speedrun.py --strong_epochs=3  # strong's time from 3 of its epochs (a busy machine)

Goal (issue 20): test accuracy >= 0.940 as the mean of 5 seeds, in at most a quarter of the strong recipe's
training time (stretch: an eighth), both measured here, in the same run. Each run is its own `python -m
trainer.task` process, as a user runs it (`--recipe=speedrun` alone: the recipe selects its own network). The
strong run goes second, between the speedrun's seeds, so that both see the same machine. With --strong_epochs=N
the strong run trains N of its epochs (the same schedule cut short, so its accuracy is not the recipe's) and its
full time is estimated as the first epoch plus (epochs - 1) x the median of the others: its epochs all cost the
same, and the recipe's accuracy is the one docs/benchmarks.md measured.

Prints Markdown: the machine (CPU flags, the float32/bfloat16 matrix-multiply floor, load averages before and
after), every run, the means and the ratio, then where the time goes (bench/anatomy.py), one table per recipe.
Runs go to bench/results/speedrun/.
"""

import os
import pathlib
import statistics
import sys
import time

from common import bench_parser, load_split, machine, over_seeds, train, write_report
from trainer.storage import outputs  # noqa: I100

import anatomy  # noqa: I100

TARGET = 0.940


def full_strong_seconds(run, epochs):
    """The strong recipe's training time for all its `epochs`, from a run of fewer (see the module docstring)."""
    seconds = [row["seconds"] for row in run["history"]]
    if len(seconds) >= epochs:
        return run["train_seconds"]
    return seconds[0] + (epochs - 1) * statistics.median(seconds[1:] or seconds)


def main(argv=None):
    parser = bench_parser(__doc__.split("\n\n")[0], "speedrun")
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--strong_seeds", default="1")
    parser.add_argument("--strong_epochs", type=int, default=0, help="train N of the strong recipe's epochs and "
                                                                    "estimate its time (0: all of them)")
    parser.add_argument("--skip_anatomy", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="read the runs already finished in --out instead of "
                                                             "training them again (a benchmark cut short)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s][:1 if args.quick else None]
    strong_seeds = [int(s) for s in args.strong_seeds.split(",") if s][:1 if args.quick else None]
    os.makedirs(args.out, exist_ok=True)
    started, load_before, floor_gflops, floor = anatomy.start()

    def run(name, *flags):
        if args.reuse:
            metrics = outputs.read_metrics(str(pathlib.Path(args.out) / name))
            return {**metrics, "output_dir": str(pathlib.Path(args.out) / name)}
        return train(args, name, *flags)

    def speedrun(seed):
        return run(f"speedrun-{seed}", "--recipe=speedrun", f"--seed={seed}")

    def strong(seed):
        epochs = [f"--epochs={args.strong_epochs}"] if args.strong_epochs and not args.quick else []
        return run(f"vgg-strong-{seed}", "--model=vgg", "--recipe=strong", f"--seed={seed}", *epochs)

    runs = [speedrun(seeds[0])]
    strong_runs = [strong(seed) for seed in strong_seeds]
    runs += [speedrun(seed) for seed in seeds[1:]]

    from trainer.config import recipes
    strong_epochs = recipes.get("strong", "vgg").epochs if not args.quick else strong_runs[0]["epochs"]
    lines = [f"Machine: {machine()}", floor,
             f"Command: bench/speedrun.py {' '.join(argv or sys.argv[1:])}",
             f"Started {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, took "
             f"{time.time() - started:.0f} s; load average (1, 5, 15 min) {load_before} before, "
             f"{anatomy.load_average()} after" + (" (runs read back: --reuse)" if args.reuse else ""), "",
             "| run | model | seed | epochs | train s | test accuracy | test loss |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for m in runs + strong_runs:
        lines.append(f"| {m['recipe']} | {m['model']} | {m['seed']} | {m['epochs']} | {m['train_seconds']:.1f} | "
                     f"{m['test_accuracy']:.4f} | {m['test_loss']:.4f} |")
    accuracy, spread, seconds = over_seeds(runs)
    strong_seconds = statistics.mean(full_strong_seconds(m, strong_epochs) for m in strong_runs)
    estimated = any(len(m["history"]) < strong_epochs for m in strong_runs)
    how = f" (estimated from {strong_runs[0]['epochs']} of its {strong_epochs} epochs)" if estimated else ""
    ratio = strong_seconds / statistics.mean(seconds)
    met = accuracy >= TARGET and ratio >= 4
    lines += ["", f"Speedrun, mean over {len(runs)} seed(s): test accuracy {accuracy:.4f} ± "
                  f"{spread:.4f}, training {statistics.mean(seconds):.1f} s (max {max(seconds):.1f} s) per seed.",
              f"Strong recipe: {strong_seconds:.0f} s of training per seed{how}; "
              f"strong / speedrun = **{ratio:.1f}×** (goal ≥ 4×, stretch ≥ 8×; accuracy goal ≥ {TARGET}): "
              f"{'met' if met else 'not met'}."]
    if not args.skip_anatomy:
        from trainer.training import data
        train_split = load_split(args, data.train_split(2000 if args.quick else None))
        test_images = load_split(args, "test")[0][..., 0]
        groups = {("speedrun", "speedrun"): runs, ("vgg", "strong"): strong_runs}
        lines += ["", "Where the time goes (bench/anatomy.py):", "",
                  anatomy.table(groups, floor_gflops, train_split, test_images)]
    write_report(lines, args.out, "speedrun.md")


if __name__ == "__main__":
    main()
