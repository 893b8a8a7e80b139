"""Fault handling: what a cluster does to a job, and what the job makes of it (docs/distributed.md).

- `guard`: the one entry, `RunGuard`, that train.run enters once: the cluster's and strategy's start-up, the lease,
  the repair of a damaged backup, the callbacks that save and stop, a lost peer worker as "retry me";
- `cluster`: many workers meet before the strategy starts: who is missing, in bounded time, with the same settings;
- `agreement`: many workers stop at the same step (a vote between executions);
- `checkpoints`: the preemption backup (Keras's `BackupAndRestore`, saving the step in progress on a signal), its
  checks, repair and discarding;
- `history`: the per-epoch history kept beside the backup;
- `lease`: one instance of a job at a time;
- `signals`: SIGTERM and SIGINT, taken in a watcher thread (no TensorFlow: the command line starts it first);
- `files`: writing and removing the backup's files through TensorFlow's file systems.

Importing the package imports no TensorFlow: the command line needs `signals` before TensorFlow starts.
"""
