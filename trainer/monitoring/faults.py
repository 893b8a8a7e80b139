"""What faults have cost the run so far, as the metrics endpoint shows it: restarts and the backup's age.

One small object that the fault-handling side feeds, and that works unfed: until it is told, it derives what it
can on its own.
- `restarts`: how many times this job was restarted from a backup. Fed by `record_restarts(n)` (the goodput
  record knows every restart); unfed, 1 when this process resumed from a backup, else 0 (a lower bound).
- `seconds_since_backup()`: from the watched backup's last save (`watch(backup)`) once it made one; before that,
  the age of the newest file of the backup's checkpoints (Keras's BackupAndRestore writes them into
  <checkpoint_dir>/chief), looked up again at most every CHECK_SECONDS once found, so that a scraper polling
  every second does not list a Cloud Storage folder each time.
"""

import time

import tensorflow as tf

from trainer.resilience.checkpoints import CHECKPOINTS

CHECK_SECONDS = 5.0


class FaultRecord:
    def __init__(self, checkpoint_dir, resumed=False):
        self.checkpoint_dir = checkpoint_dir.rstrip("/") if checkpoint_dir else None
        self.restarts = int(bool(resumed))
        self._found, self._checked = None, None  # the newest checkpoint file's mtime, and when it was looked up
        self._backup = None            # a resilience.checkpoints.Backup whose saves to follow (watch)

    def record_restarts(self, count):
        """The number of restarts from a backup so far (this one included)."""
        self.restarts = int(count)

    def watch(self, backup):
        """Follows `backup`'s saves (its `last_saved_at`): this process's own, once it saved one."""
        self._backup = backup

    def last_backup_time(self):
        """Wall-clock time of the newest backup, or None when there is none yet."""
        if self._backup is not None and self._backup.last_saved_at is not None:
            return self._backup.last_saved_at
        now = time.monotonic()
        if self._found is None or now - self._checked >= CHECK_SECONDS:  # none yet: look at every scrape
            self._checked, self._found = now, self._newest_checkpoint_mtime()
        return self._found

    def seconds_since_backup(self):
        last = self.last_backup_time()
        return None if last is None else max(0.0, time.time() - last)

    def _newest_checkpoint_mtime(self):
        if not self.checkpoint_dir:
            return None
        folder = f"{self.checkpoint_dir}/{CHECKPOINTS}"
        try:
            names = [n for n in tf.io.gfile.listdir(folder) if n.startswith("ckpt-")]
            if not names:
                return None
            return max(tf.io.gfile.stat(f"{folder}/{n}").mtime_nsec for n in names) / 1e9
        except (tf.errors.OpError, OSError):
            return None
