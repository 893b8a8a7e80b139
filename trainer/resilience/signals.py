"""SIGTERM and SIGINT: how a cluster (or an operator) stops the job politely.

The command line blocks both signals before anything starts a thread (numpy's pool, TensorFlow's: they inherit
the mask, so neither they nor TensorFlow's own SIGTERM handlers take the signal) and takes them in one watcher
thread, so they are handled while the main thread waits inside TensorFlow (a long op; not inside the
multi-worker strategy's start-up, which holds Python's lock: cluster.REGISTER_SECONDS bounds that wait):
- during `fit`, the first one asks the training in progress (checkpoints.Backup) to save the step in progress and
  stop (under many workers: all of them at the same step, agreement.StopAgreement); if training does not get there
  within STOP_DEADLINE_SECONDS (stuck in a collective with a lost peer), the process exits anyway; the deadline
  (one `Deadline`) is cancelled when the agreed save begins, when training ends and when the result is published;
- a request that lands in training's last vote, or after it, survives the end of `fit` (`end_training` returns
  it): the run stops with the last epoch's end saved, instead of evaluating and publishing;
- anywhere else, or a second time, the process exits at once: before training nothing is in progress, after it
  the backup is complete. Exiting, not raising: an exception raised in the middle of an import or a file write
  could leave a broken state behind. "At once" is bounded: EXIT_SECONDS with storage hung (the clean-ups run
  with a timeout of their own).
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
CLEAN_UP_SECONDS = 3.0        # every clean-up before an exit on a signal, together (a lease, a goodput write)
DRAIN_SECONDS = 1.0           # the stderr filter's last lines
# SIGTERM -> exit outside training, with storage hung: the clean-ups, the drain, the line.
EXIT_SECONDS = CLEAN_UP_SECONDS + DRAIN_SECONDS + 1.0


class Training:
    """The `fit` in progress, as the signal handling sees it.

    `stop()` asks it to stop after the step in progress (under many workers it does nothing: the workers' next
    agreement sees `requested`); `where` names the backup a rerun resumes from.
    """

    def __init__(self, stop, where="the last backup"):
        self.stop, self.where = stop, where


class Deadline:
    """The one timer that ends a stop which does not reach its save in time (a collective stuck on a lost peer).

    Armed at most once per stop, cancelled when the agreed save begins, when training ends and when the result is
    published; a cancelled deadline never fires, even if its timer thread was already waking up."""

    def __init__(self):
        self._lock = threading.Lock()
        self._timer = None

    def arm(self, seconds, expire):
        with self._lock:
            if self._timer is not None:
                return
            timer = self._timer = threading.Timer(seconds, self._fire, args=(expire,))
            timer.daemon = True
            timer.start()

    def _fire(self, expire):
        with self._lock:
            if self._timer is None or self._timer is not threading.current_thread():
                return  # cancelled while this thread woke up
            self._timer = None
        expire()

    def cancel(self):
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    @property
    def armed(self):
        return self._timer is not None


class StopSignals:
    """The process's SIGTERM/SIGINT handling: the signal received, the training it stops, the deadline of that
    stop, the clean-ups to run before exiting (leases to release).

    One lock orders a signal against the run's own steps (training starting and ending, the save, publishing), so
    that each signal is acted on exactly once: the request it makes outlives `fit` (`end_training` hands it back
    to the caller instead of dropping it), and the deadline it arms is cancelled by whichever step comes first."""

    def __init__(self):
        self.requested = None    # the signal that asked training to stop (kept after `fit`: see end_training)
        self.training = None     # the Training in progress, or None
        self.watching = False    # the command line's watcher thread takes the signals
        self.published = False   # the result is published: signals are ignored
        self.deadline = Deadline()
        self._lock = threading.RLock()
        self._exiting = threading.Lock()
        self._before_exit = []   # callables run before the process exits on a signal

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
        """The run is over and its result published: a stop signal has nothing left to save, so it is ignored, a
        stop deadline still armed is cancelled, and the process ends 0. (Left to the default action, one landing
        while the interpreter shuts down, after Python has put the default handlers back, ended a finished run by
        SIGTERM, -15, in the fault soak.)"""
        with self._lock:
            self.published = True
            self.deadline.cancel()
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
        """`fit` is running: a signal asks it to stop after the step in progress. (A signal before this exited
        the process, so nothing is pending; `requested` is reset for a second run in one process: tests.)"""
        with self._lock:
            self.training, self.requested = training, None

    def saving(self):
        """The agreed stop's save begins: it may take as long as the storage does, so the deadline, which only
        guards the wait for the workers to agree, must not cut it."""
        self.deadline.cancel()

    def end_training(self):
        """`fit` stopped (or the backup is saved): a signal now exits at once. Returns the stop request still
        pending, or None: a signal that landed in the last vote or after it, which `fit` never acted on, so the
        caller stops the run (its last epoch's end is saved) instead of going on to evaluate and publish."""
        with self._lock:
            self.training = None
            self.deadline.cancel()
            return self.requested

    # ---- a signal --------------------------------------------------------------------------------------------

    def handle(self, signum, by=None):
        """What a SIGTERM/SIGINT does now (also the plain signal handler of an in-process run: tests). `by`: who
        received it, when another worker did (peers.StopBroadcast)."""
        with self._lock:
            if self.published:
                return
            training = self.training if self.requested is None else None
            if self.requested is None:
                self.requested = signum
            if training is not None:
                self.deadline.arm(STOP_DEADLINE_SECONDS, lambda: self.exit_now(
                    signum, "training did not reach the end of a step in time; "))
        if training is None:
            self.exit_now(signum, by=by)
            return
        training.stop()
        logging.info("%s received: saving a backup after the step in progress, then stopping.",
                     signal.Signals(signum).name)

    def lost_peer(self, what):
        """Another worker (or the coordination service) is gone: outside `fit`, stop too; inside it, the
        collectives say so themselves (guard.lost_contact)."""
        with self._lock:
            if self.published or self.training is not None:
                return
        self.exit_now(None, message=f"lost contact with {what} outside training: a peer worker stopped or was "
                                    "lost. The job stopped; rerun every worker with the same flags to resume from "
                                    "the last backup.")

    def exit_now(self, signum, why="", by=None, message=None):
        """Exits 75 within EXIT_SECONDS: the clean-ups get CLEAN_UP_SECONDS together (storage may hang), the
        stderr filter DRAIN_SECONDS. A second caller (the deadline and a second signal at once) leaves it to the
        first."""
        if not self._exiting.acquire(blocking=False):
            return
        where = "during training" if self.training is not None else "outside training"
        if not self.bounded(self._clean_up):
            why += f"the clean-ups (lease, goodput) did not end within {CLEAN_UP_SECONDS:.0f} s; "
        from trainer.monitoring import logs
        logs.drain(DRAIN_SECONDS)  # the lines before this one first
        message = message or (f"stopped by {by or signal.Signals(signum).name} {where}; {why}a rerun of the same "
                              "command resumes from the last backup.")
        os.write(logs.real_stderr(), f"fmnist-train: error: {message}\n".encode())
        os._exit(RETRY)

    @staticmethod
    def bounded(clean_up, seconds=CLEAN_UP_SECONDS):
        """Runs `clean_up()` for at most `seconds` (in a thread left behind if it hangs); True if it ended."""
        def run():
            try:
                clean_up()
            except Exception as error:  # stopping goes on: a lease left behind expires by itself
                logging.warning("A clean-up while stopping failed: %s: %s", type(error).__name__, error)
        thread = threading.Thread(target=run, name="stop-clean-up", daemon=True)
        thread.start()
        thread.join(seconds)
        return not thread.is_alive()

    def _clean_up(self):
        for clean_up in list(self._before_exit):
            self.bounded(clean_up)


PROCESS = StopSignals()  # the process's one set of handlers
