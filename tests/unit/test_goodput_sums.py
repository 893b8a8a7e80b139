"""goodput's sums over a job's runs, from the records alone (trainer/resilience/goodput.py)."""

import json

from trainer.resilience import goodput


def record(resumed, furthest, first_step_at=1.0):
    return {"started": 0.0, "last_seen": 1.0, "first_step_at": first_step_at, "training_seconds": 1.0,
            "resumed_from_step": resumed, "furthest_step": furthest, "last_backup_step": None,
            "backup_seconds": 0.0, "workers": 1}


def test_a_run_stopped_in_start_up_counts_no_step_as_trained_again(tmp_path):
    """The soak's seed 91198: a run trained to the end (376) and was killed in evaluation; the next one got a
    SIGTERM in start-up, before it resumed; the last resumed at 376. Nothing was trained again."""
    runs = [record(0, 300), record(300, 376), record(0, 0, first_step_at=None)]
    (tmp_path / goodput.GOODPUT_FILE).write_text(json.dumps(runs))
    tracker = goodput.Goodput(str(tmp_path), write=False, workers=1)
    tracker.resumed(376)
    summary = tracker.summary(final_step=376)
    assert summary["steps_recomputed"] == 0
    assert summary["restarts"] == 2
    assert summary["runs"] == 4  # the one stopped in start-up still counts, and so does its time


def test_steps_after_the_last_backup_count_as_trained_again(tmp_path):
    runs = [record(0, 310)]  # killed at step 310, after the backup of step 300
    (tmp_path / goodput.GOODPUT_FILE).write_text(json.dumps(runs))
    tracker = goodput.Goodput(str(tmp_path), write=False, workers=1)
    tracker.resumed(300)
    assert tracker.summary(final_step=376)["steps_recomputed"] == 10
