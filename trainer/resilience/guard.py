"""One run's fault handling, entered once: `with guard.RunGuard(cfg, tf_config) as run_guard:` in train.run.

Entering it meets the peer workers (in bounded time, refusing workers of other settings: cluster.py), creates the
strategy (unless given one) and puts the process's signal handlers back over the ones a multi-worker runtime
installs, proves the backup location writable, takes the lease on the backup folder and repairs or discards a
damaged backup. Inside, it hands out where the training stream starts and the callbacks
that save and stop; after publishing, it discards the backup. Leaving it releases the lease, and turns a lost peer
worker's collective abort into the contract's "retry me" with one line.
"""

import re

import tensorflow as tf

from trainer.training import distribution
from trainer.errors import RetryableError
from trainer.resilience import callback_state, checkpoints, cluster, meeting, restore
from trainer.resilience.callback_state import CallbackState, EpochEnd
from trainer.resilience.goodput import Goodput, GoodputMeter, process_started
from trainer.resilience.history import HISTORY_FILE, EpochHistory
from trainer.resilience.lease import Lease
from trainer.resilience.peers import StopBroadcast
from trainer.resilience.signals import PROCESS

# What every worker's collectives raise when a peer dies (preempted, evicted, crashed); Aborted: the coordination
# service declared a task lost (its heartbeats missed) and aborted the collectives.
LOST_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError)


class RunGuard:
    """The fault handling of one training run (`cfg`: a config.RunConfig; `tf_config`: the cluster, {} for none).

    `strategy`: a strategy to use instead of the one --strategy chooses (tests and scripts); `signals`: the
    process's StopSignals.
    """

    def __init__(self, cfg, tf_config, strategy=None, signals=PROCESS):
        self.cfg, self.job, self.tf_config, self.strategy, self.signals = cfg, cfg.job, tf_config, strategy, signals
        self.checkpoint_dir = cfg.job.checkpoint_dir
        self.multi_worker = distribution.cluster_size(tf_config) > 1
        self.lease = None
        self.goodput = None  # goodput.Goodput: what faults cost this job, once entered
        self.backup = None   # checkpoints.Backup of the run's `fit`, once its callbacks are made
        self.peers = None    # peers.StopBroadcast under many workers: a stop outside `fit` reaches them all

    def __enter__(self):
        if self.strategy is None:
            self.strategy = self._start_strategy()
            self.signals.reinstall()
            if self.multi_worker and distribution.name_of(self.strategy) == "multi_worker_mirrored":
                self.peers = StopBroadcast(distribution.task_name(self.tf_config), self.signals).start()
        checkpoints.check_location(self.checkpoint_dir)
        self.lease = Lease(self.checkpoint_dir, distribution.task_name(self.tf_config)).acquire()
        self.signals.before_exit(self.lease.release)
        try:
            self._prepare_restore()
        except BaseException:
            self._release()
            raise
        self.goodput = Goodput(self.checkpoint_dir, write=distribution.is_chief(self.tf_config),
                               workers=max(1, distribution.cluster_size(self.tf_config)),
                               started=process_started() if self.signals.watching else None)
        self.goodput.start(backup_exists=tf.io.gfile.isdir(f"{self.checkpoint_dir.rstrip('/')}/"
                                                           f"{checkpoints.CHECKPOINTS}"))
        self.signals.before_exit(self.goodput.close)
        return self

    def __exit__(self, error_type, error, traceback):
        if self.peers is not None:
            self.peers.close()
        if error is None:
            self._release()
        else:  # stopping (a signal, a lost peer, a fault): the clean-ups may not hold the exit up (storage hung)
            self.signals.bounded(self._release)
        if isinstance(error, LOST_PEER_ERRORS):
            raise lost_contact(error, self.checkpoint_dir, distribution.task_name(self.tf_config)) from None
        return False

    def _prepare_restore(self):
        """The chief alone repairs a damaged backup (restore.py); under MultiWorkerMirroredStrategy the others
        wait for its verdict, so that no worker reads the folder while it changes, and all stop if it failed."""
        chief = distribution.is_chief(self.tf_config)
        collective = self.multi_worker and isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy)
        failure = None
        if chief:
            try:
                checkpoints.prepare_restore(self.checkpoint_dir)
            except RetryableError as error:
                failure = error
        if collective and not restore.chief_verdict(self.strategy, chief, failure is None) and failure is None:
            raise restore.refused_by_chief(self.checkpoint_dir)
        if failure is not None:
            raise failure

    def _start_strategy(self):
        """The strategy --strategy chooses; many workers meet first (cluster.ClusterStartup), in bounded time."""
        timeout = self.job.cluster_timeout
        many = (self.multi_worker and self.tf_config.get("task", {}).get("type") in ("chief", "worker")
                and distribution.resolved_name(self.job.strategy, self.tf_config) == "multi_worker_mirrored")
        if many:
            secret = meeting.load_secret(self.job.cluster_secret_file)
            cluster.ClusterStartup(self.tf_config, cluster.training_settings(self.cfg), timeout, secret).form()
        register = min(timeout or cluster.REGISTER_SECONDS, cluster.REGISTER_SECONDS) if many else 0
        try:
            return distribution.get_strategy(self.job.strategy, self.tf_config, register_timeout_seconds=register)
        except LOST_PEER_ERRORS as error:
            raise lost_contact(error, self.checkpoint_dir, distribution.task_name(self.tf_config)) from None

    def finish(self):
        """A finished run's end: under many workers, no worker's exit may look like a lost peer to another that
        is still evaluating or exporting (peers.StopBroadcast.finish)."""
        if self.peers is not None:
            me = distribution.task_name(self.tf_config)
            others = [name for name, _ in cluster.tasks(self.tf_config) if name != me]
            self.peers.finish(distribution.is_chief(self.tf_config), others)

    def _release(self):
        """The lease first: when stopping, the clean-ups share a few seconds (signals.CLEAN_UP_SECONDS), and a
        lease left behind holds the replacement back until it expires, while a goodput record left unwritten
        costs only the last moments' accounting (seen: on gs:// under load, goodput's write took the time)."""
        self.signals.forget(self.lease.release)
        self.lease.release()
        if self.goodput is not None:
            self.signals.forget(self.goodput.close)
            self.goodput.close()

    def resume_step(self, steps_per_epoch):
        """The global step the training stream starts at: 0, or the step after the backup's."""
        return checkpoints.resume_step(self.checkpoint_dir, steps_per_epoch)

    def callbacks(self, chief, steps_per_epoch, steps_per_execution, start_step=0, others=()):
        """Keras's backup of the training state (saving on SIGTERM/SIGINT too), the history that goes with it, and
        the run's `others` (TensorBoard, EarlyStopping) in between, their state part of the backup; returns
        (callbacks, history). `start_step`: where the training stream starts (Keras must continue there too).

        The order matters: the backup restores first, and saves an epoch's end last, after every other callback
        has taken the epoch in (callback_state.EpochEnd)."""
        history = EpochHistory(f"{self.checkpoint_dir.rstrip('/')}/{HISTORY_FILE}", write=chief,
                               steps_per_epoch=steps_per_epoch, start_step=start_step)
        backup = checkpoints.Backup(self.checkpoint_dir, every_steps=self.job.backup_every_steps,
                                    steps_per_epoch=steps_per_epoch, steps_per_execution=steps_per_execution,
                                    multi_worker=self.multi_worker, signals=self.signals)
        state = CallbackState(f"{self.checkpoint_dir.rstrip('/')}/{callback_state.FOLDER}",
                              callback_state.stateful(others), write=chief)
        epoch_end = EpochEnd(backup, history, state, steps_per_epoch, start_step)
        written_by, workers = self.goodput.backup_written_by(), max(1, distribution.cluster_size(self.tf_config))
        if start_step and written_by and written_by != workers:  # elastic: docs/distributed.md says what holds
            history.note = (f"; a backup written by {written_by} worker{'s' * (written_by > 1)}, resumed by "
                            f"{workers}: the same global batch and stream of batches")
        history.goodput = self.goodput
        self.backup = backup
        meter = GoodputMeter(self.goodput, backup)
        return [backup, history, *others, epoch_end, meter], history

    def discard(self):
        """Deletes the backup: only once the result is published (until then, a rerun resumes from it)."""
        self.goodput.retire()
        checkpoints.discard(self.checkpoint_dir)


def lost_contact(error, checkpoint_dir, own_task="single"):
    """A peer worker died: every worker's collectives abort. A rerun of every worker resumes from the last backup,
    so say that, naming the peer where TensorFlow's message does, rather than dump its collective-op frames."""
    peers = sorted({f"{job}-{index}" for job, index in re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", str(error))}
                   - {own_task})
    who = f"{', '.join(peers)}" if peers else "another worker"
    return RetryableError(f"lost contact with {who} ({type(error).__name__}): a peer worker stopped or was lost. "
                          f"The job stopped; rerun every worker with the same flags to resume from the last backup "
                          f"in {checkpoint_dir}.")
