"""Test-only pauses: the moments a stop can land in, made slow on purpose so that a test (or the fault soak) lands
a signal or a kill inside them.

FMNIST_TEST_PAUSES="vote=0.3,evaluation=2" makes each named moment announce itself in the log ("test pause:
vote, 0.3 s") and then wait that long. The moments: start-up (after the meeting and the strategy), data, vote
(every stop vote but the last), last-vote, evaluation, export. Unset, as in every real run: nothing, at the cost
of one dictionary look-up. Not a flag: nobody running the job has a use for it.
"""

import functools
import os
import time

from absl import logging

ENV = "FMNIST_TEST_PAUSES"


@functools.cache
def _pauses(spec):
    pauses = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        moment, _, seconds = part.partition("=")
        pauses[moment.strip()] = float(seconds or 1.0)
    return pauses


def pause(moment):
    """Waits as long as FMNIST_TEST_PAUSES says for `moment` (not at all, unset), saying so first."""
    seconds = _pauses(os.environ.get(ENV, "")).get(moment)
    if seconds:
        logging.info("test pause: %s, %.1f s", moment, seconds)
        logging.flush()
        time.sleep(seconds)
