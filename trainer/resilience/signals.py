"""SIGTERM and SIGINT: how a cluster (or an operator) stops the job politely.

The command line blocks both signals before anything starts a thread (numpy's pool, TensorFlow's: they inherit
the mask, so neither they nor TensorFlow's own SIGTERM handlers take the signal) and takes them in one watcher
thread, so they are handled while the main thread waits inside TensorFlow (a long op; not inside the
multi-worker strategy's start-up, which holds Python's lock: cluster.REGISTER_SECONDS bounds that wait):
- during `fit`, the first one asks the training in progress (checkpoints.Backup) to save the step in progress and
  stop (under many workers: all of them at the same step, agreement.StopAgreement); if training does not get there
  within STOP_DEADLINE_SECONDS (stuck in a collective with a lost peer), the process exits anyway;
- anywhere else, or a second time, the process exits at once: before training nothing is in progress, after it
  the backup is complete. Exiting, not raising: an exception raised in the middle of an import or a file write
  could leave a broken state behind.
Either way the exit status is the contract's "retry me". Once the result is published (`finished`), both are
ignored: the run ends 0. No TensorFlow here.

A process has one set of signal handlers, so it has one `StopSignals` object, `PROCESS`; its state (the signal
received, the training it stops, what to release before exiting) lives on it.
"""

import os
import signal
import threading

from absl import logging

from trainer.errors import RETRY

SIGNALS = (signal.SIGTERM, signal.SIGINT)
STOP_DEADLINE_SECONDS = 12.0  # inside GKE Spot's 15 s after SIGTERM (Kubernetes' default grace: 30 s)


class Training:
    """The `fit` in progress, as the signal handling sees it.

    `stop()` asks it to stop after the step in progress (under many workers it does nothing: the workers' next
    agreement sees `requested`); `where` names the backup a rerun resumes from.
    """

    def __init__(self, stop, where="the last backup"):
        self.stop, self.where = stop, where


class StopSignals:
    """The process's SIGTERM/SIGINT handling: the signal received, the training it stops, the clean-ups to run
    before exiting (leases to release)."""

    def __init__(self):
        self.requested = None    # the signal that asked training to stop
        self.training = None     # the Training in progress, or None
        self.watching = False    # the command line's watcher thread takes the signals
        self._before_exit = []   # callables run before the process exits on a signal
        self._deadline = None    # the timer that exits if training does not stop in time

    # ---- installing ------------------------------------------------------------------------------------------

    def watch(self):
        """Blocks SIGTERM/SIGINT in this and every later thread and handles them in a watcher thread, with plain
        handlers as well for a thread that unblocks them (the command line calls this first thing)."""
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        threading.Thread(target=self._watch, name="signal-watcher", daemon=True).start()
        self.watching = True
        self.reinstall()

    def reinstall(self):
        """The plain handlers again, once the strategy exists: a multi-worker strategy's runtime installs a SIGTERM
        handler of its own that only notifies its preemption watcher. A no-op in-process (tests) unless
        watching."""
        if self.watching:
            self.install_handlers()

    def install_handlers(self):
        """Plain handlers that call `handle`; returns the ones they replace."""
        return {signum: signal.signal(signum, lambda received, frame: self.handle(received)) for signum in SIGNALS}

    def finished(self):
        """The run is over and its result published: a stop signal has nothing left to save, so it is ignored and
        the process ends 0. (Left to the default action, one landing while the interpreter shuts down, after
        Python has put the default handlers back, ended a finished run by SIGTERM, -15, in the fault soak.)"""
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_IGN)

    def _watch(self):
        while True:
            self.handle(signal.sigwait(SIGNALS))

    # ---- what the run tells it -------------------------------------------------------------------------------

    def before_exit(self, clean_up):
        """Runs `clean_up()` before the process exits on a signal (until `forget(clean_up)`)."""
        self._before_exit.append(clean_up)

    def forget(self, clean_up):
        if clean_up in self._before_exit:
            self._before_exit.remove(clean_up)

    def start_training(self, training):
        """`fit` is running: a signal asks it to stop after the step in progress."""
        self.training = training

    def end_training(self):
        """`fit` stopped (or the backup is saved): a signal now exits at once."""
        self.training, self.requested = None, None
        if self._deadline is not None:  # training stopped: no need to force the exit
            self._deadline.cancel()
            self._deadline = None

    # ---- a signal --------------------------------------------------------------------------------------------

    def handle(self, signum):
        """What a SIGTERM/SIGINT does now (also the plain signal handler of an in-process run: tests)."""
        training = self.training
        if training is not None and self.requested is None:
            self.requested = signum
            training.stop()
            logging.info("%s received: saving a backup after the step in progress, then stopping.",
                         signal.Signals(signum).name)
            self._deadline = threading.Timer(STOP_DEADLINE_SECONDS, self.exit_now,
                                             args=(signum, "training did not reach the end of a step in time; "))
            self._deadline.daemon = True
            self._deadline.start()
            return
        self.exit_now(signum)

    def exit_now(self, signum, why=""):
        for clean_up in list(self._before_exit):
            clean_up()
        where = "during training" if self.training is not None else "outside training"
        from trainer import logs
        logs.drain()  # the lines before this one first
        message = (f"fmnist-train: error: stopped by {signal.Signals(signum).name} {where}; {why}a rerun of the "
                   "same command resumes from the last backup.\n")
        os.write(logs.real_stderr(), message.encode())
        os._exit(RETRY)


PROCESS = StopSignals()  # the process's one set of handlers
