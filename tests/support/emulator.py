"""A Cloud Storage emulator (gcp-storage-emulator) on loopback, with one bucket; google-cloud-storage reaches it
through STORAGE_EMULATOR_HOST (TensorFlow's own gs:// does not)."""

import contextlib
import subprocess
import time

from support.processes import free_ports


@contextlib.contextmanager
def in_process(bucket="runs"):
    """The emulator as a thread of this process; yields its STORAGE_EMULATOR_HOST."""
    from gcp_storage_emulator import server as emulator
    server = emulator.create_server("127.0.0.1", 0, in_memory=True, default_bucket=bucket)
    server.start()
    try:
        host, port = server._api._httpd.server_address
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def as_process(executable, log_path, bucket="launch"):
    """The emulator as a process of its own (the `gcp-storage-emulator` command, for commands that run in other
    processes and must find it still there); yields its STORAGE_EMULATOR_HOST once it answers."""
    port = free_ports(1)[0]
    host = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        process = subprocess.Popen([executable, "start", "--host=127.0.0.1", f"--port={port}", "--in-memory",
                                    f"--default-bucket={bucket}"], stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for(host, bucket, process)
            yield host
        finally:
            process.terminate()
            process.wait(timeout=10)


def _wait_for(host, bucket, process, seconds=30):
    import pytest
    from google.cloud import storage
    deadline = time.time() + seconds
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", host)
        while True:
            try:
                if storage.Client(project="test").bucket(bucket).exists():
                    return
            except Exception:  # not listening yet
                pass
            assert time.time() < deadline and process.poll() is None, "the storage emulator did not start"
            time.sleep(0.2)
