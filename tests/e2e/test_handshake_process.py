"""Two worker processes whose settings differ never train together (tests/unit/test_handshake.py: what the
handshake compares)."""

import pytest

from support.data import data_flags
from support.processes import start_trainer, wait_all, worker_tf_configs
from trainer import errors


@pytest.mark.e2e
def test_workers_with_backups_of_their_own_never_train_together(prepared_data, tmp_path):
    logs = [tmp_path / f"w{i}.log" for i in range(2)]
    workers = [start_trainer("--model=mlp", "--recipe=seed", "--train_examples=512", "--epochs=1",
                             f"--output_dir={tmp_path / 'out'}", f"--checkpoint_dir={tmp_path / f'backup-{i}'}",
                             "--cluster_timeout=60", *data_flags(), env={"TF_CONFIG": tf_config}, log_path=log)
               for i, (tf_config, log) in enumerate(zip(worker_tf_configs(2), logs))]
    try:
        assert wait_all(workers, timeout=120) == [errors.PERMANENT, errors.PERMANENT]
    finally:
        for worker in workers:
            worker.kill()
    for i, log in enumerate(logs):
        text = log.read_text()
        assert f"--checkpoint_dir={tmp_path / f'backup-{1 - i}'} there" in text and "Traceback" not in text, text
        assert "training epochs" not in text
