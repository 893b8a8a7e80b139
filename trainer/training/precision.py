"""Which number format the training computes in: float32, or mixed precision where the hardware pays for it.

Mixed precision keeps every weight in float32 and computes the layers in 16 bits: bfloat16 on a CPU with
AVX512_BF16 or AMX (oneDNN runs its convolutions and matrix products natively there: the `vgg` model trains 1.4x
faster on this project's benchmark CPU, docs/benchmarks.md) and on GPUs of compute capability 8.0 and up (A100,
L4, H100). Elsewhere bfloat16 is emulated and slower than float32, so a recipe does not ask for a format: it asks
for mixed precision, and `--precision=auto` grants it only on hardware that computes bfloat16 natively. The same
image and flags therefore run fast on such machines and correctly, in float32, on all others.

Only training uses the policy: evaluation and the exported SavedModel compute in float32 (the classifier layer of
every model is float32 anyway, so its softmax and the loss never round to 16 bits).
"""

import contextlib
import functools

CHOICES = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


def resolve(requested, recipe_wants_mixed):
    """The Keras policy name a run trains with: an explicit --precision wins; `auto` follows the recipe and the
    hardware."""
    if requested != "auto":
        return requested
    return "mixed_bfloat16" if recipe_wants_mixed and native_bfloat16() else "float32"


@functools.lru_cache(maxsize=None)
def native_bfloat16():
    """True when training can compute in bfloat16 in hardware: every visible GPU is Ampere (8.0) or newer, or,
    without GPUs, the CPU has AVX512_BF16 or AMX."""
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capabilities = [tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
                        for gpu in gpus]
        return all(tuple(capability) >= (8, 0) for capability in capabilities)
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_flags():
    """The CPU's feature flags as Linux lists them (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@contextlib.contextmanager
def policy(name):
    """Models built inside compute in `name` (a Keras policy: "float32", "mixed_bfloat16", "mixed_float16")."""
    from tf_keras import mixed_precision
    previous = mixed_precision.global_policy()
    mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        mixed_precision.set_global_policy(previous)
