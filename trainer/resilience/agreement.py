"""Many workers stop together: at the same step, every worker learns whether any of them was asked to stop.

A save under MultiWorkerMirroredStrategy needs every worker, and every worker must run the same collectives in the
same order, so a worker that receives SIGTERM cannot stop (or save) on its own. Instead each worker contributes
its own request to a tiny all-reduce (a vote) between two executions of the train function (the same point on
every worker: Keras calls back after each one), and they all act on the sum: the same answer, at the same step,
everywhere.

A vote costs about one collective round trip (3-11 ms between two processes on this busy 2-core machine, a third of
a 2-worker MLP step), so the workers vote about every CHECK_SECONDS rather than after every execution: each vote
also sums the seconds each worker spent since the last one, and every worker derives the next interval (in
executions) from that sum. The sum is the same on every worker, so the interval is too, and the workers stay in lockstep. A stop then
waits at most about CHECK_SECONDS (docs/distributed.md has the figures).
"""

import signal
import time

import tensorflow as tf

from trainer.resilience import pauses

VOTED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
CHECK_SECONDS = 1.0          # how often the workers vote, about
MAX_EXECUTIONS_BETWEEN = 1000


class StopAgreement:
    """`agree(requested)` -> the signal some worker received (SIGTERM first), or None. Every worker calls it after
    every execution and at the end of training; it votes (a collective) every `interval` executions and at the end,
    the same calls on every worker."""

    def __init__(self, strategy):
        self.strategy = strategy
        self.interval = 1              # executions between two votes: the first vote comes after the first one
        self.votes = 0
        self._executions = 0           # since the last vote
        self._last_vote = time.perf_counter()
        self._vote = None

    def agree(self, requested, final=False):
        """`final`: the end of training (every worker votes there, wherever the interval stands)."""
        self._executions += 1
        if self._executions < self.interval and not final:
            return None
        if self._vote is None:
            self._vote = summed_over_workers(self.strategy)
        now = time.perf_counter()
        local = tf.constant([*(1.0 if requested == signum else 0.0 for signum in VOTED_SIGNALS),
                             now - self._last_vote])
        pauses.pause("last-vote" if final else "vote")  # tests: a vote made slow on purpose
        votes = self._vote(local).numpy()
        seconds_per_execution = float(votes[-1]) / self.strategy.num_replicas_in_sync / self._executions
        self.interval = int(min(MAX_EXECUTIONS_BETWEEN, max(1, CHECK_SECONDS // max(seconds_per_execution, 1e-6))))
        self._executions, self._last_vote = 0, time.perf_counter()
        self.votes += 1
        for signum, count in zip(VOTED_SIGNALS, votes):
            if count > 0:
                return signum
        return None


def summed_over_workers(strategy):
    """A tf.function that sums a tensor over every replica of `strategy`: a collective, so every worker calls it
    at the same point (the stop votes here; the chief's verdict on the backup, restore.chief_verdict)."""
    def all_reduce(local):
        # tf.identity: a value of the replica's own (all_reduce of the captured input has no destination)
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(local))

    @tf.function
    def vote(local):
        return strategy.experimental_local_results(strategy.run(all_reduce, args=(local,)))[0]
    return vote
