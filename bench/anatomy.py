"""Where a run's time goes: per epoch against the CPU's floor, the first epoch's tracing, evaluation, the input.

Used by bench/speed.py and bench/speedrun.py, one table per recipe, from the runs they made:

- the floor: this CPU's float32 (and, where the CPU computes it natively, bfloat16) matrix-multiply rate, a
  2048 x 2048 `tf.linalg.matmul` in a `tf.function`, best of a few rounds, measured in the same benchmark run; a
  run is compared with the floor of the number format it trained in (a mixed-bfloat16 run with bfloat16's);
- an epoch's arithmetic: the model's multiply-adds per image (convolutions and dense layers, counted from its
  layers' shapes) x 2 FLOPs x 3 (forward, and the backward pass's two products) x the training images;
- per epoch: the median of the run's epochs after the first (metrics.json's `history`), and the rate it reached;
- tracing: the first epoch's excess over that median (building and compiling the train function);
- the end of `fit`: `train_seconds` less the epochs' sum (callbacks, the iterator's end);
- evaluation: the exported SavedModel's `serving_default` over the 10,000 test images, the recipe's test-time views
  included (outside `train_seconds`, as the trainer measures it);
- input: the training stream alone (trainer.training.data.train_dataset, the recipe's batch and augmentation), one
epoch.
"""

import statistics
import time

MATMUL_SIZE = 2048


def load_average():
    """The 1, 5 and 15 minute load averages: how busy the shared machine was around a measurement."""
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "unknown"


def matmul_gflops(dtype="float32", rounds=3, repeats=10):
    """GFLOP/s of a MATMUL_SIZE² matrix product in a tf.function, best of `rounds`."""
    import tensorflow as tf
    a = tf.cast(tf.random.normal([MATMUL_SIZE, MATMUL_SIZE]), dtype)
    b = tf.cast(tf.random.normal([MATMUL_SIZE, MATMUL_SIZE]), dtype)
    product = tf.function(lambda a, b: tf.linalg.matmul(a, b))
    product(a, b).numpy()
    best = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(repeats):
            result = product(a, b)
        result.numpy()
        best = max(best, 2 * MATMUL_SIZE ** 3 * repeats / (time.perf_counter() - started) / 1e9)
    return best


def floors():
    """{number format: GFLOP/s}: float32, and bfloat16 where the CPU computes it natively."""
    import trainer  # noqa: F401
    from trainer.training import precision
    rates = {"float32": matmul_gflops("float32")}
    if precision.native_bfloat16():
        rates["bfloat16"] = matmul_gflops("bfloat16")
    return rates


def floor_of(run_precision, rates):
    """(name, GFLOP/s) of the floor a run of `run_precision` (metrics.json's `precision`) is compared with: the
    16-bit format's for a mixed-precision run, float32's otherwise (and where the 16-bit one was not measured)."""
    compute = {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}.get(run_precision, "float32")
    return (compute, rates[compute]) if compute in rates else ("float32", rates["float32"])


def floor_line(rates=None):
    """One line for the report: the float32 rate, and bfloat16's where the CPU computes it natively."""
    import trainer  # noqa: F401
    from trainer.training import precision
    rates = rates or floors()
    listed = [f"{name} {rate:.0f} GFLOP/s" for name, rate in rates.items()]
    flags = sorted(f for f in precision.cpu_flags() if f.startswith(("avx512", "amx", "avx2", "fma")))
    return (f"Floor: {MATMUL_SIZE}² tf.linalg.matmul in a tf.function, best of 3: {', '.join(listed)}"
            f"{'' if precision.native_bfloat16() else ' (no AVX512_BF16 / AMX: float32 only)'}. "
            f"CPU flags: {' '.join(flags)}.")


def start():
    """A benchmark's start, for its header: (time.time(), the load average, the matmul floors {number format:
    GFLOP/s}, their line). Each run is compared with the floor of its own number format."""
    started, load = time.time(), load_average()
    rates = floors()
    return started, load, rates, floor_line(rates)


def multiply_adds(model_name):
    """Multiply-adds per image of a registered model's convolutions and dense layers."""
    import trainer  # noqa: F401
    from tf_keras import layers
    from trainer.training import models
    model = models.get(model_name).build()
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            _, height, width, filters = layer.output_shape
            kernel_h, kernel_w = layer.kernel_size
            total += height * width * filters * kernel_h * kernel_w * layer.input_shape[-1]
        elif isinstance(layer, layers.Dense):
            total += layer.input_shape[-1] * layer.units
    return total


def epoch_tflop(model_name, images):
    return 6 * multiply_adds(model_name) * images / 1e12


def input_seconds(recipe_name, model_name, images, labels):
    """One epoch of the recipe's training stream alone, after a warm-up epoch."""
    from trainer.training import data, models
    from trainer.config import recipes
    recipe = recipes.get(recipe_name, model_name)
    stream = data.train_dataset(images, labels, recipe.batch_size, models.get(model_name).input_shape, seed=1,
                                augmentation=recipe.augmentation)
    steps = data.steps_per_epoch(len(labels), recipe.batch_size)
    batches = iter(stream)
    for _ in range(steps):
        next(batches)
    started = time.perf_counter()
    for _ in range(steps):
        next(batches)
    return time.perf_counter() - started


def evaluation_seconds(saved_model_dir, test_images):
    """The SavedModel's serving_default over the test images, 1,000 at a time, after one warm-up batch."""
    import tensorflow as tf
    serve = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
    serve(images=tf.constant(test_images[:1000]))
    started = time.perf_counter()
    for first in range(0, len(test_images), 1000):
        serve(images=tf.constant(test_images[first:first + 1000]))["class_id"].numpy()
    return time.perf_counter() - started


def table(rows_by_recipe, rates, train_images, test_images):
    """Markdown: one table per (model, recipe) group of runs (metrics.json dicts with `output_dir`); `rates` as
    `floors()` returns them, each run compared with its own number format's (`floor_of`)."""
    sections = []
    for (model, recipe), runs in rows_by_recipe.items():
        images, labels = train_images
        tflop = epoch_tflop(model, len(labels))
        input_s = input_seconds(recipe, model, images, labels)
        evaluation_s = evaluation_seconds(f"{runs[0]['output_dir']}/saved_model", test_images)
        floor_name, floor_gflops = floor_of(runs[0]["precision"], rates)
        lines = [f"**{model}, --recipe={recipe}** ({multiply_adds(model) / 1e6:.2f} M multiply-adds per image: "
                 f"{tflop:.2f} TFLOP per epoch of {len(labels):,} images; {runs[0]['precision']}, against the "
                 f"{floor_name} floor of {floor_gflops:.0f} GFLOP/s)", "",
                 f"| seed | epochs | train s | epoch s (median) | GFLOP/s | of the {floor_name} floor | tracing s "
                 "| end of fit s "
                 "| evaluation s | input s per epoch |",
                 "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for m in runs:
            seconds = [row["seconds"] for row in m["history"]]
            epoch_s = statistics.median(seconds[1:] or seconds)
            rate = tflop * 1e3 / epoch_s
            lines.append(f"| {m['seed']} | {m['epochs']} | {m['train_seconds']:.1f} | {epoch_s:.2f} | {rate:.0f} | "
                         f"{rate / floor_gflops:.0%} | {seconds[0] - epoch_s:.2f} | "
                         f"{m['train_seconds'] - sum(seconds):.2f} | {evaluation_s:.2f} | {input_s:.2f} |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections)
