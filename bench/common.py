"""What the benchmark scripts share: their data flags, the trainer run as a user runs it, the machine's description.

Each script puts bench/ on sys.path (it is run as `python bench/NAME.py`) and imports from here; so do the tests
(tests/conftest.py, tests/fault_soak.py) for the trainer's environment and free ports.
"""

import argparse
import os
import pathlib
import platform
import socket
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_MANUAL_DIR = ROOT.parent / "shared" / "datasets" / "fashion-mnist"

from trainer.storage import outputs  # noqa: E402  (no TensorFlow: bench scripts import it when they need it)


def add_data_args(parser):
    """--data_dir and --tfds_manual_dir, defaulting as the Makefile does (every bench script takes them)."""
    parser.add_argument("--data_dir", default=os.environ.get("DATA_DIR") or str(ROOT / ".data" / "tfds"))
    parser.add_argument("--tfds_manual_dir", default=os.environ.get("TFDS_MANUAL_DIR", str(DEFAULT_MANUAL_DIR)))


def data_flags(args):
    flags = [f"--data_dir={args.data_dir}"]
    if args.tfds_manual_dir and os.path.isdir(args.tfds_manual_dir):
        flags.append(f"--tfds_manual_dir={args.tfds_manual_dir}")
    return flags


def quick_flags(args):
    return ["--train_examples=2000", "--epochs=1"] if args.quick else []


def train(args, name, *flags, env=None):
    """One trainer process; returns its metrics.json."""
    out = pathlib.Path(args.out) / name
    cmd = [sys.executable, "-m", "trainer.task", f"--output_dir={out}", "--overwrite", *data_flags(args),
           *quick_flags(args), *flags]
    print("$", " ".join(cmd[1:]), flush=True)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=clean_env(env), capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"training failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    metrics = outputs.read_metrics(str(out))
    metrics["process_seconds"] = round(time.perf_counter() - started, 2)
    metrics["output_dir"] = str(out)
    return metrics


# What a launcher sets for the trainer (a cluster, Vertex AI's output locations): never inherited by a run started
# here, which sets them itself when it means to.
LAUNCHER_ENV = ("TF_CONFIG", "CLUSTER_SPEC", "AIP_MODEL_DIR", "AIP_CHECKPOINT_DIR", "AIP_TENSORBOARD_LOG_DIR")


def clean_env(extra=None):
    """This process's environment without the launcher's variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_ENV}
    env.update(extra or {})
    return env


def load_split(args, split):
    """A split as in-memory uint8 arrays, through the trainer's own loader."""
    import trainer  # noqa: F401  (tf-keras before TensorFlow)
    from trainer.training import data
    builder = data.prepare(args.data_dir, args.tfds_manual_dir if os.path.isdir(args.tfds_manual_dir) else None)
    return data.load(builder, split)


def free_ports(count):
    """Ports free on loopback right now (the OS picks them; the sockets are closed before use)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import tensorflow as tf
    import tensorflow_datasets as tfds
    import tf_keras
    return (f"{os.cpu_count()} cores, {cpu}; Python {platform.python_version()}, TensorFlow {tf.__version__}, "
            f"tf-keras {tf_keras.__version__}, TFDS {tfds.__version__}")


def write_report(lines, out, name):
    """The report's Markdown `lines`, printed and written to <out>/<name>; returns the text."""
    report = "\n".join(lines) + "\n"
    print("\n" + report)
    (pathlib.Path(out) / name).write_text(report)
    return report


def bench_parser(description, out):
    """A benchmark script's command line: --quick (a smoke run), --out (default bench/results/<out>) and the data
    flags; the script adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2,000 examples, 1 epoch, 1 seed")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / out), help="runs and results")
    add_data_args(parser)
    return parser


def over_seeds(runs):
    """(mean test accuracy, its standard deviation, training seconds of each run) of one recipe's runs."""
    accuracies = [m["test_accuracy"] for m in runs]
    spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    return statistics.mean(accuracies), spread, [m["train_seconds"] for m in runs]
