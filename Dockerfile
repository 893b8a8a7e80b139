# fmnist-trainer: the trainer on the official TensorFlow image of the version requirements.txt pins.
#
#   docker build -t fmnist-trainer:0.1.0-gpu .                    # GPU (CUDA from the base image): the last stage
#   docker build --target cpu -t fmnist-trainer:0.1.0-cpu .       # CPU only, a smaller base
#   docker run --rm fmnist-trainer:0.1.0-cpu --model=cnn --output_dir=/out
#
# `podman build` takes the same arguments. The entry point is the trainer itself: every `docker run` argument is a
# trainer flag (see docs/launch.md).
#
# One stage per variant, each on its own pinned base, with the same instructions below its FROM line
# (tests/launch/test_launch_docker.py checks that they are identical): no ARG is needed to choose a base, because
# podman 4.3 does not apply an ARG default inside `FROM base-${VARIANT}`. The tags must equal the tensorflow pin
# in requirements.txt (checked there too); on these bases pip then finds TensorFlow installed and adds only the
# rest of requirements.txt.

# ------------------------------------------------------------------------------------------------- CPU
FROM tensorflow/tensorflow:2.21.0 AS cpu
# checkov:skip=CKV_DOCKER_2: a batch job that exits when training ends: no long-running service to health-check

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
COPY requirements.txt constraints.txt ./
RUN python3 -m pip install --no-cache-dir -r requirements.txt -c constraints.txt

# The package (setup.py lists requirements.txt's pins and the test/report extras from their files) and the
# launcher that builds TF_CONFIG for a Kubernetes Indexed Job (k8s/overlays/multi-worker). The last command is
# the build's check: the trainer and its runtime (TensorFlow, tf-keras, TFDS) import.
COPY setup.py requirements-test.txt requirements-report.txt ./
COPY trainer/ trainer/
COPY k8s/tf_config.py k8s/tf_config.py
RUN python3 -m pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info \
    && groupadd --gid 10001 trainer \
    && useradd --uid 10001 --gid 10001 --home-dir /home/trainer --create-home --shell /usr/sbin/nologin trainer \
    && mkdir -p /data/tfds /out \
    && chown -R 10001:10001 /data /out \
    && python3 -I -c "import trainer.task, trainer.training.train"

# A numeric user, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001

ENTRYPOINT ["fmnist-train"]

# ------------------------------------------------------------------------------------------------- GPU
FROM tensorflow/tensorflow:2.21.0-gpu AS gpu
# checkov:skip=CKV_DOCKER_2: a batch job that exits when training ends: no long-running service to health-check

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
COPY requirements.txt constraints.txt ./
RUN python3 -m pip install --no-cache-dir -r requirements.txt -c constraints.txt

# The package (setup.py lists requirements.txt's pins and the test/report extras from their files) and the
# launcher that builds TF_CONFIG for a Kubernetes Indexed Job (k8s/overlays/multi-worker). The last command is
# the build's check: the trainer and its runtime (TensorFlow, tf-keras, TFDS) import.
COPY setup.py requirements-test.txt requirements-report.txt ./
COPY trainer/ trainer/
COPY k8s/tf_config.py k8s/tf_config.py
RUN python3 -m pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info \
    && groupadd --gid 10001 trainer \
    && useradd --uid 10001 --gid 10001 --home-dir /home/trainer --create-home --shell /usr/sbin/nologin trainer \
    && mkdir -p /data/tfds /out \
    && chown -R 10001:10001 /data /out \
    && python3 -I -c "import trainer.task, trainer.training.train"

# A numeric user, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001

ENTRYPOINT ["fmnist-train"]
