"""Fault soak: a short training run killed at random moments, rerun after each kill until it finishes.

    .venv/bin/python tests/fault_soak.py [--kills=10] [--worker_kills=3] [--seed=1] [--out=DIR]

Phase 1, one process: an uninterrupted reference run, then the same command killed --kills times (SIGKILL and
SIGTERM mixed, seeded) at moments spread over start-up, training, evaluation, export and publishing, rerun after
each kill. Phase 2, two MultiWorkerMirroredStrategy workers: one worker killed --worker_kills times; when the other
does not stop by itself within 30 s it gets SIGTERM, as a JobSet restarting every worker would send; both rerun.

Checked after every run: no traceback, exit status 0 (finished), 75 (retry me) or the kill's own; at the end:
exactly one finished result (metrics.json, no staging, no backup left), every epoch in its history, and the
uninterrupted reference's weights, bit for bit (a resumed run sees the batches the reference saw from the step it
resumes at: data.train_dataset). Prints the tally: each kill, where it landed, where the next run resumed.
Exit status 0 when every check held. `make soak` runs a longer one; tests/test_faults.py a short one.
"""

import argparse
import json
import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from common import clean_env, free_ports  # noqa: E402  (the trainer's environment and ports, as the benchmarks)
RETRY = 75
PHASES = ("start-up", "training", "evaluation/export/publishing")


def trainer_command(args, out, extra=()):
    manual = [f"--tfds_manual_dir={args.tfds_manual_dir}"] if args.tfds_manual_dir else []
    return [sys.executable, "-m", "trainer.task", "--model=mlp", "--recipe=seed", "--batch_size=64",
            f"--train_examples={args.train_examples}", f"--epochs={args.epochs}", "--backup_every_steps=10",
            f"--output_dir={out}", f"--data_dir={args.data_dir}", *manual, *extra]


def start(command, log_path, env=None):
    return subprocess.Popen(command, cwd=ROOT, env=clean_env(env), stdout=open(log_path, "w"),
                            stderr=subprocess.STDOUT)


def phase_of(log):
    """Where a run was, from its log so far."""
    if "Test accuracy" in log or "This worker is done" in log:
        return "after publishing"
    started = re.findall(r"training epochs (\d+)-(\d+) ", log)  # the trainer's progress (trainer/monitoring)
    if not started:
        return "start-up"
    first, total = int(started[-1][0]), int(started[-1][1])
    finished = [int(done) for done in re.findall(r"epoch (\d+)/\d+: ", log)]
    if finished and finished[-1] >= total:
        return "evaluation/export/publishing"
    return f"training, epoch {finished[-1] + 1 if finished else first}"


def epoch_begins(epoch, epochs):
    """A pattern of the log line after which `epoch` (1-based) is being trained: the previous epoch's line, or
    the start line of a run that begins (or resumes) with it."""
    return rf"epoch {epoch - 1}/{epochs}: |training epochs {epoch}-"


def resumed_at(log):
    match = re.search(r"continuing at epoch (\d+), step (\d+)", log)
    if match:
        return f"epoch {match.group(1)}, step {match.group(2)}"
    return "from scratch" if "training examples" in log else "(stopped before it could tell)"


class Soak:
    def __init__(self, args):
        self.args, self.rng = args, random.Random(args.seed)
        self.tally, self.problems, self.logs = [], [], 0

    def log_path(self, name):
        self.logs += 1
        return pathlib.Path(self.args.out) / f"{self.logs:03d}-{name}.log"

    def check_log(self, path, status, allowed):
        text = path.read_text()
        if "Traceback" in text:
            self.problems.append(f"{path.name}: a traceback")
        if status not in allowed:
            self.problems.append(f"{path.name}: exit status {status}, expected one of {sorted(allowed)}")
        return text

    def one_process(self):
        args = self.args
        reference_out = pathlib.Path(args.out) / "reference"
        started = time.time()
        log = self.log_path("reference")
        process = start(trainer_command(args, reference_out), log)
        status = process.wait()
        text = self.check_log(log, status, {0})
        total = time.time() - started
        reference = json.loads((reference_out / "metrics.json").read_text())
        print(f"reference run: {total:.1f} s, test accuracy {reference['test_accuracy']:.4f}", flush=True)
        kills, cycle, finals = 0, 1, []
        out = pathlib.Path(args.out) / f"soaked-{cycle}"
        while True:
            log = self.log_path(f"run-{cycle}")
            process = start(trainer_command(args, out), log)
            if kills >= args.kills:
                status = process.wait()
                text = self.check_log(log, status, {0})
                self.tally.append((f"1 process #{cycle}", "-", "(final run)", resumed_at(text), status))
                break
            target = PHASES[kills % len(PHASES)] if kills < len(PHASES) else self.rng.choice(PHASES)
            signum = self.rng.choice((signal.SIGKILL, signal.SIGTERM))
            where = self._kill_when(process, log, target, signum)
            status = process.wait()
            text = self.check_log(log, status, {0, RETRY, -signal.SIGKILL})
            if where.startswith("("):  # it finished before the signal: not a kill
                self.tally.append((f"1 process #{cycle}", "-", "(finished first)", resumed_at(text), status))
            else:
                self.tally.append((f"1 process #{cycle}", signal.Signals(signum).name, where, resumed_at(text),
                                   status))
                kills += 1
            if (out / "metrics.json").exists():  # this job is done: check it, then soak a new one
                finals.append(self._check_result(out, reference))
                cycle += 1
                out = pathlib.Path(args.out) / f"soaked-{cycle}"
        finals.append(self._check_result(out, reference))
        return finals, reference

    def wait_for(self, process, log, pattern, deadline=120):
        """Until `pattern` appears in the log (True) or the process exits (False)."""
        pattern, limit = re.compile(pattern, re.M | re.S), time.time() + deadline
        while process.poll() is None and time.time() < limit:
            if pattern.search(log.read_text()):
                return True
            time.sleep(0.05)
        return False

    def _kill_when(self, process, log, target, signum):
        """Sends `signum` at a random moment of the phase `target`, found from the log."""
        epochs = self.args.epochs
        if target == "start-up":
            time.sleep(self.rng.uniform(0.3, 4.0))
        elif target == "training":
            epoch = self.rng.randint(1, epochs)
            self.wait_for(process, log, epoch_begins(epoch, epochs) + "|Test accuracy")
            time.sleep(self.rng.uniform(0.0, 0.8))
        else:  # after the last epoch's line: evaluation, export, publishing
            self.wait_for(process, log, rf"epoch {epochs}/{epochs}: ")
            time.sleep(self.rng.uniform(0.0, 1.5))
        if process.poll() is not None:
            return "(had already exited)"
        where = phase_of(log.read_text())
        process.send_signal(signum)
        return where

    def _check_result(self, out, reference):
        final = json.loads((out / "metrics.json").read_text())
        leftovers = [n for n in os.listdir(out) if n.startswith(".") or n == "checkpoints"]
        if sorted(os.listdir(out)) != ["logs", "metrics.json", "saved_model", "test_predictions.npz"]:
            self.problems.append(f"{out}: holds {sorted(os.listdir(out))}, leftovers {leftovers}")
        if [row["epoch"] for row in final["history"]] != list(range(1, self.args.epochs + 1)):
            self.problems.append(f"{out}: history covers epochs {[row['epoch'] for row in final['history']]}")
        if final["weights_sha256"] != reference["weights_sha256"]:
            self.problems.append(f"{out}: weights differ from the uninterrupted run's (test accuracy "
                                 f"{final['test_accuracy']:.4f} vs {reference['test_accuracy']:.4f})")
        return final

    def two_workers(self):
        args = self.args
        out = pathlib.Path(args.out) / "two-workers"
        checkpoints = f"{out}-backup"
        kills = 0
        while True:
            hosts = [f"localhost:{port}" for port in free_ports(2)]
            logs = [self.log_path(f"worker{i}") for i in range(2)]
            workers = [start(trainer_command(args, out, [f"--checkpoint_dir={checkpoints}"]), log, env={
                "TF_CONFIG": json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}})})
                for i, log in enumerate(logs)]
            if kills >= args.worker_kills:
                statuses = [w.wait(timeout=600) for w in workers]
                texts = [self.check_log(log, status, {0}) for log, status in zip(logs, statuses)]
                self.tally.append(("2 workers", "-", "(final run)", resumed_at(texts[0]), statuses))
                break
            victim = self.rng.randrange(2)
            signum = self.rng.choice((signal.SIGKILL, signal.SIGTERM))
            if kills % 2:  # start-up (the workers waiting for each other), or training
                time.sleep(self.rng.uniform(1.0, 6.0))
            else:
                self.wait_for(workers[victim], logs[victim],
                              epoch_begins(self.rng.randint(1, args.epochs), args.epochs))
                time.sleep(self.rng.uniform(0.0, 1.0))
            where = phase_of(logs[victim].read_text()) if workers[victim].poll() is None else "(had exited)"
            if workers[victim].poll() is None:
                workers[victim].send_signal(signum)
            other = workers[1 - victim]
            try:
                other.wait(timeout=30)
                restarted = ""
            except subprocess.TimeoutExpired:  # what a JobSet restarting every worker does: SIGTERM, then SIGKILL
                other.send_signal(signal.SIGTERM)
                restarted = "; the other got SIGTERM (restart of all)"
                try:
                    other.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    other.kill()
                    # A worker waiting for its peers inside the strategy's start-up: TensorFlow's own preemption
                    # notifier takes SIGTERM there (docs/distributed.md); the grace period's SIGKILL ends it.
                    restarted += ", then SIGKILL after the grace period"
            statuses = [w.wait(timeout=120) for w in workers]
            texts = [self.check_log(log, status, {0, RETRY, -signal.SIGKILL}) for log, status in zip(logs, statuses)]
            self.tally.append(("2 workers", f"{signal.Signals(signum).name} to worker {victim}", where + restarted,
                               resumed_at(texts[1 - victim]), statuses))
            kills += 1
        final = json.loads((out / "metrics.json").read_text())
        if final["num_workers"] != 2:
            self.problems.append("the 2-worker result does not say 2 workers")
        if os.path.exists(checkpoints) and os.listdir(checkpoints):
            self.problems.append(f"{checkpoints} is left: {os.listdir(checkpoints)}")
        return final

    def report(self):
        print("\n| run | resumed at (from its own log) | signal | landed in | exit status |")
        print("| --- | --- | --- | --- | --- |")
        for kind, signame, where, resumed, status in self.tally:
            print(f"| {kind} | {resumed or '-'} | {signame} | {where} | {status} |")
        kills = sum(1 for row in self.tally if row[1] != "-")
        print(f"\n{kills} kills; problems: {len(self.problems)}")
        for problem in self.problems:
            print(f"PROBLEM: {problem}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--worker_kills", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train_examples", type=int, default=6000)
    parser.add_argument("--out", default=str(ROOT / "out" / "soak"))
    parser.add_argument("--data_dir", default=os.environ.get("DATA_DIR") or str(ROOT / ".data" / "tfds"))
    default_manual = ROOT.parent / "shared" / "datasets" / "fashion-mnist"
    parser.add_argument("--tfds_manual_dir", default=os.environ.get("TFDS_MANUAL_DIR") or
                        (str(default_manual) if default_manual.is_dir() else ""))
    args = parser.parse_args(argv)
    if os.path.isdir(args.out) and os.listdir(args.out):
        parser.error(f"--out={args.out} is not empty: a soak needs a folder of its own (finished jobs in it would "
                     "look done)")
    os.makedirs(args.out, exist_ok=True)
    soak = Soak(args)
    started = time.time()
    finals, reference = soak.one_process()
    same = sum(final["weights_sha256"] == reference["weights_sha256"] for final in finals)
    accuracies = ", ".join(f"{final['test_accuracy']:.4f}" for final in finals)
    print(f"1 process: {len(finals)} job(s) finished, {same} of them with the uninterrupted run's weights; test "
          f"accuracy {accuracies} (uninterrupted {reference['test_accuracy']:.4f})", flush=True)
    if args.worker_kills:
        two = soak.two_workers()
        print(f"2 workers: finished, test accuracy {two['test_accuracy']:.4f}", flush=True)
    soak.report()
    print(f"took {time.time() - started:.0f} s")
    return 1 if soak.problems else 0


if __name__ == "__main__":
    sys.exit(main())
