"""A run's log reads like a job's log: settings, where the data and outputs are, one line per epoch, the results.

What nobody can act on is silenced where it starts: the native start-up notices TensorFlow prints before its
logging is configured (oneDNN, no CUDA driver on a CPU host, `failed call to cuInit`), and the INFO chatter of
TensorFlow's, TFDS's and tf-keras's Python code (checkpoint sharding times, SavedModel renaming notices, TFDS reader
details). Their warnings and errors still show; `--verbosity=1` (absl's debug level) shows everything.
"""

import contextlib
import logging as std_logging
import os
import re
import sys
import tempfile

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

# Python packages whose INFO lines are dropped (their WARNING and above are kept).
_CHATTY = tuple(f"{os.sep}{name}{os.sep}" for name in ("tensorflow", "tensorflow_datasets", "tf_keras", "keras"))


_real_stderr = 2


def real_stderr():
    """The file descriptor of the process's stderr, also while start-up noise is being captured."""
    return _real_stderr


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
