"""The trainer as a user or a launcher starts it: a process of its own, in the repository, without the launcher
variables of this environment; its result, free ports and a cluster's TF_CONFIG for local workers."""

import json
import subprocess
import sys
import time

from bench.common import LAUNCHER_ENV, clean_env, free_ports  # noqa: F401  (shared with the benchmark scripts)
from support.data import ROOT


def run_trainer(*args, env=None, timeout=600, module="trainer.task"):
    """Runs the trainer as a user would (a fresh process); returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=clean_env(env),
                          capture_output=True, text=True, timeout=timeout)


def start_trainer(*args, env=None, log_path):
    """Starts the trainer in the background, its output going to `log_path`; returns the Popen (the trainer's own
    process: signals sent to it reach Python, not a shell)."""
    log = open(log_path, "w")
    return subprocess.Popen([sys.executable, "-m", "trainer.task", *args], cwd=ROOT, env=clean_env(env),
                            stdout=log, stderr=subprocess.STDOUT, text=True)


def wait_all(processes, timeout=600):
    return [p.wait(timeout=timeout) for p in processes]


def assert_ok(result):
    assert result.returncode == 0, f"trainer failed ({result.returncode}):\n{result.stderr[-4000:]}"


def read_metrics(output_dir):
    from trainer.storage import outputs
    return outputs.read_metrics(str(output_dir))


def worker_tf_configs(count):
    """TF_CONFIG values for `count` workers on localhost, as a cluster scheduler would set them."""
    hosts = [f"localhost:{port}" for port in free_ports(count)]
    return [json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}})
            for i in range(count)]


def start_workers(args, folder, name, count=2, extra=None, env=None):
    """`count` trainer processes of one local cluster (with `count` 1, one process and no TF_CONFIG), each with
    `args` (+ `extra[i]`) and `env`, logging to <folder>/<name><i>.log; returns (processes, log paths)."""
    configs = worker_tf_configs(count) if count > 1 else [None]
    logs = [folder / f"{name}{i}.log" for i in range(count)]
    workers = [start_trainer(*args, *((extra or {}).get(i, ())), log_path=log,
                             env={**(env or {}), **({"TF_CONFIG": config} if config else {})})
               for i, (config, log) in enumerate(zip(configs, logs))]
    return workers, logs


def wait_for_line(path, text, processes, timeout=300):
    """Waits until the log at `path` holds `text`, while every one of `processes` (one, or a list) still runs."""
    processes = processes if isinstance(processes, (list, tuple)) else [processes]
    deadline = time.time() + timeout
    while text not in path.read_text():
        exited = [p for p in processes if p.poll() is not None]
        assert not exited, f"a trainer exited before {text!r}:\n{path.read_text()[-3000:]}"
        assert time.time() < deadline, f"no {text!r} in time"
        time.sleep(0.02)
