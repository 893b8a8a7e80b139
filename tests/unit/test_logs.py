"""The survivor's log after a lost peer is the job's one line: the native lines TensorFlow prints are filtered
where they are printed (trainer/monitoring/logs.py), the job's own lines never."""

import os

import pytest

from trainer.monitoring import logs

# Seen on a surviving worker before the job's line (issue 26): a collective's frame inside the fast recipe's
# 64-step loop, the input pipeline's notice, and the kinds of issue 17.
NATIVE_AFTER_A_LOST_PEER = [
    "\t [[{{function_node while_body_2829}}{{node while/div_no_nan_1/CollectiveReduceV2}}]] [Op:__inference_train_"
    "function_3190]",
    "W0000 00:00:1765070000.123456   41234 dataset.cc:997] Input of GeneratorDatasetOp::Dataset will not be "
    "optimized because the dataset does not implement the AsGraphDefInternal() method needed to apply "
    "optimizations.",
    "  [[{{node CollectiveReduceV2}}]]",
    "E1207 01:38:43.879890 140207794191232 base_collective_executor.cc:249] BaseCollectiveExecutor::StartAbort "
    "UNAVAILABLE: The tasks have crashed.",
    "The tasks have crashed. Check the task logs for an earlier error to debug further.",
]
THE_JOBS_OWN = [
    "fmnist-train: error: lost contact with worker-1 (UnavailableError): a peer worker stopped or was lost.",
    "I1207 01:38:43.879890 140207794191232 progress.py:156] epoch 1/3: loss 0.8220, accuracy 0.7135",
    "W1207 01:38:43.879890 140207794191232 checkpoints.py:80] The newest backup in /b cannot be restored",
]


@pytest.mark.parametrize("line", NATIVE_AFTER_A_LOST_PEER)
def test_the_native_lines_after_a_lost_peer_are_dropped(line):
    assert logs.COLLECTIVE_ABORT_NOISE.search(line)


@pytest.mark.parametrize("line", THE_JOBS_OWN)
def test_the_jobs_own_lines_are_kept(line):
    assert not logs.COLLECTIVE_ABORT_NOISE.search(line)


def test_the_filter_passes_the_jobs_lines_on_and_drops_the_rest(tmp_path):
    """Through the real pipe on file descriptor 2, as a worker runs it; drained with a bound."""
    saved = os.dup(2)
    with open(tmp_path / "stderr", "wb") as real:
        os.dup2(real.fileno(), 2)
        try:
            line_filter = logs.LineFilter(logs.COLLECTIVE_ABORT_NOISE)
            line_filter.start()
            for line in [*NATIVE_AFTER_A_LOST_PEER, *THE_JOBS_OWN]:
                os.write(2, (line + "\n").encode())
            line_filter.drain(timeout=2)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(line_filter.real)
    assert (tmp_path / "stderr").read_text().splitlines() == THE_JOBS_OWN
