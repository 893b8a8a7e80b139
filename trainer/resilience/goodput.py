"""What faults cost a job: metrics.json's `goodput`, kept beside the backup across the runs of one job.

Every run of the job (the first, and each rerun after a preemption or a kill) keeps one record in
`goodput.json` beside the backup: when its process started, when it reached its first step, the step it resumed
from, the furthest step it reached, the time it spent saving backups, how many workers it had. The chief
rewrites its record every HEARTBEAT_SECONDS while it runs (atomically, like history.json), so a run killed
without warning leaves a record at most that old. The finished run sums them up:

- `restarts`: runs of this job that resumed from a backup;
- `steps_recomputed`: steps trained again because a run ended after its last backup (each run's furthest step
  minus the step the next run resumed from); a SIGTERM saves the step in progress, so only kills count;
- `startup_seconds`: process start to first step, summed over the runs (a run that never got there counts whole);
- `backup_seconds`: time spent saving the backup, summed;
- `useful_fraction`: the training time of the steps the final model kept, over the wall-clock time of every run
  (so a run never stopped has its own baseline: start-up, evaluation and export are not training).

Only the chief writes; the record of a run killed before its first heartbeat is lost (its start-up time is then
missing from the sums). Deleted with the backup once the result is published.
"""

import json
import os
import threading
import time

import tensorflow as tf
import tf_keras
from absl import logging

from trainer.storage.files import write_json

GOODPUT_FILE = "goodput.json"
JOIN_SECONDS = 30.0  # how long the last word waits for a heartbeat in flight (a storage call's own timeouts)
HEARTBEAT_SECONDS = 2.0


def process_started():
    """The wall-clock time this process started (Linux's /proc), or None elsewhere."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime: clock ticks after boot
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def took_part(run):
    """Whether a run's record says it resumed from a backup or reached training (else it ended in start-up)."""
    return bool(run.get("resumed_from_step") or run.get("furthest_step") or run.get("first_step_at") is not None)


class Goodput:
    """This run's record among the job's runs in `checkpoint_dir`/goodput.json; `write`: this task is the chief.

    `started`: when this run began (the process's start for the command line; now, in-process)."""

    def __init__(self, checkpoint_dir, write, workers, started=None):
        self.path = f"{checkpoint_dir.rstrip('/')}/{GOODPUT_FILE}"
        self.write = write
        self.previous = self._read()
        now = time.time()
        self.run = {"started": started or now, "last_seen": now, "first_step_at": None, "training_seconds": 0.0,
                    "resumed_from_step": 0, "furthest_step": 0, "last_backup_step": None, "backup_seconds": 0.0,
                    "workers": workers}
        self._counter = None    # Keras's step counter while training
        self._backup = None     # the checkpoints.Backup that times its saves
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._started_writing = False

    def start(self, backup_exists):
        """Writes this run's first record and keeps it fresh (chief only). Beside an existing backup only, until
        training begins: a run that ends before (damaged data, a bad setting found late) leaves no backup folder."""
        self._started_writing = bool(backup_exists or self.previous)
        if self.write:
            self.save()
            self._thread = threading.Thread(target=self._heartbeat, name="goodput", daemon=True)
            self._thread.start()
        return self

    def close(self):
        """The last word of this run (its end, or a signal's exit). The heartbeat is joined first: a thread still
        inside a gs:// write when the interpreter exits aborts the process (SIGABRT, "exception not rethrown")."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=JOIN_SECONDS)
        self.save()

    def retire(self):
        """Writes no more: the backup, this file with it, is being discarded (the result is published)."""
        self._stop.set()
        with self._lock:
            self.write = False
        if self._thread is not None:
            self._thread.join()

    # ---- what the run tells it -----------------------------------------------------------------------------

    def backup_written_by(self):
        """Workers of the run that saved the newest backup: the newest run that recorded a backup, else the newest
        that trained (its record may predate its first backup by a heartbeat); None: no run did."""
        for key in ("last_backup_step", "first_step_at"):
            for record in reversed(self.previous):
                if record.get(key) is not None:
                    return record.get("workers")
        return None

    def restarts_before(self):
        """Runs of this job before this one that resumed from a backup."""
        return sum(1 for run in self.previous if run.get("resumed_from_step"))

    def resumed(self, step):
        """This run resumed from the backup at global `step` (EpochHistory, just before it says so in the log)."""
        self.run["resumed_from_step"] = self.run["furthest_step"] = int(step)
        self.save()  # at once: a run that resumed counts as a restart even if killed in its first seconds

    def training_begins(self, model, backup):
        self._counter, self._backup = model._train_counter, backup
        self._started_writing = True
        self.save()

    def first_step(self):
        if self.run["first_step_at"] is None:
            self.run["first_step_at"] = time.time()

    def training_ends(self):
        self._refresh()
        self._counter = None
        self.save()

    # ---- the record ----------------------------------------------------------------------------------------

    def _refresh(self):
        now = time.time()
        run = self.run
        run["last_seen"] = now
        if self._counter is not None:
            try:
                run["furthest_step"] = max(run["furthest_step"], int(self._counter.numpy()))
            except Exception as error:  # the variable is gone (training ended): keep the last value
                logging.debug("goodput: step counter unreadable: %s", error)
            if run["first_step_at"] is not None:
                run["training_seconds"] = now - run["first_step_at"]
        if self._backup is not None:
            run["backup_seconds"] = round(self._backup.backup_seconds, 3)
            saved = self._backup.last_saved_step
            run["last_backup_step"] = None if saved is None else int(saved)

    def save(self):
        if not self.write or not self._started_writing:
            return
        with self._lock:
            self._refresh()
            try:
                write_json(self.path, [*self.previous, self.run])
            except tf.errors.OpError as error:  # a heartbeat that fails now and then costs nothing
                logging.debug("goodput: could not write %s: %s", self.path, error)

    def _heartbeat(self):
        while not self._stop.wait(HEARTBEAT_SECONDS):
            self.save()

    def _read(self):
        try:
            with tf.io.gfile.GFile(self.path) as f:
                records = json.load(f)
            return [record for record in records if isinstance(record, dict)]
        except (tf.errors.OpError, ValueError, TypeError):
            return []

    # ---- the sums ------------------------------------------------------------------------------------------

    def summary(self, final_step):
        """metrics.json's `goodput` once training ended at global step `final_step`."""
        self._refresh()
        runs = [*self.previous, self.run]
        # A run stopped in start-up, before it resumed or trained, holds resumed_from_step 0 by default: as the
        # "after" of a pair it would count every step of the run before it as trained again (the soak's seed 91198:
        # 376 of 376). It trained nothing and resumed nothing, so the steps are paired without it; its time still
        # counts in the totals below.
        training = [*[run for run in self.previous if took_part(run)], self.run]
        recomputed = [max(0, int(run.get("furthest_step") or 0) - int(after.get("resumed_from_step") or 0))
                      for run, after in zip(training, training[1:])]
        useful = 0.0
        for index, run in enumerate(training):
            begin = int(run.get("resumed_from_step") or 0)
            end = int(training[index + 1].get("resumed_from_step") or 0) if index + 1 < len(training) else final_step
            trained = int(run.get("furthest_step") or 0) - begin
            if trained > 0 and end > begin:
                per_step = max(0.0, (run.get("training_seconds") or 0.0) - (run.get("backup_seconds") or 0.0)) \
                    / trained
                useful += min(end - begin, trained) * per_step
        total = sum(max(0.0, run["last_seen"] - run["started"]) for run in runs)
        startup = sum(((run["first_step_at"] or run["last_seen"]) - run["started"]) for run in runs)
        return {
            "restarts": self.restarts_before() + bool(self.run.get("resumed_from_step")),
            "runs": len(runs),
            "steps_recomputed": sum(recomputed),
            "startup_seconds": round(startup, 3),
            "backup_seconds": round(sum(run.get("backup_seconds") or 0.0 for run in runs), 3),
            "total_seconds": round(total, 3),
            "useful_fraction": round(useful / total, 4) if total > 0 else None,
            "workers_per_run": [run.get("workers") for run in runs],
        }


class GoodputMeter(tf_keras.callbacks.Callback):
    """Tells the run's Goodput where training resumed, when its first step began and each epoch's backup (last in
    the callback list)."""

    def __init__(self, goodput, backup):
        super().__init__()
        self.goodput, self.backup = goodput, backup

    def on_train_begin(self, logs=None):
        self.goodput.training_begins(self.model, self.backup)

    def on_epoch_begin(self, epoch, logs=None):
        self.goodput.first_step()

    def on_epoch_end(self, epoch, logs=None):
        self.goodput.save()  # after the epoch's backup (callback_state.EpochEnd comes before): who wrote it

    def on_train_end(self, logs=None):
        self.goodput.training_ends()
