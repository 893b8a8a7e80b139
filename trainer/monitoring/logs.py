"""A run's log reads like a job's log: settings, where the data and outputs are, one line per epoch, the results.

What nobody can act on is silenced where it starts: the native start-up notices TensorFlow prints before its
logging is configured (oneDNN, no CUDA driver on a CPU host, `failed call to cuInit`), the INFO chatter of
TensorFlow's, TFDS's and tf-keras's Python code (checkpoint sharding times, SavedModel renaming notices, TFDS reader
details) and, under many workers, the screen of native collective-abort messages a surviving worker prints when a
peer is lost (the job's own line says what happened and what to do). Their other warnings and errors still show;
`--verbosity=1` (absl's debug level) shows everything.
"""

import atexit
import contextlib
import logging as std_logging
import os
import re
import sys
import tempfile
import threading

from absl import logging

# Lines of TensorFlow's native start-up that say nothing about the job (matched anywhere in the line).
NATIVE_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers on your machine"
    r"|failed call to cuInit"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|To enable the following instructions: .* in other operations, rebuild TensorFlow")

# Native lines a worker prints when a peer is lost or the cluster shuts down: its collectives abort, the
# coordination service reports the crashed task. The job says it in one line ("lost contact with another worker").
COLLECTIVE_ABORT_NOISE = re.compile(
    r"^[IWEF]\d{4} .*\b(base_collective_executor|collective_ops|ring_reducer|ring_gatherer|ring_alg|"
    r"hierarchical_tree_broadcaster|collective_param_resolver_distributed|collective_rma_distributed|"
    r"coordination_service_agent|coordination_service|coordination_service_error_util|preemption_notifier|"
    r"grpc_worker_cache|grpc_remote_worker|rpc_collective_executor_mgr|device_resolver_distributed|"
    r"local_rendezvous|context_distributed_manager)\.cc:\d+\]"
    r"|^\s*(The tasks have crashed|Additional GRPC error information|\[type\.googleapis\.com/tensorflow\.|"
    r":UNKNOWN:Error received from peer|The error could be from a previous operation|"
    r"RPC: /tensorflow\.)"
    r"|^\s*$"
    r"|^\s*\[\[\{\{(function_)?node [^\]]*Collective"  # a collective's frame, also inside a multi-step loop
    r"|^[IWEF]\d{4} .*\bdataset\.cc:\d+\]"  # the input pipeline's notice as its iterator is torn down
    r"|^\s*/job:\w+/replica:\d+/task:\d+\s*$"
    r"|^\s*:\{\\?\"created\\?\":")

# Python packages whose INFO lines are dropped (their WARNING and above are kept).
_CHATTY = tuple(f"{os.sep}{name}{os.sep}" for name in ("tensorflow", "tensorflow_datasets", "tf_keras", "keras"))


_real_stderr = 2


def real_stderr():
    """The file descriptor of the process's stderr, also while start-up noise is being captured or filtered."""
    if _filter is not None and _filter.real is not None:
        return _filter.real
    return _real_stderr


class LineFilter:
    """File descriptor 2 through a pipe and a thread that passes every line on but those matching `noise`.

    `drain()` puts the real stderr back and waits until every line written before has been passed on: call it
    before `os._exit`, which would otherwise leave the last lines in the pipe.
    """

    def __init__(self, noise):
        self.noise, self.real, self._thread = noise, None, None

    def start(self):
        sys.stderr.flush()
        self.real = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self._thread = threading.Thread(target=self._pass_on, args=(read,), name="stderr-filter", daemon=True)
        self._thread.start()

    def _pass_on(self, read):
        with os.fdopen(read, "rb") as lines:
            for line in lines:
                if not self.noise.search(line.decode(errors="replace")):
                    os.write(self.real, line)

    def drain(self, timeout=5.0):
        if self._thread is None:
            return
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self.real, 2)  # the pipe's only writer gone: the thread reads to its end, then stops
        self._thread.join(timeout=timeout)
        self._thread = None


_filter = None


def filter_collective_aborts():
    """Under many workers: drop the native collective-abort lines from fd 2 from now on (see COLLECTIVE_ABORT_NOISE).
    `drain()` before leaving the process."""
    global _filter
    if _filter is None:
        _filter = LineFilter(COLLECTIVE_ABORT_NOISE)
        _filter.start()
        atexit.register(drain)


def drain(timeout=5.0):
    """Passes on every line still in the stderr filter (a no-op without one), waiting at most `timeout` seconds:
    before os._exit."""
    if _filter is not None:
        _filter.drain(timeout)


@contextlib.contextmanager
def quiet_native_startup():
    """Runs the block (importing TensorFlow, finding devices) with file descriptor 2 captured, then passes on
    every line but the known start-up noise."""
    global _real_stderr
    sys.stderr.flush()
    saved = _real_stderr = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            _real_stderr = 2
            os.close(saved)
            captured.seek(0)
            for line in captured:
                if not NATIVE_NOISE.search(line.decode(errors="replace")):
                    sys.stderr.buffer.write(line)
            sys.stderr.flush()


class _DropLibraryInfo(std_logging.Filter):
    def filter(self, record):
        if record.levelno >= std_logging.WARNING or logging.get_verbosity() >= logging.DEBUG:
            return True
        return not any(part in record.pathname for part in _CHATTY)


def configure():
    """Keeps the libraries' INFO lines out of the job's log (absl's handler prints every Python logger)."""
    handler = logging.get_absl_handler()
    if not any(isinstance(f, _DropLibraryInfo) for f in handler.filters):
        handler.addFilter(_DropLibraryInfo())
