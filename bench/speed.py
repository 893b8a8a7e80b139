"""Speed benchmark: the seed recipe against the fast recipe, in one run, on this machine.

    .venv/bin/python bench/speed.py                 # the full benchmark (about 10 minutes on 2 cores)
    .venv/bin/python bench/speed.py --quick         # a smoke run on 2,000 examples (CI runs this)

For each model it runs the seed notebook's own code once (bench/notebook.py: Keras 3, NumPy arrays, batch 32),
the trainer's seed recipe once and the fast recipe once per seed, each as its own process (the trainer's as
`python -m trainer.task`, as a user runs it), then prints Markdown tables:

1. training: per model and recipe, training seconds (`model.fit` only; decoding the data into memory is timed
   apart), epochs, test accuracy (mean and std over seeds), and the ratios of the notebook's time and of the seed
   recipe's time to the fast recipe's;
2. seconds per epoch as the seed's execution settings change, one at a time, into the fast recipe's;
3. input pipeline: the tf.data training stream alone, in examples/s, against the training step rate;
4. inference: the exported SavedModels' signature throughput at batch 1024 and single-image latency p50/p99;
5. many workers: the fast recipe on 2 local worker processes (MultiWorkerMirroredStrategy) against 1 process, at
   the same global batch;
6. where the fast recipe's time goes (bench/anatomy.py): per epoch against this CPU's matrix-multiply floor,
   tracing, the end of `fit`, evaluation, input. The header gives the floor, the CPU flags and the load averages.

The machine is shared and noisy: only ratios measured in the same run are meaningful. Results go to
bench/results/ (not committed); docs/benchmarks.md holds the figures of a full run.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

from common import (ROOT, add_data_args, clean_env, data_flags, free_ports, load_split, machine,  # noqa: I100
                    quick_flags, train)
import anatomy  # noqa: I100
from trainer.storage import outputs  # noqa: I100


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 2,000 examples, 1 epoch, 1 seed")
    parser.add_argument("--models", default="mlp,cnn", help="comma-separated registered models")
    parser.add_argument("--seeds", default="1,2,3", help="seeds of the fast recipe's runs")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "speed"), help="runs and results")
    add_data_args(parser)
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out: ablation, pipeline, "
                                                   "inference, workers, anatomy")
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    if args.quick:
        args.seeds = args.seeds[:1]
    args.skip = set(filter(None, args.skip.split(",")))
    return args


# ---- 1. training -------------------------------------------------------------------------------------------

def notebook(args, model):
    """The seed notebook's own code (bench/notebook.py), in a process of its own; returns its JSON line."""
    cmd = [sys.executable, str(ROOT / "bench" / "notebook.py"), f"--model={model}", f"--data_dir={args.data_dir}",
           *(["--train_examples=2000", "--epochs=1"] if args.quick else [])]
    print("$", " ".join(cmd[1:]), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=clean_env(), capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"notebook.py failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**result, "seed": "-", "batch_size": 32, "recipe": "notebook"}


def training(args):
    runs = {}
    for model in args.models:
        runs[(model, "notebook")] = [notebook(args, model)]
        runs[(model, "seed")] = [train(args, f"{model}-seed", f"--model={model}", "--recipe=seed", "--seed=42")]
        runs[(model, "fast")] = [train(args, f"{model}-fast-{seed}", f"--model={model}", "--recipe=fast",
                                       f"--seed={seed}") for seed in args.seeds]
    return runs


def mean_std(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def training_table(runs, models):
    """One row per model and recipe; `notebook` is the seed's own code, `seed` the trainer's --recipe=seed."""
    lines = ["| model | recipe | runs | epochs | batch | train s (mean ± std) | test accuracy (mean ± std) | "
             "per seed | notebook time / this | seed recipe time / this |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model in models:
        notebook_time = runs[(model, "notebook")][0]["train_seconds"]
        seed_time = runs[(model, "seed")][0]["train_seconds"]
        for recipe in ("notebook", "seed", "fast"):
            group = runs[(model, recipe)]
            t_mean, t_std = mean_std([m["train_seconds"] for m in group])
            a_mean, a_std = mean_std([m["test_accuracy"] for m in group])
            per_seed = ", ".join(f"{m['seed']}: {m['test_accuracy']:.4f} in {m['train_seconds']:.1f} s" for m in group)
            emphasis = "**" if recipe == "fast" else ""
            lines.append(f"| {model} | {recipe} | {len(group)} | {group[0]['epochs']} | {group[0]['batch_size']} | "
                         f"{t_mean:.1f} ± {t_std:.1f} | {a_mean:.4f} ± {a_std:.4f} | {per_seed} | "
                         f"{emphasis}{notebook_time / t_mean:.1f}×{emphasis} | "
                         f"{emphasis}{seed_time / t_mean:.1f}×{emphasis} |")
    return "\n".join(lines)


# ---- 2. what each execution setting buys -------------------------------------------------------------------

def ablation_variants(model):
    """(label, epoch_time.py flags): from the seed's execution, one change at a time, to the fast recipe's.

    Each row keeps the changes above it; the settings the fast recipe does not use come last, on top of it all.
    """
    from trainer.config import recipes
    fast = recipes.get("fast", model)
    variants = [("seed: batch 32, 1 step per call", ["--batch_size=32", "--steps_per_execution=1"])]
    flags = ["--batch_size=32", "--steps_per_execution=64"]
    variants.append(("+ 64 steps per call", list(flags)))
    flags = [f"--batch_size={fast.batch_size}", "--steps_per_execution=64"]
    variants.append((f"+ batch {fast.batch_size}", list(flags)))
    if fast.threads_per_op:
        flags = flags + [f"--threads_per_op={fast.threads_per_op}"]
        variants.append((f"+ {fast.threads_per_op} thread per op", list(flags)))
    if fast.mixed_precision:
        flags = flags + ["--precision=mixed_bfloat16"]
        variants.append(("+ mixed bfloat16", list(flags)))
    else:
        variants.append(("(fast + mixed bfloat16, not used)", flags + ["--precision=mixed_bfloat16"]))
    variants.append(("(fast + XLA jit_compile, not used)", flags + ["--jit_compile"]))
    return variants


def ablation(args):
    rows = []
    for model in args.models:
        base = None
        for label, flags in ablation_variants(model):
            cmd = [sys.executable, str(ROOT / "bench" / "epoch_time.py"), f"--model={model}",
                   f"--data_dir={args.data_dir}", *flags, *(["--train_examples=2000"] if args.quick else [])]
            print("$", " ".join(cmd[1:]), flush=True)
            proc = subprocess.run(cmd, cwd=ROOT, env=clean_env(), capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"epoch_time.py failed:\n{proc.stderr[-3000:]}")
            timing = json.loads(proc.stdout.strip().splitlines()[-1])
            base = base or timing["epoch_s"]
            rows.append(f"| {model} | {label} | {timing['first_epoch_s']:.2f} | {timing['epoch_s']:.2f} | "
                        f"{base / timing['epoch_s']:.1f}× |")
    return "\n".join(["| model | execution | first epoch s (with tracing) | epoch s | speed vs seed |",
                      "| --- | --- | --- | --- | --- |", *rows])


# ---- 3. input pipeline --------------------------------------------------------------------------------------

def pipeline(args, runs):
    """examples/s of the fast recipe's training stream alone, next to its training step rate."""
    from trainer.training import data, models
    from trainer.config import recipes
    images, labels = load_split(args, data.train_split(2000 if args.quick else None))
    rows = []
    for model in args.models:
        for recipe_name in ("seed", "fast"):
            recipe = recipes.get(recipe_name, model)
            ds = data.train_dataset(images, labels, recipe.batch_size, models.get(model).input_shape, seed=1,
                                    augmentation=recipe.augmentation)
            steps = data.steps_per_epoch(len(labels), recipe.batch_size)
            batches = iter(ds)
            for _ in range(steps):  # one warm-up epoch
                next(batches)
            started, count = time.perf_counter(), 0
            for _ in range(2 * steps):
                count += int(next(batches)[1].shape[0])
            pipeline_rate = count / (time.perf_counter() - started)
            group = runs[(model, recipe_name)]
            step_rate = statistics.mean(m["examples_per_second"] for m in group)
            rows.append(f"| {model} | {recipe_name} | {recipe.batch_size} | {pipeline_rate:,.0f} | {step_rate:,.0f} | "
                        f"{pipeline_rate / step_rate:.1f}× |")
    return "\n".join(["| model | recipe | batch | tf.data alone, examples/s | training, examples/s | headroom |",
                      "| --- | --- | --- | --- | --- | --- |", *rows])


# ---- 4. inference -------------------------------------------------------------------------------------------

def inference(args, runs):
    import numpy as np
    import tensorflow as tf
    images, _ = load_split(args, "test")
    images = images[..., 0]
    rows = []
    for model in args.models:
        run = runs[(model, "fast")][0]
        serve = tf.saved_model.load(os.path.join(run["output_dir"], "saved_model")).signatures["serving_default"]
        batch = tf.constant(images[:1024])
        serve(images=batch)
        repeats = 3 if args.quick else 20
        started = time.perf_counter()
        for _ in range(repeats):
            serve(images=batch)["class_id"].numpy()
        throughput = repeats * 1024 / (time.perf_counter() - started)
        single = [tf.constant(images[i:i + 1]) for i in range(200 if args.quick else 1000)]
        serve(images=single[0])
        latencies = []
        for one in single:
            started = time.perf_counter()
            serve(images=one)["class_id"].numpy()
            latencies.append((time.perf_counter() - started) * 1000)
        p50, p99 = np.percentile(latencies, [50, 99])
        rows.append(f"| {model} | {throughput:,.0f} | {p50:.2f} | {p99:.2f} |")
    return "\n".join(["| model | images/s at batch 1024 | single image p50, ms | single image p99, ms |",
                      "| --- | --- | --- | --- |", *rows])


# ---- 5. many workers ----------------------------------------------------------------------------------------

def workers(args):
    """The fast recipe on 1 process and on 2 local workers, same global batch; the chief's training time."""
    rows = []
    for model in args.models:
        epochs = ["--epochs=1"] if model != "mlp" and not args.quick else []
        one = train(args, f"{model}-1-process", f"--model={model}", "--recipe=fast", *epochs)
        hosts = [f"localhost:{port}" for port in free_ports(2)]
        out = pathlib.Path(args.out) / f"{model}-2-workers"
        procs = []
        for index in range(2):
            tf_config = json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})
            cmd = [sys.executable, "-m", "trainer.task", f"--output_dir={out}", "--overwrite",
                   f"--checkpoint_dir={out}-backup-{index}", *data_flags(args), *quick_flags(args),
                   f"--model={model}", "--recipe=fast", *epochs]
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=clean_env({"TF_CONFIG": tf_config}),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        errors = [p.communicate()[1] for p in procs]
        if any(p.returncode for p in procs):
            sys.exit("2-worker run failed:\n" + "\n".join(e[-2000:] for e in errors))
        two = outputs.read_metrics(str(out))
        rows.append(f"| {model} | {one['epochs']} | {one['batch_size']} | {one['train_seconds']:.1f} | "
                    f"{two['train_seconds']:.1f} | {two['train_seconds'] / one['train_seconds']:.2f}× | "
                    f"{one['test_accuracy']:.4f} | {two['test_accuracy']:.4f} |")
    return "\n".join(["| model | epochs | global batch | 1 process, train s | 2 workers, train s | cost | "
                      "1 process, test acc | 2 workers, test acc |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- |", *rows])


def where_the_time_goes(args, runs, floor_gflops):
    from trainer.training import data
    train_split = load_split(args, data.train_split(2000 if args.quick else None))
    test_images = load_split(args, "test")[0][..., 0]
    return anatomy.table({(model, "fast"): runs[(model, "fast")] for model in args.models}, floor_gflops,
                         train_split, test_images)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    started, load_before, floor_gflops, floor = anatomy.start()
    runs = training(args)
    sections = [("Training", training_table(runs, args.models))]
    if "ablation" not in args.skip:
        sections.append(("Seconds per epoch: what each execution setting buys", ablation(args)))
    if "pipeline" not in args.skip:
        sections.append(("Input pipeline alone vs training", pipeline(args, runs)))
    if "inference" not in args.skip:
        sections.append(("Inference (SavedModel signature, fast recipe's model)", inference(args, runs)))
    if "workers" not in args.skip:
        sections.append(("2 local workers vs 1 process", workers(args)))
    if "anatomy" not in args.skip:
        sections.append(("Where the fast recipe's time goes", where_the_time_goes(args, runs, floor_gflops)))
    header = (f"Machine: {machine()}\n{floor}\nCommand: {' '.join(['bench/speed.py', *(argv or sys.argv[1:])])}\n"
              f"Started {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, "
              f"took {time.time() - started:.0f} s; load average (1, 5, 15 min) {load_before} before, "
              f"{anatomy.load_average()} after")
    report = header + "\n\n" + "\n\n".join(f"### {title}\n\n{table}" for title, table in sections) + "\n"
    print("\n" + report)
    (pathlib.Path(args.out) / "speed.md").write_text(report)
    (pathlib.Path(args.out) / "runs.json").write_text(json.dumps(
        {f"{model}/{recipe}": group for (model, recipe), group in runs.items()}, indent=1))


if __name__ == "__main__":
    main()
