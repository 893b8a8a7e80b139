#!/usr/bin/env bash
# Runs the trainer image locally with docker, hardened like the Kubernetes Job (read-only root file system,
# no capabilities, no privilege escalation), as the calling user so that the outputs are yours.
#
#   jobs/run_docker.sh --model=cnn --output_dir=/out/cnn          # every argument is a trainer flag
#   GPU=1 jobs/run_docker.sh --model=cnn --output_dir=/out/cnn    # the GPU image, with the host's GPUs
#
# Environment (all optional):
#   IMAGE            the image to run (default fmnist-trainer:0.1.0-cpu, or fmnist-trainer:0.1.0-gpu with GPU=1)
#   GPU              1: pass the host's GPUs (--gpus all; needs the NVIDIA container toolkit)
#   OUT_DIR          host folder mounted at /out, for --output_dir=/out/... (default ./out/docker)
#   DATA_DIR         host folder for the TFDS data, mounted at /data/tfds, kept between runs (default ./.data/tfds)
#   TFDS_MANUAL_DIR  host folder with the four Fashion-MNIST .gz files, mounted read-only and passed as
#                    --tfds_manual_dir, so that nothing is downloaded (default ../shared/datasets/fashion-mnist
#                    when it exists)
#   DOCKER           the docker client (default docker)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
gpu="${GPU:-0}"
if [[ "$gpu" == 1 ]]; then
  image="${IMAGE:-fmnist-trainer:0.1.0-gpu}"
else
  image="${IMAGE:-fmnist-trainer:0.1.0-cpu}"
fi
out_dir="${OUT_DIR:-$root/out/docker}"
data_dir="${DATA_DIR:-$root/.data/tfds}"
manual_dir="${TFDS_MANUAL_DIR-}"
if [[ -z "${TFDS_MANUAL_DIR+set}" && -d "$root/../shared/datasets/fashion-mnist" ]]; then
  manual_dir="$root/../shared/datasets/fashion-mnist"
fi

mkdir -p "$out_dir" "$data_dir"
out_dir="$(cd "$out_dir" && pwd)"
data_dir="$(cd "$data_dir" && pwd)"

run=(run --rm
  --user "$(id -u):$(id -g)"
  --read-only --tmpfs "/tmp:rw,size=2g" --env HOME=/tmp
  --cap-drop ALL --security-opt no-new-privileges
  --volume "$out_dir:/out"
  --volume "$data_dir:/data/tfds")
if [[ "$gpu" == 1 ]]; then
  run+=(--gpus all)
fi
flags=()
if [[ -n "$manual_dir" ]]; then
  manual_dir="$(cd "$manual_dir" && pwd)"
  run+=(--volume "$manual_dir:/data/manual:ro")
  flags+=(--tfds_manual_dir=/data/manual)
fi

exec "${DOCKER:-docker}" "${run[@]}" "$image" ${flags[@]+"${flags[@]}"} "$@"
