"""Writing and removing the backup's files through TensorFlow's file systems (local paths and gs:// alike)."""

import json
import os
import uuid

import tensorflow as tf


def write_json(path, value):
    """Writes `value` to `path` so that a reader never sees half of it: a temporary file of this process's own,
    then a rename over the old one."""
    tf.io.gfile.makedirs(os.path.dirname(path))
    temporary = f"{path}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    with tf.io.gfile.GFile(temporary, "w") as f:
        json.dump(value, f)
    tf.io.gfile.rename(temporary, path, overwrite=True)


def remove(path):
    """Removes a file or a folder tree; nothing there is fine."""
    try:
        if tf.io.gfile.isdir(path):
            tf.io.gfile.rmtree(path)
        elif tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)
    except tf.errors.NotFoundError:
        pass


def remove_if_empty(directory):
    """Removes a local folder only if it is empty, atomically (another worker may be writing into it); object
    stores have no folders to remove."""
    if not directory.startswith("gs://"):
        try:
            os.rmdir(directory)
        except OSError:
            pass
