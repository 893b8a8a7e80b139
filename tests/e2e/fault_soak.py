"""Fault soak: a short training run killed at random moments, rerun after each kill until it finishes.

    .venv/bin/python tests/e2e/fault_soak.py [--kills=10] [--worker_kills=3] [--seed=1] [--out=DIR]

Phase 1, one process: an uninterrupted reference run, then the same command killed --kills times (SIGKILL and
SIGTERM mixed, seeded) at moments spread over start-up, training, evaluation, export and publishing, rerun after
each kill. Phase 2, two MultiWorkerMirroredStrategy workers with per-epoch backups (what the launchers ship): an
uninterrupted 2-worker reference, then one worker killed --worker_kills times, the chief and the other worker in
turn, in start-up, training, a stop vote, evaluation or export (the first three kills: the vote, evaluation and
export, in the seed's order; the moments found with the test-only FMNIST_TEST_PAUSES, which makes that one moment
slow and announce itself); when the other does not stop by itself within 30 s it gets SIGTERM, as a JobSet
restarting every worker would send; both rerun. Every soak picks a new seed and prints it: `--seed=N` replays it.

Checked after every run: no traceback, exit status 0 (finished), 75 (retry me) or the kill's own, no run past
RUN_TIMEOUT (a hung trainer fails the soak instead of hanging CI), no wait for a moment of the run reaching its
deadline with the run still going, both workers 75 after a SIGTERM to one in training, the survivor of a SIGKILLed
peer 75 (unless it is the chief and had published); at the end of every job, single-process or 2-worker: exactly one finished result (metrics.json, no
staging, no backup left), every epoch in its history, and its uninterrupted reference's weights, bit for bit (a
resumed run sees the batches the reference saw from the step it resumes at: data.train_dataset). Prints the tally:
each kill, where it landed, where the next run resumed.
Exit status 0 when every check held. `make soak` runs a longer one; tests/e2e/test_faults.py a short one.
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

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from common import clean_env, free_ports  # noqa: E402  (the trainer's environment and ports, as the benchmarks)
RETRY = 75
PHASES = ("start-up", "training", "evaluation/export/publishing")
# Where the 2-worker phase kills; the last three are found with FMNIST_TEST_PAUSES (trainer/resilience/pauses.py).
WORKER_PHASES = ("start-up", "training", "vote", "evaluation", "export")
PAUSES = {"vote": "vote=0.4", "evaluation": "evaluation=2", "export": "export=2"}


RUN_TIMEOUT = 300.0  # seconds any one run may take here (a few tens normally): a hung trainer fails the soak


def trainer_command(args, out, extra=(), backup_every_steps=10):
    """The soaked command; `backup_every_steps=None`: per-epoch backups, what the launchers ship."""
    manual = [f"--tfds_manual_dir={args.tfds_manual_dir}"] if args.tfds_manual_dir else []
    every = [f"--backup_every_steps={backup_every_steps}"] if backup_every_steps else []
    return [sys.executable, "-m", "trainer.task", "--model=mlp", "--recipe=seed", "--batch_size=64",
            f"--train_examples={args.train_examples}", f"--epochs={args.epochs}", *every,
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
        self.worker_kills = []  # (phase, victim, signal, where it landed) of each 2-worker kill
        self.notes = []         # what is left behind that is not a fault of the run

    def log_path(self, name):
        self.logs += 1
        return pathlib.Path(self.args.out) / f"{self.logs:03d}-{name}.log"

    def wait(self, process, log, timeout=RUN_TIMEOUT):
        """The process's exit status; one that runs past `timeout` is a problem (a hung trainer), and killed."""
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.problems.append(f"{log.name}: still running after {timeout:.0f} s (hung?): killed")
            process.kill()
            return process.wait(timeout=30)

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
        status = self.wait(process, log)
        text = self.check_log(log, status, {0})
        total = time.time() - started
        reference = json.loads((reference_out / "metrics.json").read_text())
        print(f"reference run: {total:.1f} s, test accuracy {reference['test_accuracy']:.4f}", flush=True)
        kills, cycle, finals = 0, 1, []
        faults = {"resumed": 0, "killed_training": 0}  # this job's, for its goodput
        out = pathlib.Path(args.out) / f"soaked-{cycle}"
        while True:
            log = self.log_path(f"run-{cycle}")
            process = start(trainer_command(args, out), log)
            if kills >= args.kills:
                status = self.wait(process, log)
                text = self.check_log(log, status, {0})
                self.tally.append((f"1 process #{cycle}", "-", "(final run)", resumed_at(text), status))
                faults["resumed"] += "continuing at" in text
                break
            target = PHASES[kills % len(PHASES)] if kills < len(PHASES) else self.rng.choice(PHASES)
            signum = self.rng.choice((signal.SIGKILL, signal.SIGTERM))
            where = self._kill_when(process, log, target, signum)
            status = self.wait(process, log)
            text = self.check_log(log, status, {0, RETRY, -signal.SIGKILL})
            faults["resumed"] += "continuing at" in text
            faults["killed_training"] += signum == signal.SIGKILL and where.startswith("training")
            if where.startswith("("):  # it finished before the signal: not a kill
                self.tally.append((f"1 process #{cycle}", "-", "(finished first)", resumed_at(text), status))
            else:
                self.tally.append((f"1 process #{cycle}", signal.Signals(signum).name, where, resumed_at(text),
                                   status))
                kills += 1
            if (out / "metrics.json").exists():  # this job is done: check it, then soak a new one
                finals.append(self._check_result(out, reference, faults))
                faults = {"resumed": 0, "killed_training": 0}
                cycle += 1
                out = pathlib.Path(args.out) / f"soaked-{cycle}"
        finals.append(self._check_result(out, reference, faults))
        return finals, reference

    def wait_for(self, process, log, pattern, deadline=RUN_TIMEOUT, count=1):
        """Until `pattern` appears in the log `count` times (True) or the process exits (False); reaching the
        deadline with the process still running is a problem (the run is stuck, or the pattern is wrong)."""
        pattern, limit = re.compile(pattern, re.M), time.time() + deadline
        while process.poll() is None:
            if len(pattern.findall(log.read_text())) >= count:
                return True
            if time.time() > limit:
                self.problems.append(f"{log.name}: no {pattern.pattern!r} within {deadline} s, still running")
                return False
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

    def _check_result(self, out, reference, faults=None):
        if not (out / "metrics.json").exists():
            self.problems.append(f"{out}: no result")
            return {"weights_sha256": None, "test_accuracy": float("nan"), "history": [], "num_workers": 0}
        final = json.loads((out / "metrics.json").read_text())
        goodput = final.get("goodput") or {}
        if faults is not None and goodput.get("restarts") != faults["resumed"]:
            self.problems.append(f"{out}: goodput counts {goodput.get('restarts')} restarts, the logs "
                                 f"{faults['resumed']} resumed runs")
        # A backup every 10 steps: a SIGKILL in training makes at most 10 steps train again; SIGTERM saves the step.
        if faults is not None and not 0 <= goodput.get("steps_recomputed", -1) <= 10 * faults["killed_training"]:
            self.problems.append(f"{out}: goodput counts {goodput.get('steps_recomputed')} steps recomputed after "
                                 f"{faults['killed_training']} SIGKILL(s) in training")
        leftovers = [n for n in os.listdir(out) if n.startswith(".") or n == "checkpoints"]
        if sorted(os.listdir(out)) != ["logs", "metrics.json", "saved_model", "test_predictions.npz"]:
            self.problems.append(f"{out}: holds {sorted(os.listdir(out))}, leftovers {leftovers}")
        if [row["epoch"] for row in final["history"]] != list(range(1, self.args.epochs + 1)):
            self.problems.append(f"{out}: history covers epochs {[row['epoch'] for row in final['history']]}")
        if reference is not None and final["weights_sha256"] != reference.get("weights_sha256"):
            self.problems.append(f"{out}: weights differ from the uninterrupted run's (test accuracy "
                                 f"{final['test_accuracy']:.4f} vs {reference.get('test_accuracy', float('nan')):.4f})")
        return final

    def start_workers(self, args, out, checkpoints, name, pauses=""):
        hosts = [f"localhost:{port}" for port in free_ports(2)]
        logs = [self.log_path(f"{name}{i}") for i in range(2)]
        workers = [start(trainer_command(args, out, [f"--checkpoint_dir={checkpoints}"], backup_every_steps=None),
                         log, env={"TF_CONFIG": json.dumps({"cluster": {"worker": hosts},
                                                            "task": {"type": "worker", "index": i}}),
                                   "FMNIST_TEST_PAUSES": pauses})
                   for i, log in enumerate(logs)]
        return workers, logs

    def worker_kill_plan(self, kills):
        """(victim, phase) of the 2-worker kill number `kills`: the chief and the other in turn, the vote,
        evaluation and export first (in the seed's order), then any phase."""
        if not hasattr(self, "_plan"):
            first = list(WORKER_PHASES[2:])
            self.rng.shuffle(first)
            self._plan, self._first_victim = first, self.rng.randrange(2)
        phase = self._plan[kills] if kills < len(self._plan) else self.rng.choice(WORKER_PHASES)
        return (self._first_victim + kills) % 2, phase

    def _kill_worker_when(self, worker, log, phase):
        """Waits for a random moment of `phase` in the victim's run; returns where it landed, or None."""
        epochs = self.args.epochs
        if phase == "start-up":  # the workers meeting, TensorFlow's start-up, the data
            time.sleep(self.rng.uniform(1.0, 6.0))
        elif phase == "training":
            self.wait_for(worker, log, epoch_begins(self.rng.randint(1, epochs), epochs))
            time.sleep(self.rng.uniform(0.0, 1.0))
        elif phase == "vote":  # one of the votes of a random epoch, slowed to 0.4 s
            self.wait_for(worker, log, epoch_begins(self.rng.randint(1, epochs), epochs))
            votes = len(re.findall(r"test pause: vote", log.read_text()))
            self.wait_for(worker, log, r"test pause: vote", count=votes + 1)
            time.sleep(self.rng.uniform(0.0, 0.3))
        else:  # evaluation or export, slowed to 2 s
            self.wait_for(worker, log, rf"test pause: {phase}", deadline=RUN_TIMEOUT)
            time.sleep(self.rng.uniform(0.0, 1.8))
        if worker.poll() is not None:
            return None
        where = phase_of(log.read_text())
        return phase if phase in PAUSES else where

    def two_workers(self):
        """2 workers with per-epoch backups (what the launchers ship): an uninterrupted reference, then one job
        killed --worker_kills times; it must end with the reference's weights and every epoch in its history."""
        args = self.args
        reference_out = pathlib.Path(args.out) / "two-workers-reference"
        workers, logs = self.start_workers(args, reference_out, f"{reference_out}-backup", "reference-worker")
        statuses = [self.wait(w, log) for w, log in zip(workers, logs)]
        for log, status in zip(logs, statuses):
            self.check_log(log, status, {0})
        reference = self._check_result(reference_out, None) if statuses == [0, 0] else {}
        print(f"2-worker reference run: test accuracy {reference.get('test_accuracy', float('nan')):.4f}",
              flush=True)
        out = pathlib.Path(args.out) / "two-workers"
        checkpoints = f"{out}-backup"
        kills = 0
        while True:
            victim, phase = self.worker_kill_plan(kills)
            workers, logs = self.start_workers(args, out, checkpoints, "worker",
                                               pauses=PAUSES.get(phase, "") if kills < args.worker_kills else "")
            if kills >= args.worker_kills:
                statuses = [self.wait(w, log) for w, log in zip(workers, logs)]
                texts = [self.check_log(log, status, {0}) for log, status in zip(logs, statuses)]
                self.tally.append(("2 workers", "-", "(final run)", resumed_at(texts[0]), statuses))
                break
            signum = self.rng.choice((signal.SIGKILL, signal.SIGTERM))
            where = self._kill_worker_when(workers[victim], logs[victim], phase) or "(had exited)"
            if workers[victim].poll() is None:
                workers[victim].send_signal(signum)
            self.worker_kills.append((phase, victim, signal.Signals(signum).name, where))
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
                    restarted += ", then SIGKILL after the grace period"
                    self.problems.append(f"{logs[1 - victim].name}: SIGTERM did not stop it within 30 s")
            if signum == signal.SIGTERM and restarted and where not in ("start-up", "(had exited)"):
                self.problems.append(f"SIGTERM to worker {victim} in {where}: the other did not stop with it")
            statuses = [self.wait(w, log, timeout=120) for w, log in zip(workers, logs)]
            texts = [self.check_log(log, status, {0, RETRY, -signal.SIGKILL}) for log, status in zip(logs, statuses)]
            if signum == signal.SIGTERM and ("training" in where or where == "vote") and statuses != [RETRY, RETRY]:
                self.problems.append(f"SIGTERM to worker {victim} in {where}: exit statuses {statuses}, not 75, 75")
            survivor = 1 - victim
            published = survivor == 0 and "Test accuracy" in texts[survivor]
            if (signum == signal.SIGKILL and not where.startswith("(") and statuses[survivor] != RETRY
                    and not published):
                self.problems.append(f"SIGKILL to worker {victim} in {where}: the survivor exited "
                                     f"{statuses[survivor]}, not 75")
            saved = re.findall(r"saved the backup at (epoch \d+, step \d+)", "\n".join(texts))
            self.tally.append(("2 workers", f"{signal.Signals(signum).name} to worker {victim}", where + restarted
                               + (f"; both saved {saved[0]}" if len(saved) == 2 and saved[0] == saved[1] else ""),
                               resumed_at(texts[1 - victim]), statuses))
            kills += 1
        final = self._check_result(out, reference)
        if final["num_workers"] != 2:
            self.problems.append("the 2-worker result does not say 2 workers")
        left = sorted(os.listdir(checkpoints)) if os.path.exists(checkpoints) else []
        if left and all(name.startswith(".lease-") for name in left):  # a SIGKILLed worker's: it expires by itself
            self.notes.append(f"{checkpoints}: only the lease of a killed worker is left ({left}): it holds no "
                              "training state and expires by itself (trainer/resilience/lease.py)")
        elif left:
            self.problems.append(f"{checkpoints} is left: {left}")
        return final, reference

    def report(self):
        print("\n| run | resumed at (from its own log) | signal | landed in | exit status |")
        print("| --- | --- | --- | --- | --- |")
        for kind, signame, where, resumed, status in self.tally:
            print(f"| {kind} | {resumed or '-'} | {signame} | {where} | {status} |")
        kills = sum(1 for row in self.tally if row[1] != "-")
        per_phase = {phase: sum(k[0] == phase for k in self.worker_kills) for phase in WORKER_PHASES}
        per_worker = {f"worker {i}{' (chief)' if i == 0 else ''}": sum(k[1] == i for k in self.worker_kills)
                      for i in range(2)}
        print(f"\n2-worker kills per phase: {per_phase}; per worker: {per_worker}; signals: "
              f"{sorted(k[2] for k in self.worker_kills)}")
        print(f"{kills} kills; problems: {len(self.problems)}; seed {self.args.seed} (replay: --seed="
              f"{self.args.seed})")
        for problem in self.problems:
            print(f"PROBLEM: {problem}")
        for note in self.notes:
            print(f"NOTE: {note}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--worker_kills", type=int, default=3)
    parser.add_argument("--seed", type=int, default=None, help="replays a soak (default: a new seed, printed)")
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
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1_000_000)
    print(f"fault soak, seed {args.seed} (replay: {' '.join(sys.argv[:1])} --seed={args.seed} ...)", flush=True)
    soak = Soak(args)
    started = time.time()
    finals, reference = soak.one_process()
    same = sum(final["weights_sha256"] == reference["weights_sha256"] for final in finals)
    accuracies = ", ".join(f"{final['test_accuracy']:.4f}" for final in finals)
    print(f"1 process: {len(finals)} job(s) finished, {same} of them with the uninterrupted run's weights; test "
          f"accuracy {accuracies} (uninterrupted {reference['test_accuracy']:.4f})", flush=True)
    if args.worker_kills:
        two, two_reference = soak.two_workers()
        print(f"2 workers: finished, test accuracy {two['test_accuracy']:.4f}, "
              f"{'the' if two['weights_sha256'] == two_reference.get('weights_sha256') else 'NOT the'} uninterrupted "
              f"2-worker run's weights", flush=True)
    soak.report()
    print(f"took {time.time() - started:.0f} s")
    return 1 if soak.problems else 0


if __name__ == "__main__":
    sys.exit(main())
