"""The monitoring callbacks of one `fit`, in order: Progress first, so that the others see this step's state."""

from trainer.training import data, distribution, evaluation
from trainer.monitoring import endpoint, faults, hparams, progress, tuning


def for_fit(cfg, *, train_examples, chief, log_dir, history, early_stopping, start_step=0, validation_examples=0,
            test_examples=0, fault_record=None, interactive=None, environ=None, status_reporter=None):
    """The monitoring callbacks of one `fit`: [Progress, (MetricsEndpoint), (TrialReporter), (HParamsLogger)].

    `history`: the backup's EpochHistory (rows of a resumed run included); `early_stopping`: whether fit keeps
    the best epoch's weights. `validation_examples`, `test_examples`: for the ETA of the test evaluation. `fault_record`: a faults.FaultRecord that the backup side feeds (restarts, each
    save); without one, the endpoint derives what it can (faults.py). `status_reporter`: a
    trainjob_status.StatusReporter, which reports the Progress from here on.
    """
    job, recipe = cfg.job, cfg.recipe
    steps = data.steps_per_epoch(train_examples, recipe.batch_size)
    views = len(evaluation.TEST_TIME_VIEWS[recipe.test_time_augmentation])
    tracker = progress.Progress(recipe.epochs, steps, train_examples, recipe.batch_size, start_step=start_step,
                                interactive=interactive, track_steps=job.metrics_port is not None or status_reporter is not None,
                                validation_examples=validation_examples, evaluation_examples=test_examples * views)
    result = [tracker]
    if status_reporter is not None:
        status_reporter.attach(tracker)
    if job.metrics_port is not None:
        record = fault_record or faults.FaultRecord(job.checkpoint_dir, resumed=start_step > 0)
        task = distribution.task_name(distribution.cluster_spec_from_env())
        info = {"model": job.model, "recipe": recipe.name, "task": task, "chief": str(chief).lower()}
        result.append(endpoint.MetricsEndpoint(job.metrics_port, tracker, record, info,
                                                job.metrics_address))
    if chief:
        result.append(tuning.TrialReporter(history, early_stopping, environ=environ))
        result.append(hparams.HParamsLogger(log_dir, cfg))
    return result
