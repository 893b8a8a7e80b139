"""How good the trainer's ETA is: the ETA logged at half-way against the time training really took from there.

    .venv/bin/python bench/eta.py [--out out/bench-eta] [trainer flags...]   # default: --model=vgg --recipe=strong
    .venv/bin/python bench/eta.py --log RUN.log                              # a log that a run already wrote

Runs the trainer (or reads its log), takes each `epoch k/N: ... ETA ...` line with its absl time, and prints, for
the epoch at half-way (k = N // 2) and every later one, the ETA the line gave against the time until the last
epoch's line (training's end) and until the process ended, with the relative error. The trainer's ETA is that of
training; the time until the process ends adds evaluation and export.
"""

import argparse
import datetime
import pathlib
import re
import subprocess
import sys
import time

from common import ROOT, add_data_args, clean_env, data_flags

LINE = re.compile(r"^I(\d{4}) (\d\d:\d\d:\d\d\.\d+) .*?epoch (\d+)/(\d+): .*, (\w+) elapsed, ETA (\w+)$", re.M)


def seconds(text):
    """7m46s, 1h05m, 42s -> seconds."""
    parts = dict((unit, int(value)) for value, unit in re.findall(r"(\d+)([hms])", text))
    return parts.get("h", 0) * 3600 + parts.get("m", 0) * 60 + parts.get("s", 0)


def epoch_lines(log, year):
    """[(time, epoch, epochs, ETA seconds)] of the log's epoch lines."""
    found = []
    for day, clock, epoch, epochs, _, eta in LINE.findall(log):
        when = datetime.datetime.strptime(f"{year}{day} {clock}", "%Y%m%d %H:%M:%S.%f").timestamp()
        found.append((when, int(epoch), int(epochs), seconds(eta)))
    return found


def report(lines, ended=None):
    if not lines or lines[-1][1] != lines[-1][2]:
        sys.exit("the log does not reach its last epoch's line: nothing to compare the ETA with")
    last = lines[-1][0]
    print("| epoch | ETA logged | training took from there | error | until the process ended | error |")
    print("| --- | --- | --- | --- | --- | --- |")
    half = lines[-1][2] // 2
    for when, epoch, epochs, eta in lines:
        if epoch < half or epoch == epochs:
            continue
        actual = last - when
        cells = [f"{epoch}/{epochs}", f"{eta} s", f"{actual:.0f} s", f"{(eta - actual) / actual:+.0%}"]
        if ended is not None:
            cells += [f"{ended - when:.0f} s", f"{(eta - (ended - when)) / (ended - when):+.0%}"]
        else:
            cells += ["-", "-"]
        print("| " + " | ".join(cells) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", help="read this log instead of running the trainer")
    parser.add_argument("--out", default=str(ROOT / "out" / "bench-eta"))
    add_data_args(parser)
    args, trainer_flags = parser.parse_known_args()
    if args.log:
        text = pathlib.Path(args.log).read_text()
        report(epoch_lines(text, datetime.date.today().year))
        return
    flags = trainer_flags or ["--model=vgg", "--recipe=strong"]
    command = [sys.executable, "-m", "trainer.task", f"--output_dir={args.out}", "--overwrite", *data_flags(args),
               *flags]
    print("$", " ".join(command[1:]), flush=True)
    log = pathlib.Path(args.out + ".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        status = subprocess.run(command, cwd=ROOT, env=clean_env(), stdout=f, stderr=subprocess.STDOUT).returncode
    ended = time.time()
    if status:
        sys.exit(f"training failed ({status}): see {log}")
    report(epoch_lines(log.read_text(), datetime.date.today().year), ended)


if __name__ == "__main__":
    main()
