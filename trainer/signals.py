"""SIGTERM and SIGINT: how a cluster (or an operator) stops the job politely.

The command line blocks both signals in every thread before TensorFlow starts (TensorFlow's threads inherit the
mask, and so its own SIGTERM handlers never see them) and takes them in one watcher thread, so they are handled
even while the main thread waits inside TensorFlow (a multi-worker strategy waiting for its peers, a long op):
- during `fit`, the first one asks `trainer.backup.Backup` to save the step in progress and stop; if training does
  not get there within STOP_DEADLINE_SECONDS (stuck in a collective with a lost peer), the process exits anyway;
- anywhere else, or a second time, the process exits at once: before training nothing is in progress, after it
  the backup is complete. Exiting, not raising: an exception raised in the middle of an import or a file write
  could leave a broken state behind.
Either way the exit status is the contract's "retry me". No TensorFlow here.
"""

import os
import signal
import threading

from absl import logging

from trainer.errors import RETRY

SIGNALS = (signal.SIGTERM, signal.SIGINT)
STOP_DEADLINE_SECONDS = 20.0  # Kubernetes' default grace period is 30 s

held_leases = []   # trainer.backup.Lease objects to release before exiting
requested = None   # the signal that asked training to stop
_training = False
_stop = None       # asks training to stop after the step in progress
_alone = True      # False under many workers: a save needs them all, so a signal to one cannot be saved
_where = "the last backup"
_watching = False
_deadline = None   # the timer that exits if training does not stop in time


def watch():
    """Blocks SIGTERM/SIGINT in this and every later thread and handles them in a watcher thread, with plain
    handlers as well for a thread that unblocks them (the command line calls this first thing)."""
    global _watching
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    threading.Thread(target=_watch, name="signal-watcher", daemon=True).start()
    _watching = True
    reinstall()


def reinstall():
    """The plain handlers again, once the strategy exists: a multi-worker strategy's runtime installs a SIGTERM
    handler of its own that only notifies its preemption watcher. A no-op in-process (tests) unless watching."""
    if _watching:
        install_handlers()


def install_handlers():
    """Plain handlers that call `handle`; returns the ones they replace."""
    return {signum: signal.signal(signum, lambda received, frame: handle(received)) for signum in SIGNALS}


def watching():
    return _watching


def _watch():
    while True:
        handle(signal.sigwait(SIGNALS))


def handle(signum):
    """What a SIGTERM/SIGINT does now (also the plain signal handler of an in-process run: tests)."""
    global requested, _deadline
    if _training and requested is None and not _alone:
        exit_now(signum, f"a save needs every worker, so this one stopped without it (rerun every worker to resume "
                         f"from {_where}); ")
    if _training and requested is None:
        requested = signum
        if _stop is not None:
            _stop()
        logging.info("%s received: saving a backup after the step in progress, then stopping.",
                     signal.Signals(signum).name)
        _deadline = threading.Timer(STOP_DEADLINE_SECONDS, exit_now,
                                    args=(signum, "training did not reach the end of a step in time; "))
        _deadline.daemon = True
        _deadline.start()
        return
    exit_now(signum)


def training(active, stop=None, alone=True, where="the last backup"):
    """`fit` is running (Backup callback): a signal asks it to stop after the step in progress (`stop()`), or,
    when the process is not `alone` (many workers), ends it at once."""
    global _training, requested, _deadline, _stop, _alone, _where
    _training, _stop, _alone, _where = active, stop, alone, where
    if not active:
        requested = None
        if _deadline is not None:  # training stopped (the backup saved): no need to force the exit
            _deadline.cancel()
            _deadline = None


def exit_now(signum, why=""):
    for lease in list(held_leases):
        lease.release()
    where = "during training" if _training else "outside training"
    from trainer import logs
    message = (f"fmnist-train: error: stopped by {signal.Signals(signum).name} {where}; {why}a rerun of the same "
               "command resumes from the last backup.\n")
    os.write(logs.real_stderr(), message.encode())
    os._exit(RETRY)
