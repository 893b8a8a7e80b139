#!/usr/bin/env bash
# Submits a Vertex AI job from one of the specs in jobs/, with its placeholders filled in.
#
#   BUCKET=my-bucket jobs/submit_vertex.sh gpu              # jobs/customjob-gpu.yaml: one T4
#   BUCKET=my-bucket jobs/submit_vertex.sh gpu-spot         # jobs/customjob-gpu-spot.yaml: the same on Spot VMs
#   BUCKET=my-bucket jobs/submit_vertex.sh multi-worker     # jobs/customjob-multi-worker.yaml: chief + worker
#   BUCKET=my-bucket jobs/submit_vertex.sh python-package   # jobs/customjob-python-package.yaml: builds the sdist,
#                                                           #   uploads it, runs it in TensorFlow's prebuilt container
#   BUCKET=my-bucket jobs/submit_vertex.sh hptuning         # jobs/hptuning-gpu.yaml: a hyperparameter tuning job
#   BUCKET=my-bucket jobs/submit_vertex.sh gpu --dry-run    # write the filled-in spec, print the command only
#
# Environment:
#   BUCKET           the Cloud Storage bucket for the outputs, without gs:// (required)
#   PROJECT_ID       the Google Cloud project (default: gcloud's configured project)
#   REGION           the Vertex AI region (default us-central1)
#   IMAGE_URI        the trainer image (default REGION-docker.pkg.dev/PROJECT_ID/fmnist/fmnist-trainer:0.1.0-gpu)
#   SERVICE_ACCOUNT  the service account the job runs as (default fmnist-trainer@PROJECT_ID.iam.gserviceaccount.com)
#   DISPLAY_NAME     the job's name in the console (default fmnist-SPEC-YYYYmmdd-HHMMSS)
#   GCLOUD           the gcloud client (default gcloud)
# python-package only:
#   PACKAGE          an sdist to upload instead of building one (`python -m build --sdist`)
#   PYTHON           the Python with `build` and google-cloud-storage (default python3)
#   BUILD_ISOLATION  0: build with PYTHON's own setuptools instead of an isolated one from the package index
# The package goes to gs://BUCKET/fmnist/packages/ (jobs/upload_package.py; a dry run uploads nothing).
# multi-worker: every submission gets a fresh random meeting secret in place of CLUSTER_SECRET (the replicas'
# FMNIST_CLUSTER_SECRET, docs/distributed.md); the filled-in spec is readable by its owner only.
set -euo pipefail
umask 077

specs="gpu, gpu-spot, multi-worker, python-package or hptuning"
usage() {
  echo "usage: BUCKET=NAME $0 {${specs//, /|}} [--dry-run]" >&2
  exit 2
}

[[ $# -ge 1 && $# -le 2 ]] || usage
spec_name="$1"
dry_run=0
if [[ $# -eq 2 ]]; then
  [[ "$2" == "--dry-run" ]] || usage
  dry_run=1
fi
jobs_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
source "$jobs_dir/common.sh"
if [[ "$spec_name" == hptuning ]]; then
  spec="$jobs_dir/hptuning-gpu.yaml"
else
  spec="$jobs_dir/customjob-$spec_name.yaml"
fi
[[ "$spec_name" != */* && -f "$spec" ]] || { echo "$0: no spec $spec (choose $specs)" >&2; exit 2; }

gcloud_cmd="${GCLOUD:-gcloud}"
bucket="${BUCKET:-}"
bucket="${bucket#gs://}"
bucket="${bucket%/}"
[[ -n "$bucket" ]] || { echo "$0: set BUCKET to the Cloud Storage bucket for the outputs" >&2; exit 2; }
find_project
region="${REGION:-us-central1}"
image="${IMAGE_URI:-$region-docker.pkg.dev/$project/fmnist/fmnist-trainer:0.1.0-gpu}"
service_account="${SERVICE_ACCOUNT:-fmnist-trainer@$project.iam.gserviceaccount.com}"
display_name="${DISPLAY_NAME:-fmnist-$spec_name-$(date -u +%Y%m%d-%H%M%S)}"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/fmnist-submit-XXXXXX")"
trap 'rm -rf "$workdir"' EXIT

# python-package: the source package, built here (or PACKAGE), uploaded next to the outputs.
package_uri=""
if [[ "$spec_name" == python-package ]]; then
  python="${PYTHON:-python3}"
  package="${PACKAGE:-}"
  if [[ -z "$package" ]]; then
    build=("$python" -m build --sdist --outdir "$workdir/dist")
    [[ "${BUILD_ISOLATION:-1}" == 0 ]] && build+=(--no-isolation)
    "${build[@]}" "$jobs_dir/.." >&2
    packages=("$workdir"/dist/*.tar.gz)
    [[ ${#packages[@]} == 1 && -f "${packages[0]}" ]] || { echo "$0: python -m build made no single sdist" >&2; exit 2; }
    package="${packages[0]}"
  fi
  [[ -f "$package" ]] || { echo "$0: no package file $package" >&2; exit 2; }
  prefix="gs://$bucket/fmnist/packages/"
  if [[ "$dry_run" == 1 ]]; then
    package_uri="$prefix$(basename "$package")"
    echo "$0: dry run: would upload $package to $package_uri" >&2
  else
    package_uri="$("$python" "$jobs_dir/upload_package.py" --project="$project" "$package" "$prefix")"
  fi
fi

# A value may not contain the sed delimiter or a newline.
for value in "$bucket" "$project" "$region" "$image" "$service_account" "$package_uri"; do
  if [[ "$value" == *"|"* || "$value" == *$'\n'* ]]; then
    echo "$0: invalid value: $value" >&2
    exit 2
  fi
done

# 32 random bytes, hex: the same for every replica of this job, another for the next job.
cluster_secret="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
[[ ${#cluster_secret} == 64 ]] || { echo "$0: could not read 32 random bytes from /dev/urandom" >&2; exit 1; }

config="$workdir/$(basename "$spec")"
sed -E \
  -e "s|^( *value: )CLUSTER_SECRET$|\\1$cluster_secret|" \
  -e "s|^( *- )gs://BUCKET/fmnist/packages/.*|\\1$package_uri|" \
  -e "s|^( *imageUri: ).*|\\1$image|" \
  -e "s|^( *serviceAccount: ).*|\\1$service_account|" \
  -e "s|gs://BUCKET/|gs://$bucket/|g" \
  "$spec" > "$config"
if grep -nE 'PROJECT_ID|REGION|BUCKET|: CLUSTER_SECRET$' "$config" | grep -v '^[0-9]*: *#' >&2; then
  echo "$0: placeholders left in the spec (above)" >&2
  exit 2
fi

if [[ "$spec_name" == hptuning ]]; then
  kind=(ai hp-tuning-jobs create)
else
  kind=(ai custom-jobs create)
fi
cmd=("$gcloud_cmd" "${kind[@]}" "--project=$project" "--region=$region" "--display-name=$display_name"
  "--config=$config")
if [[ "$dry_run" == 1 ]]; then
  # Keep the filled-in spec for inspection.
  kept="${TMPDIR:-/tmp}/fmnist-$spec_name-$(basename "$workdir").yaml"
  cp "$config" "$kept"
  cmd[${#cmd[@]}-1]="--config=$kept"
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi
"${cmd[@]}"
