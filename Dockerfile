# fmnist-trainer: the trainer on the official TensorFlow image of the version requirements.txt pins.
#
#   docker build -t fmnist-trainer:0.1.0-gpu .                           # GPU (CUDA from the base image)
#   docker build --build-arg VARIANT=cpu -t fmnist-trainer:0.1.0-cpu .   # CPU only, a smaller base
#   docker run --rm fmnist-trainer:0.1.0-cpu --model=cnn --output_dir=/out
#
# The entry point is the trainer itself: every `docker run` argument is a trainer flag (see docs/launch.md).
# TF_VERSION must equal the tensorflow pin in requirements.txt (tests/test_launchers.py checks it).
ARG TF_VERSION=2.21.0
ARG VARIANT=gpu

FROM tensorflow/tensorflow:${TF_VERSION}-gpu AS base-gpu
FROM tensorflow/tensorflow:${TF_VERSION} AS base-cpu

# The tag is pinned on the two FROM lines above; this line only picks one of them by VARIANT (so DL3006,
# "tag the version of an image", does not apply to it).
# hadolint ignore=DL3006
FROM base-${VARIANT}
# checkov:skip=CKV_DOCKER_2: a batch job that exits when training ends: no long-running service to health-check
# checkov:skip=CKV_DOCKER_7: the base is a named stage whose image tag (TF_VERSION) is pinned above

LABEL org.opencontainers.image.title="fmnist-trainer" \
      org.opencontainers.image.description="Fashion-MNIST batch training job (python -m trainer.task)"

# The same Keras as in every other launcher (tf-keras, see trainer/__init__.py); unbuffered logs; no .pyc
# writes into a read-only root file system. TFDS keeps its data under /data/tfds (a volume on Kubernetes).
ENV TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/trainer \
    TFDS_DATA_DIR=/data/tfds

WORKDIR /opt/fmnist

# Dependencies first, in their own layer: they change far less often than the code.
COPY requirements.txt constraints.txt requirements-test.txt ./
RUN python3 -m pip install --no-cache-dir -r requirements.txt -c constraints.txt

COPY setup.py ./
COPY trainer/ trainer/
# The launcher that builds TF_CONFIG for a Kubernetes Indexed Job (k8s/overlays/multi-worker).
COPY k8s/tf_config.py k8s/tf_config.py
RUN python3 -m pip install --no-cache-dir --no-deps . \
    && groupadd --gid 10001 trainer \
    && useradd --uid 10001 --gid 10001 --home-dir /home/trainer --create-home --shell /usr/sbin/nologin trainer \
    && mkdir -p /data/tfds /out \
    && chown -R 10001:10001 /data /out \
    && fmnist-train --helpshort > /dev/null

# A numeric user, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001

ENTRYPOINT ["fmnist-train"]
