"""Many workers stop together outside `fit` too: a signalled worker tells the others through TensorFlow's
coordination service, and a worker that loses the service stops as well.

Inside `fit` the workers agree on a stop at their next vote (agreement.py). Outside it (start-up after the
meeting, data loading, model building, evaluation, export) there is no vote, and a worker signalled there exits
at once: the others would go on until a collective or TensorFlow's shutdown waited for it. So, under many
workers, `StopBroadcast`:
- before a worker exits on a signal, it writes the signal into the coordination service's key-value store
  (`tell`, one of the exit's bounded clean-ups);
- every worker watches that key in a thread of its own (a get with a timeout of POLL_SECONDS, which releases
  Python's lock) and, when it appears, handles it as its own signal: outside `fit` it exits 75 at once, inside it
  the next vote stops every worker. A peer's signal thus reaches every worker within POLL_SECONDS plus a round
  trip (measured: about 1 s);
- when the coordination service answers with an error (the chief, which hosts it, is gone; or the service
  reported a peer missing its heartbeats, distribution.HEARTBEAT_SECONDS), a worker outside `fit` exits 75 with the job's
  lost-contact line; inside `fit` its collectives already say so.
Nothing of this runs once the run is published or the guard is left.

The chief hosts the service, so its exit looks like a lost chief to a worker still evaluating or exporting. At
the end of a finished run (`finish`) the chief says it has published and waits up to DONE_WAIT_SECONDS for every
other worker to say it is done; a worker waits for the chief's word (still watching), then stops watching and says so.
"""

import signal
import threading

from absl import logging

STOP_KEY = "fmnist/stop"
PUBLISHED_KEY = "fmnist/published"
DONE_KEY = "fmnist/done/{task}"
POLL_SECONDS = 1.0
DONE_WAIT_SECONDS = 30.0  # the chief, after publishing, for each other worker's end of evaluation and export
# SIGTERM to one worker outside `fit` -> every worker exited: the watch, a round trip, the exit (signals.py).
STOP_REACHES_EVERY_WORKER_SECONDS = POLL_SECONDS + 1.0 + 5.0


class StopBroadcast:
    """The stop signal shared by every worker of one run (`task`: this worker's name, `signals`: StopSignals)."""

    def __init__(self, task, signals):
        self.task, self.signals = task, signals
        self.from_peer = False
        self._closed = threading.Event()
        self._thread = None

    def start(self):
        from tensorflow.python.eager import context
        self._context = context.context()
        self._thread = threading.Thread(target=self._watch, name="peer-stop-watcher", daemon=True)
        self._thread.start()
        self.signals.before_exit(self.tell)
        return self

    def tell(self, signum=None):
        """The peers learn that this worker stops on `signum` (the signal it received)."""
        signum = signum or self.signals.requested
        if self.from_peer or signum is None or self._closed.is_set():
            return
        self._context.set_config_key_value(STOP_KEY, f"{signal.Signals(signum).name} {self.task}")

    def close(self):
        self._closed.set()
        self.signals.forget(self.tell)

    def finish(self, chief, others):
        """The end of a finished run. The chief says it has published, then waits for every one of `others` (task
        names) to say it is done, DONE_WAIT_SECONDS at most: its exit ends the service. A worker waits for the
        chief's word while still watching (a chief lost before publishing is a lost peer: 75), then stops watching
        and says it is done."""
        import tensorflow as tf
        if chief:
            self._context.set_config_key_value(PUBLISHED_KEY, "published")
            self.close()
            for task in others:
                try:
                    self._context.get_config_key_value(DONE_KEY.format(task=task),
                                                       timeout_in_ms=int(DONE_WAIT_SECONDS * 1000))
                except tf.errors.OpError as error:  # gone, or too slow: the result is published either way
                    logging.info("%s did not say it was done (%s); leaving without it.", task, type(error).__name__)
                    return
            return
        while True:
            try:
                self._context.get_config_key_value(PUBLISHED_KEY, timeout_in_ms=int(POLL_SECONDS * 1000))
                break
            except tf.errors.DeadlineExceededError:  # the chief is still evaluating or publishing
                continue
        self.close()
        self._context.set_config_key_value(DONE_KEY.format(task=self.task), "done")

    def _watch(self):
        import tensorflow as tf
        while not self._closed.is_set():
            try:
                value = self._context.get_config_key_value(STOP_KEY, timeout_in_ms=int(POLL_SECONDS * 1000))
            except tf.errors.DeadlineExceededError:
                continue
            except Exception as error:  # the service is gone, or it reports a lost peer
                if not self._closed.is_set():
                    self.signals.lost_peer(f"the coordination service ({type(error).__name__})")
                return
            name, _, task = value.partition(" ")
            if task != self.task and not self._closed.is_set():
                self.from_peer = True
                logging.info("%s to %s: stopping with it.", name, task)
                self.signals.handle(signal.Signals[name], by=f"{name} to {task}")
            return
