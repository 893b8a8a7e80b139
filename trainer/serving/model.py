"""Finding and loading a run's SavedModel: a run folder or its saved_model/, local or `gs://` (downloaded first).

A SavedModel is code (its graph can read and write files, and tf.saved_model.load runs it): load only models you
trust. The download writes only below its scratch folder: an object name that would leave it is refused.

`python -m trainer.commands.predict` and `python -m trainer.commands.export` both take `--model_dir` this way
(`locate`).
"""

import functools
import os

from trainer import storage
from trainer.errors import UserError
from trainer.storage import is_gcs

SAVED_MODEL_FILE = "saved_model.pb"
# What a SavedModel is made of, relative to it; a run's logs, metrics and test predictions are not downloaded.
SAVED_MODEL_PARTS = ("saved_model/", "variables/", "assets/")
SAVED_MODEL_FILES = (SAVED_MODEL_FILE, "fingerprint.pb")


def saved_model_dir(folder):
    """`folder` itself when it is a SavedModel, else its `saved_model/` (a run folder); None when neither is."""
    for candidate in (os.path.join(folder, "saved_model"), folder):
        if os.path.exists(os.path.join(candidate, SAVED_MODEL_FILE)):
            return candidate
    return None


def locate(model_dir, scratch):
    """The local SavedModel folder of --model_dir (gs://: downloaded into `scratch`), or a UserError."""
    local = model_dir.rstrip("/") or model_dir
    if is_gcs(model_dir):
        local = download(local, os.path.join(scratch, "model"))
    elif not os.path.isdir(model_dir):
        raise UserError(f"--model_dir={model_dir}: no such folder.")
    found = saved_model_dir(local)
    if found is None:
        raise UserError(f"--model_dir={model_dir} holds no SavedModel: give a finished run's folder (with "
                        "saved_model/) or its saved_model/ itself.")
    return found


@functools.lru_cache(maxsize=1)
def _load(path, modified):
    """One SavedModel in memory per process: a local model asked for again is not loaded again."""
    import tensorflow as tf
    del modified  # part of the cache's key: a model exported again at the same path is loaded again
    return tf.saved_model.load(path)


def load(model_dir, scratch):
    """(the loaded SavedModel, its signature that takes `images`, uint8 arrays) of a run folder or saved_model/."""
    local = locate(model_dir, scratch)
    loaded = _load(os.path.abspath(local), os.path.getmtime(os.path.join(local, SAVED_MODEL_FILE)))
    for name in ("serving_default", "serving_images"):
        signature = loaded.signatures.get(name)
        if signature is not None and "images" in signature.structured_input_signature[1]:
            return loaded, signature
    raise UserError(f"--model_dir={model_dir}: its SavedModel has no signature that takes images.")


def download(url, target):
    """The SavedModel files under a gs:// run folder or saved_model/ prefix, downloaded into `target`."""
    bucket_name, prefix = storage.split_gcs(url.rstrip("/"))
    client = storage.client(f"read {url}")
    found = 0
    with storage.errors(url, "read", doing="downloading", name=f"--model_dir={url}"):
        for blob in client.list_blobs(bucket_name, prefix=f"{prefix}/" if prefix else None):
            relative = blob.name[len(prefix):].lstrip("/") if prefix else blob.name
            if not (relative.startswith(SAVED_MODEL_PARTS) or relative in SAVED_MODEL_FILES):
                continue
            path = _inside(target, relative, f"gs://{bucket_name}/{blob.name}")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            blob.download_to_filename(path)
            found += 1
    if not found:
        raise UserError(f"--model_dir={url} holds no SavedModel (nothing under saved_model/).")
    return target


def _inside(target, relative, url):
    """The local path of object `relative` under `target`; a UserError for a name that would leave it
    (`saved_model/../../x`, an absolute path), which no export writes."""
    parts = relative.split("/")
    path = os.path.realpath(os.path.join(target, *parts))
    if ".." in parts or "" in parts[:-1] or relative.startswith("/") or not path.startswith(
            os.path.realpath(target) + os.sep):
        raise UserError(f"refusing to download {url}: its name leaves the model's folder. Give --model_dir a "
                        "run exported by this trainer.")
    return path
